"""The demo's quality measures (evaluate.py): attribute preservation, diversity, the stage-1
Frechet distance, and the schedules that short runs rely on (EMA warm-up, cosine learning rate)."""

import math
import random

import numpy as np
import torch
import torch.nn.functional as F

from data.images import to_tensor
from data.synthetic import SYNTHETIC_ATTRIBUTES, draw_face, sample_attributes
from models.classifier import AttributeClassifier
from models.metrics import (attribute_preservation, diversity_ratio, feature_statistics,
                            frechet_distance, mean_pairwise_distance)
from training.ema import EMA
from training.optim import scheduled_lr


def faces(count: int, size: int = 32, seed: int = 0, attributes=None) -> torch.Tensor:
    """count synthetic faces (count, 3, size, size) in [-1, 1]; random attributes unless given."""
    rng = random.Random(seed)
    images = [to_tensor(np.array(draw_face(attributes or sample_attributes(rng), size,
                                           seed * 10_000 + i)))
              for i in range(count)]
    return torch.cat(images)


def blur(x: torch.Tensor) -> torch.Tensor:
    """A strong blur: the mean over 4x4 blocks, scaled back up."""
    return F.interpolate(F.avg_pool2d(x, 4), scale_factor=4, mode="nearest")


class EdgeJudge:
    """A stand-in judge: "attribute" i is present when quadrant i of the image has more edge energy
    (mean |horizontal and vertical differences|) than `threshold[i]`."""

    def __init__(self, threshold: torch.Tensor):
        self.threshold = threshold

    @staticmethod
    def energy(x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, 4), one per quadrant
        edges = ((x[..., 1:, :-1] - x[..., :-1, :-1]).abs()
                 + (x[..., :-1, 1:] - x[..., :-1, :-1]).abs()).mean(1)    # (N, S-1, S-1)
        h = edges.shape[-1] // 2
        return torch.stack([edges[:, :h, :h], edges[:, :h, h:2 * h], edges[:, h:2 * h, :h],
                            edges[:, h:2 * h, h:2 * h]], 1).flatten(2).mean(-1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(50 * (self.energy(x) - self.threshold))  # probabilities (N, 4)


def test_attribute_preservation_is_one_for_a_perfect_reconstruction_and_lower_for_a_blur():
    x = faces(32)
    judge = EdgeJudge(EdgeJudge.energy(x).median(0).values)  # about half "present" per quadrant
    assert torch.equal(attribute_preservation(judge(x), judge(x.clone())), torch.ones(4))
    blurred = attribute_preservation(judge(x), judge(blur(x)))
    assert blurred.max() <= 0.75  # the blur reads as "absent" wherever the original was sharp
    # by hand: the share of (image, attribute) readings that agree
    p, q = torch.tensor([[0.9, 0.1], [0.8, 0.7]]), torch.tensor([[0.6, 0.4], [0.2, 0.9]])
    assert attribute_preservation(p, q).tolist() == [0.5, 1.0]


def random_features(x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    judge = AttributeClassifier(len(SYNTHETIC_ATTRIBUTES)).eval()
    with torch.no_grad():
        return judge.features(x)


def test_stage1_frechet_is_near_zero_for_two_halves_of_real_faces_and_large_for_noise():
    def pooled(x):
        return F.avg_pool2d(x, 8).flatten(1)  # (N, 48): a stand-in feature
    real = pooled(faces(400))
    noise = pooled(torch.rand(200, 3, 32, 32) * 2 - 1)
    halves = frechet_distance(*feature_statistics(real[:200]), *feature_statistics(real[200:]))
    against_noise = frechet_distance(*feature_statistics(noise), *feature_statistics(real[200:]))
    assert 0 <= halves < 0.1 * against_noise


def test_diversity_is_about_one_for_two_real_sets_and_zero_for_copies_of_one_image():
    wanted = dict.fromkeys(SYNTHETIC_ATTRIBUTES, False) | {"Male": True, "Black_Hair": True,
                                                          "Eyeglasses": True, "No_Beard": True}
    a = random_features(faces(48, seed=1, attributes=wanted))
    b = random_features(faces(48, seed=2, attributes=wanted))
    assert abs(diversity_ratio(a, b) - 1) < 0.15
    copies = a[:1].expand(8, -1)
    assert diversity_ratio(copies, b) < 1e-6
    # by hand: points at 0, 3 and 4 on a line have distances 3, 4, 1 -> mean 8/3
    assert math.isclose(mean_pairwise_distance(torch.tensor([[0.0], [3.0], [4.0]])), 8 / 3)


def test_ema_warm_up_follows_its_formula():
    """With theta fixed at 1 and theta_ema starting at 0, theta_ema after n updates is
    1 - prod_k d_k, d_k = min(decay, (1 + k) / (10 + k))."""
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.99)
    torch.nn.init.ones_(model.weight)
    product = 1.0
    for n in range(1, 201):
        ema.update(model)
        product *= min(0.99, (1 + n) / (10 + n))
        if n in (1, 2, 10, 50, 200):
            assert math.isclose(ema.model.weight.item(), 1 - product, rel_tol=1e-5), n
    assert (1 + 1) / (10 + 1) == 2 / 11 and min(0.99, 901 / 910) == 0.99  # warm, then the decay


def test_cosine_learning_rate_at_chosen_steps():
    peak, warmup, total = 1e-3, 10, 110
    assert math.isclose(scheduled_lr("cosine", 4, peak, warmup, total), peak * 5 / 10)
    assert math.isclose(scheduled_lr("cosine", 10, peak, warmup, total), peak)
    assert math.isclose(scheduled_lr("cosine", 60, peak, warmup, total), peak / 2)   # half-way
    assert math.isclose(scheduled_lr("cosine", 110, peak, warmup, total), 0, abs_tol=1e-12)
    assert scheduled_lr("constant", 100, peak, warmup, total) == peak


def test_min_snr_weights_match_their_closed_forms_at_chosen_timesteps():
    from diffusion import DDPMScheduler
    for prediction_type in ("epsilon", "v"):
        scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
        t = torch.tensor([0, 100, 500, 999])
        ab = scheduler.alphas_cumprod[t].double()
        snr = ab / (1 - ab)                          # SNR(0) ~ 1e4, SNR(999) ~ 4e-5
        expected = torch.minimum(snr, torch.tensor(5.0)) / (snr if prediction_type == "epsilon"
                                                             else snr + 1)
        assert torch.allclose(scheduler.min_snr_weight(t, 5.0).double(), expected, rtol=1e-5)
        assert torch.allclose(scheduler.snr(t).double(), snr, rtol=1e-5)
    eps = DDPMScheduler(num_train_timesteps=1000)
    assert math.isclose(eps.min_snr_weight(torch.tensor([999]), 5.0).item(), 1.0)   # SNR < 5
    assert eps.min_snr_weight(torch.tensor([0]), 5.0).item() < 1e-3                # 5 / SNR


def test_training_loss_is_the_mse_and_min_snr_weights_each_sample():
    from diffusion import DDPMScheduler
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    torch.manual_seed(0)
    x0, noise, prediction = torch.randn(3, 4, 2, 4, 4).unbind(0)
    t = torch.tensor([10, 400, 900, 999])
    plain = scheduler.training_loss(prediction, x0, noise, t)
    assert torch.allclose(plain, F.mse_loss(prediction, noise))
    weighted = scheduler.training_loss(prediction, x0, noise, t, min_snr_gamma=5.0)
    per_sample = (prediction - noise).pow(2).mean(dim=(1, 2, 3))
    assert torch.allclose(weighted, (per_sample * scheduler.min_snr_weight(t, 5.0)).mean())
