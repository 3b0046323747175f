"""Figure for docs/ema.md: how much each step's weights count in the average that sampling uses,
after a 200-step run (the demo's stage 1) and a 2000-step one, for the warmed-up exponential EMA
(decay 0.995, the cpu presets) and EDM2's power-function EMA at two relative lengths.

    python -m docs.figures.ema_profiles

writes docs/figures/ema_profiles.png. Every curve is exact: the weight of step tau is read off
by running the real training/ema.py EMA on one-hot weights (step tau's weights = e_tau), so the
average is its own profile; the power-function curves equal power_profile's closed form.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from docs.figures.common import FIGURES  # noqa: E402
from training.ema import EMA  # noqa: E402


def profile(steps: int, **settings) -> torch.Tensor:
    """The weight of each step 1..steps in the EMA after `steps` updates: (steps,)."""
    model = torch.nn.Linear(steps, 1, bias=False).double()
    ema = EMA(model, **settings)
    for tau in range(steps):
        with torch.no_grad():
            model.weight.zero_()
            model.weight[0, tau] = 1.0
        ema.update(model)
    return ema.model.weight[0].detach()


def main() -> None:
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for axis, steps in zip(axes, (200, 2000)):
        x = torch.arange(1, steps + 1) / steps
        for label, settings in (("exponential, decay 0.995", dict(decay=0.995)),
                                ("power, sigma_rel 0.2", dict(sigma_rels=(0.2,))),
                                ("power, sigma_rel 0.1", dict(sigma_rels=(0.1,)))):
            axis.plot(x, profile(steps, **settings) * steps, label=label)
        axis.set_title(f"after {steps} steps")
        axis.set_xlabel("step / steps of the run")
        axis.set_ylabel("weight x steps")
        axis.set_xlim(0, 1)
    axes[0].legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(FIGURES / "ema_profiles.png", dpi=90)
    print(f"wrote {FIGURES / 'ema_profiles.png'}")


if __name__ == "__main__":
    main()
