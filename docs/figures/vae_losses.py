"""Figure for point 11: every loss term of an autoencoder run over training, in one figure.

    python train_vae.py --preset cpu                     # writes runs/vae_cpu
    python -m docs.figures.vae_losses --run runs/vae_cpu

writes docs/figures/vae_losses.png from RUN/metrics.jsonl (each training value is the mean over one
logging interval; the held-out scores are logged every eval_every steps). Nine panels:
  L1 (reconstruction_loss) | perceptual | KL (per-element mean, unweighted)
  total loss_ae            | g_loss = -mean D(x_rec) | d_loss (hinge; 1 = D outputs 0)
  lambda (gan_weight)      | mean logits, real and reconstructed | held-out PSNR and SSIM
The dashed vertical line is disc_start (from RUN/checkpoint.pt's config when it is there, else
guessed from where lambda turns non-zero); the GAN panels show only the steps after it, where D
is on. Every panel spans the same steps.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from common.checkpoints import load_checkpoint
from docs.figures.common import FIGURES, save_figure  # noqa: E402


def series(rows: list[dict], name: str, after: int = -1) -> tuple[list, list]:
    """(steps, values) of one metric, from the lines that have it and lie after step `after`."""
    points = [(r["step"], r[name]) for r in rows if name in r and r["step"] > after]
    return tuple(zip(*points)) if points else ([], [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/vae_cpu", help="a train_vae.py --out folder")
    parser.add_argument("--out", default=str(FIGURES / "vae_losses.png"))
    args = parser.parse_args()

    run = Path(args.run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    if (run / "checkpoint.pt").is_file():
        config = load_checkpoint(run / "checkpoint.pt", kind="vae")["config"]
        disc_start, title = config["disc_start"], (
            f"{args.run}: {config['image_size']}x{config['image_size']} images, "
            f"w_p {config['perceptual_weight']:g}, w_kl {config['kl_weight']:g}, "
            f"w_gan {config['disc_weight']:g}, disc_start {config['disc_start']}")
    else:  # no checkpoint: the last logged step before lambda became non-zero
        on = [r["step"] for r in rows if r.get("gan_weight", 0) > 0]
        off = [r["step"] for r in rows if "gan_weight" in r and on and r["step"] < on[0]]
        disc_start, title = (max(off, default=0) if on else None), str(args.run)
    gan_after = disc_start if disc_start is not None else float("inf")
    few = sum("l1" in r for r in rows) < 30                        # short runs: show the points

    panels = [  # (title, [(metric, label)], GAN term?, log y if it spans a decade?)
        ("L1 reconstruction (mean |x - x_rec|)", [("l1", "l1")], False, True),
        ("perceptual (LPIPS-style, 3 VGG blocks)", [("perceptual", "perceptual")], False, True),
        ("KL per latent element (unweighted)", [("kl", "kl")], False, False),
        ("total autoencoder loss L_AE", [("loss", "loss")], False, False),
        ("generator loss -mean D(x_rec)", [("g_loss", "g_loss")], True, False),
        ("discriminator hinge loss", [("d_loss", "d_loss")], True, False),
        ("adaptive weight lambda", [("gan_weight", "gan_weight")], True, True),
        ("mean patch logits", [("logits_real", "D(x) real"), ("logits_fake", "D(x_rec)")],
         True, False),
    ]
    plain = FuncFormatter(lambda value, _: f"{value:g}")          # 0.05, not 5 x 10^-2
    fig, axes = plt.subplots(3, 3, figsize=(12, 8))
    for ax, (name, metrics, gan, log_y) in zip(axes.flat, panels):
        for metric, label in metrics:
            steps, values = series(rows, metric, gan_after if gan else -1)
            ax.plot(steps, values, lw=1.2, marker="o" if few else None, ms=3, label=label)
            if log_y and values and min(values) > 0 and max(values) > 10 * min(values):
                ax.set_yscale("log")                               # over a decade: log scale
                ax.yaxis.set_major_formatter(plain)
                ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
                ax.yaxis.set_minor_formatter(plain)
        if name.startswith("discriminator"):
            ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="D outputs 0")
        if len(metrics) > 1 or name.startswith("discriminator"):
            ax.legend(fontsize=8)
        ax.set_title(name, fontsize=10)
    # held-out PSNR (left axis) and SSIM (right axis)
    ax = axes.flat[8]
    steps, values = series(rows, "val_psnr")
    ax.plot(steps, values, color="C0", marker="o", ms=3, lw=1.2, label="PSNR")
    ax.set_ylabel("PSNR (dB)", color="C0")
    twin = ax.twinx()
    steps, values = series(rows, "val_ssim")
    twin.plot(steps, values, color="C3", marker="s", ms=3, lw=1.2, label="SSIM")
    twin.set_ylabel("SSIM", color="C3")
    ax.set_title("held-out PSNR and SSIM (posterior mean)", fontsize=10)
    last_step = max(r["step"] for r in rows)
    for ax in axes.flat:
        ax.set_xlim(0, last_step * 1.02)                           # the same steps in every panel
        ax.grid(alpha=0.3)
        if disc_start is not None:
            ax.axvline(disc_start, color="k", lw=0.8, ls="--")
    for ax in axes[-1]:
        ax.set_xlabel("optimizer step")
    fig.suptitle(title + "   (dashed: disc_start)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, args.out, dpi=90)


if __name__ == "__main__":
    main()
