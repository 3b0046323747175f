"""Figure for point 10: what a latent looks like. Four held-out images, the three channels of their
latent and the image decoded from it.

    python train_vae.py --preset cpu                     # writes runs/vae_cpu
    python -m docs.figures.latent_channels --run runs/vae_cpu

writes docs/figures/latent_channels.png. One row per image: the input (S x S), the latent
z = posterior.mode() (the mean of q(z | x), 3 x S/f x S/f) as one panel per channel, and
decode(z). All twelve channel panels share one colour scale, symmetric around 0, with its colorbar
on the right, so the panels compare with each other and with the unit variance diffusion wants.
The title gives the standard deviation of these latents and the checkpoint's scale_factor
(1 / the std of sampled latents over the training images, models.vae.latent_std).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from docs.figures.common import FIGURES, save_figure  # noqa: E402
from docs.figures.reconstructions import held_out_images, load_vae  # noqa: E402


def as_rgb(image: torch.Tensor):
    """(3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1] for imshow."""
    return ((image.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/vae_cpu", help="a train_vae.py --out folder")
    parser.add_argument("--n", type=int, default=4, help="held-out images, one row each")
    parser.add_argument("--out", default=str(FIGURES / "latent_channels.png"))
    args = parser.parse_args()

    vae, checkpoint = load_vae(Path(args.run))
    config = checkpoint["config"]
    x = held_out_images(config, args.n)                            # (N, 3, S, S) in [-1, 1]
    z = vae.encode(x).mode()                                       # (N, C, S/f, S/f)
    x_dec = vae.decode(z)                                          # (N, 3, S, S)
    N, C, h, w = z.shape
    S = x.shape[-1]
    limit = z.abs().max().item()                                   # one symmetric scale for all
    scale_factor = checkpoint.get("scale_factor")
    scale = "not stored (unfinished run)" if scale_factor is None else f"{scale_factor:.3f}"

    fig, axes = plt.subplots(N, C + 2, figsize=(1.75 * (C + 2) + 0.9, 1.75 * N + 0.75),
                             squeeze=False)
    for row in range(N):
        axes[row, 0].imshow(as_rgb(x[row]), interpolation="nearest")
        for c in range(C):
            shown = axes[row, 1 + c].imshow(z[row, c].numpy(), cmap="RdBu_r", vmin=-limit,
                                            vmax=limit, interpolation="nearest")
        axes[row, C + 1].imshow(as_rgb(x_dec[row]), interpolation="nearest")
    titles = ([f"input {S}x{S}x3"] + [f"z channel {c} ({h}x{w})" for c in range(C)]
              + ["decode(z)"])
    for column, title in enumerate(titles):
        axes[0, column].set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{args.run}, step {checkpoint['step']}: z = posterior mean; std of these "
                 f"latents {z.std().item():.3f}, mean {z.mean().item():+.3f}; checkpoint "
                 f"scale_factor {scale}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    colorbar_axes = fig.add_axes((0.93, 0.1, 0.015, 0.75))
    fig.colorbar(shown, cax=colorbar_axes).ax.tick_params(labelsize=8)
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
