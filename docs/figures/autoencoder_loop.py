"""Diagram for points 10-11: one training step of the autoencoder (stage 2, train_vae.py).

    python -m docs.figures.autoencoder_loop

writes docs/figures/autoencoder_loop.png, a picture of the idea rather than of a result. Top: the
autoencoder step. An image x (3, 128, 128) goes through the encoder to (mu, log sigma^2), each
(3, 32, 32); z = mu + sigma * eps is decoded to x_rec; the loss adds L1, the VGG perceptual
distance, the KL term and, from --disc-start on, the adversarial term with its adaptive weight
lambda; optimizer_ae steps the encoder and decoder. Bottom: then, in the same training step, the
discriminator step: the PatchGAN scores every patch of x (real) and of x_rec.detach() (fake),
the hinge loss, and optimizer_d steps the discriminator alone.

The weights in the labels are the defaults of train_vae.Config, read from the code. The face is
a synthetic one, x_rec a blurred copy of it, and the two logit maps are made up: only their
shapes (those of PatchDiscriminator on a 128x128 image) are real.
"""

import torch
import torch.nn.functional as F
from matplotlib.patches import Polygon, Rectangle

from docs.figures.common import (FIGURES, script_defaults, KIND_COLOURS, diagram_axes, draw_arrow, draw_box,
                                 save_figure, synthetic_faces)
from models.discriminator import PatchDiscriminator

AE_COLOUR, D_COLOUR = "#eef3fb", "#fbf0ee"      # backgrounds of the two steps
LOSS_COLOUR, SUM_COLOUR = "#fff6dc", "#fde7b0"  # loss terms and their sum
X_COLOUR, X_REC_COLOUR = "#3b6ea8", "#c8641e"   # lines carrying x and x_rec


def show_image(ax, image: torch.Tensor, x: float, y: float, size: float) -> None:
    """An image (3, H, W) in [-1, 1] as a size x size square with its lower-left corner at (x, y)."""
    pixels = ((image.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    ax.imshow(pixels, extent=(x, x + size, y, y + size), interpolation="bilinear", zorder=2)
    ax.add_patch(Rectangle((x, y), size, size, fill=False, edgecolor="0.3", linewidth=0.8,
                           zorder=3))


def trapezoid(ax, x: float, y: float, width: float, height: float, narrow: float, text: str,
              shrinking: bool) -> None:
    """A network drawn as a trapezoid centred on y: narrowing to the right (an encoder) when
    shrinking, else widening (a decoder); its narrow side is `narrow` high."""
    wide, small = height / 2, narrow / 2
    left, right = (wide, small) if shrinking else (small, wide)
    corners = [(x, y - left), (x + width, y - right), (x + width, y + right), (x, y + left)]
    fill, edge = KIND_COLOURS["latent"]                     # the autoencoder and its latents
    ax.add_patch(Polygon(corners, closed=True, facecolor=fill, edgecolor=edge))
    ax.text(x + width / 2, y, text, ha="center", va="center", fontsize=9)


def show_logits(ax, logits: torch.Tensor, x: float, y: float, size: float) -> None:
    """A map of patch logits (h', w') as a size x size square, red < 0 < blue, over [-2.5, 2.5]."""
    ax.imshow(logits.numpy(), extent=(x, x + size, y, y + size), cmap="RdBu", vmin=-2.5,
              vmax=2.5, interpolation="nearest", zorder=2)
    ax.add_patch(Rectangle((x, y), size, size, fill=False, edgecolor="0.3", linewidth=0.8,
                           zorder=3))


def short(value: float) -> str:
    """1e-06 -> "1e-6", 0.0001 -> "1e-4", 0.5 -> "0.5": numbers as the docs write them."""
    if value >= 1e-2:
        return f"{value:g}"
    mantissa, exponent = f"{value:e}".split("e")              # "1.000000", "-06"
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def main() -> None:
    cfg = script_defaults("train_vae")                                          # the defaults of train_vae.py
    size = cfg.image_size                                   # 128
    latent = size // 2 ** (len(cfg.channel_mult) - 1)      # 32
    disc = PatchDiscriminator(base_channels=cfg.disc_channels, num_layers=cfg.disc_layers)
    with torch.no_grad():
        patches = disc(torch.zeros(1, 3, size, size)).shape[-1]  # 14 logits a side

    x = synthetic_faces([3], size=size)[0]                               # (3, 128, 128)
    x_rec = F.interpolate(F.avg_pool2d(x[None], 6, stride=2, padding=2), size=(size, size),
                          mode="bilinear", align_corners=False)[0]       # a blurred stand-in
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(2, patches, patches, generator=generator)
    logits_real, logits_fake = 1.2 + 0.8 * noise[0], -1.0 + 0.8 * noise[1]  # made up

    fig, ax = diagram_axes(11.0, 7.9)
    ax.text(5.5, 7.68, "One training step of the autoencoder (train_vae.py): "
            "two losses, two optimizers, two steps in this order", ha="center", va="center",
            fontsize=12, weight="bold")

    # ---- 1. autoencoder step -------------------------------------------------------------------
    draw_box(ax, 0.1, 2.8, 10.8, 4.6, colour=AE_COLOUR, edge="#9db4d6")
    ax.text(0.3, 7.15, "1.  autoencoder step", fontsize=11, weight="bold", va="center")
    ax.text(2.4, 7.15, f"optimizer_ae = Adam(encoder + decoder), lr {short(cfg.lr)}, "
            "betas (0.5, 0.9).   D is frozen here (requires_grad False)", fontsize=8.5,
            va="center", color="0.2")

    row = 5.75                                              # centre line of the pipeline
    thumb = 1.1
    show_image(ax, x, 0.35, row - thumb / 2, thumb)
    ax.text(0.9, row + thumb / 2 + 0.12, f"x  (3, {size}, {size})", ha="center", fontsize=9)
    draw_arrow(ax, (1.5, row), (1.75, row))
    trapezoid(ax, 1.75, row, 0.9, 1.3, 0.6, "encoder", shrinking=True)
    draw_arrow(ax, (2.65, row), (2.85, row))
    draw_box(ax, 2.85, row - 0.45, 1.8, 0.9,
             f"mu, log sigma^2\n(3, {latent}, {latent}) each\nq(z | x) = N(mu, sigma^2)",
             *KIND_COLOURS["latent"], fontsize=8.5)
    draw_arrow(ax, (4.65, row), (4.85, row))
    draw_box(ax, 4.85, row - 0.45, 1.7, 0.9,
             f"z = mu + sigma * eps\neps ~ N(0, I)\n(3, {latent}, {latent})",
             *KIND_COLOURS["latent"], fontsize=8.5)
    draw_arrow(ax, (6.55, row), (6.8, row))
    trapezoid(ax, 6.8, row, 1.0, 1.3, 0.6, "decoder", shrinking=False)
    draw_arrow(ax, (7.8, row), (8.05, row))
    show_image(ax, x_rec, 8.05, row - thumb / 2, thumb)
    ax.text(8.6, row + thumb / 2 + 0.12, f"x_rec  (3, {size}, {size})", ha="center", fontsize=9)
    ax.text(9.35, row, "reparameterised:\ngradients flow\nthrough mu and\nsigma, not eps",
            fontsize=8, va="center", color="0.3")

    # the four loss terms, fed by x (blue), x_rec (orange) and the posterior (green)
    loss_y, loss_h = 3.85, 0.95
    boxes = {  # name: (left, width, text)
        "kl": (0.3, 2.45, f"KL( q(z | x) || N(0, I) )\nmean over latent elements\n"
                          f"weight w_kl = {short(cfg.kl_weight)}"),
        "l1": (2.95, 2.2, "L1 = mean |x - x_rec|\nover pixels and batch\nweight 1"),
        "perceptual": (5.35, 2.55, "perceptual: VGG16 features at\nrelu1_2, relu2_2, relu3_3\n"
                                   f"weight w_p = {cfg.perceptual_weight:g}"),
        "gan": (8.1, 2.6, "L_G = -mean D(x_rec)\nweight lambda * w_gan, "
                          f"w_gan = {cfg.disc_weight:g}\nonly from step {cfg.disc_start} "
                          "(--disc-start)"),
    }
    for name, (left, width, text) in boxes.items():
        draw_box(ax, left, loss_y, width, loss_h, text, colour=LOSS_COLOUR, fontsize=8.5)
    centre = {name: left + width / 2 for name, (left, width, _) in boxes.items()}
    top = loss_y + loss_h

    # x -> L1, perceptual (a blue line below the pipeline)
    x_bus = 5.0
    ax.plot([0.9, 0.9, centre["perceptual"] - 0.15], [row - thumb / 2, x_bus, x_bus],
            color=X_COLOUR, lw=1.2)
    for name in ("l1", "perceptual"):
        draw_arrow(ax, (centre[name] - 0.15, x_bus), (centre[name] - 0.15, top), colour=X_COLOUR)
    ax.text(1.0, x_bus + 0.07, "x", color=X_COLOUR, fontsize=9, weight="bold")
    # x_rec -> L1, perceptual, GAN (an orange line just above the blue one)
    rec_bus = 5.12
    ax.plot([8.6, 8.6], [row - thumb / 2, rec_bus], color=X_REC_COLOUR, lw=1.2)
    ax.plot([centre["l1"] + 0.15, centre["gan"]], [rec_bus, rec_bus], color=X_REC_COLOUR, lw=1.2)
    for name in ("l1", "perceptual"):
        draw_arrow(ax, (centre[name] + 0.15, rec_bus), (centre[name] + 0.15, top),
                   colour=X_REC_COLOUR)
    draw_arrow(ax, (centre["gan"], rec_bus), (centre["gan"], top), colour=X_REC_COLOUR)
    ax.text(8.68, row - thumb / 2 - 0.2, "x_rec", color=X_REC_COLOUR, fontsize=9,
            weight="bold")
    # posterior -> KL
    draw_arrow(ax, (3.5, row - 0.45), (centre["kl"] + 0.4, top), colour="#3d8a3d")

    # the sum, the adaptive weight, the optimizer step
    draw_box(ax, 0.3, 3.2, 10.4, 0.5, colour=SUM_COLOUR)  # the sum, as train_vae.py writes it
    ax.text(0.45, 3.45, f"loss_ae = L1 + {cfg.perceptual_weight:g} * perceptual + "
            f"{short(cfg.kl_weight)} * KL + lambda * {cfg.disc_weight:g} * L_G", fontsize=9.5,
            va="center", family="monospace")
    ax.text(10.55, 3.45, "backward, optimizer_ae.step()", fontsize=9.5, va="center",
            ha="right", weight="bold")
    for name in boxes:
        draw_arrow(ax, (centre[name], loss_y), (centre[name], 3.7))
    ax.text(5.5, 3.0, "lambda = ||grad nll|| / (||grad L_G|| + 1e-4) at the decoder's last conv, "
            "clamped to [0, 1e4], no gradient (nll = L1 + w_p * perceptual); "
            "before --disc-start L_G = 0",
            ha="center", va="top", fontsize=8, color="0.25")

    # ---- 2. discriminator step -----------------------------------------------------------------
    draw_box(ax, 0.1, 0.1, 10.8, 2.5, colour=D_COLOUR, edge="#d6aaa0")
    draw_arrow(ax, (0.3, 2.8), (0.3, 2.6), colour="0.2", linewidth=2)
    ax.text(0.3, 2.35, "2.  then the discriminator step", fontsize=11, weight="bold",
            va="center")
    ax.text(3.35, 2.35, f"from step {cfg.disc_start} on, same batch;  optimizer_d = Adam(D), "
            f"lr {short(cfg.lr)}, betas (0.5, 0.9): a second optimizer, for D alone",
            fontsize=8.5, va="center", color="0.2")

    small = 0.8
    show_image(ax, x, 0.35, 1.15, small)
    ax.text(1.22, 1.55, "x: real\n(blue square: the\npatch one logit sees)", fontsize=8,
            va="center")
    patch = small * 70 / size                                   # one logit sees 70x70 pixels
    ax.add_patch(Rectangle((0.35 + 0.3 * small, 1.15 + 0.25 * small), patch, patch, fill=False,
                           edgecolor="#2166ac", linewidth=1.2, zorder=3))
    show_image(ax, x_rec, 0.35, 0.25, small)
    ax.text(1.22, 0.65, "x_rec.detach(): fake\n(no gradient to the\nautoencoder)", fontsize=8,
            va="center")
    draw_arrow(ax, (2.35, 1.55), (2.75, 1.05))
    draw_arrow(ax, (2.35, 0.65), (2.75, 1.0))
    draw_box(ax, 2.75, 0.55, 1.75, 1.0,
             f"PatchGAN D\none call on\ntorch.cat([x, x_rec])\n(2B, 3, {size}, {size})",
             colour="#f3d9d3", fontsize=8.5)
    draw_arrow(ax, (4.5, 1.2), (4.85, 1.55))
    draw_arrow(ax, (4.5, 0.95), (4.85, 0.65))
    maps = 0.75
    show_logits(ax, logits_real, 4.85, 1.2, maps)
    show_logits(ax, logits_fake, 4.85, 0.25, maps)
    ax.text(5.7, 1.58, f"D(x): {patches}x{patches} logits,\none per 70x70 patch;\n"
            "pushed to >= +1", fontsize=8, va="center")
    ax.text(5.7, 0.63, f"D(x_rec): {patches}x{patches} logits;\npushed to <= -1", fontsize=8,
            va="center")
    draw_arrow(ax, (7.05, 1.5), (7.3, 1.2))
    draw_arrow(ax, (7.05, 0.65), (7.3, 0.95))
    draw_box(ax, 7.3, 0.55, 3.45, 1.05, colour=SUM_COLOUR)
    ax.text(9.025, 1.33, "hinge loss (hinge_d_loss)", ha="center", va="center", fontsize=8.5)
    ax.text(9.025, 1.05, "L_D = 0.5 * (mean relu(1 - D(x))\n     + mean relu(1 + D(x_rec)))",
            ha="center", va="center", fontsize=8.5, family="monospace")
    ax.text(9.025, 0.7, "backward, optimizer_d.step()", ha="center", va="center", fontsize=9.5,
            weight="bold")
    ax.text(10.75, 0.25, "face: synthetic; x_rec: a blurred copy; logits: made up",
            ha="right", va="center", fontsize=7, color="0.45", style="italic")

    save_figure(fig, FIGURES / "autoencoder_loop.png", dpi=100)


if __name__ == "__main__":
    main()
