"""Figure for points 4 and 7: the denoising trajectory of a trained stage-1 model.

    python -m docs.figures.trajectory --ckpt runs/cpu_try/checkpoint.pt

writes docs/figures/trajectory.png. For each of 4 samples, two rows: x_t, the image the loop holds
when it reaches step t, and x0_pred, the clean image the network's noise prediction implies at that
step (DDPM eq. 15, clipped to [-1, 1]); at t = 0 that is the output x_0. Sampling uses the EMA
weights, a CPU generator with --seed, and by default DDPM's full loop (all 1000 steps,
Algorithm 2); --sampler ddim --steps 100 is faster. At the first steps x0_pred is clipped noise
(eps_pred's errors are multiplied by 1/sqrt(alpha_bar_t)); from mid-way it is a blurry face that
sharpens as t falls, while x_t only loses its noise near the end.
"""

import argparse

import torch

from diffusion import DDIMScheduler, sample
from docs.figures.common import FIGURES, load_ema_model, save_image_grid

TARGETS = [999, 650, 500, 375, 250, 150, 60, 0]  # the recorded steps: the nearest visited ones


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="runs/cpu_try/checkpoint.pt", help="a stage-1 checkpoint")
    parser.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm")
    parser.add_argument("--steps", type=int, default=100, help="DDIM steps (ddpm runs all T)")
    parser.add_argument("--n", type=int, default=4, help="samples (two rows each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of x_T and of the step noise")
    parser.add_argument("--out", default=str(FIGURES / "trajectory.png"))
    args = parser.parse_args()

    model, scheduler, config = load_ema_model(args.ckpt)
    if args.sampler == "ddim":
        scheduler = DDIMScheduler.from_ddpm(scheduler)
        scheduler.set_timesteps(args.steps)
    visited = scheduler.timesteps.tolist()
    nearest = {min(visited, key=lambda t: abs(t - target)) for target in TARGETS}
    shown = sorted(nearest, reverse=True)                   # visited steps, in the loop's order

    size = config["image_size"]
    generator = torch.Generator().manual_seed(args.seed)  # CPU noise, as sample.py
    x_T = torch.randn(args.n, 3, size, size, generator=generator)
    trajectory = []
    sample(lambda x_t, t: model(x_t, t), scheduler, x_T, generator=generator,
           trajectory_steps=shown, trajectory=trajectory)

    rows, row_labels = [], []
    for i in range(args.n):
        rows.append(torch.stack([x_t[i] for _, x_t, _ in trajectory]))
        rows.append(torch.stack([x0_pred[i] for _, _, x0_pred in trajectory]))
        row_labels += [f"sample {i + 1}\nx_t", f"sample {i + 1}\nx0_pred"]
    labels = [f"t = {t}" for t, _, _ in trajectory]
    if trajectory[-1][0] == 0:  # the step at t = 0 adds no noise: its x0_pred is the output
        labels[-1] += "\n(x0_pred = output)"
    name = "DDPM, 1000 steps" if args.sampler == "ddpm" else f"DDIM, {args.steps} steps, eta 0"
    save_image_grid(torch.stack(rows), args.out, row_labels, {0: labels},
                    title=f"reverse diffusion ({name}): x_t and x0_pred along the way")


if __name__ == "__main__":
    main()
