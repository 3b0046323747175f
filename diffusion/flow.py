"""Flow matching on the straight path (rectified flow), the objective SD3 trains with: beyond the
video, which teaches DDPM. (Lipman et al. 2023, "Flow Matching for Generative Modeling"; Liu et
al. 2023, "Flow Straight and Fast"; Esser et al. 2024, "Scaling Rectified Flow Transformers",
Sec. 2-3, with its logit-normal timesteps.)

Time runs from t = 0 (data) to t = 1 (noise), the same direction as DDPM's t:

    path       x_t = (1 - t) x_0 + t eps                  a straight line from x_0 to eps
    velocity   v = d x_t / d t = eps - x_0                what the network learns to predict
    loss       || v_theta(x_t, t) - (eps - x_0) ||^2,     t ~ logit-normal(m, s)
    sampling   dx/dt = v_theta(x, t), integrated from t = 1 (x_1 ~ N(0, I)) down to t = 0

The network's best answer at (x_t, t) is the mean velocity of every straight line through x_t,
E[eps - x_0 | x_t]; integrating that field carries N(0, I) onto the data distribution exactly
(the flow's marginals are the path's). With a clean image from the prediction, x0_pred =
x_t - t v: the same bookkeeping as DDPM's x0_pred, and the reason one UNet fits both.
"""

import math
from dataclasses import dataclass

import torch

FLOW_TIME_SCALE = 1000.0  # the UNet's time embedding reads 1000 t: DDPM's 0..T-1 range (SD3 too)
FLOW_SAMPLERS = ("euler", "heun")  # the ODE solvers of sample_flow


@dataclass
class FlowMatching:
    """The training side of a flow-matching model: its timestep distribution and time scale (what
    a checkpoint's config says; DDPMScheduler is the same for a DDPM model)."""
    logit_mean: float = 0.0         # location of the logit-normal timesteps (SD3: 0)
    logit_std: float = 1.0          # scale of the logit-normal timesteps (SD3: 1)
    num_train_timesteps = int(FLOW_TIME_SCALE)  # the UNet's time range, 0 .. 1000 t (as DDPM's T)

    @classmethod
    def from_config(cls, cfg: dict) -> "FlowMatching":
        return cls(cfg.get("logit_mean", 0.0), cfg.get("logit_std", 1.0))

    def to(self, device) -> "FlowMatching":
        return self  # no tensors: nothing to move


@dataclass
class FlowSampler:
    """How to sample a flow-matching model: num_steps steps of an ODE solver (sample_flow)."""
    num_steps: int
    solver: str = "euler"           # "euler" or "heun"

    def times(self, strength: float = 1.0) -> list[float]:
        """The times at which a step starts (each step's first model call), first to last."""
        return flow_timesteps(self.num_steps, strength)[:-1]

    def model_calls(self, strength: float = 1.0) -> int:
        """Model calls of a run: one per Euler step; Heun adds one on every step but the last."""
        steps = len(self.times(strength))
        return steps if self.solver == "euler" or steps == 0 else 2 * steps - 1


def logit_normal_t(batch: int, mean: float = 0.0, std: float = 1.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) timesteps t = sigmoid(mean + std * n), n ~ N(0, 1), on the CPU (SD3's default: mean
    0, std 1). Its density, 1 / (std sqrt(2 pi)) / (t (1 - t)) exp(-(logit t - mean)^2 / (2
    std^2)), puts most training steps at middle noise levels, where the velocity is hardest."""
    return torch.sigmoid(mean + std * torch.randn(batch, generator=generator))


def _at(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t (B,) or a number, shaped to broadcast over x (B, C, H, W)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.reshape(-1, *([1] * (x.dim() - 1))) if t.dim() else t


def flow_path(x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
    """x_t = (1 - t) x_0 + t eps: the point at time t on the straight line from x_0 to eps."""
    t = _at(t, x0)
    return (1 - t) * x0 + t * noise


def flow_velocity(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The training target, d x_t / d t = eps - x_0 (the same at every t of the line)."""
    return noise - x0


def flow_loss(prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the predicted and the true velocity (conditional flow matching)."""
    return (prediction.float() - flow_velocity(x0, noise)).pow(2).mean()


def flow_x0(velocity: torch.Tensor, t, x_t: torch.Tensor) -> torch.Tensor:
    """The clean image a velocity implies: x_t = x_0 + t v, so x0_pred = x_t - t v."""
    return x_t - _at(t, x_t) * velocity


def flow_timesteps(num_steps: int, strength: float = 1.0) -> list[float]:
    """The times a sampler visits, first to last: num_steps equal steps from t = strength down
    to 0 (strength 1: from pure noise), num_steps + 1 points."""
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps {num_steps!r}: expected 1 or more")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength {strength}: expected a value in [0, 1]")
    return [strength * (1 - i / num_steps) for i in range(num_steps + 1)]


@torch.no_grad()
def sample_flow(velocity_fn, x_T: torch.Tensor, num_steps: int, solver: str = "euler",
                x_init: torch.Tensor | None = None, strength: float = 1.0,
                trajectory_steps=None, trajectory: list | None = None) -> torch.Tensor:
    """Integrate dx/dt = velocity_fn(x, t) from t = strength down to t = 0.

    velocity_fn: (x_t (B, C, H, W), t (B,) float in [0, 1]) -> the predicted velocity
    x_T:         (B, C, H, W) standard normal noise, the starting point at t = 1
    solver:      "euler": x_next = x + (t_next - t) v(x, t), one model call per step;
                 "heun": Euler, then the trapezoid rule with the velocity at the Euler point,
                 x_next = x + (t_next - t) (v(x, t) + v(x_euler, t_next)) / 2 (second order;
                 two calls per step, one on the last step, which ends at t = 0, as EDM does)
    x_init:      with strength < 1, start from x_init moved to t = strength on its line to x_T
                 (SDEdit in flow form); strength 0 returns x_init
    trajectory_steps: step start times (of FlowSampler.times) at which to record (t, x_t,
    trajectory:       x0_pred), appended to the list `trajectory`, as diffusion.sample does
    Returns x_0 (B, C, H, W).
    """
    if solver not in ("euler", "heun"):
        raise ValueError(f"solver {solver!r}: expected euler or heun")
    times = flow_timesteps(num_steps, strength)
    if strength < 1.0 and x_init is None:
        raise ValueError("strength < 1 needs x_init, the image to start from")
    record = set(trajectory_steps or [])
    if record - set(times[:-1]):
        raise ValueError(f"trajectory_steps {sorted(record - set(times[:-1]))} are not step "
                         "times of this run")
    x = x_T if strength == 1.0 else flow_path(x_init, x_T, strength)
    for t, t_next in zip(times[:-1], times[1:]):
        t_batch = torch.full((x.shape[0],), t, device=x.device)             # (B,)
        velocity = velocity_fn(x, t_batch)
        if t in record:
            trajectory.append((t, x, flow_x0(velocity, t, x)))
        x_euler = x + (t_next - t) * velocity
        if solver == "euler" or t_next == 0:
            x = x_euler
            continue
        velocity_next = velocity_fn(x_euler, torch.full_like(t_batch, t_next))
        x = x + (t_next - t) * (velocity + velocity_next) / 2
    return x


def logit_normal_density(t: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """The density of logit_normal_t at t in (0, 1)."""
    logit = torch.log(t / (1 - t))
    return torch.exp(-(logit - mean) ** 2 / (2 * std * std)) / (std * math.sqrt(2 * math.pi)
                                                                 * t * (1 - t))
