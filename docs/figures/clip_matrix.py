"""Diagram for point 15: CLIP's N x N similarity matrix and its symmetric cross-entropy.

    python -m docs.figures.clip_matrix

writes docs/figures/clip_matrix.png, a picture of the idea rather than of a trained model. Top:
the two towers of models/clip.py, N captions through the text transformer and N images through
the frozen autoencoder's encoder and the image head, each ending in unit vectors of width E.
Middle: the N x N matrix of cosines cos(image i, caption j) for N = 6, whose diagonal holds the
matching pairs; the logits are these cosines times exp(t). Right of it the cross-entropy of each
row (image -> text), below it that of each column (text -> image); clip_loss is their mean.

The cosines come from a closed form, not from a trained model: each vector is the normalised
0/1 vector of the features the face has (image) or the caption names (text), so
cos = shared features / sqrt(features of the face * features named by the caption). Captions 2
and 5 are the same text, which happens in real batches too: clip_loss has no special case for it,
so the cell (2, 5) counts as a wrong pair however well it matches (a false negative).
"""

import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle
from PIL import Image

from data.captions import features
from data.synthetic import SYNTHETIC_ATTRIBUTES, draw_face
from docs.figures.common import (FIGURES, script_defaults, KIND_COLOURS, diagram_axes, draw_arrow, draw_box,
                                 save_figure)
from models.clip import INIT_LOGIT_SCALE, MAX_LOGIT_SCALE, clip_loss

# Six faces (their present attributes) and the caption each comes with in the batch. The caption
# names some of the face's features ("named"), never an absent one, as data/captions.py does.
PAIRS = [  # (attributes of the face, caption, the features the caption names)
    ({"Smiling", "Blond_Hair"}, "a photo of a smiling woman with blond hair",
     {"Female", "Smiling", "Blond_Hair"}),
    ({"Male", "Black_Hair", "Beard"}, "a photo of a man with a beard", {"Male", "Beard"}),
    ({"Male", "Bald", "Eyeglasses"}, "a photo of a bald man with glasses",
     {"Male", "Bald", "Eyeglasses"}),
    ({"Brown_Hair", "Wearing_Hat", "Smiling"}, "a picture of a woman wearing a hat",
     {"Female", "Wearing_Hat"}),
    ({"Male", "Gray_Hair", "Beard", "Mustache"}, "a photo of a man with a beard", {"Male", "Beard"}),
    ({"Black_Hair", "Bangs", "Wearing_Lipstick"}, "a portrait of a woman with black hair and bangs",
     {"Female", "Black_Hair", "Bangs"}),
]
FACE_SEEDS = [11, 4, 7, 2, 9, 5]   # jitter and colours of each drawn face


def attribute_row(present: set[str]) -> dict[str, bool]:
    """A full row of the synthetic attributes; "Beard" stands for No_Beard = False."""
    row = {name: name in present for name in SYNTHETIC_ATTRIBUTES}
    row["No_Beard"] = "Beard" not in present
    return row


def feature_set(row: dict[str, bool]) -> set[str]:
    """What an image shows: its caption features (data/captions.py) and its noun."""
    return set(features(row)) | {"Male" if row["Male"] else "Female"}


def unit_vectors(sets: list[set[str]], vocabulary: list[str]) -> torch.Tensor:
    """Feature sets -> (N, len(vocabulary)) rows of 0/1, each scaled to length 1."""
    rows = torch.tensor([[float(name in s) for name in vocabulary] for s in sets])
    return F.normalize(rows, dim=-1)


def main() -> None:
    cfg = script_defaults("train_clip")                                  # the defaults of train_clip.py
    rows = [attribute_row(present) for present, _, _ in PAIRS]
    image_sets = [feature_set(row) for row in rows]
    text_sets = [named for _, _, named in PAIRS]
    vocabulary = sorted(set().union(*image_sets, *text_sets))
    images = unit_vectors(image_sets, vocabulary)   # I (N, F): stand-ins for encode_latents
    texts = unit_vectors(text_sets, vocabulary)     # T (N, F): stand-ins for encode_text
    cosine = images @ texts.T                       # (N, N) cos(image i, caption j)
    scale = INIT_LOGIT_SCALE                        # exp(t) at the start: 1 / 0.07
    logits = scale * cosine                         # what CLIP.forward returns
    labels = torch.arange(len(PAIRS))
    row_ce = F.cross_entropy(logits, labels, reduction="none")       # image i -> its caption
    column_ce = F.cross_entropy(logits.T, labels, reduction="none")  # caption j -> its image
    loss = clip_loss(logits)                        # (row_ce.mean() + column_ce.mean()) / 2
    N = len(PAIRS)

    fig, ax = diagram_axes(11.0, 7.7)
    ax.text(5.5, 7.45, "CLIP: N captions and N images, an N x N matrix of similarities, "
            "cross-entropy along rows and down columns", ha="center", va="center", fontsize=12,
            weight="bold")

    # ---- the two towers ------------------------------------------------------------------------
    tower_boxes = [  # (y, kind, box texts, output)
        (6.55, "text", ["N captions (text)", "tokenizer: ids, mask\n<bos> words <eos> <pad>",
                           f"text transformer\n{cfg.text_layers} blocks, width D = {cfg.text_width}",
                           "mean over the real\ntokens, W_text"],
         f"T: (N, E = {cfg.embed_dim})\nunit rows"),
        (5.8, "image", ["N images (3, 128, 128)", "frozen autoencoder\nencoder: latents (3, 32, 32)",
                          "image head: convs,\nmean over positions", "W_image"],
         f"I: (N, E = {cfg.embed_dim})\nunit rows"),
    ]
    widths = [1.55, 1.85, 1.85, 1.45]
    for y, kind, texts, output in tower_boxes:
        x = 0.2
        for text, width in zip(texts, widths):
            draw_box(ax, x, y, width, 0.6, text, *KIND_COLOURS[kind], fontsize=8.5)
            draw_arrow(ax, (x + width, y + 0.3), (x + width + 0.22, y + 0.3))
            x += width + 0.22
        draw_box(ax, x, y, 1.65, 0.6, "normalise\n" + output, colour="#fff6dc", fontsize=8.5)
    draw_arrow(ax, (9.3, 6.85), (9.55, 6.62))
    draw_arrow(ax, (9.3, 6.1), (9.55, 6.33))
    draw_box(ax, 9.55, 6.1, 1.3, 0.75, "logits =\nexp(t) I T^T\n(N, N)", colour="#fde7b0",
             fontsize=9)

    # ---- the matrix ----------------------------------------------------------------------------
    cell, left, top = 0.56, 1.15, 5.05
    bottom = top - N * cell
    ax.imshow(cosine.numpy(), extent=(left, left + N * cell, bottom, top), cmap="Blues",
              vmin=-0.15, vmax=1.25, interpolation="nearest", zorder=1)
    for i in range(N):
        for j in range(N):
            x, y = left + j * cell, top - (i + 1) * cell
            ax.add_patch(Rectangle((x, y), cell, cell, fill=False, edgecolor="white", lw=1))
            ax.text(x + cell / 2, y + cell / 2, f"{cosine[i, j]:.2f}", ha="center", va="center",
                    fontsize=8.5, color="white" if cosine[i, j] > 0.6 else "0.15", zorder=3)
        ax.add_patch(Rectangle((left + i * cell, top - (i + 1) * cell), cell, cell, fill=False,
                               edgecolor="#d62728", lw=2.2, zorder=4))  # the matching pair
        ax.text(left + (i + 0.5) * cell, top + 0.12, f"T{i + 1}", ha="center", fontsize=9,
                weight="bold")
        face = draw_face(rows[i], size=64, seed=FACE_SEEDS[i]).convert("RGB")
        face = face.resize((48, 48), Image.Resampling.BICUBIC)
        y = top - (i + 1) * cell + 0.03
        ax.imshow(face, extent=(left - 0.56, left - 0.06, y, y + 0.5), zorder=2)
        ax.text(left - 0.62, y + 0.25, f"I{i + 1}", ha="right", va="center", fontsize=9,
                weight="bold")
    ax.text(left + N * cell / 2, top + 0.38, "captions (text tower)", ha="center", fontsize=9)
    ax.text(0.18, top - N * cell / 2, "images (image tower)", rotation=90, ha="center",
            va="center", fontsize=9)

    # cross-entropy of each row (right) and of each column (below)
    ce_x = left + N * cell + 0.45
    ax.text(ce_x, top + 0.3, "row CE", ha="center", fontsize=9, weight="bold")
    ax.text(ce_x, top + 0.1, "image -> text", ha="center", fontsize=7.5, color="0.3")
    for i in range(N):
        ax.text(ce_x, top - (i + 0.5) * cell, f"{row_ce[i]:.2f}", ha="center", va="center",
                fontsize=9)
    ax.text(left - 0.1, bottom - 0.25, "column CE", ha="right", va="center", fontsize=9,
            weight="bold")
    ax.text(left - 0.1, bottom - 0.45, "text -> image", ha="right", va="center", fontsize=7.5,
            color="0.3")
    for j in range(N):
        ax.text(left + (j + 0.5) * cell, bottom - 0.3, f"{column_ce[j]:.2f}", ha="center",
                va="center", fontsize=9)

    # ---- captions and how to read it ------------------------------------------------------------
    notes_x = 5.6
    ax.text(notes_x, 5.2, "the batch's captions", fontsize=9.5, weight="bold")
    for j, (_, caption, _) in enumerate(PAIRS):
        ax.text(notes_x, 4.9 - 0.27 * j, f"T{j + 1}  \"{caption}\"", fontsize=9, va="center",
                color="#b03030" if j in (1, 4) else "0.1")
    notes = [
        "cell (i, j) = cos(I_i, T_j); logits = exp(t) * cos, exp(t) = 1/0.07 = "
        f"{scale:.1f} at the start\n(learned, clamped to at most {MAX_LOGIT_SCALE:.0f})",
        "row i: softmax over the N captions, target T_i (the red diagonal cell):\n"
        "    row CE = -log softmax(row i)[i]",
        "column j: softmax over the N images, target I_j:\n"
        "    column CE = -log softmax(column j)[j]",
        f"clip_loss = (mean row CE + mean column CE) / 2 = ({row_ce.mean():.2f} + "
        f"{column_ce.mean():.2f}) / 2 = {loss:.2f}",
        "T2 and T5 are the same text: clip_loss has no special case for it.\n"
        "Cells (2, 5) and (5, 2) still count as wrong pairs (false negatives),\n"
        "and since T2 = T5 exactly, the CE of rows 2 and 5 is at least log 2 = 0.69.",
    ]
    y = 3.15
    for note in notes:
        ax.text(notes_x, y, note, fontsize=8.5, va="top", linespacing=1.35)
        y -= 0.21 * (note.count("\n") + 1) + 0.13

    ax.text(10.85, 0.12, f"illustrative: unit vectors of the features each face has / each caption "
            f"names, so cos = shared / sqrt(|face| |caption|); a trained CLIP learns its own "
            f"(N = {cfg.batch_size} by default)", ha="right", va="bottom", fontsize=7,
            color="0.45", style="italic")

    save_figure(fig, FIGURES / "clip_matrix.png", dpi=100)


if __name__ == "__main__":
    main()
