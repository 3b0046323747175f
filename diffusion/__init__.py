"""Diffusion: the noise schedule, the DDPM, DDIM and DPM-Solver++ schedulers, and the sampling loop."""

from .ddim import DDIMScheduler
from .ddpm import DDPMScheduler, StepOutput
from .dpm_solver import DPMSolverScheduler
from .sampling import SAMPLERS, make_sampler, sample, visited_timesteps

__all__ = ["DDPMScheduler", "DDIMScheduler", "DPMSolverScheduler", "StepOutput", "SAMPLERS", "make_sampler",
           "sample", "visited_timesteps"]
