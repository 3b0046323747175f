"""Diffusion: the noise schedule, the DDPM, DDIM and DPM-Solver++ schedulers, the sampling loop,
and the pipeline that turns a trained checkpoint, prompts and seeds into images."""

from .ddim import DDIMScheduler
from .ddpm import DDPMScheduler, StepOutput
from .dpm_solver import DPMSolverScheduler
from .pipeline import (Generation, Pipeline, checkpoint_problem, generate, load_pipeline,
                       pipeline_from_state)
from .sampling import (SAMPLERS, default_sampler, make_sampler, model_calls, sample,
                       spread_steps, visited_timesteps)
from .schedule import schedule_problems

__all__ = ["DDPMScheduler", "DDIMScheduler", "DPMSolverScheduler", "StepOutput", "SAMPLERS",
           "default_sampler", "make_sampler", "model_calls", "sample", "spread_steps",
           "visited_timesteps", "schedule_problems",
           "Pipeline", "Generation", "generate", "load_pipeline", "pipeline_from_state", "checkpoint_problem"]
