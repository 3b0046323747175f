"""DPM-Solver++(2M): a second-order multistep solver of the diffusion ODE (Lu et al. 2022,
"DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models", Algorithm 2).

Sampling with DDIM at eta 0 follows the probability-flow ODE one first-order step at a time.
DPM-Solver++ writes the same ODE in terms of the data prediction x0_pred and the half log-SNR

    lambda_t = log(alpha_t / sigma_t),   alpha_t = sqrt(alpha_bar_t),  sigma_t = sqrt(1 - alpha_bar_t)

and integrates its linear part exactly. From t to the next timestep s (h = lambda_s - lambda_t > 0):

    first order (= DDIM, eta 0):  x_s = (sigma_s / sigma_t) x_t - alpha_s (e^-h - 1) x0_t
    second order, multistep:      D   = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev,   r = h_prev / h
                                  x_s = (sigma_s / sigma_t) x_t - alpha_s (e^-h - 1) D

where x0_prev and h_prev come from the previous step: the second order costs no extra model call.
The first step has no history and is first order; so is the last one, to the clean image
(sigma = 0, lambda = infinity), where it returns x0_pred. With trailing timestep spacing
(Lin et al. 2024) 20 steps give samples close to those of the full 1000-step chain.
"""

import math

import torch

from .ddim import DDIMScheduler
from .ddpm import DDPMScheduler, StepOutput


class DPMSolverScheduler(DDIMScheduler):
    """DDPMScheduler's schedule with the DPM-Solver++(2M) step over S <= T timesteps."""

    def __init__(self, *args, timestep_spacing: str = "trailing", **kwargs):
        super().__init__(*args, timestep_spacing=timestep_spacing, **kwargs)

    @classmethod
    def from_ddpm(cls, ddpm: DDPMScheduler, timestep_spacing: str = "trailing") -> "DPMSolverScheduler":
        """A DPM-Solver++ sampler for a model trained with `ddpm`'s schedule (on the same device)."""
        return cls(ddpm.num_train_timesteps, ddpm.beta_start, ddpm.beta_end, ddpm.beta_schedule,
                   ddpm.prediction_type, ddpm.clip_sample,
                   timestep_spacing=timestep_spacing).to(ddpm.betas.device)

    def set_timesteps(self, num_inference_steps: int) -> None:
        super().set_timesteps(num_inference_steps)
        self._history = None  # (timestep the next step must start from, x0_pred, h) of the last step
        self._alpha_bars = self.alphas_cumprod.tolist()  # (T,) floats: the float32 values, on the host

    def alpha_bar_value(self, t: int) -> float:
        """alpha_bar_t as a Python float (alpha_bar_{-1} = 1), read from a host copy of the
        schedule made once per set_timesteps: no device read, hence no sync, in the loop."""
        return self._alpha_bars[t] if t >= 0 else 1.0

    def log_snr_half(self, t: int) -> float:
        """lambda_t = log(alpha_t / sigma_t) = 0.5 log(alpha_bar_t / (1 - alpha_bar_t)), a Python
        float (double precision on the CPU, so nothing in float64 reaches the device)."""
        alpha_bar = self.alpha_bar_value(t)
        return 0.5 * (math.log(alpha_bar) - math.log(1 - alpha_bar))

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, eta: float = 0.0,
             generator: torch.Generator | None = None, prev_t: int | None = None) -> StepOutput:
        """x_t -> x_{prev_t}, by default to the next timestep of set_timesteps (-1 after the last:
        the clean image). Deterministic: eta must be 0 and generator is not used."""
        if eta != 0.0:
            raise ValueError(f"DPM-Solver++ is a deterministic ODE solver; eta must be 0, got {eta}")
        t = int(t)
        prev_t = self.previous_timestep(t) if prev_t is None else int(prev_t)
        x0_pred = self.predict_x0(model_output, t, x_t)
        if self.clip_sample:  # pixels only, as in DDPM and DDIM
            x0_pred = x0_pred.clamp(-1.0, 1.0)
        history = self._history if self._history is not None and self._history[0] == t else None
        if prev_t < 0:  # the last step, to sigma = 0: the data prediction itself
            self._history = None
            return StepOutput(x0_pred, x0_pred)

        # the step's scalars as Python floats, computed on the CPU in double precision
        alpha_bar_t, alpha_bar_s = self.alpha_bar_value(t), self.alpha_bar_value(prev_t)
        sigma_t, sigma_s = math.sqrt(1 - alpha_bar_t), math.sqrt(1 - alpha_bar_s)
        alpha_s = math.sqrt(alpha_bar_s)
        h = self.log_snr_half(prev_t) - self.log_snr_half(t)                # > 0: less noise at s
        if history is None:                                                  # first order
            D = x0_pred
        else:                                                                # second order
            _, x0_previous, h_previous = history
            r = h_previous / h
            D = (1 + 1 / (2 * r)) * x0_pred - (1 / (2 * r)) * x0_previous
        x_s = (sigma_s / sigma_t) * x_t - (alpha_s * math.expm1(-h)) * D
        self._history = (prev_t, x0_pred, h)
        return StepOutput(x_s, x0_pred)
