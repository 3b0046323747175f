"""Diagram for point 14: a caption becomes a sequence of token vectors, and also one flat vector.

    python -m docs.figures.text_tokens

writes docs/figures/text_tokens.png, a picture of the idea. From the top:
- the caption, split into words by models.tokenizer.split_words and framed by <bos> and <eos>,
  then padded with <pad> to the batch's longest caption (two pads here);
- the ids of a Tokenizer built with Tokenizer.build from the captions of 2000 synthetic rows
  (data.captions.caption, one per row); a trained model's tokenizer gives other numbers;
- the token embedding plus the position embedding: one D-wide column per token (L, D);
- the transformer blocks, in which every token reads every real token (the padding is masked);
- the hidden states, one vector per token (L, D): what the UNet's cross-attention reads as keys
  and values (point 16), so each image position can take the words it needs;
- their mean over the real tokens, one D-wide vector: the "one flat vector" of the video, which
  CLIP's loss compares with an image's vector (point 15).
Each column stands for one D-wide vector (D = 128 with the cpu preset): six cells are drawn, not D.
"""

import random

from data.captions import caption
from data.synthetic import sample_attributes
from docs.figures.common import FIGURES, KIND_COLOURS, diagram_axes, draw_arrow, draw_box, save_figure
from models.tokenizer import BOS, EOS, PAD, Tokenizer, split_words

PROMPT = "a photo of a bald man with glasses"
PADS = 2                       # <pad> tokens: a longer caption in the batch sets its length
TEXT_FILL, TEXT_EDGE = KIND_COLOURS["text"]
UNET_FILL, UNET_EDGE = KIND_COLOURS["unet"]
IMAGE_FILL, IMAGE_EDGE = KIND_COLOURS["image"]
PAD_GREY = "#c8c8c8"


def synthetic_tokenizer(rows: int = 2000) -> Tokenizer:
    """A Tokenizer built from one caption of each of `rows` synthetic attribute rows."""
    captions = [caption(sample_attributes(random.Random(i)), random.Random(i))
                for i in range(rows)]
    return Tokenizer.build(captions)


def vector_column(ax, x: float, y: float, width: float, height: float, fill: str, edge: str,
                  cells: int = 6) -> None:
    """One D-wide vector drawn as a column of `cells` cells, lower-left corner at (x, y)."""
    for k in range(cells):
        draw_box(ax, x, y + k * height / cells, width, height / cells, colour=fill, edge=edge)


def main() -> None:
    tokenizer = synthetic_tokenizer()
    tokens = [BOS, *split_words(PROMPT), EOS] + [PAD] * PADS
    ids = tokenizer([PROMPT])[0][0].tolist() + [0] * PADS        # <pad> is id 0
    L = len(tokens)

    fig, ax = diagram_axes(11.0, 6.2)
    step, left, box_w = 0.58, 1.45, 0.53                          # token pitch and box width
    centres = [left + i * step + box_w / 2 for i in range(L)]
    right = centres[-1] + box_w / 2

    # the caption
    ax.text(centres[0] - box_w / 2, 5.85, f'caption: "{PROMPT}"', fontsize=11, va="center")
    ax.text(0.1, 5.2, "tokens", fontsize=9, va="center")
    ax.text(0.1, 4.8, "ids", fontsize=9, va="center")
    for i, (token, token_id) in enumerate(zip(tokens, ids)):
        fill, edge = (PAD_GREY, "0.5") if token == PAD else (TEXT_FILL, TEXT_EDGE)
        draw_box(ax, centres[i] - box_w / 2, 5.02, box_w, 0.36, token, colour=fill, edge=edge,
                 fontsize=7.5 if len(token) > 5 else 8.5)
        ax.text(centres[i], 4.8, str(token_id), ha="center", va="center", fontsize=8,
                color="0.45" if token == PAD else "0.1")
    ax.text(right + 0.15, 5.2, "Tokenizer: one id per word,\n<bos>/<eos> around it,\n<pad> to "
            "the batch's length", fontsize=8, va="center")

    # token + position embeddings, one column per token
    col_w, col_h, emb_y = 0.3, 0.95, 3.55
    for i, token in enumerate(tokens):
        fill, edge = (PAD_GREY, "0.5") if token == PAD else (TEXT_FILL, TEXT_EDGE)
        draw_arrow(ax, (centres[i], 4.66), (centres[i], emb_y + col_h + 0.04), linewidth=0.8)
        vector_column(ax, centres[i] - col_w / 2, emb_y, col_w, col_h, fill, edge)
    ax.text(0.1, emb_y + col_h / 2, "token +\nposition\nembedding", fontsize=9, va="center")
    ax.text(right + 0.15, emb_y + col_h / 2, "(L, D): a learned row of the\n(V, D) table per "
            "id, plus a\nlearned vector per position", fontsize=8, va="center")

    # the transformer
    draw_box(ax, centres[0] - box_w / 2, 2.75, right - centres[0] + box_w / 2, 0.55,
             "transformer blocks: every token reads every real token (the <pad> keys are masked)",
             colour="#f6dcc8", edge=TEXT_EDGE, fontsize=9)
    draw_arrow(ax, ((left + right) / 2, emb_y - 0.02), ((left + right) / 2, 3.32))

    # the hidden states
    hid_y = 1.45
    for i, token in enumerate(tokens):
        fill, edge = (PAD_GREY, "0.5") if token == PAD else ("#f3c9a4", TEXT_EDGE)
        draw_arrow(ax, (centres[i], 2.73), (centres[i], hid_y + col_h + 0.04), linewidth=0.8)
        vector_column(ax, centres[i] - col_w / 2, hid_y, col_w, col_h, fill, edge)
    ax.text(0.1, hid_y + col_h / 2, "hidden\nstates", fontsize=9, va="center")

    # output 1: the sequence, to cross-attention
    draw_box(ax, right + 0.25, hid_y + 0.05, 2.3, col_h - 0.1,
             "a sequence, (L, D):\nkeys and values of the\nUNet's cross-attention;\neach "
             "image position\ntakes the words it needs\n(page 16)",
             colour=UNET_FILL, edge=UNET_EDGE, fontsize=8)
    draw_arrow(ax, (right + 0.03, hid_y + col_h / 2), (right + 0.23, hid_y + col_h / 2))

    # output 2: the mean over the real tokens, one flat vector
    real = [i for i, token in enumerate(tokens) if token != PAD]
    bracket_y = hid_y - 0.12
    ax.plot([centres[real[0]], centres[real[0]], centres[real[-1]], centres[real[-1]]],
            [bracket_y + 0.06, bracket_y, bracket_y, bracket_y + 0.06], color=TEXT_EDGE, lw=1)
    mid = (centres[real[0]] + centres[real[-1]]) / 2
    ax.text(mid + 0.1, bracket_y - 0.2, "mean over the real tokens", fontsize=8, va="center")
    pooled_h = 0.6
    draw_arrow(ax, (mid, bracket_y), (mid, 0.12 + pooled_h + 0.04))
    vector_column(ax, mid - col_w / 2, 0.12, col_w, pooled_h, "#f3c9a4", TEXT_EDGE, cells=4)
    draw_box(ax, mid + 0.45, 0.11, 4.3, 0.62,
             "one flat vector, (D,): what CLIP's loss compares with an image's\nvector (page 15);"
             " as the UNet's only text, every layer would get\nthe same summary",
             colour=IMAGE_FILL, edge=IMAGE_EDGE, fontsize=8)
    draw_arrow(ax, (mid + col_w / 2 + 0.04, 0.42), (mid + 0.43, 0.42))
    save_figure(fig, FIGURES / "text_tokens.png", dpi=110)


if __name__ == "__main__":
    main()
