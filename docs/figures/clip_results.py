"""Figures for point 15: how well a trained CLIP matches held-out images and captions.

    python train_vae.py --preset cpu                     # writes runs/vae_cpu and its latent cache
    python train_clip.py --preset cpu                    # writes runs/clip_cpu
    python -m docs.figures.clip_results --run runs/clip_cpu

writes two files into --out-dir (docs/figures by default):

clip_similarity.png: the cosine similarity of the first 16 held-out images with the full captions
(data/captions.full_caption) of the same 16, as a heatmap (models/clip_eval.plot_similarity).
Rows are captions, columns images, and each image is drawn above its column as the autoencoder
decodes its cached latent. A trained model puts the largest value of each row and column on the
diagonal, except where two images share a feature set and so have the same caption.

clip_zero_shot.png: zero-shot accuracy and balanced accuracy per attribute on the first 1024
held-out images (models/clip_eval.zero_shot_accuracy: is the image closer to its full caption with
the attribute or without it?), as a bar chart (models/clip_eval.plot_zero_shot).

Everything comes from RUN/checkpoint.pt (models.clip.load_clip: the CLIP, its tokenizer and the
frozen autoencoder) and the held-out latent cache next to the autoencoder's checkpoint that the
run's config names (<vae folder>/latents_val.pt, written by train_vae.py). These are the
evaluations train_clip.py runs at its end, redrawn from the saved files alone.
"""

import argparse
from pathlib import Path

import torch

from common.errors import DataError
from data.latents import load_latents
from docs.figures.common import FIGURES, compact_png
from models.clip import load_clip
from models.clip_eval import (caption_keys, embed_latents, embed_texts, plot_similarity,
                              plot_zero_shot, zero_shot_accuracy)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/clip_cpu", help="a train_clip.py --out folder")
    parser.add_argument("--pairs", type=int, default=16, help="held-out pairs in the heatmap")
    parser.add_argument("--zero-shot-images", type=int, default=1024,
                        help="held-out images for the zero-shot accuracy")
    parser.add_argument("--out-dir", default=str(FIGURES), help="where the two PNGs go")
    args = parser.parse_args()

    checkpoint_path = Path(args.run) / "checkpoint.pt"
    loaded = load_clip(checkpoint_path)                       # models in eval mode, on the CPU
    clip, tokenizer, vae = loaded.clip, loaded.tokenizer, loaded.vae
    scale_factor = loaded.scale_factor
    step = loaded.step
    try:
        held_out = load_latents(loaded.config["vae"], "val", scale_factor)
    except DataError as error:  # no latent cache, or another autoencoder's
        raise SystemExit(f"error: {error}") from None
    names, attributes = held_out["attribute_names"], held_out["attributes"]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # ---- Heatmap: the first `pairs` held-out images against their own captions ---------------
    n = min(args.pairs, len(held_out["mean"]))
    z = held_out["mean"][:n].float()                          # (n, C, h, w) posterior means
    keys = caption_keys(attributes[:n] if attributes is not None else None, names,
                        held_out["texts"][:n] if held_out["texts"] is not None else None)
    similarity = (embed_latents(clip, z * scale_factor, "cpu")
                  @ embed_texts(clip, tokenizer, keys, "cpu").T)  # (n, n) row = image, col = text
    images = vae.decode(z)                                    # (n, 3, H, W), clamped when drawn
    diagonal_best = (similarity.T.argmax(dim=1) == torch.arange(n)).float().mean().item()
    path = out_dir / "clip_similarity.png"
    plot_similarity(similarity.T, images, keys, path,
                    title=f"{args.run}, step {step}: cosine similarity of {n} held-out pairs "
                          f"(rows: captions, columns: images)")
    compact_png(path)
    print(f"  {diagonal_best:.0%} of the {n} captions are closest to their own image")

    # ---- Zero-shot accuracy per attribute ----------------------------------------------------
    if attributes is None:
        print("the held-out data has captions but no attributes: no zero-shot figure")
        return
    n = min(args.zero_shot_images, len(held_out["mean"]))
    image_vectors = embed_latents(clip, held_out["mean"][:n].float() * scale_factor, "cpu")
    results = zero_shot_accuracy(clip, tokenizer, image_vectors, attributes[:n], names)
    accuracy = sum(r["accuracy"] for r in results.values()) / len(results)
    balanced = sum(r["balanced_accuracy"] for r in results.values()) / len(results)
    path = out_dir / "clip_zero_shot.png"
    plot_zero_shot(results, path,
                   title=f"{args.run}, step {step}: zero-shot attribute accuracy on {n} held-out "
                         f"images (mean {accuracy:.3f}, balanced {balanced:.3f})")
    compact_png(path)
    print(f"  {'attribute':18s} {'accuracy':>8s} {'balanced':>8s} {'present':>8s}")
    for name, r in results.items():
        print(f"  {name:18s} {r['accuracy']:8.3f} {r['balanced_accuracy']:8.3f} {r['present']:8d}")
    print(f"  {'mean':18s} {accuracy:8.3f} {balanced:8.3f}")


if __name__ == "__main__":
    main()
