"""How well a CLIP model matches images and captions: zero-shot attributes, retrieval, heatmap. [P15]

Zero-shot attribute accuracy. For an image with attribute row r and an attribute a, build two
rows equal to r except that a is present in one and absent in the other, and write each as its
full caption (data/captions.full_caption: every present feature, in a fixed order):

    a = Eyeglasses:  "a photo of a clean-shaven man with a smile, glasses and black hair"
                     "a photo of a clean-shaven man with a smile and black hair"

The prediction is "a present" when the image is closer to the first caption; it is right when
the label says so. Accuracy counts right predictions over all images; balanced accuracy is the
mean of the rates on images with and without a, which stays at 0.5 for a model that ignores a
however rare a is.

Retrieval within batches. Held-out images and their full captions are cut into batches of N
(64 by default); within a batch each image ranks the N captions and each caption the N images.
Attribute captions repeat: two images with the same features have the same full caption. So a
retrieved caption (or image) counts as right when its full caption equals the query's, i.e. when
it describes the same set of features; for datasets with free text, when the texts are equal.
Top-k is right when any of the k best is right. The chance level is the mean fraction of right
candidates in a batch (the top-1 rate of a random ranking).
"""

import torch

from data.captions import full_caption, nameable_attributes
from models.clip import CLIP
from models.tokenizer import Tokenizer


@torch.no_grad()
def embed_texts(clip: CLIP, tokenizer: Tokenizer, texts: list[str], device,
                batch_size: int = 512) -> torch.Tensor:
    """Texts -> unit vectors (N, E); each distinct text is encoded once."""
    unique = list(dict.fromkeys(texts))
    vectors = []
    for start in range(0, len(unique), batch_size):
        ids, mask = tokenizer(unique[start:start + batch_size], warn_unknown=False)
        vectors.append(clip.encode_text(ids.to(device), mask.to(device)).float())
    table = torch.cat(vectors)                                        # (unique, E)
    index = {text: i for i, text in enumerate(unique)}
    return table[torch.tensor([index[t] for t in texts], device=table.device)]  # (N, E)


@torch.no_grad()
def embed_latents(clip: CLIP, z: torch.Tensor, device, batch_size: int = 256) -> torch.Tensor:
    """Scaled latents (N, C, h, w) -> unit vectors (N, E)."""
    return torch.cat([clip.encode_latents(z[i:i + batch_size].to(device).float()).float()
                      for i in range(0, len(z), batch_size)])


def row_dict(names: list[str], row) -> dict[str, bool]:
    return {name: float(value) > 0 for name, value in zip(names, row)}


@torch.no_grad()
def zero_shot_accuracy(clip: CLIP, tokenizer: Tokenizer, image_vectors: torch.Tensor,
                       attributes: torch.Tensor, names: list[str]) -> dict[str, dict]:
    """Per attribute: accuracy, balanced accuracy and counts of the with/without comparison.
    image_vectors (N, E) unit vectors; attributes (N, A) labels > 0 = present."""
    device = image_vectors.device
    rows = [row_dict(names, row) for row in attributes.tolist()]
    results = {}
    for a in nameable_attributes(names):
        with_a = [full_caption({**row, a: True}) for row in rows]
        without_a = [full_caption({**row, a: False}) for row in rows]
        # cos(image, caption with a) - cos(image, caption without a) > 0  <=>  predict "present"
        margin = ((image_vectors * embed_texts(clip, tokenizer, with_a, device)).sum(-1)
                  - (image_vectors * embed_texts(clip, tokenizer, without_a, device)).sum(-1))
        truth = attributes[:, names.index(a)].to(device) > 0           # (N,)
        predicted = margin > 0
        right = predicted == truth
        rates = [right[truth].float().mean().item() if truth.any() else float("nan"),
                 right[~truth].float().mean().item() if (~truth).any() else float("nan")]
        results[a] = {"accuracy": right.float().mean().item(),
                      "balanced_accuracy": sum(rates) / 2, "true_positive_rate": rates[0],
                      "true_negative_rate": rates[1], "present": int(truth.sum()),
                      "images": len(truth)}
    return results


def caption_keys(attributes: torch.Tensor | None, names: list[str] | None,
                 texts: list[str] | None) -> list[str]:
    """What a retrieved item must share with the query to count as right: the full caption (the
    set of features it names) for attribute rows, else the text itself."""
    if attributes is not None:
        return [full_caption(row_dict(names, row)) for row in attributes.tolist()]
    return list(texts)


@torch.no_grad()
def retrieval_accuracy(image_vectors: torch.Tensor, text_vectors: torch.Tensor, keys: list[str],
                       batch_size: int = 64, ks: tuple = (1, 5)) -> dict[str, float]:
    """Top-k retrieval in both directions within consecutive batches of batch_size pairs.
    image_vectors, text_vectors (N, E) unit vectors, pair i = (image i, caption i); keys (N,)."""
    hits = {f"{d}_top{k}": [] for d in ("image_to_text", "text_to_image") for k in ks}
    chance = []
    for start in range(0, len(keys) - batch_size + 1, batch_size):   # whole batches only
        stop = start + batch_size
        similarity = image_vectors[start:stop] @ text_vectors[start:stop].T  # (n, n) row = image
        batch_keys = keys[start:stop]
        same = torch.tensor([[ki == kj for kj in batch_keys] for ki in batch_keys],
                            device=similarity.device)                  # (n, n) symmetric
        chance.append(same.float().mean(1))
        for direction, scores in (("image_to_text", similarity), ("text_to_image", similarity.T)):
            order = scores.argsort(dim=1, descending=True)               # (n, n) best first
            right = same.gather(1, order)                               # (n, n) is the j-th best right
            for k in ks:
                hits[f"{direction}_top{k}"].append(right[:, :k].any(1).float())
    if not chance:
        raise ValueError(f"retrieval needs at least {batch_size} pairs, got {len(keys)}")
    result = {name: torch.cat(values).mean().item() for name, values in hits.items()}
    result["chance_top1"] = torch.cat(chance).mean().item()
    result["pairs"] = len(chance) * batch_size
    return result



def plot_similarity(similarity: torch.Tensor, images: torch.Tensor, captions: list[str],
                    path, title: str = "") -> None:
    """Heatmap of an (n, n) cosine-similarity matrix, rows = captions, columns = images, with
    each image drawn above its column. images (n, 3, H, W) in [-1, 1]."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = similarity.shape[0]
    values = similarity.float().cpu()
    fig, ax = plt.subplots(figsize=(0.5 * n + 7.5, 0.5 * n + 1.8))
    shown = ax.imshow(values.numpy(), cmap="viridis", extent=(-0.5, n - 0.5, n - 0.5, -0.5))
    thumbs = ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    for j in range(n):  # image j above column j
        ax.imshow(thumbs[j], extent=(j - 0.48, j + 0.48, -0.6, -1.56))
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=5,
                    color="black" if values[i, j] > values.min() + 0.7 * (values.max() - values.min())
                    else "white")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -1.6)
    ax.set_yticks(range(n), [c if len(c) <= 90 else c[:87] + "..." for c in captions], fontsize=6)
    ax.set_xticks(range(n), [str(j) for j in range(n)], fontsize=6)
    ax.set_xlabel("held-out image")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.colorbar(shown, ax=ax, fraction=0.03, pad=0.02, label="cosine similarity")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_zero_shot(results: dict[str, dict], path, title: str = "") -> None:
    """Bar chart of zero-shot accuracy and balanced accuracy per attribute."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names) + 2), 3.6))
    x = torch.arange(len(names)).numpy()
    ax.bar(x - 0.2, [results[n]["accuracy"] for n in names], 0.4, label="accuracy")
    ax.bar(x + 0.2, [results[n]["balanced_accuracy"] for n in names], 0.4,
           label="balanced accuracy")
    ax.axhline(0.95, color="black", lw=0.8, ls="--", label="goal: 95%")
    ax.axhline(0.5, color="gray", lw=0.8, ls=":", label="chance (balanced)")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("zero-shot")
    ax.legend(fontsize=7, loc="lower left")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
