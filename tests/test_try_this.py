"""The "Try this" experiments at the end of docs/01 .. docs/16: the numbers they print, checked
against their closed forms where there is one and against the value the page states otherwise,
so that a page whose claim stops being true fails the suite.

Only what a fast CPU test can check is here: no training, no checkpoints, no stage scripts run.
Each test names the page and the experiment it checks.
"""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from data.captions import caption, captions_for, full_caption, step_rng
from data.synthetic import SYNTHETIC_ATTRIBUTES, sample_attributes
from diffusion import DDIMScheduler, DDPMScheduler, make_sampler, sample
from diffusion.schedule import make_betas
from models.attention import Attention
from models.clip import TextEncoder, clip_loss
from models.embeddings import timestep_embedding
from models.losses import generator_loss, hinge_d_loss, kl_loss
from models.tokenizer import Tokenizer
from models.unet import UNet
from models.vae import AutoencoderKL, DiagonalGaussian

T = 1000
CPU_UNET = dict(in_channels=3, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                attention_levels=(2,))  # train_unconditional.py --preset cpu


def linear_betas(T=T, beta_start=1e-4, beta_end=0.02):
    """beta_t in Python floats, from DDPM's linear schedule (no torch)."""
    return [beta_start + i * (beta_end - beta_start) / (T - 1) for i in range(T)]


def linear_alpha_bar(T=T, beta_start=1e-4, beta_end=0.02):
    """alpha_bar_t = prod_{s<=t} (1 - beta_s) in Python floats."""
    alpha_bar, product = [], 1.0
    for beta in linear_betas(T, beta_start, beta_end):
        product *= 1 - beta
        alpha_bar.append(product)
    return alpha_bar


def zero_model(x_t, t):
    """eps_pred = 0, what the untrained UNet predicts (its output conv starts at zero)."""
    return torch.zeros_like(x_t)


# ---- page 1: generative models -----------------------------------------------------------------

def test_p01_zero_denoiser_pushes_noise_to_its_signs():
    """Page 1, Try this 1: DDIM, 50 steps, eps_pred = 0 from randn(4, 3, 32, 32) of seed 0 prints
    about 0.993 (share of |x_0| > 0.99) and 1.0 (share with the sign of x_T)."""
    x_T = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(50)
    x_0 = sample(zero_model, scheduler, x_T, progress=False)
    saturated = (x_0.abs() > 0.99).float().mean().item()
    assert saturated > 0.99
    assert saturated == pytest.approx(0.993, abs=5e-4)  # the page's value
    assert torch.equal(x_0.sign(), x_T.sign())          # every value keeps the sign of x_T
    assert x_0.abs().max() <= 1.0                       # the pixel clip bounds x0_pred


def test_p01_attribute_rules_and_glasses_share():
    """Page 1, Try this 3: in 10,000 rows no bald woman, no man with lipstick; Eyeglasses 0.3466."""
    rows = [sample_attributes(random.Random(i)) for i in range(10000)]
    assert sum(r["Bald"] and not r["Male"] for r in rows) == 0
    assert sum(r["Wearing_Lipstick"] and r["Male"] for r in rows) == 0
    assert sum(r["Eyeglasses"] for r in rows) / len(rows) == 0.3466  # the page's value, exactly


# ---- page 2: forward diffusion -----------------------------------------------------------------

@pytest.mark.parametrize("beta_end, first, count", [(0.02, 673, 327), (0.2, 213, 787)])
def test_p02_first_step_below_one_percent(beta_end, first, count):
    """Page 2, Try this 1: alpha_bar < 0.01 first at t = 673 (327 steps) with beta_end 0.02,
    at t = 213 (787 steps) with beta_end 0.2."""
    alpha_bar = DDPMScheduler(beta_end=beta_end).alphas_cumprod
    below = alpha_bar < 0.01
    assert int(below.nonzero()[0]) == first and int(below.sum()) == count
    # the same from the float64 product (no step sits near the 0.01 threshold)
    reference = linear_alpha_bar(beta_end=beta_end)
    assert next(t for t, a in enumerate(reference) if a < 0.01) == first
    assert sum(a < 0.01 for a in reference) == count


def test_p02_variance_walk_with_and_without_the_shrinking_factor():
    """Page 2, Try this 2: from variance 4, with sqrt(1 - beta_t) the variance goes 3.726, 1.588,
    1.002 at t = 99, 399, 999; without it 4.138, 5.668, 14.062, about 4 + sum(betas) = 14.05."""
    betas = make_betas(T)
    assert betas.sum().item() == pytest.approx(10.05, rel=1e-12)  # T (beta_1 + beta_T) / 2
    # closed form: Var_t = (1 - b_t) Var_{t-1} + b_t, i.e. 1 + 3 alpha_bar_t; without the factor
    # Var_t = 4 + sum_{s<=t} b_s
    alpha_bar = torch.cumprod(1 - betas, 0)
    with_factor = {t: 1 + 3 * alpha_bar[t].item() for t in (99, 399, 999)}
    without = {t: 4 + betas[:t + 1].sum().item() for t in (99, 399, 999)}
    assert without[999] == pytest.approx(14.05, rel=1e-12)
    # the page's printed values are variances of 100,000 samples: within 4 standard errors
    # (Var sqrt(2 / n)) of the closed form
    page = {99: (3.726, 4.138), 399: (1.588, 5.668), 999: (1.002, 14.062)}
    for t, (shrunk, grown) in page.items():
        assert abs(shrunk - with_factor[t]) < 4 * with_factor[t] * math.sqrt(2 / 100000), t
        assert abs(grown - without[t]) < 4 * without[t] * math.sqrt(2 / 100000), t
    # the step formula itself, on 20,000 samples (5 standard errors)
    n, generator = 20000, torch.Generator().manual_seed(0)
    x = 2 * torch.randn(n, generator=generator, dtype=torch.float64)
    y = x.clone()
    for t in range(T):
        x = (1 - betas[t]).sqrt() * x + betas[t].sqrt() * torch.randn(n, generator=generator, dtype=torch.float64)
        y = y + betas[t].sqrt() * torch.randn(n, generator=generator, dtype=torch.float64)
    assert abs(x.var().item() - with_factor[999]) < 5 * with_factor[999] * math.sqrt(2 / n)
    assert abs(y.var().item() - without[999]) < 5 * without[999] * math.sqrt(2 / n)


def test_p02_end_point_depends_on_T():
    """Page 2, Try this 3: alpha_bar_T is 4.0e-5 for T = 1000, 0.36 for T = 100 with the same
    betas (sqrt 0.60 of x_0 left), and 2.1e-5 for T = 100 with beta_end 0.2."""
    # (T, beta_end, the page's value, half a unit of its last digit)
    for num_steps, beta_end, page, rounding in ((1000, 0.02, 4.036e-5, 5e-9), (100, 0.02, 0.3636, 5e-5),
                                                (100, 0.2, 2.1e-5, 5e-7)):
        end = DDPMScheduler(num_train_timesteps=num_steps, beta_end=beta_end).alphas_cumprod[-1].item()
        # closed form: prod (1 - beta_t) of the linear schedule, in float64
        assert end == pytest.approx(linear_alpha_bar(num_steps, 1e-4, beta_end)[-1], rel=1e-5)
        assert end == pytest.approx(page, abs=rounding)
    assert math.sqrt(DDPMScheduler(num_train_timesteps=100).alphas_cumprod[-1]) == pytest.approx(0.60, abs=5e-3)


# ---- page 3: closed-form noising ---------------------------------------------------------------

def test_p03_product_of_betas_against_alpha_bar():
    """Page 3, Try this 1: the product of the betas is 1e-4, 1.2e-8, 1.7e-12 after 1, 2, 3 steps;
    alpha_bar is 0.9999, 0.9998, 0.9996."""
    scheduler = DDPMScheduler()
    betas = linear_betas()
    beta_products = torch.cumprod(scheduler.betas, 0)[:3].tolist()
    # closed form: b_0, b_0 b_1, b_0 b_1 b_2 and (1 - b_0), (1 - b_0)(1 - b_1), ...
    assert beta_products == pytest.approx([betas[0], betas[0] * betas[1], betas[0] * betas[1] * betas[2]], rel=1e-6)
    assert scheduler.alphas_cumprod[:3].tolist() == pytest.approx(linear_alpha_bar()[:3], rel=1e-7)
    assert beta_products == pytest.approx([1e-4, 1.2e-8, 1.7e-12], rel=0.02)  # the page's values
    assert [round(a, 4) for a in scheduler.alphas_cumprod[:3].tolist()] == [0.9999, 0.9998, 0.9996]


def test_p03_steps_of_almost_pure_noise():
    """Page 3, Try this 2: 327 of the 1000 linear steps, 65 of the cosine ones, have alpha_bar < 0.01."""
    counts = {schedule: int((DDPMScheduler(beta_schedule=schedule).alphas_cumprod < 0.01).sum())
              for schedule in ("linear", "cosine")}
    assert counts == {"linear": 327, "cosine": 65}
    # cosine closed form: alpha_bar_t = f(t + 1) / f(0), f(t) = cos^2((t / T + s) / (1 + s) pi / 2)
    def f(t):
        return math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2
    assert sum(f(t + 1) / f(0) < 0.01 for t in range(T)) == 65


def test_p03_walk_and_jump_leave_the_same_noise():
    """Page 3, Try this 3: 401 one-step updates and one add_noise jump to t = 400 leave noise of
    std within a few thousandths of sqrt(1 - alpha_bar_400) = 0.898."""
    scheduler, t, generator = DDPMScheduler(), 400, torch.Generator().manual_seed(0)
    x0 = torch.rand(32, 3, 32, 32, generator=generator) * 2 - 1  # half the page's 64 images: 1 s
    walk, eps = x0.clone(), torch.empty_like(x0)
    for beta in scheduler.betas[:t + 1].tolist():  # x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) eps
        torch.randn(walk.shape, generator=generator, out=eps)
        walk.mul_(math.sqrt(1 - beta)).add_(eps, alpha=math.sqrt(beta))
    jump = scheduler.add_noise(x0, torch.randn(x0.shape, generator=generator), torch.full((32,), t))
    alpha_bar = scheduler.alphas_cumprod[t]
    expected = (1 - alpha_bar).sqrt().item()
    assert expected == pytest.approx(math.sqrt(1 - linear_alpha_bar()[t]), rel=1e-6)  # closed form
    assert expected == pytest.approx(0.898, abs=5e-4)                                # the page's value
    # 98,304 samples: one standard error of the std is 0.898 / sqrt(2 n) = 0.002; allow 3
    for noisy in (walk, jump):
        assert abs((noisy - alpha_bar.sqrt() * x0).std().item() - expected) < 0.006


# ---- page 4: reverse diffusion -----------------------------------------------------------------

def test_p04_predict_x0_inverts_add_noise_and_scales_an_eps_error():
    """Page 4, Try this 1: with the true noise x0_pred is x_0 to float32 rounding (1.2e-7 at
    t = 10, 1.9e-5 at t = 999); an eps error of 0.01 moves it by 0.0005, 0.034, 0.26 and 1.57 at
    t = 10, 500, 800, 999, the factors sqrt((1 - ab) / ab) being 0.047 at t = 10 and 157 at 999."""
    scheduler = DDPMScheduler()
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 3, 32, 32, generator=generator) * 2 - 1
    eps = torch.randn(8, 3, 32, 32, generator=generator)
    page = {10: (0.0005, 5e-5), 500: (0.034, 5e-4), 800: (0.26, 5e-3), 999: (1.57, 5e-3)}  # value, rounding
    for t in (10, 500, 800, 999):
        ab = linear_alpha_bar()[t]
        factor = math.sqrt((1 - ab) / ab)
        x_t = scheduler.add_noise(x0, eps, torch.full((8,), t))
        exact = (scheduler.predict_x0(eps, t, x_t) - x0).abs().max().item()
        assert exact < 2e-7 * (1 + 1 / math.sqrt(ab)), t  # a few float32 ulps of x_t, / sqrt(ab)
        off = (scheduler.predict_x0(eps + 0.01, t, x_t) - x0).abs().mean().item()
        assert off == pytest.approx(0.01 * factor, rel=1e-3), t  # closed form: 0.01 sqrt((1-ab)/ab)
        assert off == pytest.approx(page[t][0], abs=page[t][1]), t
    ab = linear_alpha_bar()
    assert math.sqrt((1 - ab[10]) / ab[10]) == pytest.approx(0.047, abs=5e-4)
    assert math.sqrt((1 - ab[999]) / ab[999]) == pytest.approx(157, abs=0.5)


def test_p04_posterior_at_the_last_step_and_variance_ratios():
    """Page 4, Try this 3: at t = 0 coef_x0 = 1, coef_xt = 0, beta~_0 = 0; beta~_1 = 5.5e-5 against
    beta_1 = 1.2e-4, both 0.0200 at t = 999; beta~_t / beta_t = 0.45, 0.86, 0.98 at t = 1, 10, 100."""
    scheduler = DDPMScheduler()
    assert scheduler.posterior_mean_coef_x0[0].item() == pytest.approx(1.0, abs=1e-7)
    assert scheduler.posterior_mean_coef_xt[0].item() == 0.0
    assert scheduler.posterior_variance[0].item() == 0.0
    assert scheduler.posterior_variance[1].item() == pytest.approx(5.5e-5, abs=5e-7)
    assert scheduler.betas[1].item() == pytest.approx(1.2e-4, abs=5e-7)
    assert scheduler.posterior_variance[999].item() == pytest.approx(0.0200, abs=5e-5)
    assert scheduler.betas[999].item() == pytest.approx(0.0200, abs=5e-5)
    ab = linear_alpha_bar()
    for t, page in ((1, 0.45), (10, 0.86), (100, 0.98)):
        ratio = (scheduler.posterior_variance[t] / scheduler.betas[t]).item()
        assert ratio == pytest.approx((1 - ab[t - 1]) / (1 - ab[t]), rel=1e-5), t  # eq. 7
        assert ratio == pytest.approx(page, abs=5e-3), t


@pytest.mark.parametrize("clip", [True, False])
def test_p04_the_clip_switch_reaches_the_ddim_sampler(clip):
    """Page 4, Try this 2: setting the stage-1 scheduler's clip_sample before make_sampler(...,
    "ddim", 50) switches the clip of the DDIM it builds, which runs at eta 0; unclipped, a
    wrong eps_pred (0.9 x_t) leaves values outside [-1, 1] in the image."""
    ddpm = DDPMScheduler()
    ddpm.clip_sample = clip
    scheduler, eta = make_sampler(ddpm, "ddim", 50)
    assert isinstance(scheduler, DDIMScheduler) and scheduler.clip_sample is clip and eta == 0.0
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x_0 = sample(lambda x_t, t: 0.9 * x_t, scheduler, x_T, progress=False)
    assert (x_0.abs().max().item() <= 1.0) is clip


# ---- page 5: the UNet --------------------------------------------------------------------------

def test_p05_cpu_unet_size_and_zero_output():
    """Page 5, Try this 1: the --preset cpu UNet has 1,113,187 parameters and outputs exactly 0."""
    unet = UNet(**CPU_UNET)
    assert sum(p.numel() for p in unet.parameters()) == 1113187
    with torch.no_grad():
        out = unet(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
                   torch.tensor([10, 900]))
    assert out.shape == (2, 3, 32, 32)
    assert out.abs().max().item() == 0.0


def test_p05_sizes_the_unet_refuses(capsys):
    """Page 5, Try this 2: --image-size 30 stops with `error: --image-size 30: must be divisible
    by 4, the UNet's downsampling factor for 3 levels` (exit status 2); UNet(base_channels=48)
    says `base_channels 48: GroupNorm's 32 groups must divide every width of the UNet ...`."""
    from common.config import parse_config
    from common.errors import main_guard
    from train_unconditional import PRESETS, Config, check_config

    cfg = parse_config(Config, ["--preset", "cpu", "--image-size", "30"], presets=PRESETS)
    with pytest.raises(SystemExit) as exit_info:
        main_guard(lambda: check_config(cfg))  # the script's main checks its config first
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: --image-size 30: must be divisible by 4, "
                                               "the UNet's downsampling factor for 3 levels")
    with pytest.raises(ValueError, match=r"^base_channels 48: GroupNorm's 32 groups must divide "
                                         r"every width of the UNet \(base_channels x channel_mult "
                                         r"= \[48, 96, 96, 96\]\); expected a multiple of 32$"):
        UNet(base_channels=48)


def test_p05_time_code_similarity_depends_on_the_distance():
    """Page 5, Try this 3: cosine similarity 0.669 for (100, 110) and (500, 510), 0.298 for (100, 600)."""
    e = timestep_embedding(torch.tensor([100, 110, 500, 510, 600]), 128)
    def similarity(i, j):
        return F.cosine_similarity(e[i], e[j], dim=0).item()
    # closed form: sum_i cos((t - t') f_i) / half, f_i = 10000^(-i / half), half = 64
    def closed(dt):
        return sum(math.cos(dt * math.exp(-math.log(10000) * i / 64)) for i in range(64)) / 64
    assert similarity(0, 1) == pytest.approx(closed(10), abs=2e-5)
    assert similarity(2, 3) == pytest.approx(closed(10), abs=2e-5)
    assert similarity(0, 4) == pytest.approx(closed(500), abs=2e-5)
    assert closed(10) == pytest.approx(0.6691, abs=5e-5) and closed(500) == pytest.approx(0.2985, abs=5e-5)


# ---- page 6: the training loop -----------------------------------------------------------------

def test_p06_elbo_weights():
    """Page 6, Try this 3: w_t = beta_t / (2 alpha_t (1 - alpha_bar_{t-1})) prints 0.5996, 0.079,
    0.0189, 0.0055 and 0.0102 at t = 1, 10, 50, 500, 999; infinite at t = 0."""
    scheduler = DDPMScheduler()
    w = scheduler.betas / (2 * scheduler.alphas * (1 - scheduler.alphas_cumprod_prev))
    assert math.isinf(w[0].item())
    betas, ab = linear_betas(), linear_alpha_bar()
    for t in (1, 10, 50, 500, 999):
        # closed form in float64; float32's 1 - alpha_bar_0 (0.9999 stored as 0.99989998) is
        # 1.66e-4 off relatively, the largest rounding here
        assert w[t].item() == pytest.approx(betas[t] / (2 * (1 - betas[t]) * (1 - ab[t - 1])), rel=2e-4), t
    assert [round(w[t].item(), 4) for t in (1, 10, 50, 500, 999)] == [0.5996, 0.079, 0.0189, 0.0055, 0.0102]


def test_p06_signal_and_noise_at_the_two_ends():
    """Page 6, Try this 2: sqrt(alpha_bar_999) = 0.0064 of x_0 is left at t = 999, and the noise
    is sqrt(1 - alpha_bar_0) = 0.01 of x_t at t = 0."""
    scheduler, ab = DDPMScheduler(), linear_alpha_bar()
    assert scheduler.alphas_cumprod[999].sqrt().item() == pytest.approx(math.sqrt(ab[999]), rel=1e-4)
    assert math.sqrt(ab[999]) == pytest.approx(0.0064, abs=5e-5)
    assert (1 - scheduler.alphas_cumprod[0]).sqrt().item() == pytest.approx(math.sqrt(1 - ab[0]), rel=1e-4)
    assert math.sqrt(1 - ab[0]) == pytest.approx(0.01, abs=5e-6)


# ---- page 7: sampling --------------------------------------------------------------------------

def test_p07_ddim_sigma_of_the_first_step():
    """Page 7, Try this 1: sigma_t is 0 at eta 0 and about 0.57 for the step 980 -> 960 at eta 1."""
    ddim = DDIMScheduler()
    ab = linear_alpha_bar()
    # DDIM eq. 16: sqrt((1 - ab_prev) / (1 - ab_t) (1 - ab_t / ab_prev))
    closed = math.sqrt((1 - ab[960]) / (1 - ab[980]) * (1 - ab[980] / ab[960]))
    assert ddim.sigma(980, 960, eta=1.0).item() == pytest.approx(closed, rel=1e-4)
    assert closed == pytest.approx(0.5697, abs=5e-5)
    assert ddim.sigma(980, 960, eta=0.0).item() == 0.0


# ---- page 8: why diffusion works ---------------------------------------------------------------

@pytest.mark.parametrize("strength, steps, first", [(0.2, 10, 180), (0.5, 25, 480), (0.8, 40, 780)])
def test_p08_strength_runs_the_steps_below_its_start(strength, steps, first):
    """Page 8, Try this 1: strength s starts at the first visited step below round(s T) and runs
    10, 25 and 40 of the 50 DDIM steps at 0.2, 0.5, 0.8."""
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(50)
    visited = []

    def model(x_t, t):
        visited.append(int(t[0]))
        return torch.zeros_like(x_t)

    x_init = torch.zeros(1, 3, 8, 8)
    x_T = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sample(model, scheduler, x_T, x_init=x_init, strength=strength, eta=1.0,
           generator=torch.Generator().manual_seed(1), progress=False)
    assert len(visited) == steps and visited[0] == first
    assert visited == [t for t in range(980, -1, -20) if t < round(strength * T)]


def test_p08_the_two_ends_of_strength():
    """Page 8, Try this 2: strength 1 ignores x_init (the fresh sample of the same seed), strength 0
    returns x_init."""
    scheduler = DDIMScheduler()
    def model(x_t, t):
        return 0.5 * x_t  # any model: the claim is about the loop
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    x_init = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    def run(**kw):
        return sample(model, scheduler, x_T, num_steps=50, eta=1.0,
                                  generator=torch.Generator().manual_seed(5), progress=False, **kw)
    assert torch.equal(run(x_init=x_init, strength=1.0), run())
    assert torch.equal(run(x_init=x_init, strength=0.0), x_init)


# ---- page 9: the cost of pixels ----------------------------------------------------------------

def test_p09_flops_of_the_cpu_unet():
    """Page 9, Try this 1: the --preset cpu UNet costs 0.50, 2.05 and 9.00 GFLOP at 32, 64 and
    128 px: 4.1 times the work for twice the side, 18 times for four times."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet(**CPU_UNET)
    gflop = {}
    for size in (32, 64, 128):
        with torch.device("meta"):
            x, t = torch.randn(1, 3, size, size), torch.zeros(1, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            unet(x, t)
        gflop[size] = counter.get_total_flops() / 1e9
    assert gflop == pytest.approx({32: 0.4997, 64: 2.0486, 128: 8.9991}, abs=5e-5)
    assert round(gflop[64] / gflop[32], 1) == 4.1 and round(gflop[128] / gflop[32]) == 18


def test_p09_attention_score_matrix_of_the_default_unet():
    """Page 9, Try this 3: level 1 of the default UNet works at half the side: 256 tokens and
    65,536 scores per head at 32x32, 4,096 tokens and 16,777,216 scores at 128x128."""
    with torch.device("meta"):
        unet = UNet()
    assert unet.down[1][0].attention is not None  # default attention_levels=(1,)
    attention = unet.down[1][0].attention.attention
    attention.record = True
    for side, tokens in ((32, 256), (128, 4096)):
        with torch.device("meta"):
            unet(torch.randn(1, 3, side, side), torch.zeros(1, dtype=torch.long))
        assert attention.last_weights.shape == (1, attention.num_heads, tokens, tokens)
        assert tokens == (side // 2) ** 2 and tokens ** 2 == {32: 65536, 128: 16777216}[side]


# ---- page 10: autoencoders ---------------------------------------------------------------------

def test_p10_autoencoder_sizes_and_shapes():
    """Page 10, Try this 1: 13,850,953 and 952,361 parameters, f = 4; a mean and a std of shape
    (2, 3, 16, 16) for two 64x64 images, decoded back to (2, 3, 64, 64); 62x62 refused."""
    default = AutoencoderKL()
    small = AutoencoderKL(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1)
    assert sum(p.numel() for p in default.parameters()) == 13850953
    assert sum(p.numel() for p in small.parameters()) == 952361
    assert small.downsampling_factor == 4  # 2^(3 - 1)
    with torch.no_grad():
        assert small.encoder(torch.zeros(2, 3, 64, 64)).shape == (2, 6, 16, 16)  # mean and log-variance
        posterior = small.encode(torch.zeros(2, 3, 64, 64))
        assert posterior.mean.shape == posterior.std.shape == (2, 3, 16, 16)
        assert small.decode(posterior.mode()).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="image size 62x62 is not divisible by 4"):
        small.encode(torch.zeros(1, 3, 62, 62))


def test_p10_kl_of_one_element():
    """Page 10, Try this 2: mean 0 and log sigma^2 = 0, -10, -30, -40 give 0.0, 4.50, 14.5, 14.5."""
    page = {0.0: 0.0, -10.0: 4.50, -30.0: 14.5, -40.0: 14.5}
    for logvar, value in page.items():
        moments = torch.cat([torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), logvar)], dim=1)
        kl = kl_loss(DiagonalGaussian(moments)).item()
        clamped = max(logvar, -30.0)  # DiagonalGaussian clamps logvar to [-30, 20]
        # closed form: 0.5 (mu^2 + sigma^2 - 1 - log sigma^2) with mu = 0
        assert kl == pytest.approx(0.5 * (math.exp(clamped) - 1 - clamped), rel=1e-6, abs=1e-7), logvar
        assert kl == pytest.approx(value, abs=5e-3), logvar


# ---- page 11: training the autoencoder ---------------------------------------------------------

def test_p11_hinge_margins():
    """Page 11, Try this 3: hinge_d_loss 1.0, 0.0, 0.0 for D = 0, (1, -1), (3, -3);
    generator_loss(-3) = 3."""
    zero = torch.zeros(4, 1, 14, 14)
    assert hinge_d_loss(zero, zero).item() == 1.0
    assert hinge_d_loss(zero + 1, zero - 1).item() == 0.0
    assert hinge_d_loss(zero + 3, zero - 3).item() == 0.0
    assert generator_loss(zero - 3).item() == 3.0
    assert hinge_d_loss(zero + 0.5, zero - 0.5).item() == 0.5  # inside the margin it is linear


# ---- page 13: text-image pairs -----------------------------------------------------------------

def test_p13_beard_rules():
    """Page 13, Try this 2: "clean-shaven" in 1000 of 1000 captions of a man with No_Beard, 0 for
    a woman and for a man with a mustache; a bearded man has his beard named in 1000 of 1000."""
    rng = random.Random(0)
    rows = {"man": {"Male": True, "No_Beard": True}, "woman": {"Male": False, "No_Beard": True},
            "man with a mustache": {"Male": True, "No_Beard": True, "Mustache": True}}
    counts = {name: sum("clean-shaven" in caption(row, rng) for _ in range(1000))
              for name, row in rows.items()}
    assert counts == {"man": 1000, "woman": 0, "man with a mustache": 0}
    bearded = [caption({"Male": True, "No_Beard": False}, rng) for _ in range(1000)]
    assert sum("beard" in c or "facial hair" in c for c in bearded) == 1000


def test_p13_step_captions_are_reproducible():
    """Page 13, Try this 3: `True 8`, and row 0 reads "a smiling woman" at step 5, "an image
    showing a smiling female person with gray hair" at step 6."""
    rows = torch.tensor([[1 if sample_attributes(random.Random(i))[n] else -1 for n in SYNTHETIC_ATTRIBUTES]
                         for i in range(8)])
    def at(step):
        return captions_for(SYNTHETIC_ATTRIBUTES, rows, None, list(range(8)), step_rng(0, step))
    a, b, c = at(5), at(5), at(6)
    assert a == b
    assert sum(x != y for x, y in zip(a, c)) == 8
    assert (a[0], c[0]) == ("a smiling woman", "an image showing a smiling female person with gray hair")
    # step_rng seeds random.Random(seed * 1_000_003 + step * 131 + rank), nothing else
    assert step_rng(2, 5, 1).getstate() == random.Random(2 * 1_000_003 + 5 * 131 + 1).getstate()


# ---- page 14: text as token sequences ----------------------------------------------------------

def test_p14_word_order_needs_the_position_embedding():
    """Page 14, Try this 1: reversed words change the pooled vector (by about 0.15) with the
    position embedding, and only by float rounding (about 2e-7) without it."""
    text = "a photo of a man with glasses and a hat"
    tokenizer = Tokenizer.build([text])
    ids, mask = tokenizer([text])
    reversed_ids = torch.cat([ids[:, :1], ids[:, 1:-1].flip(1), ids[:, -1:]], dim=1)
    assert tokenizer.decode(reversed_ids[0]) == "hat a and glasses with man a of photo a"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = TextEncoder(len(tokenizer), tokenizer.max_length, width=32, num_layers=2, num_heads=4)
    with torch.no_grad():
        with_positions = (encoder(ids, mask).pooled - encoder(reversed_ids, mask).pooled).abs().max().item()
        encoder.position_embedding.zero_()
        without = (encoder(ids, mask).pooled - encoder(reversed_ids, mask).pooled).abs().max().item()
    assert with_positions == pytest.approx(0.15, abs=0.01)
    assert without < 1e-6  # permutation invariance: rounding only


def test_p14_padding_mask_keeps_padding_out():
    """Page 14, Try this 2: "a man" in a 16-token batch matches its unpadded hidden states to
    about 1e-6 with the mask, and is off by about 2 with an all-true mask."""
    texts = ["a man", "a photo of a smiling woman with blond hair, bangs and a hat"]
    tokenizer = Tokenizer.build(texts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = TextEncoder(len(tokenizer), tokenizer.max_length, width=32, num_layers=2, num_heads=4)
    alone, alone_mask = tokenizer(texts[:1])
    ids, mask = tokenizer(texts)
    assert ids.shape == (2, 16) and int(mask[0].sum()) == 4
    with torch.no_grad():
        reference = encoder(alone, alone_mask).hidden[0]
        masked = (encoder(ids, mask).hidden[0, :4] - reference).abs().max().item()
        unmasked = (encoder(ids, torch.ones_like(mask)).hidden[0, :4] - reference).abs().max().item()
    assert masked < 1e-5
    assert unmasked == pytest.approx(2, abs=0.5)


def test_p14_vocabulary_is_closed():
    """Page 14, Try this 3: the tokenizer of 2,000 rows (full caption and 4 random captions each)
    has 77 tokens and max_length 41."""
    rows = [sample_attributes(random.Random(i)) for i in range(2000)]
    rng = random.Random(0)
    tokenizer = Tokenizer.build([full_caption(r) for r in rows] + [caption(r, rng) for r in rows for _ in range(4)])
    assert (len(tokenizer), tokenizer.max_length) == (77, 41)


# ---- page 15: CLIP -----------------------------------------------------------------------------

def test_p15_temperature_changes_the_loss_not_the_ranking():
    """Page 15, Try this 2: loss 3.517, 0.0134 and 0.0 at scales 1, 14.3 and 100; top-1 1.0 at all three."""
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(64, 128, generator=generator), dim=1)
    texts = F.normalize(images + 0.1 * torch.randn(64, 128, generator=generator), dim=1)
    cosines = images @ texts.T
    page = {1.0: (3.517, 5e-4), 14.3: (0.0134, 5e-5), 100.0: (0.0, 5e-5)}
    for scale, (loss, tolerance) in page.items():
        assert torch.equal((scale * cosines).argmax(1), cosines.argmax(1))  # a positive scale keeps the order
        assert ((scale * cosines).argmax(1) == torch.arange(64)).float().mean().item() == 1.0
        assert clip_loss(scale * cosines).item() == pytest.approx(loss, abs=tolerance), scale


def test_p15_loss_floor_without_a_scale():
    """Page 15, Try this 3: with cosines 1 on the pairs and -1 elsewhere, N = 128, the loss is
    log(1 + 127 e^(-2s)): 2.90, 1.20, 0.0057 at s = 1, 2, 5, 4.8e-11 at 14.3 (float32 0.0);
    log N = 4.85 when every logit is alike."""
    N, eye = 128, torch.eye(128)
    page = {1.0: (2.90, 5e-3), 2.0: (1.20, 5e-3), 5.0: (0.0057, 5e-5)}  # value, rounding
    for s, (value, rounding) in page.items():
        loss = clip_loss(s * (2 * eye - 1)).item()
        closed = math.log(1 + (N - 1) * math.exp(-2 * s))  # closed form
        assert loss == pytest.approx(closed, abs=2e-6), s  # float32 logsumexp near s: a few ulps
        assert closed == pytest.approx(value, abs=rounding), s
    assert math.log(1 + (N - 1) * math.exp(-2 * 14.3)) == pytest.approx(4.8e-11, rel=0.01)
    assert clip_loss(14.3 * (2 * eye - 1)).item() < 1e-6
    assert clip_loss(torch.zeros(N, N)).item() == pytest.approx(math.log(N), rel=1e-6)  # log 128
    assert math.log(N) == pytest.approx(4.85, abs=5e-3)


# ---- page 16: cross-attention ------------------------------------------------------------------

def test_p16_queries_and_keys_swapped():
    """Page 16, Try this 1: image queries give (2, 10, 32); text as queries fails with `mat1 and
    mat2 shapes cannot be multiplied (14x24 and 32x32)`; the layer built the other way gives (2, 7, 24)."""
    generator = torch.Generator().manual_seed(0)
    image, text = torch.randn(2, 10, 32, generator=generator), torch.randn(2, 7, 24, generator=generator)
    cross = Attention(32, context_dim=24, num_heads=4)
    with torch.no_grad():
        assert cross(image, text).shape == (2, 10, 32)
        with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(14x24 and 32x32\)"):
            cross(text, image)
        assert Attention(24, context_dim=32, num_heads=4)(text, image).shape == (2, 7, 24)
