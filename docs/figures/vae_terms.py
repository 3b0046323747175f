"""Figure for point 11: the same held-out faces through three autoencoders that differ only in
their loss: L1 (+ the small KL), then + the VGG perceptual term, then + the PatchGAN as well.

    A="--preset cpu --image-size 32 --channel-mult 1 2 --steps 1000 --eval-every 500"
    A="$A --no-encode-latents"                                # no latent cache needed
    python train_vae.py $A --perceptual none --disc-start 1000 --out runs/terms/l1   # the demo's
    python train_vae.py $A --perceptual vgg --disc-start 1000 --out runs/terms/perceptual
    python train_vae.py $A --perceptual vgg --disc-start 500 --out runs/terms/gan
    python -m docs.figures.vae_terms --runs runs/terms/l1 runs/terms/perceptual runs/terms/gan

writes docs/figures/vae_terms.png: the inputs, then one row per run (its loss named beside it),
each face reconstructed from its posterior mean. Beside each row: the held-out PSNR and the edge
strength (the mean absolute change between vertical neighbours, as page 8 measures the blur of an
average face), both over the first --n-scores held-out images. The runs
must share data and image size, so the rows show the same faces. Offline the perceptual term uses
a VGG16 with fixed random weights (models/perceptual.py says how to use the ImageNet ones); each
run's first lines say which it had.
"""

import argparse
from pathlib import Path

import torch

from docs.figures.common import FIGURES, save_image_grid
from docs.figures.reconstructions import held_out_images, load_vae
from models.metrics import psnr


def loss_name(config: dict) -> str:
    """The loss of a train_vae.py run, from its config, one term per line: L1 + KL, + perceptual,
    + GAN (from its disc-start)."""
    name = "L1 + KL"
    if config["perceptual"] != "none":
        name += "\n+ perceptual"
    if config["disc_start"] < config["steps"]:
        name += f"\n+ GAN from step {config['disc_start']}"
    return name


def edge_strength(images: torch.Tensor) -> float:
    """The mean absolute change between vertical neighbours, (N, 3, S, S) -> a number: how much
    edge a set of images has (a blurred reconstruction has less than its input)."""
    return (images[:, :, 1:] - images[:, :, :-1]).abs().mean().item()


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="train_vae.py --out folders")
    parser.add_argument("--n", type=int, default=8, help="held-out images to show")
    parser.add_argument("--n-scores", type=int, default=64,
                        help="held-out images that the PSNR and the edge strength average over")
    parser.add_argument("--out", default=str(FIGURES / "vae_terms.png"))
    args = parser.parse_args()

    rows, labels, config = [], [], None
    for run in map(Path, args.runs):
        vae, checkpoint = load_vae(run)
        if config is None:
            config = checkpoint["config"]
            x = held_out_images(config, max(args.n, args.n_scores))    # (N, 3, S, S)
            rows.append(x[:args.n])
            labels.append(f"input\nedges {edge_strength(x):.3f}")
        elif (checkpoint["config"]["data"], checkpoint["config"]["image_size"]) != (
                config["data"], config["image_size"]):
            raise SystemExit(f"error: {run} was trained on other data or another size than "
                             f"{args.runs[0]}; the rows would not show the same faces")
        x_rec = vae(x, sample_posterior=False)[0].clamp(-1, 1)         # decode(mode)
        rows.append(x_rec[:args.n])
        labels.append(f"{loss_name(checkpoint['config'])}\n{psnr(x, x_rec).mean():.2f} dB, "
                      f"edges {edge_strength(x_rec):.3f}")
    S = config["image_size"]
    save_image_grid(torch.stack(rows), Path(args.out), labels, {},
                    title=f"the same {S}x{S} held-out faces, one autoencoder per row (PSNR and "
                          f"edge strength over {len(x)} held-out faces)",
                    zoom=max(1, 96 // S), label_width=1.9)


if __name__ == "__main__":
    main()
