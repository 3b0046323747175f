"""Diffusion: the noise schedule, the DDPM and DDIM schedulers, and the sampling loop."""

from .ddim import DDIMScheduler
from .ddpm import DDPMScheduler, StepOutput
from .sampling import sample

__all__ = ["DDPMScheduler", "DDIMScheduler", "StepOutput", "sample"]
