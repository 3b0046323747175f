"""Diagram for point 16: cross-attention as tokens, queries from the image, keys and values from
the text.

    python -m docs.figures.cross_attention_tokens

writes docs/figures/cross_attention_tokens.png, a picture of the idea. The shapes are those of the
first attention level of --preset cpu (models/attention.py; docs/16-cross-attention.md): an 8x8
feature map with C = 64 channels, flattened to H*W = 64 image tokens, the queries Q = x W_q;
the prompt "a photo of a smiling woman" as L = 11 text tokens of width D = 128 (<bos>, six words,
<eos>, and three <pad> because a longer prompt in the batch sets L), the keys K = tokens W_k and
values V = tokens W_v, both mapped to width C. The (H*W) x L attention matrix is softmaxed over
the L keys, so every row sums to 1, and the padded keys get -inf before the softmax, so a weight
of exactly 0 (grey columns). The output (H*W, C) = weights V goes back to (C, H, W) and is added
to the feature map (residual).

The attention weights are made up (one head; the code splits C into 4 heads of d = 16, each with
its own softmax): "smiling" is read most around the mouth, "woman" around the hair. The mask and
the softmax are applied as models.attention.attention_weights applies them.
"""

import torch
from matplotlib.patches import Circle, Rectangle

from data.synthetic import SYNTHETIC_ATTRIBUTES, draw_face
from docs.figures.common import (FIGURES, KIND_COLOURS, diagram_axes, draw_arrow, draw_box,
                                 save_figure)
from models.tokenizer import BOS, EOS, PAD, split_words

PROMPT = "a photo of a smiling woman"
H = W = 8          # the feature map at the first attention level of --preset cpu
C, D = 64, 128     # its channels; the width of the text encoder's tokens
L = 11             # tokens per prompt in this batch: its longest prompt has 9 words
MOUTH = (5, 3)     # (row, column) of the cell holding the face's mouth
PAD_GREY = "#c8c8c8"
TEXT_FILL, TEXT_EDGE = KIND_COLOURS["text"]
IMAGE_FILL, IMAGE_EDGE = KIND_COLOURS["image"]
OUT_FILL = "#b9cde6"   # the output: image features again, a shade darker than the queries


def gaussian(row: float, column: float, sigma: float) -> torch.Tensor:
    """exp(-distance^2 / (2 sigma^2)) from (row, column), over the H x W positions, flattened."""
    rows, columns = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    distance2 = (rows - row) ** 2 + (columns - column) ** 2
    return torch.exp(-distance2 / (2 * sigma ** 2)).flatten()                  # (H*W,)


def made_up_scores(tokens: list[str]) -> torch.Tensor:
    """Scores Q K^T / sqrt(d) (H*W, L) as a trained layer might have them: "smiling" high at
    the mouth, "woman" at the hair, a constant for the other tokens; padding gets large scores
    too, to show that the mask, not the scores, silences it."""
    hair = gaussian(3.5, 1.0, 1.1) + gaussian(3.5, 6.3, 1.1) + gaussian(1.8, 3.6, 1.2)
    per_token = {"smiling": 4.0 * gaussian(MOUTH[0] + 0.2, MOUTH[1] + 0.6, 0.8),
                 "woman": 2.5 * hair, BOS: torch.full((H * W,), 1.2),
                 EOS: torch.full((H * W,), 0.8), "photo": torch.full((H * W,), 0.4),
                 PAD: torch.full((H * W,), 2.0)}
    return torch.stack([per_token.get(t, torch.zeros(H * W)) for t in tokens], dim=1)


def token_column(ax, x: float, top: float, width: float, rows: int, row_height: float,
                 colour: str, greyed=()) -> None:
    """A matrix drawn as `rows` thin stripes (one token each), rows in `greyed` grey."""
    for r in range(rows):
        ax.add_patch(Rectangle((x, top - (r + 1) * row_height), width, row_height,
                               facecolor=PAD_GREY if r in greyed else colour, edgecolor="white",
                               linewidth=0.4))


def position_column(ax, x: float, top: float, width: float, row_height: float, colour: str,
                    name: str, highlighted: int) -> None:
    """An (H*W, C) matrix of image positions as a column of stripes, named above and its shape
    below, with the row of position `highlighted` (the mouth) in red."""
    token_column(ax, x, top, width, H * W, row_height, colour)
    ax.add_patch(Rectangle((x, top - (highlighted + 1) * row_height), width, row_height,
                           facecolor="#d62728", edgecolor="none", zorder=3))
    ax.text(x + width / 2, top + 0.27, name, ha="center", va="center", fontsize=10,
            weight="bold")
    ax.text(x + width / 2, top - H * W * row_height - 0.17, f"({H * W}, {C})", ha="center",
            va="center", fontsize=8)


def main() -> None:
    tokens = [BOS, *split_words(PROMPT), EOS]
    tokens += [PAD] * (L - len(tokens))
    mask = torch.tensor([t != PAD for t in tokens])                   # (L,) True = real token
    scores = made_up_scores(tokens)                                   # (H*W, L)
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)  # (H*W, L)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(H * W))      # every row sums to 1
    pads = [j for j in range(L) if not mask[j]]
    query = MOUTH[0] * W + MOUTH[1]                                   # the mouth's row

    attributes = {name: False for name in SYNTHETIC_ATTRIBUTES}
    attributes.update(Smiling=True, Brown_Hair=True, No_Beard=True)
    face = draw_face(attributes, size=64, seed=1).convert("RGB")

    fig, ax = diagram_axes(11.0, 7.8)
    ax.text(5.5, 7.55, "Cross-attention: the image asks (queries), the text answers "
            "(keys and values)", ha="center", va="center", fontsize=12, weight="bold")
    ax.text(5.5, 7.25, "The video words it the other way round; a layer whose output must go back "
            "into the feature map needs one query per image position (docs/16-cross-attention.md)",
            ha="center", va="center", fontsize=8.5, color="0.3")

    # ---- the attention matrix (H*W, L) ---------------------------------------------------------
    left, column_width, top, row_height = 3.35, 0.4, 5.2, 0.052
    bottom = top - H * W * row_height
    ax.imshow(weights.numpy(), extent=(left, left + L * column_width, bottom, top), cmap="Purples",
              vmin=0, vmax=0.8, aspect="auto", interpolation="nearest", zorder=1)
    for j in pads:   # masked: no weight at all
        ax.add_patch(Rectangle((left + j * column_width, bottom), column_width, top - bottom,
                               facecolor=PAD_GREY, edgecolor="none", zorder=2))
    for j in range(L + 1):
        ax.plot([left + j * column_width] * 2, [bottom, top], color="white", lw=0.6, zorder=3)
    ax.add_patch(Rectangle((left, bottom), L * column_width, top - bottom, fill=False,
                           edgecolor="0.3", lw=0.8, zorder=3))
    row_y = top - (query + 1) * row_height
    ax.add_patch(Rectangle((left, row_y), L * column_width, row_height, fill=False,
                           edgecolor="#d62728", lw=1.4, zorder=4))
    ax.text(left + L * column_width / 2, bottom - 0.3, f"weights = softmax over the L keys of "
            f"Q K^T / sqrt(d)\n({H * W}, {L}): each row sums to 1", ha="center", va="center",
            fontsize=8.5)
    ax.text(left + (pads[0] + len(pads) / 2) * column_width, (top + bottom) / 2,
            "<pad> keys:\nscore -inf,\nweight 0", ha="center", va="center", fontsize=8,
            color="0.25", zorder=4)

    # ---- the text: tokens, keys and values ----------------------------------------------------
    for j, token in enumerate(tokens):
        x = left + j * column_width
        fill, edge = (PAD_GREY, "0.5") if j in pads else (TEXT_FILL, TEXT_EDGE)
        draw_box(ax, x + 0.02, top + 0.1, column_width - 0.04, 0.34, colour=fill, edge=edge)
        ax.text(x + column_width / 2, top + 0.27, token, ha="center", va="center",
                fontsize=7 if len(token) < 5 else 6.3)
    ax.text(left + L * column_width / 2, top + 0.62, f"L = {L} text tokens of width D = {D} "
            f"(<bos>, words, <eos>, <pad>): keys K = tokens W_k and values V = tokens W_v, "
            f"each ({L}, {C})", ha="center", va="center", fontsize=8.5)
    draw_box(ax, left + 0.2, 6.2, 1.95, 0.5, f"\"{PROMPT}\"", TEXT_FILL, TEXT_EDGE, fontsize=8)
    draw_arrow(ax, (left + 2.15, 6.45), (left + 2.45, 6.45))
    draw_box(ax, left + 2.45, 6.2, 2.15, 0.5, "tokenizer, text transformer\n(CLIP's, frozen)",
             TEXT_FILL, TEXT_EDGE, fontsize=8)
    draw_arrow(ax, (left + 3.5, 6.2), (left + 3.5, top + 0.75))
    ax.text(left + 3.58, 6.09, f"mask: {int(mask.sum())} real, {len(pads)} padding",
            fontsize=7.5, color="0.3", va="center")

    # ---- the image: feature map -> queries ------------------------------------------------------
    map_size, map_x, map_y = 1.6, 0.3, 2.7
    ax.imshow(face, extent=(map_x, map_x + map_size, map_y, map_y + map_size), alpha=0.55,
              zorder=1)
    cell = map_size / W
    for k in range(W + 1):
        ax.plot([map_x + k * cell] * 2, [map_y, map_y + map_size], color="0.3", lw=0.5)
        ax.plot([map_x, map_x + map_size], [map_y + k * cell] * 2, color="0.3", lw=0.5)
    mouth_x, mouth_y = map_x + MOUTH[1] * cell, map_y + map_size - (MOUTH[0] + 1) * cell
    ax.add_patch(Rectangle((mouth_x, mouth_y), cell, cell, fill=False, edgecolor="#d62728",
                           lw=1.6, zorder=3))
    ax.text(map_x + map_size / 2, map_y + map_size + 0.35, f"image features h\n(B, C = {C}, "
            f"H = {H}, W = {W})", ha="center", va="center", fontsize=8.5)
    ax.text(map_x + map_size / 2, map_y - 0.3, f"one token per position:\nH*W = {H * W} queries",
            ha="center", va="center", fontsize=8.5)

    q_x, q_width = 2.55, 0.45
    position_column(ax, q_x, top, q_width, row_height, IMAGE_FILL, "Q", query)
    draw_arrow(ax, (map_x + map_size + 0.05, map_y + map_size / 2), (q_x - 0.05, map_y + 0.8))
    ax.text(2.15, map_y + 1.15, "flatten,\nx W_q", ha="center", va="bottom", fontsize=8)
    draw_arrow(ax, (mouth_x + cell, mouth_y + cell / 2), (q_x, row_y + row_height / 2),
               colour="#d62728", linewidth=0.9, linestyle=":")

    # ---- the highlighted row: the mouth's weights over the tokens -----------------------------
    bar_base, bar_height = 0.5, 0.8
    ax.plot([left, left + L * column_width], [bar_base, bar_base], color="0.3", lw=0.8)
    for j in range(L):
        x = left + j * column_width
        height = bar_height * weights[query, j].item()
        ax.add_patch(Rectangle((x + 0.06, bar_base), column_width - 0.12, height,
                               facecolor=PAD_GREY if j in pads else "#8c6bb1", edgecolor="none"))
        ax.text(x + column_width / 2, bar_base + height + 0.05, f"{weights[query, j]:.2f}",
                ha="center", va="bottom", fontsize=6.8)
    ax.text(left - 0.1, bar_base + 0.3, "the red row\n(the mouth)", ha="right", va="center",
            fontsize=8, color="#d62728")
    ax.text(left + L * column_width / 2, bar_base - 0.15, f"its {L} weights, sum "
            f"{weights[query].sum():.2f}: the mouth's output is mostly the value of \"smiling\"",
            ha="center", va="center", fontsize=8)

    # ---- output = weights V, back to a feature map, residual -----------------------------------
    v_x, v_top, v_width, v_row = 8.2, 4.15, 0.45, 0.13
    ax.text(v_x - 0.17, v_top - L * v_row / 2, "x", ha="center", va="center", fontsize=12)
    token_column(ax, v_x, v_top, v_width, L, v_row, TEXT_FILL, greyed=pads)
    ax.text(v_x + v_width / 2, v_top + 0.15, "V", ha="center", va="center", fontsize=10,
            weight="bold")
    ax.text(v_x + v_width / 2, v_top - L * v_row - 0.15, f"({L}, {C})", ha="center",
            va="center", fontsize=8)
    ax.text(v_x + v_width + 0.22, v_top - L * v_row / 2, "=", ha="center", va="center",
            fontsize=12)
    out_x = v_x + v_width + 0.45
    position_column(ax, out_x, top, q_width, row_height, OUT_FILL, "out", query)

    result_x, result_y, result_size = 9.75, 3.0, 1.05
    draw_arrow(ax, (out_x + q_width + 0.03, result_y + result_size / 2),
               (result_x - 0.03, result_y + result_size / 2))
    small = result_size / W
    for r in range(H):
        for c in range(W):
            ax.add_patch(Rectangle((result_x + c * small, result_y + result_size - (r + 1) * small),
                                   small, small, facecolor=OUT_FILL, edgecolor="white",
                                   linewidth=0.4))
    ax.text(result_x + result_size / 2, result_y + result_size + 0.22, f"reshape:\n(C, {H}, {W})",
            ha="center", va="center", fontsize=8)
    # residual: h + out, the feature map keeps its shape
    plus_x, plus_y = result_x + result_size / 2, 1.55
    ax.add_patch(Circle((plus_x, plus_y), 0.15, facecolor="white", edgecolor="0.25", zorder=3))
    ax.text(plus_x, plus_y, "+", ha="center", va="center", fontsize=12, zorder=4)
    draw_arrow(ax, (plus_x, result_y), (plus_x, plus_y + 0.15))
    turn_x = plus_x - 0.7
    ax.plot([map_x + 0.25, map_x + 0.25, turn_x, turn_x],
            [map_y - 0.55, 0.15, 0.15, plus_y], color="0.25", lw=1.2)
    draw_arrow(ax, (turn_x, plus_y), (plus_x - 0.15, plus_y))
    ax.text(map_x + 0.35, 0.25, "h itself (residual)", fontsize=8, color="0.3")
    draw_arrow(ax, (plus_x, plus_y - 0.15), (plus_x, plus_y - 0.45))
    ax.text(plus_x, plus_y - 0.5, f"h + out\n(B, {C}, {H}, {W}):\nnow it has\nread the text",
            ha="center", va="top", fontsize=8)

    ax.text(10.85, 7.0, "illustrative weights, one head;\nthe code: 4 heads of d = "
            f"{C // 4} and, around\nthis, LayerNorm, self-attention,\nfeed-forward, proj_in/out"
            " (SpatialTransformer)", ha="right", va="top", fontsize=7, color="0.45",
            style="italic")

    save_figure(fig, FIGURES / "cross_attention_tokens.png", dpi=100)


if __name__ == "__main__":
    main()
