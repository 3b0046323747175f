"""Pictures of a run: the loss curves, and cross-attention maps per word (image grids:
common/images.py)."""

import textwrap
from pathlib import Path

import torch
import torch.nn.functional as F


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt
    return plt


def plot_metrics(rows: list[dict], path: str | Path) -> None:
    """One panel per metric of metrics.jsonl's rows against the step (log scale for losses)."""
    names = sorted({k for row in rows for k in row if k not in ("step", "time")})
    if not names:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(len(names), 1, figsize=(6, 2.2 * len(names)), sharex=True,
                             squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        points = [(r["step"], r[name]) for r in rows if name in r]
        ax.plot(*zip(*points), lw=1)
        ax.set_ylabel(name)
        if name.startswith("loss") and all(v > 0 for _, v in points):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def attention_figure(images: torch.Tensor, maps: torch.Tensor, prompts: list[str],
                     tokens: list[list[str]]):
    """[P16] One row per prompt: the image, then each token's cross-attention map over it.
    images (P, 3, H, W) in [-1, 1]; maps (P, L, h, w) from models.attention.AttentionRecorder;
    tokens: each prompt's tokens as the text encoder reads them (Tokenizer.tokens).
    The prompt is written above its image, wrapped to the image's width. Returns the figure."""
    plt = _pyplot()
    rows = list(enumerate(tokens))
    cols = 1 + max(len(words) for _, words in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols, 1.6 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (i, words) in enumerate(rows):
        picture = ((images[i].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()  # (H, W, 3)
        axes[r, 0].imshow(picture)
        axes[r, 0].set_title(textwrap.fill(prompts[i], 26, max_lines=3, placeholder=" ..."),
                             fontsize=6)
        for j, word in enumerate(words):
            heat = F.interpolate(maps[i, j][None, None], size=picture.shape[:2], mode="bilinear",
                                 align_corners=False)[0, 0]                       # (H, W)
            axes[r, j + 1].imshow(picture)
            axes[r, j + 1].imshow((heat / heat.max().clamp(min=1e-8)).numpy(), cmap="jet",
                                  alpha=0.5, vmin=0, vmax=1)
            axes[r, j + 1].set_title(word, fontsize=7)
    fig.tight_layout()
    return fig


def save_attention_figure(path: Path, images: torch.Tensor, maps: torch.Tensor, prompts: list[str],
                          tokens: list[list[str]]) -> None:
    """Write attention_figure(images, maps, prompts, tokens) to path."""
    fig = attention_figure(images, maps, prompts, tokens)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
