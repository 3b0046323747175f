"""Diagram for points 5 and 16: the UNet of models/unet.py, with the numbers of stage 1's defaults.

    python -m docs.figures.unet_diagram

writes docs/figures/unet_diagram.png, a picture of the idea rather than of a result. Left, going
down: conv_in, then per level num_res_blocks ResBlocks (with attention at attention_levels) and a
stride-2 conv that halves the resolution; bottom: the middle block (ResBlock, attention,
ResBlock); right, going up: per level num_res_blocks + 1 ResBlocks, each on its input concatenated
with one skip of the same size from the left (the arrows across), and a nearest x2 upsample +
conv; then GroupNorm, SiLU and conv_out give eps_pred. On top: t -> sinusoidal embedding -> MLP
-> t_emb, which every ResBlock adds to its features (the pink dots). Orange, dashed: in stage 4
only, every attention block also reads the text tokens of the frozen CLIP text encoder through
cross-attention.

Every number is read from the code: the defaults of train_unconditional.Config (32x32 pixels) and
a UNet built from them by models.build_unet (its parameter count); the footnote gives stage 4's.
"""


from matplotlib.patches import Circle

from docs.figures.common import (FIGURES, script_defaults, FROZEN_COLOUR, KIND_COLOURS, diagram_axes, draw_arrow,
                                 draw_box, save_figure)
from models import build_unet

WIDTH, HEIGHT = 11.0, 7.6   # inches
BOX_W, BOX_H = 2.6, 0.72    # a level's box
STEP_X, STEP_Y = 0.45, 1.05  # each level lower is this much further in and down
TOP_Y = 5.75                # y of level 0's centre
MARGIN = 0.9                # x of level 0's left box


def time_dot(ax, x: float, y: float) -> None:
    """The pink dot on a box whose ResBlocks add the time embedding t_emb."""
    ax.add_patch(Circle((x, y), 0.075, facecolor=KIND_COLOURS["time"][1], edgecolor="white", linewidth=1, zorder=3))


def level_box(ax, x: float, y: float, title: str, body: str, colour: str, edge: str) -> None:
    """A box centred at height y with a bold first line, and the time dot at its top left."""
    draw_box(ax, x, y - BOX_H / 2, BOX_W, BOX_H, colour=colour, edge=edge)
    ax.text(x + BOX_W / 2, y + 0.13, title, ha="center", va="center", fontsize=10,
            weight="bold")
    ax.text(x + BOX_W / 2, y - 0.16, body, ha="center", va="center", fontsize=9)
    time_dot(ax, x + 0.17, y + BOX_H / 2 - 0.16)


def main() -> None:
    cfg = script_defaults("train_unconditional")                                   # the defaults of train_unconditional.py
    size, base = cfg.image_size, cfg.base_channels   # 32, 96
    levels = len(cfg.channel_mult)
    widths = [base * mult for mult in cfg.channel_mult]                     # 96, 192, 192, 192
    sizes = [size // 2 ** level for level in range(levels)]                 # 32, 16, 8, 4
    unet = build_unet(vars(cfg), in_channels=3)                              # RGB pixels
    time_dim = unet.time_embedding.mlp[0].out_features                      # 4 * base = 384
    parameters = sum(p.numel() for p in unet.parameters())
    fill, edge = KIND_COLOURS["unet"]
    text_fill, text_edge = KIND_COLOURS["text"]

    fig, ax = diagram_axes(WIDTH, HEIGHT)
    ax.text(WIDTH / 2, HEIGHT - 0.18, f"The UNet eps_theta(x_t, t) of stage 1 "
            f"(train_unconditional.py defaults, {parameters / 1e6:.1f}M parameters)",
            ha="center", va="center", fontsize=11)

    # ---- the levels: down on the left, up on the right, skips across -----------------------------
    lefts, rights, ys = [], [], []
    for level in range(levels):
        y = TOP_Y - STEP_Y * level
        left = MARGIN + STEP_X * level
        right = WIDTH - MARGIN - STEP_X * level - BOX_W
        lefts.append(left), rights.append(right), ys.append(y)
        attention = level in cfg.attention_levels
        shape = f"level {level}:  {sizes[level]}×{sizes[level]}×{widths[level]}"
        down = (f"{cfg.num_res_blocks} × (ResBlock + attention)" if attention
                else f"{cfg.num_res_blocks} ResBlocks")
        up = (f"{cfg.num_res_blocks + 1} × (ResBlock + attention)" if attention
              else f"{cfg.num_res_blocks + 1} ResBlocks")
        level_box(ax, left, y, shape, down, fill, edge)
        level_box(ax, right, y, shape, up, fill, edge)
        # skip connections: every output of the left side is concatenated on the right
        draw_arrow(ax, (left + BOX_W + 0.05, y), (right - 0.05, y), colour="0.35", linewidth=2.2,
                   mutation_scale=16)
        label = (f"skips: concatenate [h, skip], {cfg.num_res_blocks + 1} per level"
                 if level == 0 else "concatenate")
        ax.text((left + BOX_W + right) / 2, y + 0.13, label, ha="center", va="center",
                fontsize=9, color="0.3")
        if level + 1 < levels:                       # halve going down, double going up
            x_down = left + STEP_X + BOX_W / 2
            x_up = right + BOX_W / 2
            draw_arrow(ax, (x_down, y - BOX_H / 2), (x_down, y - STEP_Y + BOX_H / 2))
            draw_arrow(ax, (x_up, y - STEP_Y + BOX_H / 2), (x_up, y - BOX_H / 2))
            ax.text(x_down + 0.08, y - STEP_Y / 2, "stride-2 conv: ½ size", ha="left",
                    va="center", fontsize=8.5, color="0.3")
            ax.text(x_up - 0.08, y - STEP_Y / 2, "nearest ×2, conv", ha="right", va="center",
                    fontsize=8.5, color="0.3")

    # ---- the middle, at the lowest resolution ----------------------------------------------------
    middle_y = ys[-1] - STEP_Y
    middle_x = WIDTH / 2 - BOX_W / 2
    level_box(ax, middle_x, middle_y, f"middle:  {sizes[-1]}×{sizes[-1]}×{widths[-1]}",
              "ResBlock, attention, ResBlock", fill, edge)
    draw_arrow(ax, (lefts[-1] + BOX_W / 2 + STEP_X / 2, ys[-1] - BOX_H / 2),
               (middle_x, middle_y), connectionstyle="arc3,rad=0.3")
    draw_arrow(ax, (middle_x + BOX_W, middle_y),
               (rights[-1] + BOX_W / 2 - STEP_X / 2, ys[-1] - BOX_H / 2),
               connectionstyle="arc3,rad=0.3")

    # ---- input and output ------------------------------------------------------------------------
    image_fill, image_edge = KIND_COLOURS["image"]
    io_y, io_h = TOP_Y + 0.95, 0.5
    draw_box(ax, lefts[0], io_y, BOX_W, io_h, f"x_t  (B, 3, {size}, {size})", image_fill,
             image_edge, fontsize=9.5)
    draw_box(ax, rights[0], io_y, BOX_W, io_h, f"eps_pred  (B, 3, {size}, {size})", image_fill,
             image_edge, fontsize=9.5)
    draw_arrow(ax, (lefts[0] + BOX_W / 2, io_y), (lefts[0] + BOX_W / 2, TOP_Y + BOX_H / 2))
    draw_arrow(ax, (rights[0] + BOX_W / 2, TOP_Y + BOX_H / 2), (rights[0] + BOX_W / 2, io_y))
    ax.text(lefts[0] + BOX_W / 2 + 0.08, io_y - 0.22, "conv_in 3×3", ha="left", va="center",
            fontsize=8.5, color="0.3")
    ax.text(rights[0] + BOX_W / 2 + 0.08, io_y - 0.22, "GroupNorm, SiLU, conv_out", ha="left",
            va="center", fontsize=8.5, color="0.3")

    # ---- the time embedding ----------------------------------------------------------------------
    time_fill, time_edge = KIND_COLOURS["time"]
    x0 = lefts[0] + BOX_W + 0.3
    ax.text(x0, io_y + io_h / 2, "t", ha="center", va="center", fontsize=11, color=time_edge)
    draw_arrow(ax, (x0 + 0.12, io_y + io_h / 2), (x0 + 0.4, io_y + io_h / 2), colour=time_edge)
    draw_box(ax, x0 + 0.42, io_y, 1.15, io_h, f"sinusoidal\n(B, {base})", time_fill, time_edge,
             fontsize=8.5)
    draw_arrow(ax, (x0 + 1.59, io_y + io_h / 2), (x0 + 1.85, io_y + io_h / 2), colour=time_edge)
    draw_box(ax, x0 + 1.87, io_y, 1.5, io_h, f"MLP: Linear,\nSiLU, Linear → ({time_dim})",
             time_fill, time_edge, fontsize=8.5)
    draw_arrow(ax, (x0 + 2.62, io_y), (x0 + 2.62, io_y - 0.2), colour=time_edge)
    ax.text(x0 + 2.62, io_y - 0.32, f"t_emb (B, {time_dim}): added inside every ResBlock (●)",
            ha="center", va="center", fontsize=8.5, color=time_edge)

    # ---- stage 4: cross-attention to the text tokens ---------------------------------------------
    text_y = 0.72
    draw_box(ax, WIDTH / 2 - 2.4, text_y - 0.22, 4.8, 0.44, colour=text_fill, edge=text_edge)
    ax.text(WIDTH / 2 - 0.1, text_y, "stage 4 only: text tokens (B, L, D) from the CLIP text "
            "encoder", ha="center", va="center", fontsize=9)
    ax.text(WIDTH / 2 + 2.2, text_y, "❄", ha="center", va="center", fontsize=12,
            color=FROZEN_COLOUR)                     # frozen: stage 4 does not train it
    draw_arrow(ax, (WIDTH / 2, text_y + 0.22), (WIDTH / 2, middle_y - BOX_H / 2),
               colour=text_edge, linestyle="--")
    # a dashed line from the text box up each side, with an arrow into every level with attention
    attended = sorted(cfg.attention_levels)
    for box_end, bus_x, entries in (
            (WIDTH / 2 - 2.4, 0.45, [lefts[level] for level in attended]),
            (WIDTH / 2 + 2.4, WIDTH - 0.45, [rights[level] + BOX_W for level in attended])):
        ax.plot([box_end, bus_x, bus_x], [text_y, text_y, ys[attended[0]]], color=text_edge,
                linestyle="--", linewidth=1.2)
        for level, entry_x in zip(attended, entries):
            draw_arrow(ax, (bus_x, ys[level]), (entry_x, ys[level]), colour=text_edge,
                       linestyle="--")
    ax.text(0.55, text_y + 0.3, "cross-attention", ha="left", va="center", fontsize=8,
            color=text_edge)

    ldm = script_defaults("train_ldm")
    ldm_widths = ", ".join(str(ldm.base_channels * m) for m in ldm.channel_mult)
    ax.text(WIDTH / 2, 0.14,
            "attention = self-attention in stage 1; in stage 4 a transformer block: "
            "self-attention, cross-attention to the text tokens, feed-forward.  ❄ = frozen.\n"
            f"Stage 4 (train_ldm.py) runs the same code on 32×32×3 latents with {ldm_widths} "
            f"channels and attention at levels {', '.join(map(str, ldm.attention_levels))} "
            "and in the middle.",
            ha="center", va="center", fontsize=8.5, color="0.35", linespacing=1.4)
    save_figure(fig, FIGURES / "unet_diagram.png")


if __name__ == "__main__":
    main()
