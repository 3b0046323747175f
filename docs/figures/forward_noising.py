"""Figure for points 2-3: synthetic faces noised in closed form at growing t, linear and cosine.

    python -m docs.figures.forward_noising

writes docs/figures/forward_noising.png. Each row is one face at 32x32 (the training resolution)
taken to step t by DDPMScheduler.add_noise, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,
with the same eps in every column and for both schedules, so only alpha_bar_t changes. The label
above a column gives t (the code's index, 0 .. T-1) and alpha_bar_t for that block's schedule.
"""

import torch

from diffusion import DDPMScheduler
from docs.figures.common import FIGURES, save_image_grid, synthetic_faces

TIMESTEPS = [0, 50, 100, 200, 400, 600, 800, 999]
FACE_SEEDS = [1, 15, 24]


def main() -> None:
    x0 = synthetic_faces(FACE_SEEDS)                                        # (N, 3, 32, 32)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))  # one eps per face
    rows, row_labels, column_labels = [], [], {}
    for schedule in ("linear", "cosine"):
        scheduler = DDPMScheduler(1000, beta_start=1e-4, beta_end=0.02, beta_schedule=schedule)
        column_labels[len(rows)] = [f"t = {t}\nalpha_bar {scheduler.alphas_cumprod[t]:.3f}"
                                    for t in TIMESTEPS]
        for i in range(len(x0)):
            columns = [scheduler.add_noise(x0[i:i + 1], noise[i:i + 1], torch.tensor([t]))[0]
                       for t in TIMESTEPS]                                  # [P3] closed form
            rows.append(torch.stack(columns))                               # (cols, 3, 32, 32)
            row_labels.append(f"{schedule}\nface {i + 1}")
    title = "forward diffusion: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps"
    save_image_grid(torch.stack(rows), FIGURES / "forward_noising.png", row_labels, column_labels,
                    title=title, label_height=0.42)


if __name__ == "__main__":
    main()
