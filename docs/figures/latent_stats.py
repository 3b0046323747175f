"""The numbers pages 10 and 12 quote about an autoencoder's latent cache (no figure, a printout).

    python train_vae.py --preset cpu                     # writes runs/vae_cpu
    python -m docs.figures.latent_stats --vae runs/vae_cpu/checkpoint.pt

It prints, for that autoencoder and the cache it wrote:
- the posterior std sigma(x) over the training cache (mean and largest) against the spread of the
  posterior means, and the checkpoint's latent std and scale factor (page 12, "A fresh draw");
- one draw z = (mean + std * eps) * scale_factor over the training cache: its std, mean and
  per-channel std (page 12, "The scale factor");
- the decode table: the posterior means of the first 8 held-out images times a factor, decoded
  and clamped; pixel std, saturation (the mean of max(R, G, B) - min(R, G, B)) and the share of
  values clamped at 0 or 1, all on the [0, 1] scale;
- how much of the scaled training latents (means times scale_factor) a clip would cut: the
  share outside [-1, 1] and [-2, 2], and the largest |value| (page 12, "No x0 clipping");
- the cache file's size on disk.
"""

import argparse
from pathlib import Path

import torch

from data.latents import load_latents
from models.vae import load_vae


@torch.no_grad()
def decode_stats(vae, z: torch.Tensor) -> tuple[float, float, float]:
    """Pixel std, saturation and share clamped, on [0, 1], of decode(z) clamped to [-1, 1]."""
    raw = (vae.decode(z) + 1) / 2
    images = raw.clamp(0, 1)
    saturation = (images.amax(dim=1) - images.amin(dim=1)).mean()
    clamped = ((raw <= 0) | (raw >= 1)).float().mean()
    return images.std().item(), saturation.item(), clamped.item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae", default="runs/vae_cpu/checkpoint.pt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the one draw of eps")
    args = parser.parse_args()
    vae, scale_factor, _ = load_vae(args.vae)
    train = load_latents(args.vae, "train", scale_factor)
    val = load_latents(args.vae, "val", scale_factor)
    mean, std = train["mean"].float(), train["std"].float()      # (N, C, h, w) each

    print(f"{args.vae}: latent std {1 / scale_factor:.4f}, scale factor {scale_factor:.4f}")
    print(f"posterior std over the training cache: mean {std.mean():.4f}, largest {std.max():.3f}; "
          f"std of the posterior means {mean.std():.3f}")

    torch.manual_seed(args.seed)
    z = (mean + std * torch.randn_like(mean)) * scale_factor      # [P12] one draw, scaled
    channels = ", ".join(f"{s:.2f}" for s in z.transpose(0, 1).flatten(1).std(dim=1).tolist())
    print(f"(mean + std * eps) * scale_factor over the training cache: std {z.std():.3f}, "
          f"mean {z.mean():.2f}, per channel std {channels}")

    first = val["mean"][:8].float()
    print("\n| decoder input | pixel std | saturation | pixels clamped at 0 or 1 |\n|---|---|---|---|")
    for name, factor in (("z", 1.0), (f"{scale_factor:.3f} z", scale_factor), ("0.5 z", 0.5),
                         (f"{1 / scale_factor:.3f} z", 1 / scale_factor), ("2 z", 2.0)):
        pixel_std, saturation, clamped = decode_stats(vae, first * factor)
        print(f"| {name} | {pixel_std:.3f} | {saturation:.3f} | {clamped:.1%} |")

    scaled = mean * scale_factor
    print(f"\nscaled training latents (means x scale_factor): {(scaled.abs() > 1).float().mean():.1%} "
          f"outside [-1, 1], {(scaled.abs() > 2).float().mean():.1%} outside [-2, 2], largest "
          f"|value| {scaled.abs().max():.1f}")
    path = Path(args.vae).parent / "latents_train.pt"
    print(f"{path}: {path.stat().st_size / 1e6:.0f} MB for {len(mean)} images")


if __name__ == "__main__":
    main()
