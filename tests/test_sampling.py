"""The sampling loop with oracle and dummy models: recovery, img2img strength, trajectories, seeds."""

import pytest
import torch

from diffusion import DDIMScheduler, DDPMScheduler, sample

SHAPE = (3, 3, 8, 8)


def noise(seed):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def gen(seed):
    return torch.Generator().manual_seed(seed)


def make_oracle(scheduler, x0):
    """A model that knows the answer: the exact noise that takes x0 to the x_t it is given."""
    def model_fn(x_t, t):
        ab = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()  # eps = (x_t - sqrt(ab) x_0) / sqrt(1 - ab)
    return model_fn


class Recorder:
    """A dummy model that remembers what it was called with."""
    def __init__(self):
        self.calls = []

    def __call__(self, x_t, t):
        self.calls.append((x_t, t))
        return 0.3 * x_t + 0.01 * t.view(-1, 1, 1, 1)


@pytest.mark.parametrize("make_scheduler, num_steps", [
    (lambda: DDIMScheduler(), 20),
    (lambda: DDIMScheduler(timestep_spacing="trailing", clip_sample=False), 20),
    (lambda: DDPMScheduler(), None),
])
def test_oracle_model_recovers_x0_from_pure_noise(make_scheduler, num_steps):
    scheduler = make_scheduler()
    x0 = 0.9 * torch.rand(SHAPE, generator=gen(0)) * 2 - 0.9
    x = sample(make_oracle(scheduler, x0), scheduler, noise(1), num_steps=num_steps,
               generator=gen(2), progress=False)
    assert torch.allclose(x, x0, atol=1e-4)
    assert not torch.allclose(noise(1), x0, atol=0.5)  # it did have something to do


def test_strength_0_returns_the_input_exactly():
    model = Recorder()
    x_init = noise(3)
    for scheduler in (DDPMScheduler(), DDIMScheduler()):
        out = sample(model, scheduler, noise(4), num_steps=None, x_init=x_init, strength=0.0,
                     progress=False)
        assert torch.equal(out, x_init)
    assert model.calls == []


@pytest.mark.parametrize("scheduler, eta", [(DDPMScheduler(), 0.0), (DDIMScheduler(), 1.0)])
def test_strength_1_is_a_fresh_sample(scheduler, eta):
    fresh = sample(Recorder(), scheduler, noise(5), eta=eta, generator=gen(6), progress=False)
    from_image = sample(Recorder(), scheduler, noise(5), eta=eta, generator=gen(6),
                        x_init=noise(7), strength=1.0, progress=False)
    assert torch.equal(from_image, fresh)
    other_seed = sample(Recorder(), scheduler, noise(5), eta=eta, generator=gen(8), progress=False)
    assert not torch.allclose(other_seed, fresh)


@pytest.mark.parametrize("scheduler, num_steps, strength, expected_ts", [
    (DDPMScheduler(), None, 0.3, list(range(299, -1, -1))),
    (DDIMScheduler(), 20, 0.5, list(range(450, -1, -50))),
])
def test_partial_strength_renoises_and_runs_the_remaining_steps(scheduler, num_steps, strength,
                                                                 expected_ts):
    model, x_init, x_T = Recorder(), noise(9), noise(10)
    sample(model, scheduler, x_T, num_steps=num_steps, x_init=x_init, strength=strength,
           generator=gen(11), progress=False)
    assert [int(t[0]) for _, t in model.calls] == expected_ts
    first_x, first_t = model.calls[0]
    assert first_t.shape == (SHAPE[0],) and first_t.dtype == torch.long
    assert torch.equal(first_x, scheduler.add_noise(x_init, x_T, expected_ts[0]))  # [P8] re-noised


def test_trajectory_has_the_requested_entries():
    scheduler = DDIMScheduler()
    x0 = torch.rand(SHAPE, generator=gen(12)) - 0.5
    steps = [950, 500, 0]
    trajectory = []
    sample(make_oracle(scheduler, x0), scheduler, noise(13), num_steps=20,
           trajectory_steps=steps, trajectory=trajectory, progress=False)
    assert [t for t, _, _ in trajectory] == steps
    assert torch.equal(trajectory[0][1], noise(13))  # x_t at the first step is x_T
    for t, x_t, x0_pred in trajectory:
        assert x_t.shape == x0_pred.shape == SHAPE
        assert torch.allclose(x0_pred, x0, atol=1e-3)
    with pytest.raises(ValueError, match="trajectory_steps"):
        sample(make_oracle(scheduler, x0), scheduler, noise(13), num_steps=20,
               trajectory_steps=[999], trajectory=[], progress=False)


def test_same_seed_same_images():
    scheduler = DDPMScheduler()
    def run(seed):
        return sample(Recorder(), scheduler, noise(14), generator=gen(seed), progress=False)
    assert torch.equal(run(15), run(15))
    assert not torch.allclose(run(15), run(16))


def test_bad_combinations_are_refused():
    with pytest.raises(ValueError, match="DDIMScheduler"):
        sample(Recorder(), DDPMScheduler(), noise(0), num_steps=50, progress=False)
    with pytest.raises(ValueError, match="DDIMScheduler"):
        sample(Recorder(), DDPMScheduler(), noise(0), eta=0.5, progress=False)
    with pytest.raises(ValueError, match="x_init"):
        sample(Recorder(), DDIMScheduler(), noise(0), strength=0.5, progress=False)
    with pytest.raises(ValueError, match="strength"):
        sample(Recorder(), DDIMScheduler(), noise(0), x_init=noise(1), strength=1.5, progress=False)


@pytest.mark.parametrize("name, steps", [("ddim", 50), ("dpm++", 20), ("ddim", 5)])
def test_the_trajectory_strip_spans_the_run_to_its_last_step(name, steps):
    """sample.py --trajectory: 8 columns (or every step of a shorter run) from the first visited
    timestep to the last, where the predicted x_0 is the returned image; DDIM 50 used to stop at
    t = 140 and DPM-Solver++ 20 at t = 299."""
    from diffusion import make_sampler, visited_timesteps
    from sample import trajectory_columns
    scheduler, _ = make_sampler(DDPMScheduler(num_train_timesteps=1000), name, steps)
    visited, shown = visited_timesteps(scheduler), trajectory_columns(scheduler, 1.0)
    assert len(shown) == min(8, steps) and shown[0] == visited[0] and shown[-1] == visited[-1]
    assert shown == sorted(set(shown), reverse=True)  # distinct, in the loop's order
