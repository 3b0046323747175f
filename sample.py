"""Draw images from a trained checkpoint (video points 4, 7 and 8).

    python sample.py --ckpt runs/unconditional/checkpoint.pt --n 64 --seed 0 \
        --sampler ddim --steps 50 --out grid.png --out-dir samples/ --trajectory
    python sample.py --ckpt ... --init-image face.png --strength 0.5    # [P8] variations

[P7] Sampling starts from Gaussian noise x_T and applies the reverse step T times (DDPM) or on a
shorter subsequence of timesteps (DDIM). With --init-image, the image is first noised to step
strength * T in closed form and only the remaining steps are run: strength 0 returns the input,
1 is a fresh sample, values in between keep more or less of it (the video's "rerun the reverse
diffusion from any point"). The EMA weights are used unless --no-ema.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from diffusion import DDIMScheduler, sample
from diffusion.training import (ConfigError, load_checkpoint, main_guard, pick_device, require,
                                save_grid)
from train_unconditional import build_scheduler, build_unet


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint.pt written by a training script")
    parser.add_argument("--n", type=int, default=64, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise: same seed, same images")
    parser.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddim",
                        help="ddpm: all T stochastic steps; ddim: --steps steps (deterministic at --eta 0)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (ddpm always runs all T)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 DDPM-like (briefly trained models look "
                             "cleaner at 1; see docs/07-sampling.md)")
    parser.add_argument("--out", default="samples.png", help="the grid PNG")
    parser.add_argument("--out-dir", default=None, help="also write one PNG per image here")
    parser.add_argument("--trajectory", action="store_true",
                        help="also save OUT_trajectory.png: x_t and the predicted x_0 along the way")
    parser.add_argument("--init-image", default=None, help="start from this image instead of noise")
    parser.add_argument("--strength", type=float, default=0.5,
                        help="with --init-image: noise it to step strength*T (0 = unchanged, 1 = new)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    parser.add_argument("--batch-size", type=int, default=64, help="images denoised at once")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser.parse_args(argv)


def load_image(path: str, size: int) -> torch.Tensor:
    """A file -> (1, 3, size, size) in [-1, 1], center-cropped to a square, then resized."""
    try:
        image = Image.open(path).convert("RGB")
    except (OSError, ValueError) as error:
        raise ConfigError(f"--init-image {path}: not a readable image ({error})") from None
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(1, size, size, 3).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def trajectory_strip(trajectory: list, max_images: int = 4) -> torch.Tensor:
    """Rows of x_t above rows of predicted x_0, one column per saved step: (rows*cols, 3, H, W)."""
    rows = []
    for i in range(min(max_images, trajectory[0][1].shape[0])):
        rows.append(torch.stack([x_t[i] for _, x_t, _ in trajectory]))      # x_t at each step
        rows.append(torch.stack([x0[i] for _, _, x0 in trajectory]))        # predicted x_0
    return torch.cat(rows)


def main():
    args = parse_args()
    require(args.n > 0, f"--n {args.n}: expected a positive number")
    require(args.batch_size > 0, f"--batch-size {args.batch_size}: expected a positive number")
    require(0.0 <= args.strength <= 1.0, f"--strength {args.strength}: expected a value in [0, 1]")
    require(0.0 <= args.eta <= 1.0, f"--eta {args.eta}: expected a value in [0, 1]")
    device = pick_device(args.device)

    # ---- Rebuild the model from the checkpoint alone ----------------------------------------
    checkpoint = load_checkpoint(args.ckpt, kind="ddpm")
    config = checkpoint["config"]
    model = build_unet(config).to(device).eval()
    model.load_state_dict(checkpoint["model"] if args.no_ema else checkpoint["ema"]["model"])
    scheduler = build_scheduler(config, clip_sample=True).to(device)  # pixels: clip x0 to [-1, 1]
    T, size = config["num_train_timesteps"], config["image_size"]
    require(args.sampler == "ddpm" or 0 < args.steps <= T,
            f"--steps {args.steps}: expected 1 to {T} (the model's number of timesteps)")
    if args.sampler == "ddim":
        scheduler = DDIMScheduler.from_ddpm(scheduler)
        scheduler.set_timesteps(args.steps)
    x_init = load_image(args.init_image, size).to(device) if args.init_image else None

    # ---- Sample in batches; the noise comes from one seeded generator ------------------------
    strength = args.strength if x_init is not None else 1.0
    run_steps = [t for t in scheduler.timesteps.tolist() if t < round(strength * T)]
    shown = run_steps[::max(1, len(run_steps) // 8)][:8] if run_steps else []  # trajectory columns
    generator = torch.Generator().manual_seed(args.seed)  # CPU noise: the same images on any device
    images, trajectory = [], None
    for start in range(0, args.n, args.batch_size):
        count = min(args.batch_size, args.n - start)
        x_T = torch.randn(count, 3, size, size, generator=generator).to(device)
        result = sample(lambda x_t, t: model(x_t, t), scheduler, x_T,
                        eta=args.eta if args.sampler == "ddim" else 0.0, generator=generator,
                        x_init=None if x_init is None else x_init.expand(count, -1, -1, -1),
                        strength=strength,
                        trajectory_steps=shown if args.trajectory and start == 0 else None)
        if isinstance(result, tuple):
            result, trajectory = result
        images.append(result.cpu())
    images = torch.cat(images)

    # ---- Write the files ---------------------------------------------------------------------
    out = Path(args.out)
    save_grid(images, out)
    print(f"wrote {out} ({args.n} images, {args.sampler}, seed {args.seed})")
    if args.out_dir:
        out_dir = Path(args.out_dir)
        for i, image in enumerate(images):
            save_grid(image[None], out_dir / f"{i:04d}_seed{args.seed}.png", nrow=1)
        print(f"wrote {args.n} images to {out_dir}/")
    if trajectory:
        strip_path = out.with_name(out.stem + "_trajectory.png")
        save_grid(trajectory_strip(trajectory), strip_path, nrow=len(trajectory))
        print(f"wrote {strip_path}: x_t (odd rows) and predicted x_0 (even rows) at steps "
              f"{', '.join(str(int(t)) for t, _, _ in trajectory)}")


if __name__ == "__main__":
    main_guard(main)
