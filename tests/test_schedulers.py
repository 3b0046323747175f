"""The schedule and the DDPM / DDIM steps against closed forms, independent references and oracles."""

import math

import pytest
import torch

from diffusion import DDIMScheduler, DDPMScheduler
from diffusion.schedule import extract, make_betas

T = 1000
SCHEDULES = ["linear", "cosine"]


def cosine_f(t, s=0.008):
    """f(t) of improved DDPM eq. 17, in Python floats."""
    return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2


def reference_betas(schedule):
    """beta_t in Python floats, written from the papers without torch."""
    if schedule == "linear":
        return [1e-4 + i * (0.02 - 1e-4) / (T - 1) for i in range(T)]
    return [min(1 - cosine_f(i + 1) / cosine_f(i), 0.999) for i in range(T)]


def reference_alpha_bar(schedule):
    alpha_bar, product = [], 1.0
    for beta in reference_betas(schedule):
        product *= 1 - beta
        alpha_bar.append(product)
    return alpha_bar


def images(seed, shape=(4, 3, 8, 8)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---- the schedule ------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", SCHEDULES)
def test_betas_and_alpha_bar_match_python_references(schedule):
    sched = DDPMScheduler(beta_schedule=schedule)
    betas64 = torch.tensor(reference_betas(schedule), dtype=torch.float64)
    assert torch.allclose(make_betas(T, 1e-4, 0.02, schedule), betas64, rtol=1e-9, atol=0)
    alpha_bar = torch.tensor(reference_alpha_bar(schedule), dtype=torch.float64)
    assert torch.allclose(sched.alphas_cumprod.double(), alpha_bar, rtol=1e-6, atol=0)
    assert torch.allclose(sched.alphas.double(), 1 - betas64, rtol=1e-6, atol=0)
    assert torch.equal(sched.alphas_cumprod_prev[1:], sched.alphas_cumprod[:-1])
    assert sched.alphas_cumprod_prev[0] == 1.0


def test_linear_betas_end_points():
    sched = DDPMScheduler(beta_start=3e-4, beta_end=0.015)
    assert sched.betas[0] == torch.tensor(3e-4) and sched.betas[-1] == torch.tensor(0.015)
    assert (sched.betas[1:] > sched.betas[:-1]).all()  # the variance ramps up [P2]


def test_linear_alpha_bar_pinned_values():
    # Python float64 products of (1 - beta_i), beta_i = 1e-4 + i (0.02 - 1e-4) / 999, i <= t
    alpha_bar = DDPMScheduler().alphas_cumprod
    assert alpha_bar[0].item() == pytest.approx(0.9999, rel=1e-7)
    assert alpha_bar[499].item() == pytest.approx(0.07858724288177821, rel=1e-5)
    assert alpha_bar[999].item() == pytest.approx(4.0358297653756754e-05, rel=1e-5)


def test_cosine_schedule_end_points():
    sched = DDPMScheduler(beta_schedule="cosine")
    alpha_bar = sched.alphas_cumprod
    assert alpha_bar[0].item() == pytest.approx(cosine_f(1) / cosine_f(0), rel=1e-6)  # 0.99996
    assert alpha_bar[499].item() == pytest.approx(cosine_f(500) / cosine_f(0), rel=1e-5)
    assert alpha_bar[-1] < 1e-8  # pure noise at the end
    assert (sched.betas <= torch.tensor(0.999)).all()
    assert sched.betas[-1] == torch.tensor(0.999)  # the clip is active on the last step


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_posterior_variance_formula(schedule):
    sched = DDPMScheduler(beta_schedule=schedule)
    betas, alpha_bar = reference_betas(schedule), reference_alpha_bar(schedule)
    expected = [0.0] + [betas[t] * (1 - alpha_bar[t - 1]) / (1 - alpha_bar[t])
                                   for t in range(1, T)]
    assert torch.allclose(sched.posterior_variance.double(), torch.tensor(expected, dtype=torch.float64),
                          rtol=1e-5, atol=0)
    assert sched.posterior_variance[0] == 0  # the last reverse step adds no noise


def test_everything_stored_is_float32_or_long_and_to_returns_self():
    sched = DDIMScheduler(beta_schedule="cosine")
    assert sched.to("cpu") is sched
    tensors = {name: v for name, v in vars(sched).items() if isinstance(v, torch.Tensor)}
    assert {"betas", "alphas_cumprod", "posterior_variance", "timesteps"} <= set(tensors)
    assert all(v.dtype in (torch.float32, torch.int64) for v in tensors.values())


def test_extract_gathers_and_broadcasts():
    a = torch.arange(10.0) * 2
    out = extract(a, torch.tensor([3, 0, 9]), (3, 4, 5, 6))
    assert out.shape == (3, 1, 1, 1)
    assert out.flatten().tolist() == [6.0, 0.0, 18.0]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="beta_schedule"):
        DDPMScheduler(beta_schedule="quadratic")
    with pytest.raises(ValueError, match="prediction_type"):
        DDPMScheduler(prediction_type="sample")
    with pytest.raises(ValueError, match="timestep_spacing"):
        DDIMScheduler(timestep_spacing="middle")
    ddim = DDIMScheduler()
    for bad in (0, T + 1, 2.5):
        with pytest.raises(ValueError, match="num_inference_steps"):
            ddim.set_timesteps(bad)
    x = images(0)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="eta"):
            ddim.step(x, 999, x, eta=bad)


# ---- the forward process [P2], [P3] ------------------------------------------------------------

@pytest.mark.parametrize("schedule", SCHEDULES)
def test_add_noise_matches_the_step_by_step_forward_process(schedule):
    """[P2] applied t+1 times (index t) has the distribution of [P3]'s one jump."""
    sched = DDPMScheduler(beta_schedule=schedule)
    g = torch.Generator().manual_seed(0)
    shape, x0_value = (300, 1, 10, 10), 0.8  # 30k scalars from x_0 = 0.8 (small: runs in 1 s)
    n = math.prod(shape)
    checks = {0, 1, 10, 250, 500, 999}
    x, eps = torch.full(shape, x0_value), torch.empty(shape)
    for t, beta in enumerate(sched.betas.tolist()):
        torch.randn(shape, generator=g, out=eps)
        x.mul_(math.sqrt(1 - beta)).add_(eps, alpha=math.sqrt(beta))  # x_t = sqrt(1-b) x_{t-1} + sqrt(b) eps
        if t not in checks:
            continue
        t_batch = torch.full((shape[0],), t)
        jumped = sched.add_noise(torch.full(shape, x0_value), torch.randn(shape, generator=g), t_batch)
        alpha_bar = sched.alphas_cumprod[t].double().item()
        mean, var = math.sqrt(alpha_bar) * x0_value, 1 - alpha_bar
        se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2 / (n - 1))  # standard errors
        for samples in (x, jumped):
            assert abs(samples.double().mean().item() - mean) < 5 * se_mean, (t, "mean")
            assert abs(samples.double().var().item() - var) < 5 * se_var, (t, "variance")


def test_add_noise_and_training_targets():
    for prediction_type in ("epsilon", "v"):
        sched = DDPMScheduler(prediction_type=prediction_type)
        x0, noise, t = images(1), images(2), torch.tensor([0, 10, 500, 999])
        ab = sched.alphas_cumprod[t].view(4, 1, 1, 1)
        x_t = sched.add_noise(x0, noise, t)
        assert torch.allclose(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * noise, atol=1e-6)
        target = sched.training_target(x0, noise, t)
        expected = noise if prediction_type == "epsilon" else ab.sqrt() * noise - (1 - ab).sqrt() * x0
        assert torch.allclose(target, expected, atol=1e-6)
        # the target read back through predict_x0 / predict_eps gives x_0 and eps again
        assert torch.allclose(sched.predict_x0(target, t, x_t), x0, atol=2e-3)
        assert torch.allclose(sched.predict_eps(target, t, x_t), noise, atol=1e-5)


# ---- the reverse step [P4] --------------------------------------------------------------------

@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("t", [1, 10, 500, 999])
def test_posterior_mean_and_variance_from_bayes_rule(schedule, t):
    """q(x_{t-1} | x_t, x_0) from the product of two Gaussians (not from eq. 7):
    q(x_{t-1} | x_0) = N(sqrt(ab_{t-1}) x_0, 1 - ab_{t-1}),  q(x_t | x_{t-1}) = N(sqrt(a_t) x_{t-1}, b_t)."""
    sched = DDPMScheduler(beta_schedule=schedule, clip_sample=False)
    beta, ab = reference_betas(schedule)[t], reference_alpha_bar(schedule)
    precision = 1 / (1 - ab[t - 1]) + (1 - beta) / beta
    x0, true_eps = images(3).double(), images(4).double()
    x_t = math.sqrt(ab[t]) * x0 + math.sqrt(1 - ab[t]) * true_eps
    mean = (math.sqrt(ab[t - 1]) * x0 / (1 - ab[t - 1]) + math.sqrt(1 - beta) * x_t / beta) / precision
    assert sched.posterior_variance[t].item() == pytest.approx(1 / precision, rel=1e-5)
    assert torch.allclose(sched.posterior_mean(x0.float(), x_t.float(), t).double(), mean, atol=1e-5)

    # the full step with an oracle eps lands on that mean plus sqrt(posterior variance) z
    out = sched.step(true_eps.float(), t, x_t.float(), generator=torch.Generator().manual_seed(5))
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5)).double()  # the step's z
    assert torch.allclose(out.prev_sample.double(), mean + math.sqrt(1 / precision) * z, atol=1e-4)
    # x0_pred divides by sqrt(alpha_bar_t): float32 rounding of x_t grows by that factor near t = T
    assert torch.allclose(out.pred_original_sample.double(), x0, atol=1e-4 + 1e-6 / math.sqrt(ab[t]))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_video_form_of_the_reverse_step_equals_the_x0_route(schedule):
    """x_{t-1} = 1/sqrt(a_t) (x_t - b_t / sqrt(1 - ab_t) eps) + sigma_t z (the video, Algorithm 2)."""
    sched = DDPMScheduler(beta_schedule=schedule, clip_sample=False)
    x_t, eps = images(6), images(7)  # any eps: it is an identity, not an oracle property
    for t in (0, 1, 10, 250, 500, 998, 999):
        a, b, ab = sched.alphas[t], sched.betas[t], sched.alphas_cumprod[t]
        z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t))
        video = (x_t - b / (1 - ab).sqrt() * eps) / a.sqrt() + sched.posterior_variance[t].sqrt() * z
        out = sched.step(eps, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        assert torch.allclose(out, video, atol=2e-4, rtol=1e-4), t

    # with clipping on, the two differ where x0_pred leaves [-1, 1] (so the flag does something)
    clipped = DDPMScheduler(beta_schedule=schedule, clip_sample=True)
    t = 999
    out_unclipped = sched.step(eps, t, x_t, generator=torch.Generator().manual_seed(0)).prev_sample
    out_clipped = clipped.step(eps, t, x_t, generator=torch.Generator().manual_seed(0)).prev_sample
    assert (out_clipped - out_unclipped).abs().max() > 1e-2
    assert clipped.step(eps, t, x_t).pred_original_sample.abs().max() <= 1.0


def test_ddpm_step_noise_reproducible_and_absent_at_t0():
    sched = DDPMScheduler()
    x_t, out = images(8), images(9)
    def step(t, seed):
        return sched.step(out, t, x_t, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(step(500, 1).prev_sample, step(500, 1).prev_sample)
    assert not torch.allclose(step(500, 1).prev_sample, step(500, 2).prev_sample)
    assert torch.equal(step(0, 1).prev_sample, step(0, 2).prev_sample)  # t = 0: no noise
    assert torch.equal(step(0, 1).prev_sample, step(0, 1).pred_original_sample)  # x_0 = x0_pred
    assert torch.equal(step(torch.tensor(500), 1).prev_sample, step(500, 1).prev_sample)  # 0-dim t


@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_ddim_eta0_with_an_oracle_recovers_x0(prediction_type, schedule):
    sched = DDIMScheduler(beta_schedule=schedule, prediction_type=prediction_type, clip_sample=False)
    x0, noise = images(10).clamp(-1, 1), images(11)

    def oracle(x_t, t):  # the exact target for this x_0, given x_t
        ab = sched.alphas_cumprod[t]
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return eps if prediction_type == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0

    # one step from t straight to the clean image
    for t in (0, 10, 500, 900):
        x_t = sched.add_noise(x0, noise, t)
        assert torch.allclose(sched.step(oracle(x_t, t), t, x_t, prev_t=-1).prev_sample, x0, atol=1e-4)
    # a full 10-step loop
    sched.set_timesteps(10)
    x = sched.add_noise(x0, noise, int(sched.timesteps[0]))
    for t in sched.timesteps.tolist():
        out = sched.step(oracle(x, t), t, x)
        assert torch.allclose(out.pred_original_sample, x0, atol=1e-3)
        x = out.prev_sample
    assert torch.allclose(x, x0, atol=1e-4)


def test_ddim_timestep_spacing():
    ddim = DDIMScheduler()
    ddim.set_timesteps(10)
    assert ddim.timesteps.tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert ddim.previous_timestep(900) == 800 and ddim.previous_timestep(0) == -1
    with pytest.raises(ValueError, match="not one of"):
        ddim.previous_timestep(950)
    trailing = DDIMScheduler(timestep_spacing="trailing")
    trailing.set_timesteps(10)
    assert trailing.timesteps.tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    trailing.set_timesteps(1)
    assert trailing.timesteps.tolist() == [999]
    for sched in (ddim, trailing):
        sched.set_timesteps(T)
        assert torch.equal(sched.timesteps, DDPMScheduler().timesteps)  # S = T: the DDPM loop


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("clip_sample", [False, True])
def test_ddim_eta1_all_steps_is_the_ddpm_step(schedule, clip_sample):
    ddpm = DDPMScheduler(beta_schedule=schedule, clip_sample=clip_sample)
    ddim = DDIMScheduler.from_ddpm(ddpm)
    assert torch.equal(ddim.alphas_cumprod, ddpm.alphas_cumprod)
    sigmas = torch.stack([ddim.sigma(t, t - 1, eta=1.0) for t in range(T)])
    assert torch.allclose(sigmas, ddpm.posterior_variance.sqrt(), rtol=1e-3, atol=1e-6)
    assert ddim.sigma(500, 499, eta=0.0) == 0
    x_t, out = images(12), images(13)
    for t in (0, 1, 500, 999):
        a = ddpm.step(out, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        b = ddim.step(out, t, x_t, eta=1.0, generator=torch.Generator().manual_seed(t)).prev_sample
        # float32 rounding only (1 - alpha_bar near t = 0, large eps_pred after clipping)
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), t


def test_ddim_step_at_the_end_is_deterministic():
    ddim = DDIMScheduler()
    x_t, out = images(14), images(15)
    a = ddim.step(out, 0, x_t, eta=1.0, generator=torch.Generator().manual_seed(1))
    b = ddim.step(out, 0, x_t, eta=1.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.prev_sample, b.prev_sample)
    assert torch.equal(a.prev_sample, a.pred_original_sample)
    c = ddim.step(out, 500, x_t, eta=1.0, generator=torch.Generator().manual_seed(1))
    d = ddim.step(out, 500, x_t, eta=1.0, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(c.prev_sample, d.prev_sample)  # but eta = 1 is noisy before the end
