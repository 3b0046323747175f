"""Samplers: plain functions over (model, scheduler, x_T) that return tensors.

`model_fn(x_t, t_batch) -> model_output` is any callable, e.g. `lambda x, t: unet(x, t)`, so that
classifier-free guidance can wrap the model without the sampler knowing.
"""

import torch
from tqdm import tqdm

from common.errors import ConfigError

from .ddim import DDIMScheduler
from .ddpm import DDPMScheduler
from .dpm_solver import DPMSolverScheduler
from .flow import FLOW_SAMPLERS, FlowMatching, FlowSampler

DDPM_SAMPLERS = ("ddpm", "ddim", "dpm++")      # for a model trained with DDPM's objective
SAMPLERS = DDPM_SAMPLERS + FLOW_SAMPLERS       # the names make_sampler takes


def default_sampler(ddpm: DDPMScheduler | FlowMatching) -> str:
    """What a checkpoint samples with when no --sampler is given: the checkpoint says which kind
    of model it is, so one command samples either."""
    return "euler" if isinstance(ddpm, FlowMatching) else "ddim"


def make_sampler(ddpm: DDPMScheduler | FlowMatching, name: str | None, steps: int,
                 spacing: str | None = None, eta: float = 0.0
                 ) -> tuple[DDPMScheduler | FlowSampler, float]:
    """The sampler flags (--sampler, --steps, --spacing, --eta) -> (scheduler, eta) for a model
    trained with `ddpm`'s schedule: the one place that turns them into a sampler.

    "ddpm":  DDPM's ancestral step over all T timesteps (steps, spacing and eta are not used:
             its noise is the posterior's, sigma_t^2 = beta~_t)
    "ddim":  DDIM over `steps` timesteps, leading spacing unless `spacing` says otherwise; eta
             0 deterministic, 1 DDPM-like noise (DDIM eq. 16)
    "dpm++": DPM-Solver++(2M) over `steps` timesteps, trailing spacing unless told otherwise;
             deterministic, so eta must be 0
    "euler", "heun": a flow-matching model (`ddpm` is then its FlowMatching): `steps` steps of
             that ODE solver (diffusion/flow.py), deterministic
    None:    the model's own default: ddim for DDPM, euler for flow matching (default_sampler)
    A ConfigError names the flag of an impossible value.
    """
    name = name or default_sampler(ddpm)
    if name not in SAMPLERS:
        raise ConfigError(f"--sampler {name!r}: expected one of {', '.join(SAMPLERS)}")
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"--eta {eta}: expected a value in [0, 1]")
    flow = isinstance(ddpm, FlowMatching)
    if flow != (name in FLOW_SAMPLERS):
        model, names = ("a flow-matching", FLOW_SAMPLERS) if flow else ("a DDPM", DDPM_SAMPLERS)
        raise ConfigError(f"--sampler {name}: {model} model samples with "
                          f"{' or '.join(names)}")
    if flow:
        if steps < 1:
            raise ConfigError(f"--steps {steps}: expected 1 or more")
        if eta != 0.0:
            raise ConfigError(f"--eta {eta}: the flow samplers are deterministic (eta 0)")
        return FlowSampler(steps, name), 0.0
    if name == "ddpm":
        return ddpm, 0.0
    if name == "dpm++" and eta != 0.0:
        raise ConfigError(f"--eta {eta}: DPM-Solver++ is deterministic (eta 0)")
    if not 0 < steps <= ddpm.num_train_timesteps:
        raise ConfigError(f"--steps {steps}: expected 1 to {ddpm.num_train_timesteps} steps (the "
                          "model's number of timesteps)")
    if name == "ddim":
        scheduler = DDIMScheduler.from_ddpm(ddpm, spacing or "leading")
    else:
        scheduler = DPMSolverScheduler.from_ddpm(ddpm, spacing or "trailing")
    scheduler.set_timesteps(steps)
    return scheduler, eta


def visited_timesteps(scheduler: DDPMScheduler | FlowSampler, strength: float = 1.0) -> list:
    """[P8] The timesteps a run at `strength` takes, first to last: the scheduler's timesteps
    below round(strength * T) (all of them at strength 1); a flow sampler's step times."""
    if isinstance(scheduler, FlowSampler):
        return scheduler.times(strength)
    t_start = round(strength * scheduler.num_train_timesteps)
    return [t for t in scheduler.timesteps.tolist() if t < t_start]


def spread_steps(timesteps: list, limit: int) -> list:
    """Up to `limit` of a run's timesteps (visited_timesteps), evenly spread, the first and the
    last always included: at the last one the predicted x_0 is the image the run returns. The
    steps a trajectory strip (sample.py) or the explorer shows."""
    if len(timesteps) <= limit:
        return list(timesteps)
    return [timesteps[round(i * (len(timesteps) - 1) / (limit - 1))] for i in range(limit)]


def model_calls(scheduler: DDPMScheduler | FlowSampler, strength: float = 1.0) -> int:
    """The UNet calls one image of a run at `strength` takes (a progress bar's length): one per
    visited timestep, or what the flow sampler's solver needs (Heun: two per step but the last)."""
    if isinstance(scheduler, FlowSampler):
        return scheduler.model_calls(strength)
    return len(visited_timesteps(scheduler, strength))


@torch.no_grad()
def sample(model_fn, scheduler: DDPMScheduler, x_T: torch.Tensor, num_steps: int | None = None,
           eta: float = 0.0, generator: torch.Generator | None = None,
           x_init: torch.Tensor | None = None, strength: float = 1.0,
           trajectory_steps=None, trajectory: list | None = None,
           progress: bool = True) -> torch.Tensor:
    """[P7] Start from Gaussian noise x_T and denoise step by step down to x_0.

    model_fn:         (x_t (B, C, H, W), t (B,) long) -> the network's output (eps or v)
    scheduler:        DDPMScheduler (all T steps, DDPM Algorithm 2) or DDIMScheduler (DDIM eq. 12)
    x_T:              (B, C, H, W) standard normal noise, the starting point
    num_steps:        DDIM only: calls scheduler.set_timesteps(num_steps) (the scheduler keeps it)
    eta:              DDIM only: 0 deterministic, 1 DDPM-like noise (DDIM eq. 16)
    generator:        draws the noise of the stochastic steps; same x_T and seed: same images
    x_init, strength: [P8] re-run the reverse process from part-way: x_init (B, C, H, W) is noised
                      to step round(strength * T) with x_T as the noise, and only the remaining
                      steps are taken. strength 0 returns x_init; strength 1 is a fresh sample
                      from x_T (x_init ignored); in between: variations that keep more of x_init
                      the smaller strength is.
    trajectory_steps: timesteps t at which to record (t, x_t, x0_pred), e.g. for a figure; they
    trajectory:       are appended, first to last, to the list `trajectory`
    Returns x_0 (B, C, H, W).
    """
    # 1. the timesteps to visit: all T for DDPM, num_steps of them for DDIM
    if isinstance(scheduler, DDIMScheduler):
        if num_steps is not None:
            scheduler.set_timesteps(num_steps)
        step_options = {"eta": eta}
    else:
        if num_steps not in (None, scheduler.num_train_timesteps) or eta != 0.0:
            raise ValueError("DDPMScheduler takes all T steps with sigma_t^2 = beta~_t; "
                             "use DDIMScheduler for num_steps or eta")
        step_options = {}
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if x_init is None and strength != 1.0:
        raise ValueError("strength < 1 needs x_init, the image to start from")

    # 2. [P8] start part-way: keep the steps below round(strength * T), re-noise x_init to the first
    timesteps = visited_timesteps(scheduler, strength)
    if x_init is None or strength == 1.0:
        x = x_T                                                          # a fresh sample
    elif timesteps:
        x = scheduler.add_noise(x_init, x_T, timesteps[0])               # q(x_t | x_0 = x_init)
    else:
        x = x_init                                                       # strength 0: nothing to undo
    record = {int(t) for t in trajectory_steps} if trajectory_steps is not None else set()
    if record and trajectory is None:
        raise ValueError("trajectory_steps needs a list `trajectory` to record into")
    if record - set(timesteps):
        raise ValueError(f"trajectory_steps {sorted(record - set(timesteps))} are not among the "
                         f"{len(timesteps)} timesteps of this run")

    # 3. the loop: predict, step, repeat
    for t in tqdm(timesteps, desc="sampling", disable=not progress):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)  # (B,)
        output = scheduler.step(model_fn(x, t_batch), t, x, generator=generator, **step_options)
        if t in record:
            trajectory.append((t, x, output.pred_original_sample))
        x = output.prev_sample
    return x
