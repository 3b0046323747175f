"""Figure for point 12: one sampling run in latent space, decoded. Columns are steps from pure
noise (left) to the end (right). Rows: the latent z_t itself (its 3 channels shown as RGB,
enlarged to the image's size), the decoder's image of z_t, and the decoder's image of the
predicted z_0 at that step.

    make demo                                            # writes runs/demo/ldm
    python -m docs.figures.latent_trajectory --ckpt runs/demo/ldm/checkpoint.pt

writes docs/figures/latent_trajectory.png. The run is sample.py's (the checkpoint's sampler,
50 steps, its guidance, seed 0), so the last column's predicted z_0 decodes to the image
`python sample.py --ckpt CKPT --prompt PROMPT --seed 0 --n 1` returns.
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from diffusion import generate, make_sampler
from diffusion.sampling import spread_steps, visited_timesteps
from docs.figures.common import FIGURES, load_text_model, sampler_name, save_image_grid


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="runs/demo/ldm/checkpoint.pt")
    parser.add_argument("--prompt", default="a photo of a smiling woman with blond hair")
    parser.add_argument("--columns", type=int, default=8, help="steps shown")
    parser.add_argument("--out", default=str(FIGURES / "latent_trajectory.png"))
    args = parser.parse_args()

    pipe = load_text_model(args.ckpt)
    scheduler, eta = make_sampler(pipe.scheduler, None, 50)
    picks = spread_steps(visited_timesteps(scheduler), args.columns)  # first and last in
    guidance = pipe.config.get("guidance", 1.0)
    run = generate(pipe, [args.prompt], [0], guidance, scheduler, eta=eta, trajectory_steps=picks)
    images = pipe.decode(run.trajectory[-1][2]).clamp(-1, 1)  # (1, 3, S, S): sets the size
    S = images.shape[-1]

    def as_image(z: torch.Tensor) -> torch.Tensor:             # (1, C, h, w) latent -> (3, S, S)
        z = z[0, :3].float() / 3                               # unit-variance latents -> [-1, 1]
        return F.interpolate(z[None], size=(S, S), mode="nearest")[0].clamp(-1, 1)

    rows = [[as_image(z_t) for _, z_t, _ in run.trajectory],
            [pipe.decode(z_t)[0].clamp(-1, 1) for _, z_t, _ in run.trajectory],
            [pipe.decode(z0)[0].clamp(-1, 1) for _, _, z0 in run.trajectory]]
    grid = torch.stack([torch.stack(row) for row in rows])    # (3, columns, 3, S, S)
    labels = {0: [f"t = {t:g}" for t, _, _ in run.trajectory]}
    save_image_grid(grid, Path(args.out), ["latent z_t (3 channels)", "decoder(z_t)",
                                           "decoder(predicted z_0)"], labels,
                    title=f'"{args.prompt}", {sampler_name(pipe)}, guidance {guidance:g}, seed 0',
                    zoom=max(1, 96 // S), label_width=1.9)


if __name__ == "__main__":
    main()
