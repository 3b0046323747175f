"""Figure for points 9-10: held-out images above their autoencoder reconstructions, with the PSNR
of each.

    python train_vae.py --preset cpu                     # writes runs/vae_cpu
    python -m docs.figures.reconstructions --run runs/vae_cpu

writes docs/figures/reconstructions.png. The autoencoder is rebuilt from RUN/checkpoint.pt alone
(models.vae.vae_from_state on the weights and config it carries); the images are the first 8 of
the run's held-out split, encoded to the posterior mean (posterior.mode(), as train_vae.evaluate
does) and decoded. Top row: inputs; bottom row: reconstructions, clamped to [-1, 1], with their
PSNR in dB above them (models/metrics.psnr, on the [0, 1] scale). The title gives the means of
PSNR and SSIM.
"""

import argparse
from pathlib import Path

import torch

from common.checkpoints import load_checkpoint
from data import load_dataset
from data.imagefolder import VAL_PERCENT
from docs.figures.common import FIGURES, save_image_grid
from models.metrics import psnr, ssim
from models.vae import vae_from_state


def load_vae(run: Path):
    """The autoencoder of a train_vae.py run (eval mode, CPU), and its checkpoint dict. Unlike
    models.vae.load_vae it also reads an unfinished run (no scale factor yet)."""
    checkpoint = load_checkpoint(run / "checkpoint.pt", kind="vae")
    return vae_from_state(checkpoint["model"], checkpoint["config"]), checkpoint


def held_out_images(config: dict, n: int) -> torch.Tensor:
    """The first n images (n, 3, S, S) in [-1, 1] of the run's held-out split."""
    dataset = load_dataset(config["data"], config["image_size"], split="val",
                           cache_dir=config["cache_dir"], val_percent=config.get("val_percent", VAL_PERCENT))
    return dataset.batch(torch.arange(min(n, len(dataset))), "cpu")["image"]


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/vae_cpu", help="a train_vae.py --out folder")
    parser.add_argument("--n", type=int, default=8, help="held-out images to show")
    parser.add_argument("--out", default=str(FIGURES / "reconstructions.png"))
    args = parser.parse_args()

    vae, checkpoint = load_vae(Path(args.run))
    config = checkpoint["config"]
    x = held_out_images(config, args.n)                            # (N, 3, S, S)
    x_rec = vae(x, sample_posterior=False)[0].clamp(-1, 1)         # decode(mode), (N, 3, S, S)
    scores = psnr(x, x_rec)                                        # (N,) dB
    S, f = config["image_size"], vae.downsampling_factor
    title = (f"{args.run}, step {checkpoint['step']}: {S}x{S}x3 -> latent "
             f"{config['latent_channels']}x{S // f}x{S // f} -> {S}x{S}x3; held-out PSNR "
             f"{scores.mean():.1f} dB, SSIM {ssim(x, x_rec).mean():.3f}")
    save_image_grid(torch.stack([x, x_rec]), Path(args.out), ["input", "reconstruction"],
                    {1: [f"{p:.1f} dB" for p in scores.tolist()]}, title=title,
                    zoom=max(1, 128 // S))


if __name__ == "__main__":
    main()
