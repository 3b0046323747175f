"""Figure for point 16: where three words of one prompt look, read from one cross-attention layer
and drawn on one colour scale shared by all panels. (ldm_attention.png averages every layer and
scales each panel to its own maximum, so it compares positions, never words.)

    make demo                                            # writes runs/demo/ldm
    python -m docs.figures.attention_words --ckpt runs/demo/ldm/checkpoint.pt

writes docs/figures/attention_words.png: one row per seed (0..2), the image and then one panel per
word. A panel is the weight that each latent position of the layer gives the word: the
conditional branch, the mean over heads and over the sampling steps, at the layer's own
resolution, shown as blocks over the image (no smoothing). At each position the weights over the
prompt's tokens sum to 1, so on the shared scale a bright block is a position that gives that
word a large share of its attention, and the panels compare the words with each other.

Which layer: all cross-attention layers are recorded in the same sampling run, each at its own
resolution. `--layer auto` (the default) takes the layer whose
maps of the three words vary most across positions (the largest coefficient of variation, the
mean over images and words); the script prints that measure for every layer. Early in training
most layers give every position much the same weights, which is why ldm_attention.png, the mean
of all layers, is flat for the demo's model.
"""

import argparse

import matplotlib.pyplot as plt
import torch

from docs.figures.common import (FIGURES, compact_png, load_text_model, sample_text_to_image,
                                 sampler_name)
from models.attention import AttentionRecorder, SpatialTransformer


class PerLayer:
    """The mean attention weights of every cross-attention layer, each at its own resolution, from
    one sampling run: diffusion.pipeline.generate calls collect(rows) after every model call.
    (models.attention.AttentionRecorder switches the recording on; its own maps() would resize
    every layer to the latent grid and average the layers.)"""

    def __init__(self, unet: torch.nn.Module, batch: int):
        self.names = [name for name, m in unet.named_modules() if isinstance(m, SpatialTransformer)]
        self.layers = AttentionRecorder(unet, batch, (1, 1)).layers  # record = True on each
        self.totals, self.count = [0.0] * len(self.layers), 0

    def collect(self, rows: slice) -> None:
        for i, layer in enumerate(self.layers):
            weights = layer.last_weights[rows].float().mean(1)      # (B, h_l*w_l, L) mean of heads
            self.totals[i] = self.totals[i] + weights
        self.count += 1

    def maps(self, i: int) -> torch.Tensor:
        """(B, L, h_l, w_l): layer i's weights, the mean over heads and steps."""
        mean = self.totals[i] / self.count                           # (B, h_l*w_l, L)
        B, positions, L = mean.shape
        side = round(positions ** 0.5)                               # square latents: h_l = w_l
        return mean.transpose(1, 2).reshape(B, L, side, side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="runs/demo/ldm/checkpoint.pt")
    parser.add_argument("--prompt", default="a photo of a bald man with glasses and a beard")
    parser.add_argument("--words", nargs=3, default=["bald", "glasses", "beard"])
    parser.add_argument("--layer", default="auto",
                        help="auto, or the index of a cross-attention layer in the UNet's order")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(FIGURES / "attention_words.png"))
    args = parser.parse_args()

    pipe = load_text_model(args.ckpt)
    tokens = pipe.text.tokenizer.tokens(args.prompt)                 # <bos> words <eos>
    missing = [w for w in args.words if w not in tokens]
    if missing:
        raise SystemExit(f"error: --words {' '.join(missing)}: not tokens of {args.prompt!r} "
                         f"({' '.join(tokens)})")
    word_ids = [tokens.index(word) for word in args.words]
    seeds = list(range(args.seeds))
    per_layer = PerLayer(pipe.unet, len(seeds))
    if args.layer != "auto" and not (args.layer.isdigit() and int(args.layer) < len(per_layer.names)):
        raise SystemExit(f"error: --layer {args.layer}: expected auto or 0..{len(per_layer.names) - 1}")
    images = sample_text_to_image(pipe, [args.prompt] * len(seeds), seeds,
                                  pipe.config["guidance"], recorder=per_layer)

    maps, spread = [], []
    for i, name in enumerate(per_layer.names):
        m = per_layer.maps(i)[:, word_ids]                           # (B, 3, h_l, w_l)
        maps.append(m)
        spread.append((m.std((2, 3)) / m.mean((2, 3))).mean().item())   # coefficient of variation
        print(f"layer {len(maps) - 1} {name:22s} {m.shape[-1]}x{m.shape[-1]} positions, "
              f"spread of the words' maps {spread[-1]:.3f}")
    layer = max(range(len(maps)), key=spread.__getitem__) if args.layer == "auto" else int(args.layer)
    picked = maps[layer]                                             # (B, 3, h_l, w_l)
    top = picked.max().item()                                        # the one shared scale
    print(f"drawing layer {layer} ({per_layer.names[layer]}); largest weight {top:.3f}")

    S = images.shape[-1]
    fig, axes = plt.subplots(len(seeds), 4, figsize=(6.0, 1.45 * len(seeds) + 0.5), squeeze=False,
                             layout="constrained")
    for r in range(len(seeds)):
        picture = ((images[r].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
        axes[r, 0].imshow(picture)
        axes[r, 0].set_ylabel(f"seed {seeds[r]}", fontsize=8)
        for c, word in enumerate(args.words):
            axes[r, c + 1].imshow(picture)
            shown = axes[r, c + 1].imshow(picked[r, c].numpy(), cmap="magma", alpha=0.7, vmin=0,
                                          vmax=top, extent=(-0.5, S - 0.5, S - 0.5, -0.5),
                                          interpolation="nearest")
            if r == 0:
                axes[r, c + 1].set_title(f'"{word}"', fontsize=9)
    axes[0, 0].set_title("image", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(shown, ax=axes, shrink=0.8, label="share of the position's attention")
    side = picked.shape[-1]
    fig.suptitle(f'"{args.prompt}"\ncross-attention layer {layer} ({per_layer.names[layer]}, '
                 f"{side}x{side} positions), {sampler_name(pipe)}, guidance "
                 f"{pipe.config['guidance']:g}", fontsize=8)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    compact_png(args.out)


if __name__ == "__main__":
    main()
