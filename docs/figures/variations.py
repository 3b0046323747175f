"""Figure for point 8: re-running the reverse process from part-way gives variations of an image.

    python -m docs.figures.variations --ckpt runs/cpu_try/checkpoint.pt

writes docs/figures/variations.png. One image is generated (DDIM, 50 steps, eta 1, --image-seed),
then, for each strength s in 0.2 .. 1.0, re-noised to the first DDIM step below s * T in closed
form and denoised again with 6 different noise draws, as
`sample.py --init-image IMAGE --strength s --n 6 --seed 0 --eta 1` does. Column 2 shows the
re-noised starting point of the first variation. Small strengths change details only; strength 1
ignores the image and draws new faces. eta 1 (fresh noise in every step) rather than sample.py's
default 0, because a short CPU run samples visibly better with it (see docs/07-sampling.md).
"""

import argparse

import torch

from diffusion import DDIMScheduler, sample, visited_timesteps
from docs.figures.common import FIGURES, load_ema_model, save_image_grid

STRENGTHS = [0.2, 0.4, 0.6, 0.8, 1.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="runs/cpu_try/checkpoint.pt", help="a stage-1 checkpoint")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (sample.py's default)")
    parser.add_argument("--eta", type=float, default=1.0,
                        help="DDIM noise: 0 deterministic, 1 DDPM-like")
    parser.add_argument("--n", type=int, default=6, help="variations per strength")
    parser.add_argument("--image-seed", type=int, default=2, help="seed of the image to vary")
    parser.add_argument("--seed", type=int, default=0, help="seed of the variations' noise")
    parser.add_argument("--out", default=str(FIGURES / "variations.png"))
    args = parser.parse_args()

    model, scheduler, config = load_ema_model(args.ckpt)
    scheduler = DDIMScheduler.from_ddpm(scheduler)
    scheduler.set_timesteps(args.steps)
    size = config["image_size"]
    def model_fn(x_t, t):  # the UNet, unconditional
        return model(x_t, t)

    # 1. the image to vary: a fresh sample
    generator = torch.Generator().manual_seed(args.image_seed)
    image = sample(model_fn, scheduler, torch.randn(1, 3, size, size, generator=generator),
                   eta=args.eta, generator=generator, progress=False)       # (1, 3, H, W)

    # 2. [P8] for each strength: re-noise to step ~ strength * T, run the remaining steps
    rows, row_labels = [], []
    for strength in STRENGTHS:
        generator = torch.Generator().manual_seed(args.seed)  # the same noise draws in every row
        x_T = torch.randn(args.n, 3, size, size, generator=generator)
        x_init = image.expand(args.n, -1, -1, -1)
        outputs = sample(model_fn, scheduler, x_T, eta=args.eta, generator=generator,
                         x_init=x_init, strength=strength, progress=False)  # (n, 3, H, W)
        remaining = visited_timesteps(scheduler, strength)
        start = x_T[0] if strength == 1.0 else scheduler.add_noise(image, x_T[:1], remaining[0])[0]
        rows.append(torch.cat([image, start[None], outputs]))
        row_labels.append(f"strength {strength}\nfrom t = {remaining[0]}\n({len(remaining)} steps)")
    labels = ["image", "re-noised"] + [f"variation {i + 1}" for i in range(args.n)]
    save_image_grid(torch.stack(rows), args.out, row_labels, {0: labels},
                    title=f"re-running the reverse process from part-way "
                          f"(DDIM, {args.steps} steps, eta {args.eta:g})",
                    label_width=1.2)


if __name__ == "__main__":
    main()
