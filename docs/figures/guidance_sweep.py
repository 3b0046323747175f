"""Figure for point 16: classifier-free guidance, one prompt and one seed at growing scales w.
w = 0 is the unconditional model, w = 1 the conditional model alone, w > 1 pushes past it.

    make demo                                            # writes runs/demo/ldm
    python -m docs.figures.guidance_sweep --ckpt runs/demo/ldm/checkpoint.pt

writes docs/figures/guidance_sweep.png: one row per seed (0..3), one column per w. Every image
starts from its seed's noise, so only w changes along a row; column w equals `python sample.py
--ckpt CKPT --prompt PROMPT --guidance w --seed j --n 1`.
"""

import argparse
from pathlib import Path

import torch

from docs.figures.common import (FIGURES, load_text_model, sample_text_to_image, sampler_name,
                                 save_image_grid)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="runs/demo/ldm/checkpoint.pt")
    parser.add_argument("--prompt", default="a photo of a bald man with glasses")
    parser.add_argument("--scales", type=float, nargs="+", default=[0, 1, 2, 3, 5, 8])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--out", default=str(FIGURES / "guidance_sweep.png"))
    args = parser.parse_args()

    pipe = load_text_model(args.ckpt)
    rows = [torch.cat([sample_text_to_image(pipe, [args.prompt], [seed], w) for w in args.scales])
            for seed in range(args.seeds)]                    # each (len(scales), 3, S, S)
    grid = torch.stack(rows).clamp(-1, 1)
    S = grid.shape[-1]
    save_image_grid(grid, Path(args.out), [f"seed {seed}" for seed in range(args.seeds)],
                    {0: [f"w = {w:g}" for w in args.scales]},
                    title=f'"{args.prompt}", {sampler_name(pipe)} 50 steps',
                    zoom=max(1, 96 // S))


if __name__ == "__main__":
    main()
