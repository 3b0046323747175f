"""DPM-Solver++(2M) against closed forms: its first-order step is DDIM's, and on Gaussian data,
where the exact ODE solution and denoiser are known, it converges at second order."""

import math

import pytest
import torch

from diffusion import DDIMScheduler, DDPMScheduler, sample
from diffusion.dpm_solver import DPMSolverScheduler


def schedulers(steps: int, spacing: str = "trailing"):
    ddpm = DDPMScheduler(clip_sample=False)
    dpm, ddim = (cls.from_ddpm(ddpm, timestep_spacing=spacing) for cls in (DPMSolverScheduler,
                                                                         DDIMScheduler))
    dpm.set_timesteps(steps)
    ddim.set_timesteps(steps)
    return dpm, ddim


def test_the_first_step_is_a_ddim_step():
    dpm, ddim = schedulers(10)
    x, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = int(dpm.timesteps[0])
    assert torch.allclose(dpm.step(eps, t, x).prev_sample, ddim.step(eps, t, x).prev_sample,
                          atol=1e-5)
    with pytest.raises(ValueError, match="eta must be 0"):
        dpm.step(eps, t, x, eta=0.5)


def gaussian_run(scheduler, s2: float, steps: int):
    """Data N(0, s2): the ideal denoiser is x0 = alpha s2 / (alpha^2 s2 + sigma^2) x_t, and the
    probability-flow ODE moves x_t along sqrt(alpha_t^2 s2 + sigma_t^2) exactly. Returns the
    relative error of x at the last timestep (before the final jump to x0)."""
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.tolist()
    def std(t):
        return math.sqrt(scheduler.alpha_bar(t).double().item() * s2
                         + 1 - scheduler.alpha_bar(t).double().item())
    x_T = torch.linspace(-2, 2, 5, dtype=torch.float64) * std(timesteps[0])
    x = x_T.clone()
    for t in timesteps[:-1]:
        alpha_bar = scheduler.alpha_bar(t).double()
        x0 = alpha_bar.sqrt() * s2 / (alpha_bar * s2 + 1 - alpha_bar) * x
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()   # the ideal eps-prediction
        x = scheduler.step(eps, t, x).prev_sample
    exact = x_T * std(timesteps[-1]) / std(timesteps[0])
    return ((x - exact).norm() / exact.norm()).item()


def test_second_order_convergence_on_gaussian_data():
    # Leading spacing: every run ends at t = 0, so the errors of 20, 40, 80 steps compare.
    errors = {}
    for steps in (20, 40, 80):
        dpm, ddim = schedulers(steps, "leading")
        errors[steps] = (gaussian_run(dpm, 1.0, steps), gaussian_run(ddim, 1.0, steps))
    # halving the step size divides DPM-Solver++'s error by about 4 (second order), DDIM's by 2
    # (measured: 3.8 and 4.2, against 1.96 and 1.98)
    assert errors[20][0] / errors[40][0] > 3.3 and errors[40][0] / errors[80][0] > 3.3, errors
    for coarse, fine in ((20, 40), (40, 80)):
        assert 1.6 < errors[coarse][1] / errors[fine][1] < 2.4, errors
    assert errors[80][0] < errors[80][1] / 3, errors


def test_few_trailing_steps_are_far_more_accurate_than_ddim():
    # Trailing spacing starts at t = T-1: 10 and 20 steps (measured errors 0.001 and 0.016,
    # DDIM's 0.124 and 0.075)
    for steps in (10, 20):
        dpm, ddim = schedulers(steps, "trailing")
        assert gaussian_run(dpm, 1.0, steps) < gaussian_run(ddim, 1.0, steps) / 3


def test_sampling_loop_runs_dpm_solver_and_restarts_its_history():
    dpm, _ = schedulers(8)
    def model(x, t):
        return 0.1 * x  # any deterministic eps-model
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    first = sample(model, dpm, x_T, progress=False)
    again = sample(model, dpm, x_T, progress=False)  # a second run must not reuse the first's history
    assert torch.equal(first, again)
