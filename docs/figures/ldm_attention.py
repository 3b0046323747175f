"""Figure for point 16: where each word of a prompt looks, for 4 seeds of one prompt.

    python train_ldm.py --preset cpu                     # writes runs/ldm_cpu
    python -m docs.figures.ldm_attention --ckpt runs/ldm_cpu/checkpoint.pt \
        --prompt "a photo of a bald man with glasses"

writes docs/figures/ldm_attention.png: one row per seed (0..3, top to bottom), each the generated
image followed by one panel per token (<bos>, the prompt's words, <eos>) with that token's
cross-attention map over the image. The maps are sample.py --attention-maps'
(models.attention.AttentionRecorder, training.plots.save_attention_figure): at every sampling step
and every cross-attention layer, the weight each latent position gives to the token, from the
conditional branch of guidance only, averaged over heads, bilinearly resized to the latent grid,
then averaged over layers and steps. Each panel is scaled
to its own maximum, so colours compare positions within a panel, not tokens with each other.
Images are drawn as in ldm_prompt_grid (50 steps of DDIM at eta 0 or of Euler for flow matching,
the model's guidance, seed j's noise),
so row j equals `python sample.py --ckpt CKPT --prompt PROMPT --seed j --n 1`.
"""

import argparse
from pathlib import Path

from docs.figures.common import (FIGURES, compact_png, load_text_model, sample_text_to_image,
                                 sampler_name)
from models.attention import AttentionRecorder
from training.plots import save_attention_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="runs/ldm_cpu/checkpoint.pt",
                        help="a train_ldm.py checkpoint trained with --clip")
    parser.add_argument("--prompt", default="a photo of a bald man with glasses")
    parser.add_argument("--seeds", type=int, default=4, help="rows: seeds 0 .. seeds-1")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (DDIM at eta 0, "
                                                                  "or Euler for flow matching)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale; default: the model's own")
    parser.add_argument("--out-dir", default=str(FIGURES), help="where ldm_attention.png goes")
    args = parser.parse_args()

    pipe = load_text_model(args.ckpt)                          # EMA weights, CPU, eval mode
    guidance = pipe.config["guidance"] if args.guidance is None else args.guidance
    seeds = list(range(args.seeds))
    prompts = [args.prompt] * len(seeds)
    _, h, w = pipe.sample_shape
    recorder = AttentionRecorder(pipe.unet, len(seeds), (h, w))
    images = sample_text_to_image(pipe, prompts, seeds, guidance, args.steps, recorder)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ldm_attention.png"
    save_attention_figure(path, images, recorder.maps(), prompts,
                          [pipe.text.tokenizer.tokens(p) for p in prompts])
    compact_png(path)
    print(f"  rows: seeds {seeds[0]}..{seeds[-1]}; guidance {guidance:g}, {sampler_name(pipe)} "
          f"{args.steps} steps; "
          f"{len(recorder.layers)} cross-attention layers x {args.steps} steps averaged")


if __name__ == "__main__":
    main()
