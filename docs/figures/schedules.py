"""Figure for points 2-3: linear and cosine schedules, beta_t, alpha_bar_t and log SNR against t.

    python -m docs.figures.schedules

writes docs/figures/schedules.png with three panels, each over the code's t = 0 .. 999:
beta_t (log scale; the cosine one is clipped at 0.999 at the very end), alpha_bar_t (the share
of the signal's variance left at step t), and log SNR = log(alpha_bar_t / (1 - alpha_bar_t)).
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from diffusion import DDPMScheduler  # noqa: E402
from diffusion.schedule import snr  # noqa: E402
from docs.figures.common import FIGURES  # noqa: E402


def main() -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for schedule, colour in (("linear", "tab:blue"), ("cosine", "tab:orange")):
        scheduler = DDPMScheduler(1000, beta_start=1e-4, beta_end=0.02, beta_schedule=schedule)
        t = torch.arange(scheduler.num_train_timesteps)
        alpha_bar = scheduler.alphas_cumprod.double()
        axes[0].plot(t, scheduler.betas, color=colour, label=schedule)
        axes[1].plot(t, alpha_bar, color=colour, label=schedule)
        axes[2].plot(t, snr(alpha_bar).log(), color=colour, label=schedule)
    axes[0].set_yscale("log")
    axes[0].set_title("beta_t: noise variance added by step t", fontsize=10)
    axes[1].set_title("alpha_bar_t = prod_{s<=t} (1 - beta_s)", fontsize=10)
    axes[2].set_title("log SNR = log(alpha_bar_t / (1 - alpha_bar_t))", fontsize=10)
    axes[2].axhline(0, color="grey", lw=0.8, ls=":")
    for ax in axes:
        ax.set_xlabel("t (code index; the paper's t - 1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = FIGURES / "schedules.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
