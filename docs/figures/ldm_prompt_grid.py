"""Figure for points 12 and 16: what a text-to-image checkpoint draws for 8 prompts, 8 seeds each.

    python train_vae.py --preset cpu && python train_clip.py --preset cpu
    python train_ldm.py --preset cpu                     # writes runs/ldm_cpu
    python -m docs.figures.ldm_prompt_grid --ckpt runs/ldm_cpu/checkpoint.pt

writes docs/figures/ldm_prompt_grid.png. Rows are the 8 validation prompts that train_ldm.py
draws its grids with (data.captions.VALIDATION_PROMPTS), written at the left; columns are the
seeds 0..7. Every image is drawn as sample.py draws it (docs.figures.common.sample_text_to_image):
the EMA weights, 50 steps of the checkpoint's default sampler (DDIM at eta 0, or Euler for a
flow-matching model), classifier-free guidance at the scale the model was
trained to show (its config's `guidance`, train_ldm --guidance) against the empty prompt, x_T of
seed j from torch.Generator().manual_seed(j), then z_0 / scale_factor through the decoder. So
row i equals `python sample.py --ckpt CKPT --prompt "<prompt i>" --n 8`, and within a column
every prompt starts from the same noise: what changes along a column is the text alone.
"""

import argparse
import textwrap
from pathlib import Path

from data.captions import VALIDATION_PROMPTS
from docs.figures.common import (FIGURES, load_text_model, sample_text_to_image, sampler_name,
                                 save_image_grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="runs/ldm_cpu/checkpoint.pt",
                        help="a train_ldm.py checkpoint trained with --clip")
    parser.add_argument("--seeds", type=int, default=8, help="images per prompt (columns)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed (as sample.py --seed)")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (DDIM at eta 0, "
                                                                  "or Euler for flow matching)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale; default: the model's own")
    parser.add_argument("--out-dir", default=str(FIGURES), help="where ldm_prompt_grid.png goes")
    args = parser.parse_args()

    pipe = load_text_model(args.ckpt)                          # EMA weights, CPU, eval mode
    guidance = pipe.config["guidance"] if args.guidance is None else args.guidance
    seeds = list(range(args.seed, args.seed + args.seeds))
    prompts = [p for p in VALIDATION_PROMPTS for _ in seeds]    # row-major: prompt, then seed
    images = sample_text_to_image(pipe, prompts, seeds * len(VALIDATION_PROMPTS), guidance,
                                  args.steps)                   # (8 * seeds, 3, S, S)
    S = images.shape[-1]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = (f"{args.ckpt}, step {pipe.step}: {sampler_name(pipe)} {args.steps} steps, guidance "
             f"{guidance:g}; column j starts from the noise of seed j")
    save_image_grid(images.reshape(len(VALIDATION_PROMPTS), len(seeds), *images.shape[1:]),
                    out_dir / "ldm_prompt_grid.png",
                    [textwrap.fill(p, 26) for p in VALIDATION_PROMPTS],
                    {0: [f"seed {s}" for s in seeds]}, title=title, zoom=max(1, 128 // S),
                    label_width=1.9)


if __name__ == "__main__":
    main()
