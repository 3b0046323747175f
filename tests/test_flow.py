"""Flow matching (diffusion/flow.py) against closed forms: the straight path and its velocity,
data at one point (one Euler step is exact), Gaussian data (its exact velocity field, integrated
by Euler and Heun), and the logit-normal timesteps against their density."""

import json
import math

import pytest
import torch

from common.errors import ConfigError
from diffusion import DDIMScheduler, DDPMScheduler, make_sampler
from diffusion.flow import (FlowMatching, FlowSampler, flow_loss, flow_path, flow_timesteps,
                            flow_velocity, flow_x0, logit_normal_density, logit_normal_t,
                            sample_flow)


def gaussian_velocity(x: torch.Tensor, t, mean: float, std: float) -> torch.Tensor:
    """E[eps - x_0 | x_t = x] for x_0 ~ N(mean, std^2): x_t, x_0 and eps are jointly Gaussian,
    with a = 1 - t and V = Var x_t = a^2 std^2 + t^2, E[x_0 | x] = mean + a std^2 / V (x - a mean)
    and E[eps | x] = t / V (x - a mean)."""
    t = t.reshape(-1, *([1] * (x.dim() - 1))).double() if torch.is_tensor(t) else t
    a = 1 - t
    variance = a * a * std * std + t * t
    return (t - a * std * std) / variance * (x - a * mean) - mean


def test_the_path_runs_straight_from_the_data_to_the_noise_at_the_velocity():
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 4, 4, generator=generator).unbind(0)
    x0, noise = x0[None], noise[None]
    assert torch.equal(flow_path(x0, noise, 0.0), x0)
    assert torch.equal(flow_path(x0, noise, 1.0), noise)
    t, h = 0.3, 1e-3                                       # d x_t / dt by a central difference
    derivative = (flow_path(x0.double(), noise.double(), t + h)
                  - flow_path(x0.double(), noise.double(), t - h)) / (2 * h)
    assert torch.allclose(derivative, flow_velocity(x0, noise).double(), atol=1e-9)
    x_t = flow_path(x0, noise, torch.tensor([0.7]))
    assert torch.allclose(flow_x0(flow_velocity(x0, noise), torch.tensor([0.7]), x_t), x0,
                          atol=1e-6)                      # x_0 = x_t - t v
    assert flow_loss(flow_velocity(x0, noise), x0, noise).item() == 0.0


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_data_at_one_point_is_reached_in_one_step(solver):
    """For data at c, every line through x_t comes from c: v(x, t) = (x - c) / t, and one step
    from t = 1 to 0 lands on c from any starting noise."""
    c = torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)
    x_T = torch.randn(4, 3, 1, 1, generator=torch.Generator().manual_seed(1))
    x0 = sample_flow(lambda x, t: (x - c) / t.view(-1, 1, 1, 1), x_T, num_steps=1, solver=solver)
    assert torch.allclose(x0, c.expand_as(x0), atol=1e-6)


def gaussian_result(mean: float, std: float, steps: int, solver: str) -> tuple[float, float]:
    """The sampler's map x_T -> x_0 is affine for Gaussian data (the velocity is affine in x):
    x_0 = alpha x_T + beta, so x_T ~ N(0, 1) gives mean beta and std |alpha| exactly."""
    def velocity(x, t):
        return gaussian_velocity(x.double(), t, mean, std)
    x_T = torch.tensor([0.0, 1.0], dtype=torch.float64).view(2, 1, 1, 1)
    x0 = sample_flow(velocity, x_T, num_steps=steps, solver=solver).flatten()
    return x0[0].item(), abs((x0[1] - x0[0]).item())


@pytest.mark.parametrize("mean, std", [(0.0, 0.5), (1.5, 0.2), (-0.5, 2.0)])
def test_gaussian_data_is_reached_with_an_error_that_shrinks_with_the_steps(mean, std):
    errors = {}
    for solver, steps in [("euler", 10), ("euler", 40), ("euler", 100), ("euler", 1000),
                          ("heun", 5), ("heun", 20)]:
        m, s = gaussian_result(mean, std, steps, solver)
        errors[solver, steps] = abs(m - mean) + abs(s - std)
    assert errors["euler", 1000] < 0.01                       # many Euler steps: close
    assert errors["euler", 100] < errors["euler", 10] / 5     # first order: about 10x per 10x steps
    assert errors["euler", 1000] < errors["euler", 100] / 5
    assert errors["heun", 20] < 0.01                          # Heun: few steps suffice
    assert errors["heun", 20] < errors["euler", 40] / 2       # 39 model calls beat Euler's 40
    assert errors["heun", 20] < errors["heun", 5] / 8         # second order: about 16x per 4x


def test_logit_normal_timesteps_follow_their_density():
    mean, std = 0.5, 1.2
    t = logit_normal_t(200_000, mean, std, torch.Generator().manual_seed(2))
    assert 0 < t.min() and t.max() < 1
    edges = torch.linspace(0, 1, 21, dtype=torch.float64)
    counts = torch.histc(t.double(), bins=20, min=0, max=1) / len(t)  # share per bin
    # the bin probability in closed form: Phi((logit b - m) / s) - Phi((logit a - m) / s)
    def cdf(x):
        return 0.5 * (1 + math.erf((math.log(x / (1 - x)) - mean) / (std * math.sqrt(2)))) \
            if 0 < x < 1 else float(x >= 1)
    expected = torch.tensor([cdf(b) - cdf(a) for a, b in zip(edges[:-1].tolist(),
                                                             edges[1:].tolist())],
                            dtype=torch.float64)
    assert torch.allclose(counts, expected, atol=0.003)
    # and the density integrates to the same bin probabilities (midpoint rule, 200 points a bin)
    fine = torch.linspace(0, 1, 4001, dtype=torch.float64)[1:-1]
    density = logit_normal_density(fine, mean, std)
    assert abs(density.sum().item() / 4000 - 1) < 1e-3


def test_the_sampler_refuses_what_it_cannot_do():
    x = torch.zeros(1, 1, 1, 1)
    with pytest.raises(ValueError, match="solver"):
        sample_flow(lambda x, t: x, x, 2, solver="rk4")
    with pytest.raises(ValueError, match="x_init"):
        sample_flow(lambda x, t: x, x, 2, strength=0.5)
    assert flow_timesteps(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    flow, ddpm = FlowMatching.from_config({}), DDPMScheduler(num_train_timesteps=10)
    assert isinstance(make_sampler(flow, None, 4)[0], FlowSampler)          # euler by default
    assert isinstance(make_sampler(ddpm, None, 4)[0], DDIMScheduler)        # ddim by default
    with pytest.raises(ConfigError, match="--sampler ddim: a flow-matching model"):
        make_sampler(flow, "ddim", 4)
    assert torch.equal(sample_flow(lambda x, t: x + 1, x, 3, x_init=x + 5, strength=0.0), x + 5)


def test_both_diffusion_stages_train_and_sample_with_flow_matching(tmp_path, vae_run, clip_run):
    """--objective flow: the checkpoint says so, and sample.py samples it with Euler or Heun,
    with a prompt, guidance and attention maps for stage 4."""
    from tests.conftest import TINY, TINY_LDM, run
    pixel, latent = tmp_path / "pixel", tmp_path / "latent"
    run(["train_unconditional.py", *TINY, "--cache-dir", str(tmp_path / "cache"), "--steps", "3",
         "--objective", "flow", "--sample-every", "3", "--out", str(pixel)])
    run(["train_ldm.py", "--vae", str(vae_run / "checkpoint.pt"), "--clip",
         str(clip_run / "checkpoint.pt"), *TINY_LDM, "--steps", "2", "--objective", "flow",
         "--out", str(latent)])
    for out in (pixel, latent):
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        assert state["config"]["objective"] == "flow"
        losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").open()]
        assert all(math.isfinite(v) for v in losses)
    assert (pixel / "samples" / "step_000003.png").exists()
    run(["sample.py", "--ckpt", str(pixel / "checkpoint.pt"), "--n", "2", "--sampler", "euler",
         "--steps", "4", "--device", "cpu", "--out", str(tmp_path / "pixel.png")])
    # without --sampler, the checkpoint's kind picks it: Euler, the same images
    run(["sample.py", "--ckpt", str(pixel / "checkpoint.pt"), "--n", "2", "--steps", "4",
         "--device", "cpu", "--out", str(tmp_path / "pixel_default.png")])
    assert (tmp_path / "pixel_default.png").read_bytes() == (tmp_path / "pixel.png").read_bytes()
    run(["sample.py", "--ckpt", str(latent / "checkpoint.pt"), "--n", "2", "--sampler", "heun",
         "--steps", "3", "--prompt", "a smiling man", "--attention-maps", "--device", "cpu",
         "--out", str(tmp_path / "latent.png")])
    assert (tmp_path / "latent_attention.png").exists()
