"""The variance schedule beta_t and the small helpers every scheduler shares.

Timestep convention (the same as the video's diffusers code): the code's index t = 0 .. T-1 is
the DDPM paper's t = 1 .. T. So `alphas_cumprod[t]` is alpha_bar after t + 1 noising steps, and a
reverse step taken from index t = 0 lands on the clean image x_0.

Schedules are computed once in float64 on the CPU and stored by the schedulers as float32, so
nothing in float64 ever reaches the device (MPS has no float64).
"""

import math
from collections.abc import Mapping

import torch

# The settings of a stage's config that DDPMScheduler.from_config reads, with their types (a
# checkpoint's stored config is checked against them when it is loaded).
SCHEDULE_SETTINGS = {"num_train_timesteps": int, "beta_start": float, "beta_end": float,
                     "beta_schedule": str, "prediction_type": str}


def schedule_problems(c: Mapping) -> list[tuple[str, str]]:
    """[P2] T >= 1 noising steps and 0 < beta_1 <= beta_T < 1: every alpha_t = 1 - beta_t in
    (0, 1), so alpha_bar_t = prod alpha_s stays in (0, 1) and the noising is a real variance.
    Problems as (setting, "value: what was expected") (common/config.py: require_valid)."""
    problems = []
    if not isinstance(c["num_train_timesteps"], int) or c["num_train_timesteps"] < 1:
        problems.append(("num_train_timesteps", f"{c['num_train_timesteps']}: expected 1 or more"))
    beta_start, beta_end = c["beta_start"], c["beta_end"]
    if not 0 < beta_start < 1:
        problems.append(("beta_start", f"{beta_start}: expected 0 < beta_start <= beta_end "
                                       f"({beta_end}) < 1"))
    elif not beta_start <= beta_end < 1:
        problems.append(("beta_end", f"{beta_end}: expected beta_start ({beta_start}) <= "
                                     "beta_end < 1"))
    if c["beta_schedule"] not in ("linear", "cosine"):
        problems.append(("beta_schedule", f"{c['beta_schedule']!r}: expected linear or cosine"))
    if c["prediction_type"] not in ("epsilon", "v"):
        problems.append(("prediction_type", f"{c['prediction_type']!r}: expected epsilon or v"))
    return problems


def make_betas(num_train_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
               beta_schedule: str = "linear") -> torch.Tensor:
    """[P2] The variance schedule beta_1 .. beta_T: a float64 CPU tensor of shape (T,).

    "linear": beta_t rises evenly from beta_start to beta_end (DDPM, Ho et al. 2020, Sec. 4:
        1e-4 to 0.02 over T = 1000 steps); the noise added per step ramps up with t.
    "cosine": improved DDPM (Nichol & Dhariwal 2021, eq. 17) defines alpha_bar directly,
        alpha_bar_t = f(t) / f(0),  f(t) = cos^2( (t/T + s) / (1 + s) * pi/2 ),  s = 0.008,
        and beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, clipped at 0.999 (the last step would
        otherwise be a division by ~0). beta_start and beta_end are not used by this schedule.
    """
    T = num_train_timesteps
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)  # (T,)
    if beta_schedule == "cosine":
        s = 0.008
        steps = torch.arange(T + 1, dtype=torch.float64) / T                 # t/T for t = 0 .. T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2              # (T + 1,)
        alpha_bar = f / f[0]                                                 # alpha_bar_0 = 1
        betas = 1 - alpha_bar[1:] / alpha_bar[:-1]                           # (T,)
        return betas.clamp(max=0.999)
    raise ValueError(f"beta_schedule must be 'linear' or 'cosine', got {beta_schedule!r}")


def extract(a: torch.Tensor, t: torch.Tensor, shape) -> torch.Tensor:
    """Gather a[t] for a batch of timesteps, shaped to broadcast over a batch of `shape`.

    a: (T,) schedule values; t: (B,) long timesteps (a 0-dim t counts as B = 1);
    shape: the shape of the tensor it will multiply, e.g. (B, C, H, W).
    Returns (B, 1, 1, 1) (as many 1s as `shape` has dimensions after the first) on t's device.
    """
    t = t.reshape(-1)                                                         # (B,)
    return a.to(t.device)[t].reshape(len(t), *([1] * (len(shape) - 1)))       # (B, 1, 1, 1)


def snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio of x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps:
    SNR = alpha_bar / (1 - alpha_bar) (signal power over noise power; falls with t)."""
    return alpha_bar / (1 - alpha_bar)
