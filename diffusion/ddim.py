"""DDIM: fewer, optionally deterministic, reverse steps with the same trained model (Song et al. 2021).

DDIM keeps DDPM's forward process and training objective, so it is a DDPMScheduler (same schedule,
add_noise, predict_x0, ...) with another reverse step and a shorter list of timesteps.
Notation: the DDIM paper's alpha_t is DDPM's alpha_bar_t; here it is always written alpha_bar.
"""

import torch

from common.randomness import gaussian_noise_like

from .ddpm import DDPMScheduler, StepOutput


class DDIMScheduler(DDPMScheduler):
    """DDPMScheduler's schedule with the DDIM reverse step (eq. 12) over S <= T timesteps."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,   # T, as the model was trained with
        beta_start: float = 1e-4,          # as DDPMScheduler
        beta_end: float = 0.02,            # as DDPMScheduler
        beta_schedule: str = "linear",     # as DDPMScheduler: "linear" or "cosine"
        prediction_type: str = "epsilon",  # as DDPMScheduler: "epsilon" or "v"
        clip_sample: bool = True,          # as DDPMScheduler: clip x0_pred to [-1, 1] (pixels only)
        timestep_spacing: str = "leading", # which S of the T timesteps to visit: "leading" or
                                           # "trailing" (see set_timesteps)
    ):
        super().__init__(num_train_timesteps, beta_start, beta_end, beta_schedule,
                         prediction_type, clip_sample)
        if timestep_spacing not in ("leading", "trailing"):
            raise ValueError(f"timestep_spacing must be 'leading' or 'trailing', got {timestep_spacing!r}")
        self.timestep_spacing = timestep_spacing
        self.set_timesteps(num_train_timesteps)

    @classmethod
    def from_ddpm(cls, ddpm: DDPMScheduler, timestep_spacing: str = "leading") -> "DDIMScheduler":
        """A DDIM sampler for a model trained with `ddpm`'s schedule (on the same device)."""
        return cls(ddpm.num_train_timesteps, ddpm.beta_start, ddpm.beta_end, ddpm.beta_schedule,
                   ddpm.prediction_type, ddpm.clip_sample, timestep_spacing).to(ddpm.betas.device)

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose S = num_inference_steps evenly spaced timesteps, visited in descending order.

        "leading" (the DDIM paper's code; diffusers' default): t_i = i*T//S for i = 0 .. S-1,
            e.g. T = 1000, S = 50: 980, 960, ..., 20, 0. The loop starts a little below T-1 (x_T
            is used as x_980; alpha_bar there is ~1e-4 already), but with very few steps it starts
            far too low (S = 1 is the single step t = 0): prefer "trailing" there.
        "trailing" (Lin et al. 2024, "Common diffusion noise schedules and sample steps are
            flawed", Table 2): the mirror image, t_i = T-1 - i*T//S: 999, 979, ..., 19.
        With S = T both are T-1, ..., 0, the DDPM loop.
        """
        T = self.num_train_timesteps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= T:
            raise ValueError(f"num_inference_steps must be an integer from 1 to "
                             f"num_train_timesteps={T}, got {num_inference_steps!r}")
        leading = torch.arange(num_inference_steps) * T // num_inference_steps  # (S,) ascending
        timesteps = leading if self.timestep_spacing == "leading" else T - 1 - leading
        self.timesteps = timesteps.sort(descending=True).values.to(self.betas.device)  # (S,)

    def previous_timestep(self, t: int) -> int:
        """The timestep after t in self.timesteps (the loop runs downwards); -1 after the last
        one, meaning the clean image (alpha_bar_{-1} = 1)."""
        timesteps = self.timesteps.tolist()
        if t not in timesteps:
            raise ValueError(f"t={t} is not one of the {len(timesteps)} timesteps chosen by "
                             f"set_timesteps (pass prev_t to step() to go elsewhere)")
        i = timesteps.index(t) + 1
        return timesteps[i] if i < len(timesteps) else -1

    def alpha_bar(self, t: int) -> torch.Tensor:
        """alpha_bar_t as a 0-dim tensor, with alpha_bar_{-1} = 1 (no noise: the clean image)."""
        return self.alphas_cumprod[t] if t >= 0 else torch.ones_like(self.alphas_cumprod[0])

    def sigma(self, t: int, prev_t: int, eta: float) -> torch.Tensor:
        """sigma_t(eta), DDIM eq. 16: the noise std of the step t -> prev_t.
        eta = 0: deterministic DDIM; eta = 1 with prev_t = t-1: DDPM's sigma_t = sqrt(beta~_t)."""
        alpha_bar_t, alpha_bar_prev = self.alpha_bar(t), self.alpha_bar(prev_t)
        # sigma_t = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev)
        return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, eta: float = 0.0,
             generator: torch.Generator | None = None, prev_t: int | None = None) -> StepOutput:
        """[P4] reverse step, DDIM eq. 12: x_t -> x_{prev_t}, by default to the next timestep of
        set_timesteps (-1 after the last: the clean image). eta in [0, 1] scales the noise."""
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta}")
        t = int(t)
        prev_t = self.previous_timestep(t) if prev_t is None else int(prev_t)
        alpha_bar_t, alpha_bar_prev = self.alpha_bar(t), self.alpha_bar(prev_t)

        # 1. predicted clean image (DDPM eq. 15; the "predicted x_0" term of DDIM eq. 12)
        x0_pred = self.predict_x0(model_output, t, x_t)
        if self.clip_sample:  # pixels only; clipping latents washes samples out (see DDPMScheduler.step)
            x0_pred = x0_pred.clamp(-1.0, 1.0)
        # 2. the noise that goes with x0_pred: x_t = sqrt(alpha_bar_t) x0_pred + sqrt(1 - alpha_bar_t) eps_pred
        #    (equals predict_eps(...) unless x0_pred was clipped; keeps eta = 1 identical to DDPM's step)
        eps_pred = (x_t - alpha_bar_t.sqrt() * x0_pred) / (1 - alpha_bar_t).sqrt()
        # 3. noise level of this step, DDIM eq. 16
        sigma_t = self.sigma(t, prev_t, eta)
        # 4. DDIM eq. 12:
        #    x_prev = sqrt(alpha_bar_prev) x0_pred + sqrt(1 - alpha_bar_prev - sigma_t^2) eps_pred + sigma_t z
        direction = (1 - alpha_bar_prev - sigma_t ** 2).clamp(min=0).sqrt() * eps_pred
        x_prev = alpha_bar_prev.sqrt() * x0_pred + direction
        if eta > 0 and prev_t >= 0:  # sigma_t = 0 otherwise: draw no noise
            x_prev = x_prev + sigma_t * gaussian_noise_like(x_t, generator)
        return StepOutput(x_prev, x0_pred)
