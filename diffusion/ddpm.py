"""DDPM: the forward (noising) process and the ancestral reverse step (Ho et al. 2020).

    forward, one step   x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps          [P2] (DDPM eq. 2)
    forward, any step   x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps    [P3] (DDPM eq. 4)
    reverse, one step   x_{t-1} = mu~_t(x_t, x0_pred) + sigma_t z                  [P4] (DDPM Algorithm 2)

Index t = 0 .. T-1 in code is the paper's t = 1 .. T (see diffusion/schedule.py).
"""

from typing import NamedTuple

import torch

from common.randomness import gaussian_noise_like

from .schedule import extract, make_betas, snr


class StepOutput(NamedTuple):
    prev_sample: torch.Tensor           # x_{t-1}: the input of the next step (x_0 after the last)
    pred_original_sample: torch.Tensor  # x0_pred: the model's current guess of the clean image


class DDPMScheduler:
    """The DDPM noise schedule with add_noise (training) and step (sampling).

    A plain class holding float32 tensors (not an nn.Module: it has no weights); `.to(device)`
    moves them and returns self.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,  # T, the number of noising steps (DDPM: 1000)
        beta_start: float = 1e-4,         # beta_1, the first step's noise variance (linear schedule)
        beta_end: float = 0.02,           # beta_T, the last step's noise variance (linear schedule)
        beta_schedule: str = "linear",    # "linear" (DDPM) or "cosine" (improved DDPM, eq. 17)
        prediction_type: str = "epsilon", # what the network predicts: "epsilon" (the noise, as in
                                          # the video) or "v" (sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0)
        clip_sample: bool = True,         # clip x0_pred to [-1, 1] in step(); True for pixel models,
                                          # False for latent models (see step())
    ):
        if prediction_type not in ("epsilon", "v"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v', got {prediction_type!r}")
        self.num_train_timesteps = num_train_timesteps
        self.beta_start, self.beta_end, self.beta_schedule = beta_start, beta_end, beta_schedule
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample

        # Every quantity is derived in float64 on the CPU, then stored as float32.
        betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule)  # (T,) float64
        alphas = 1.0 - betas                                  # alpha_t = 1 - beta_t
        alphas_cumprod = torch.cumprod(alphas, dim=0)         # [P3] alpha_bar_t = prod_{s<=t} alpha_s
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
                                                              # alpha_bar_{t-1}, = 1 before the first step
        # q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I), DDPM eqs. 6-7:
        #   beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
        #   mu~_t   = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
        #           + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
        posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
        posterior_mean_coef_x0 = alphas_cumprod_prev.sqrt() * betas / (1 - alphas_cumprod)
        posterior_mean_coef_xt = alphas.sqrt() * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)

        self.betas = betas.float()                                    # (T,) beta_t
        self.alphas = alphas.float()                                  # (T,) alpha_t
        self.alphas_cumprod = alphas_cumprod.float()                  # (T,) alpha_bar_t
        self.alphas_cumprod_prev = alphas_cumprod_prev.float()        # (T,) alpha_bar_{t-1}
        self.posterior_variance = posterior_variance.float()          # (T,) beta~_t (0 at t = 0)
        self.posterior_mean_coef_x0 = posterior_mean_coef_x0.float()  # (T,)
        self.posterior_mean_coef_xt = posterior_mean_coef_xt.float()  # (T,)
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)  # [P7] T-1, ..., 0: all steps

    @classmethod
    def from_config(cls, cfg: dict, clip_sample: bool) -> "DDPMScheduler":
        """The schedule a stage's config describes (num_train_timesteps, beta_start, beta_end,
        beta_schedule, prediction_type); clip_sample True for pixels, False for latents."""
        return cls(num_train_timesteps=cfg["num_train_timesteps"], beta_start=cfg["beta_start"],
                   beta_end=cfg["beta_end"], beta_schedule=cfg["beta_schedule"],
                   prediction_type=cfg["prediction_type"], clip_sample=clip_sample)

    def to(self, device) -> "DDPMScheduler":
        """Move every tensor to `device` (they are float32 or long: safe on MPS); returns self."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self

    def _at(self, values: torch.Tensor, t, x: torch.Tensor) -> torch.Tensor:
        """values[t] shaped to broadcast over x; t is an int, a 0-dim tensor or a (B,) tensor."""
        return extract(values, torch.as_tensor(t, device=x.device), x.shape)  # (B or 1, 1, 1, 1)

    # ---- training ------------------------------------------------------------------------------

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """Jump straight to step t: a sample of q(x_t | x_0). x0, noise: (B, C, H, W); t: (B,)."""
        alpha_bar_t = self._at(self.alphas_cumprod, t, x0)                    # (B, 1, 1, 1)
        # [P3] x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps   (DDPM eq. 4)
        return alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """What the network should output for x_t = add_noise(x0, noise, t): the noise eps itself
        (DDPM Algorithm 1, the video's choice) or v (Salimans & Ho 2022, Sec. 4)."""
        if self.prediction_type == "epsilon":
            return noise
        alpha_bar_t = self._at(self.alphas_cumprod, t, x0)
        # v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0
        return alpha_bar_t.sqrt() * noise - (1 - alpha_bar_t).sqrt() * x0

    def snr(self, t) -> torch.Tensor:
        """Signal-to-noise ratio of x_t: SNR(t) = alpha_bar_t / (1 - alpha_bar_t), (B,) for t (B,)."""
        return snr(self.alphas_cumprod[t])

    def min_snr_weight(self, t, gamma: float) -> torch.Tensor:
        """Min-SNR-gamma loss weight per sample, (B,) (Hang et al. 2023, eq. 10 and its v form):
        the eps loss is the x0 loss times SNR, and the v loss the x0 loss times SNR + 1; capping
        the x0 weight at gamma gives min(SNR, gamma) / SNR for eps, min(SNR, gamma) / (SNR + 1)
        for v. Low-noise steps, whose SNR is huge, stop dominating the gradient."""
        ratio = self.snr(t)
        return ratio.clamp(max=gamma) / (ratio if self.prediction_type == "epsilon" else ratio + 1)

    def training_loss(self, prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t,
                      min_snr_gamma: float = 0.0) -> torch.Tensor:
        """[P6] The mean squared error to training_target, L_simple; with min_snr_gamma > 0 each
        sample's mean is weighted by min_snr_weight first (then the mean over the batch)."""
        error = (prediction.float() - self.training_target(x0, noise, t)).pow(2)  # (B, C, H, W)
        if min_snr_gamma <= 0:
            return error.mean()
        return (error.flatten(1).mean(1) * self.min_snr_weight(t, min_snr_gamma)).mean()

    # ---- from the network's output to x0_pred and eps_pred -------------------------------------

    def predict_x0(self, model_output: torch.Tensor, t, x_t: torch.Tensor) -> torch.Tensor:
        """The clean image implied by the network's output at x_t."""
        alpha_bar_t = self._at(self.alphas_cumprod, t, x_t)
        if self.prediction_type == "epsilon":
            # x0_pred = (x_t - sqrt(1 - alpha_bar_t) eps_pred) / sqrt(alpha_bar_t)   (DDPM eq. 15)
            return (x_t - (1 - alpha_bar_t).sqrt() * model_output) / alpha_bar_t.sqrt()
        # x0_pred = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v_pred
        return alpha_bar_t.sqrt() * x_t - (1 - alpha_bar_t).sqrt() * model_output

    def predict_eps(self, model_output: torch.Tensor, t, x_t: torch.Tensor) -> torch.Tensor:
        """The noise implied by the network's output at x_t."""
        if self.prediction_type == "epsilon":
            return model_output
        alpha_bar_t = self._at(self.alphas_cumprod, t, x_t)
        # eps_pred = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v_pred
        return (1 - alpha_bar_t).sqrt() * x_t + alpha_bar_t.sqrt() * model_output

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t) -> torch.Tensor:
        """mu~_t(x_t, x_0), the mean of q(x_{t-1} | x_t, x_0) (DDPM eq. 7)."""
        return (self._at(self.posterior_mean_coef_x0, t, x_t) * x0
                + self._at(self.posterior_mean_coef_xt, t, x_t) * x_t)

    # ---- sampling -------------------------------------------------------------------------------

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor,
             generator: torch.Generator | None = None) -> StepOutput:
        """[P4] reverse step, DDPM Algorithm 2: x_t -> x_{t-1} for the loop's timestep t (an int).

        The video writes the step directly in the predicted noise (Algorithm 2, line 4):
            x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_pred) + sigma_t z
        Here it goes through x0_pred instead: put eq. 15's x0_pred into eq. 7's mean mu~_t. The
        two are algebraically the same (tests/test_schedulers.py checks it with clip_sample=False);
        the x0 route lets us clip x0_pred and hands it back for trajectory figures.
        """
        t = int(t)
        # 1. predicted clean image, DDPM eq. 15 (or its v form)
        x0_pred = self.predict_x0(model_output, t, x_t)
        if self.clip_sample:
            # Pixel images live in [-1, 1], so a guess outside is certainly wrong: clipping helps at
            # large t, where x0_pred is poor. Latents are not bounded to [-1, 1]; clipping them cuts
            # their tails off and the decoded images come out washed out. Latent models: clip off.
            x0_pred = x0_pred.clamp(-1.0, 1.0)
        # 2. mean of q(x_{t-1} | x_t, x0_pred), DDPM eq. 7: mu~_t = coef_x0 x0_pred + coef_xt x_t
        mean = self.posterior_mean(x0_pred, x_t, t)
        # 3. add sigma_t z with sigma_t^2 = beta~_t (the posterior variance); no noise at t = 0
        if t == 0:
            return StepOutput(mean, x0_pred)
        sigma_t = self.posterior_variance[t].sqrt()
        return StepOutput(mean + sigma_t * gaussian_noise_like(x_t, generator), x0_pred)
