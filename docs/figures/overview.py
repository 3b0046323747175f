"""Diagram of the whole system: the four training stages, the files they write, and sampling.

    python -m docs.figures.overview

writes docs/figures/overview.png, a picture of the idea rather than of a result. Top, left to
right, the four stage scripts with what each trains (black arrows) and the checkpoint it writes
(brown boxes); an arrow between two files means that the later stage reads the earlier one
(its --vae or --clip setting). A snowflake marks a part a stage uses but does not train: the
autoencoder's encoder in stages 3 and 4 (they read the latents train_vae.py cached once), and the
CLIP text encoder in stage 4. Bottom, in red, the sampling path of sample.py, which needs only
stage 4's checkpoint: prompt -> tokenizer -> text encoder -> tokens; noise -> the UNet, step by
step with classifier-free guidance -> z_0 -> decoder -> image (nothing trains there, so it has no
snowflakes).

The sizes, the guidance scale, the caption dropout and the number of sampling steps are the
defaults of the scripts, read from their Config classes (the --preset cpu runs use smaller sizes).
"""

from docs.figures.common import (FIGURES, script_defaults, FROZEN_COLOUR, KIND_COLOURS, SAMPLING_COLOUR,
                                 diagram_axes, draw_arrow, draw_box, save_figure)

WIDTH, HEIGHT = 12.0, 8.7   # inches
STAGE_W, STAGE_GAP = 2.55, 0.45
STAGE_TOP, STAGE_BOTTOM = 7.95, 2.85
FILE_Y, FILE_H = 2.95, 0.7  # the boxes of the files each stage writes
TRAIN_COLOUR = "0.25"       # arrows of the training data flow


def node(ax, cx: float, cy: float, w: float, h: float, text: str, kind: str,
         frozen: bool = False, fontsize: float = 9.5) -> None:
    """A box centred at (cx, cy) in the colours of its kind; frozen: a snowflake at its right."""
    fill, edge = KIND_COLOURS[kind]
    shift = 0.1 if frozen else 0.0                   # make room for the snowflake
    draw_box(ax, cx - w / 2, cy - h / 2, w, h, colour=fill, edge=edge)
    ax.text(cx - shift, cy, text, ha="center", va="center", fontsize=fontsize)
    if frozen:
        ax.text(cx + w / 2 - 0.14, cy, "❄", ha="center", va="center", fontsize=11,
                color=FROZEN_COLOUR)


def stage(ax, x: float, number: int, title: str, script: str, kind: str) -> float:
    """A stage's panel with its header; returns the x of its centre."""
    fill, edge = KIND_COLOURS[kind]
    draw_box(ax, x, STAGE_BOTTOM, STAGE_W, STAGE_TOP - STAGE_BOTTOM, colour="#fafafa", edge="0.75")
    draw_box(ax, x, STAGE_TOP - 0.55, STAGE_W, 0.55, colour=fill, edge=edge)
    ax.text(x + STAGE_W / 2, STAGE_TOP - 0.17, f"{number}   {title}", ha="center", va="center",
            fontsize=11, weight="bold")
    ax.text(x + STAGE_W / 2, STAGE_TOP - 0.41, script, ha="center", va="center", fontsize=9.5,
            family="monospace")
    return x + STAGE_W / 2


def file_box(ax, cx: float, text: str) -> None:
    """The file(s) a stage writes, at the bottom of its panel."""
    fill, edge = KIND_COLOURS["file"]
    draw_box(ax, cx - STAGE_W / 2 + 0.1, FILE_Y, STAGE_W - 0.2, FILE_H, text, fill, edge,
             fontsize=9, family="monospace")


def down(ax, x: float, y_from: float, y_to: float, colour: str = TRAIN_COLOUR) -> None:
    """A short vertical arrow from one node to the next."""
    draw_arrow(ax, (x, y_from), (x, y_to), colour=colour)


def note(ax, x: float, y: float, text: str, **options) -> None:
    """Explanatory text at (x, y): grey, centred, unless options say otherwise."""
    ax.text(x, y, text, **{"ha": "center", "va": "center", "fontsize": 9, "color": "0.3",
                           **options})


def square(size: int, channels: int = 3) -> str:
    """32, 3 -> "32×32×3"."""
    return f"{size}×{size}×{channels}"


def main() -> None:
    pixel, vae, ldm = (script_defaults(s) for s in ("train_unconditional", "train_vae", "train_ldm"))    # the stage scripts' defaults
    image = square(vae.image_size)                                       # 128×128×3
    latent = square(vae.image_size // 2 ** (len(vae.channel_mult) - 1), vae.latent_channels)
    dropout = f"{ldm.cond_drop:.0%}"                                     # 10%

    fig, ax = diagram_axes(WIDTH, HEIGHT)
    ax.text(WIDTH / 2, HEIGHT - 0.2, "Four stage scripts, each training one model and writing "
            "one checkpoint; sample.py needs only the last", ha="center", va="center", fontsize=12)
    ax.text(WIDTH / 2, HEIGHT - 0.5, "black arrows: training      red arrows: sampling      "
            "❄ frozen: used, not trained, in that stage      brown: files written "
            "(an arrow between files: the later stage reads it)", ha="center", va="center",
            fontsize=9, color="0.3")
    xs = [0.2 + i * (STAGE_W + STAGE_GAP) for i in range(4)]
    w1, w2 = STAGE_W - 0.3, 1.13                     # a box across the panel, a box of two

    # ---- 1. pixel DDPM ---------------------------------------------------------------------------
    cx = stage(ax, xs[0], 1, "pixel DDPM", "train_unconditional.py", "image")
    node(ax, cx, 7.0, w1, 0.42, f"faces {square(pixel.image_size)}", "image")
    down(ax, cx, 6.79, 6.21)
    note(ax, cx + 0.08, 6.5, "t ~ U{1..T},  ε ~ N(0, I)", ha="left")
    x_t = r"$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$"   # DDPM eq. 4
    node(ax, cx, 6.0, w1, 0.42, x_t, "noise", fontsize=9)
    down(ax, cx, 5.79, 5.21)
    node(ax, cx, 5.0, w1, 0.42, r"UNet $\epsilon_\theta(x_t, t)$", "unet", fontsize=9)
    ax.text(cx, 4.45, r"loss $\|\epsilon - \epsilon_\theta(x_t, t)\|^2$", ha="center",
            va="center", fontsize=9.5)
    note(ax, cx, 3.95, "teaches the method (pages 1-8);\nno later stage loads it")
    file_box(ax, cx, "runs/unconditional/\ncheckpoint.pt")

    # ---- 2. KL autoencoder -----------------------------------------------------------------------
    cx = stage(ax, xs[1], 2, "KL autoencoder", "train_vae.py", "latent")
    for y, text, kind in ((7.0, f"image {image}", "image"), (6.4, "encoder", "latent"),
                          (5.8, f"z {latent} = mean + std·ε", "latent"),
                          (5.2, "decoder", "latent"), (4.6, f"reconstruction {image}", "image")):
        node(ax, cx, y, w1, 0.4, text, kind)
        if y > 4.6:
            down(ax, cx, y - 0.2, y - 0.4)
    note(ax, cx, 4.05, "loss: L1 + VGG perceptual + small KL\n+ PatchGAN (from --disc-start on)",
         color="black")
    file_box(ax, cx, "runs/vae/checkpoint.pt\n+ latents_train.pt,\nlatents_val.pt (cache)")

    # ---- 3. CLIP ---------------------------------------------------------------------------------
    cx = stage(ax, xs[2], 3, "small CLIP", "train_clip.py", "text")
    left, right = cx - 0.64, cx + 0.64               # image tower, text tower
    node(ax, left, 7.0, w2, 0.42, "cached\nlatents", "latent", frozen=True)
    down(ax, left, 6.79, 6.21)
    node(ax, left, 6.0, w2, 0.42, "conv head", "latent")
    for y, text in ((7.0, "caption"), (6.4, "tokenizer"), (5.8, "text encoder"),
                    (5.2, "mean of tokens")):
        node(ax, right, y, w2, 0.4, text, "text")
        if y > 5.2:
            down(ax, right, y - 0.2, y - 0.4)
    draw_arrow(ax, (left, 5.79), (cx - 0.15, 4.62), colour=TRAIN_COLOUR)
    draw_arrow(ax, (right, 5.0), (cx + 0.15, 4.62), colour=TRAIN_COLOUR)
    note(ax, cx, 4.45, "contrastive loss on the\nN × N similarities", color="black")
    note(ax, cx, 3.88, "image tower: the frozen encoder\n(its cached latents) + a conv head")
    file_box(ax, cx, "runs/clip/checkpoint.pt\n+ tokenizer, autoencoder")

    # ---- 4. latent diffusion ---------------------------------------------------------------------
    cx = stage(ax, xs[3], 4, "latent diffusion", "train_ldm.py", "unet")
    left, right = cx - 0.64, cx + 0.64               # latents, text
    node(ax, left, 7.0, w2, 0.42, "cached\nlatents $z_0$", "latent", frozen=True)
    down(ax, left, 6.79, 6.41)
    node(ax, left, 6.2, w2, 0.42, "+ noise: $z_t$", "noise")
    node(ax, right, 7.0, w2, 0.42, f'caption\n("" {dropout})', "text")
    down(ax, right, 6.79, 6.41)
    node(ax, right, 6.2, w2, 0.42, "text\nencoder", "text", frozen=True)
    down(ax, left, 5.99, 5.46)
    down(ax, right, 5.99, 5.46)
    note(ax, right + 0.05, 5.72, "tokens", ha="left")
    node(ax, cx, 5.2, w1, 0.52, "UNet with cross-attention\nto the text tokens", "unet")
    target = "v" if ldm.prediction_type == "v" else r"\epsilon"     # what the UNet predicts
    ax.text(cx, 4.55, rf"loss $\|{target} - {target}_\theta(z_t, t, \mathrm{{text}})\|^2$",
            ha="center", va="center", fontsize=9.5)
    note(ax, cx, 4.0, "stage 1's UNet code, on latents;\ncaption dropout for guidance")
    file_box(ax, cx, "runs/ldm/checkpoint.pt\nUNet, autoencoder,\ntext encoder, tokenizer")

    # ---- which stage reads which file ------------------------------------------------------------
    file_mid = FILE_Y + FILE_H / 2
    for i, flag in ((1, "--vae"), (2, "--clip")):
        start, end = xs[i] + STAGE_W - 0.1, xs[i + 1] + 0.1
        draw_arrow(ax, (start, file_mid), (end, file_mid), colour=KIND_COLOURS["file"][1],
                   linewidth=1.6)
        ax.text((start + end) / 2, file_mid + 0.5, flag, ha="center", va="center", fontsize=9,
                family="monospace", rotation=90)
    vae_x, ldm_x = xs[1] + STAGE_W / 2, xs[3] + 0.7
    draw_arrow(ax, (vae_x, STAGE_BOTTOM + 0.1), (ldm_x, STAGE_BOTTOM + 0.1),
               colour=KIND_COLOURS["file"][1], linewidth=1.6, connectionstyle="arc3,rad=0.08")
    ax.text(6.0, 2.4, "--vae: stage 4 reads the latent cache and copies the "
            "autoencoder into its file", ha="center", va="center", fontsize=9, color="0.3")

    # ---- sampling: sample.py ---------------------------------------------------------------------
    draw_box(ax, 0.2, 0.15, WIDTH - 0.45, 2.05, colour="#fdf5f5", edge=SAMPLING_COLOUR)
    ax.text(0.4, 1.98, 'sampling:  python sample.py --ckpt runs/ldm/checkpoint.pt --prompt '
            '"a smiling woman with glasses"', ha="left", va="center", fontsize=9.5,
            family="monospace", color=SAMPLING_COLOUR)
    ldm_file_x = xs[3] + STAGE_W - 0.5
    draw_arrow(ax, (ldm_file_x, FILE_Y), (ldm_file_x, 2.2), colour=SAMPLING_COLOUR, linewidth=1.6)
    ax.text(ldm_file_x - 0.1, 2.5, "everything from one file", ha="right", va="center",
            fontsize=9, color=SAMPLING_COLOUR)

    text_y, latent_y = 1.5, 0.62
    node(ax, 1.25, text_y, 1.7, 0.44, 'prompt\n"a smiling woman..."', "text")
    node(ax, 2.95, text_y, 1.1, 0.44, "tokenizer", "text")
    node(ax, 4.5, text_y, 1.4, 0.44, "text\nencoder", "text")
    node(ax, 6.3, text_y, 1.6, 0.44, "tokens (1, L, D)\nand those of \"\"", "text")
    for start, end in ((2.1, 2.4), (3.5, 3.8), (5.2, 5.5)):
        draw_arrow(ax, (start, text_y), (end, text_y), colour=SAMPLING_COLOUR)
    draw_arrow(ax, (6.3, text_y - 0.22), (6.3, latent_y + 0.3), colour=SAMPLING_COLOUR)

    node(ax, 1.1, latent_y, 1.4, 0.55, r"$z_T \sim \mathcal{N}(0, \mathbf{I})$" + f"\n{latent}",
         "noise")
    loop = (f"UNet, {script_defaults('sample').steps} DDIM steps " + r"$z_t \to z_{t-1}$" + " (Euler for flow)"
            + "\nguidance " + r"$\epsilon = \epsilon_u + w\,(\epsilon_c - \epsilon_u)$"
            + f",  w = {ldm.guidance:g}")                # w: train_ldm.py's default, in the file
    node(ax, 4.6, latent_y, 4.6, 0.6, loop, "unet")
    node(ax, 7.75, latent_y, 0.8, 0.55, "$z_0$", "latent")
    node(ax, 9.55, latent_y, 1.1, 0.55, "decoder", "latent")
    node(ax, 11.0, latent_y, 1.2, 0.55, f"image\n{image}", "image")
    for start, end in ((1.8, 2.3), (6.9, 7.35), (8.15, 9.0), (10.1, 10.4)):
        draw_arrow(ax, (start, latent_y), (end, latent_y), colour=SAMPLING_COLOUR)
    ax.text(8.58, latent_y + 0.17, "÷ scale", ha="center", va="center", fontsize=9,
            color=SAMPLING_COLOUR)
    save_figure(fig, FIGURES / "overview.png")


if __name__ == "__main__":
    main()
