"""Moving averages of the weights: the model that sampling uses by default.

Two kinds, both updated once per optimizer step (n = 1, 2, ... counts the updates):

- the warmed-up exponential EMA (DDPM, and the default of every stage):
      theta_ema <- d_n theta_ema + (1 - d_n) theta,   d_n = min(decay, (1 + n) / (10 + n));
- EDM2's power-function EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics
  of Diffusion Models", section 3.1 and appendix C.1), beyond the video (docs/ema.md):
      theta_ema <- beta_n theta_ema + (1 - beta_n) theta,   beta_n = (1 - 1/n)^(gamma + 1).
  It weighs the weights of step tau <= n by  w(tau) = (tau^(gamma+1) - (tau-1)^(gamma+1)) / n^(gamma+1),
  close to (gamma+1) tau^gamma / n^(gamma+1): its length grows with the run, so one setting fits a
  200-step demo and a 30k-step run alike. It is set by its relative length sigma_rel, the standard
  deviation of that profile over tau/n:  sigma_rel^2 = (gamma+1) / ((gamma+2)^2 (gamma+3)).

`EMA(model, decay, sigma_rels=(0.05, 0.1))` keeps one power-function average per sigma_rel; the
first is `.model` (what sampling uses), the others are kept beside it, so that evaluation can pick
the best length after training (`sample.py --ema-length`, `evaluate.py --ema-length`).
"""

import copy

import numpy as np
import torch

from common.checkpoints import load_weights
from common.errors import CheckpointError

MAX_SIGMA_REL = (1 / 12) ** 0.5  # gamma = 0: the plain average of every step (uniform on [0, 1])


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma of a power-function EMA of relative length sigma_rel: the largest real
    root of (gamma+2)^2 (gamma+3) = sigma_rel^-2 (gamma+1), i.e. of
    gamma^3 + 7 gamma^2 + (16 - s) gamma + (12 - s) = 0 with s = sigma_rel^-2 (EDM2, eq. 3)."""
    if not 0 < sigma_rel < MAX_SIGMA_REL:
        raise ValueError(f"sigma_rel {sigma_rel}: expected a number in (0, {MAX_SIGMA_REL:.4f})")
    s = sigma_rel ** -2
    return float(np.roots([1, 7, 16 - s, 12 - s]).real.max())


def power_profile(gamma: float, n: int) -> np.ndarray:
    """w[tau - 1], the weight of the step-tau weights in the power-function EMA after n updates,
    tau = 1..n: (tau^(gamma+1) - (tau-1)^(gamma+1)) / n^(gamma+1). It sums to 1 (telescoping)."""
    tau = np.arange(1, n + 1, dtype=np.float64)
    return (tau ** (gamma + 1) - (tau - 1) ** (gamma + 1)) / n ** (gamma + 1)


def ema_problems(c) -> list[tuple[str, str]]:
    """The problems of a stage's ema_lengths setting (common/config.py's list of problems)."""
    lengths = c.get("ema_lengths", ())
    bad = [s for s in lengths if not 0 < s < MAX_SIGMA_REL]
    if bad:
        return [("ema_lengths", f"{bad[0]}: expected relative lengths in (0, {MAX_SIGMA_REL:.4f})")]
    if len({length_name(s) for s in lengths}) < len(lengths):
        return [("ema_lengths", f"{' '.join(map(str, lengths))}: expected different lengths")]
    return []


def length_name(sigma_rel: float) -> str:
    """How a power-function EMA is named in a checkpoint and on the command line: '0.1'."""
    return f"{sigma_rel:g}"


class EMA:
    """The weights' moving average(s). Without sigma_rels: the warmed-up exponential EMA with
    `decay`. With sigma_rels: one power-function EMA per relative length, the first in `.model`."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, sigma_rels: tuple = ()):
        self.decay = decay
        self.gammas = {length_name(s): sigma_rel_to_gamma(s) for s in sigma_rels}
        self.models = {name: copy.deepcopy(model).eval().requires_grad_(False)
                       for name in (self.gammas or ["exponential"])}
        self.model = next(iter(self.models.values()))  # the one sampling uses
        self.num_updates = 0

    def rate(self, name: str) -> float:
        """1 - the decay of this update: how far the average moves toward the current weights."""
        n = self.num_updates
        if name in self.gammas:
            return 1.0 - (1.0 - 1.0 / n) ** (self.gammas[name] + 1)  # 1 - beta_n; 1 at n = 1
        return 1.0 - min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        for name, average in self.models.items():
            rate = self.rate(name)
            for ema_param, param in zip(average.parameters(), model.parameters()):
                ema_param.lerp_(param.detach(), rate)  # ema += (1 - d) (theta - ema)
            for ema_buffer, buffer in zip(average.buffers(), model.buffers()):
                ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        """{"model": the first average, "num_updates", "lengths": {sigma_rel: every power EMA}}:
        "model" is what sample.py loads by default, so a checkpoint reads the same either way."""
        state = {"model": self.model.state_dict(), "num_updates": self.num_updates}
        if self.gammas:
            state["lengths"] = {name: m.state_dict() for name, m in self.models.items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        lengths = state.get("lengths", {})
        if sorted(lengths) != sorted(self.gammas):
            raise CheckpointError(f"the checkpoint's EMA lengths {sorted(lengths) or 'none'} differ from "
                             f"--ema-lengths {sorted(self.gammas) or 'none'}")
        for name, average in self.models.items():
            load_weights(average, lengths[name] if self.gammas else state["model"],
                         f"the EMA weights {name}")
        self.num_updates = state["num_updates"]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
