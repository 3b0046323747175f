"""Diagram for points 2-4: diffusion as a Markov chain x_0 -> x_1 -> ... -> x_T, with real images.

    python -m docs.figures.markov_chain

writes docs/figures/markov_chain.png, a picture of the idea rather than of a result. One synthetic
face x_0 (docs.figures.common.synthetic_faces, 32x32) is taken to t = 100, 300, 600 and T = 1000
by the project's DDPMScheduler.add_noise (default linear schedule, beta from 1e-4 to 0.02, T =
1000), with one eps for all four, and each image shows its t and alpha_bar_t underneath.
Between two images: grey arrows forward, the fixed process q that adds a little noise per step;
purple arrows back, the learned reverse process p_theta that removes it (the UNet). The dashed arc
is the closed form q(x_t | x_0) that training uses to jump from x_0 to any t at once.

t counts noising steps as the DDPM paper does (1 .. T); the code's index for step t is t - 1
(docs/notation.md), so x_t here is add_noise(x_0, eps, t - 1).
"""

import torch
from matplotlib.patches import Rectangle

from diffusion import DDPMScheduler
from docs.figures.common import (FIGURES, KIND_COLOURS, diagram_axes, draw_arrow, save_figure,
                                 synthetic_faces)

STEPS = [0, 100, 300, 600, 1000]  # the paper's t of each image; 0 = the clean image x_0
FACE_SEED = 1
SIZE = 1.2                        # inches per image
CENTRES = [1.0, 3.0, 5.0, 7.0, 9.0]  # x of each image's centre, inches
BOTTOM = 1.95                     # y of the images' lower edge, inches


def show_image(ax, image: torch.Tensor, x: float, y: float, size: float) -> None:
    """An image (3, H, W) in [-1, 1] as a size x size square with its lower-left corner at (x, y),
    every pixel a sharp square."""
    pixels = ((image.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    ax.imshow(pixels, extent=(x, x + size, y, y + size), interpolation="nearest", zorder=2)
    ax.add_patch(Rectangle((x, y), size, size, fill=False, edgecolor="0.3", linewidth=0.8,
                           zorder=3))


def name(t: int) -> str:
    """The chain's name for step t, in mathtext."""
    return {0: r"$x_0$  (data)", 1000: r"$x_T = x_{1000}$"}.get(t, rf"$x_{{{t}}}$")


def short(value: float) -> str:
    """1.0 -> "1", 0.39642 -> "0.396", 4.0358e-05 -> "4.0e-5": alpha_bar_t with 3 figures."""
    return f"{value:.3g}" if value >= 1e-3 else f"{value:.1e}".replace("e-0", "e-")


def main() -> None:
    scheduler = DDPMScheduler(1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    x0 = synthetic_faces([FACE_SEED])                                     # (1, 3, 32, 32)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    forward_colour, reverse_colour = KIND_COLOURS["noise"][1], KIND_COLOURS["unet"][1]
    jump_colour = "0.25"

    fig, ax = diagram_axes(10, 4.6)
    top = BOTTOM + SIZE
    for i, (t, centre) in enumerate(zip(STEPS, CENTRES)):
        if t == 0:
            image, alpha_bar = x0[0], 1.0
        else:
            image = scheduler.add_noise(x0, eps, torch.tensor([t - 1]))[0]  # [P3] code index t - 1
            alpha_bar = float(scheduler.alphas_cumprod[t - 1])
        show_image(ax, image, centre - SIZE / 2, BOTTOM, SIZE)
        ax.text(centre, BOTTOM - 0.17, name(t), ha="center", va="center", fontsize=11)
        ax.text(centre, BOTTOM - 0.45, rf"t = {t},  $\bar\alpha_t$ = {short(alpha_bar)}",
                ha="center", va="center", fontsize=9)
        if i + 1 < len(STEPS):                         # the steps between this image and the next
            left, right = centre + SIZE / 2 + 0.08, CENTRES[i + 1] - SIZE / 2 - 0.08
            draw_arrow(ax, (left, BOTTOM + 0.85), (right, BOTTOM + 0.85), colour=forward_colour,
                       mutation_scale=14)
            draw_arrow(ax, (right, BOTTOM + 0.35), (left, BOTTOM + 0.35), colour=reverse_colour,
                       mutation_scale=14)
            ax.text((left + right) / 2, BOTTOM + 0.6, f"{STEPS[i + 1] - t} steps", ha="center",
                    va="center", fontsize=8, color="0.3")

    # The one-step kernels, written over and under the whole chain.
    ax.text(5.0, top + 0.42,
            r"forward, fixed (adds a little noise per step):   "
            r"$q(x_t \mid x_{t-1}) = \mathcal{N}(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t \mathbf{I})$",
            ha="center", va="center", fontsize=10, color=forward_colour)
    ax.text(5.0, BOTTOM - 0.95,
            r"reverse, learned by the UNet (removes it again):   "
            r"$p_\theta(x_{t-1} \mid x_t) = "
            r"\mathcal{N}(\mu_\theta(x_t, t),\ \sigma_t^2 \mathbf{I})$",
            ha="center", va="center", fontsize=10, color=reverse_colour)
    draw_arrow(ax, (1.9, top + 0.17), (8.1, top + 0.17), colour=forward_colour, linewidth=1.0,
               mutation_scale=12)
    draw_arrow(ax, (8.1, BOTTOM - 0.7), (1.9, BOTTOM - 0.7), colour=reverse_colour,
               linewidth=1.0, mutation_scale=12)

    # The closed form: from x_0 to any x_t in one jump.
    draw_arrow(ax, (CENTRES[0], top + 0.05), (CENTRES[-1], top + 0.05), colour=jump_colour,
               linewidth=1.5, linestyle="--", mutation_scale=16,
               connectionstyle="arc3,rad=-0.2")
    ax.text(5.0, top + 1.12,
            r"closed form, one jump to any t (training):   "
            r"$q(x_t \mid x_0) = "
            r"\mathcal{N}(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)\,\mathbf{I})$,"
            r"   $\bar\alpha_t = \prod_{s \leq t} (1-\beta_s)$",
            ha="center", va="center", fontsize=10, color=jump_colour)

    ax.text(5.0, 0.3,
            "One synthetic face and one noise sample eps, x_t = sqrt(alpha_bar_t) x_0 + "
            "sqrt(1 - alpha_bar_t) eps (DDPMScheduler.add_noise; linear beta_t from 1e-4 to 0.02,"
            "\nT = 1000). t counts steps as the DDPM paper does, 1 .. T; the code's index is t - 1 "
            "(docs/notation.md). Sampling runs the purple arrows from x_T back to x_0.",
            ha="center", va="center", fontsize=8, color="0.35")
    save_figure(fig, FIGURES / "markov_chain.png")


if __name__ == "__main__":
    main()
