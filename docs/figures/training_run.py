"""Figure for point 6: what a good stage-1 run looks like, its loss curve and its last sample grid.

    python train_unconditional.py --preset cpu --steps 900 --sample-every 300 \
        --sample-steps 50 --sample-eta 0 --out runs/cpu_try
    python -m docs.figures.training_run --run runs/cpu_try

writes docs/figures/training_run.png from the run folder alone (no sampling): left, the training
loss of metrics.jsonl (mean over each logging interval, log scale); right, the top half (32
images) of the first and the last sample grid in samples/ (drawn by DDIM with the run's
sample_steps and sample_eta, read from its checkpoint, from the EMA weights, with the same seed,
so the same x_T in both).
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from common.checkpoints import load_checkpoint
from docs.figures.common import FIGURES, save_figure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/cpu_try", help="a training script's --out folder")
    parser.add_argument("--out", default=str(FIGURES / "training_run.png"))
    args = parser.parse_args()

    run = Path(args.run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    grids = sorted((run / "samples").glob("step_*.png"))
    config = load_checkpoint(run / "checkpoint.pt")["config"]
    eta = config.get("sample_eta", 0.0)  # runs made before --sample-eta existed used eta 0
    sampler = f"DDIM {config['sample_steps']}, eta {eta:g}"
    shown = [grids[0], grids[-1]] if len(grids) > 1 else grids

    fig, axes = plt.subplots(1, 1 + len(shown), figsize=(4.2 + 3.2 * len(shown), 2.6),
                             gridspec_kw={"width_ratios": [1.3] + [1] * len(shown)})
    axes[0].plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.2)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("optimizer step")
    axes[0].set_ylabel("MSE(eps_pred, eps)")
    axes[0].set_title(f"training loss, last {rows[-1]['loss']:.4f}", fontsize=10)
    axes[0].grid(alpha=0.3, which="both")
    for ax, grid in zip(axes[1:], shown):
        image = Image.open(grid).convert("RGB")
        image = image.crop((0, 0, image.width, image.height // 2 + 1))  # the top 4 of 8 rows
        ax.imshow(image, interpolation="nearest")
        ax.set_title(f"samples at step {int(grid.stem.split('_')[1])} ({sampler})", fontsize=10)
        ax.set_axis_off()
    fig.tight_layout()
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
