"""Classifier-free guidance (Ho & Salimans 2022): one model, two predictions, extrapolated. [P16]

The model is trained with the caption replaced by the empty prompt 10% of the time, so it learns
both eps(x_t, t, text) and eps(x_t, t, "") = the unconditional model. At sampling time

    eps_guided = eps_uncond + w * (eps_cond - eps_uncond)

w = 1 is the plain conditional model, w = 0 the unconditional one, w > 1 pushes the sample
further in the direction the text points (sharper prompt following, less variety). A negative
prompt takes the place of the empty prompt in eps_uncond, so guidance also pushes away from it.
Both branches run as one batch of 2B: the conditional copy first, rows 0..B-1, then the
unconditional one, rows B..2B-1 (conditional_rows says it for the code that reads the batch, such
as the attention recorder).
"""

import torch

from common.errors import ConfigError


def pad_context(context: tuple, length: int) -> tuple:
    """(hidden (B, L, D), mask (B, L)) -> the same with L = length: masked zero positions added
    at the end, which attention gives no weight."""
    hidden, mask = context
    extra = length - hidden.shape[1]
    if extra <= 0:
        return context
    return (torch.cat([hidden, hidden.new_zeros(hidden.shape[0], extra, hidden.shape[2])], dim=1),
            torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], dim=1))


def conditional_rows(batch_size: int) -> slice:
    """The rows of the conditional branch in the model's batch of a guided step: the first B
    (guided_prediction stacks [cond, uncond]; at scale 1 the batch is the conditional one alone)."""
    return slice(0, batch_size)


def guidance_at(scale: float, noise_level: float, interval: tuple = (0.0, 1.0)) -> float:
    """Guidance on an interval (Kynkaenniemi et al. 2024, "Applying Guidance in a Limited
    Interval Improves Sample and Distribution Quality"): the scale inside the band of noise
    levels lo <= level <= hi, and 1 outside it, where the conditional prediction alone is used
    (one model pass instead of two). Levels run from 0 (the data) to 1 (pure noise): DDPM's step
    t of T is level (t + 1) / T, flow matching's time t is level t."""
    lo, hi = interval
    return scale if lo <= noise_level <= hi else 1.0


def check_interval(interval) -> tuple[float, float]:
    """--guidance-interval LO HI as a (lo, hi) pair, or a ConfigError naming the flag."""
    values = tuple(float(v) for v in interval)
    if len(values) != 2 or not 0.0 <= values[0] <= values[1] <= 1.0:
        raise ConfigError(f"--guidance-interval {' '.join(str(v) for v in interval) or '(none)'}: "
                          "expected two noise levels 0 <= LO <= HI <= 1 (0: data, 1: noise)")
    return values


def guided_prediction(model, x_t: torch.Tensor, t: torch.Tensor, cond: tuple, uncond: tuple,
                      scale: float) -> torch.Tensor:
    """x_t (B, C, h, w); cond and uncond are (hidden (B, L, D), mask (B, L)) text encodings (the
    two L may differ: a batch is as long as its longest prompt).
    Returns eps_uncond + scale * (eps_cond - eps_uncond), (B, C, h, w)."""
    if scale == 1.0:  # the conditional prediction alone: one pass instead of two
        return model(x_t, t, cond[0], cond[1])
    length = max(cond[0].shape[1], uncond[0].shape[1])
    cond, uncond = pad_context(cond, length), pad_context(uncond, length)
    B = x_t.shape[0]
    t = torch.as_tensor(t, device=x_t.device).expand(B)
    both = model(torch.cat([x_t, x_t]), torch.cat([t, t]),
                 torch.cat([cond[0], uncond[0]]), torch.cat([cond[1], uncond[1]]))  # (2B, C, h, w)
    rows = conditional_rows(B)                                   # [cond, uncond]: cond first
    eps_cond, eps_uncond = both[rows], both[rows.stop:]
    return eps_uncond + scale * (eps_cond - eps_uncond)
