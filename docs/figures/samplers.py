"""Figure for point 7: the same starting noises x_T, denoised by DDPM and by DDIM with fewer steps.

    python -m docs.figures.samplers --ckpt runs/cpu_try/checkpoint.pt

writes docs/figures/samplers.png. Every row starts from the same 8 noise images x_T (CPU
generator, --seed) and uses the EMA weights of a stage-1 checkpoint. Rows: DDPM (all 1000 steps,
Algorithm 2); DDIM with eta 1 (fresh noise in every step, eq. 16) at 50, 20 and 10 steps; DDIM
with eta 0 (deterministic, eq. 12) at 50 and 10 steps. The stochastic rows reach other faces from
the same x_T (their step noise differs); the deterministic rows give the same face at any step
count, as x_T alone decides it.
"""

import argparse

import torch

from diffusion import DDIMScheduler, sample
from docs.figures.common import FIGURES, load_ema_model, save_image_grid

RUNS = [("ddpm", 1000, 0.0), ("ddim", 50, 1.0), ("ddim", 20, 1.0), ("ddim", 10, 1.0),
        ("ddim", 50, 0.0), ("ddim", 10, 0.0)]  # (sampler, network calls, eta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="runs/cpu_try/checkpoint.pt", help="a stage-1 checkpoint")
    parser.add_argument("--n", type=int, default=8, help="images per row")
    parser.add_argument("--seed", type=int, default=0, help="seed of x_T and of the step noise")
    parser.add_argument("--out", default=str(FIGURES / "samplers.png"))
    args = parser.parse_args()

    model, ddpm, config = load_ema_model(args.ckpt)
    size = config["image_size"]
    x_T = torch.randn(args.n, 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    rows, row_labels = [], []
    for sampler, steps, eta in RUNS:
        scheduler = ddpm if sampler == "ddpm" else DDIMScheduler.from_ddpm(ddpm)
        generator = torch.Generator().manual_seed(args.seed + 1)  # the step noise (DDPM, eta > 0)
        rows.append(sample(lambda x_t, t: model(x_t, t), scheduler, x_T,
                           num_steps=None if sampler == "ddpm" else steps, eta=eta,
                           generator=generator, progress=False))
        eta_label = f"\neta {eta:g}" if sampler == "ddim" else ""
        row_labels.append(f"{sampler.upper()}, {steps} steps{eta_label}")
        print(f"done: {row_labels[-1]}")
    save_image_grid(torch.stack(rows), args.out, row_labels, {}, label_width=1.3,
                    title="the same x_T per column, denoised by different samplers")


if __name__ == "__main__":
    main()
