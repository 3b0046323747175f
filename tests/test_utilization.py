"""The progress line's utilization (training/speed.py, training/logger.py): FLOPs counted on a
shape-only copy against closed forms, the published peak of a device's class, and the arithmetic
of achieved TFLOP/s and utilization."""

import time

import pytest
import torch

from training.logger import MetricLogger
from training.speed import DEVICE_CLASSES, device_peak, step_flops


def test_step_flops_of_a_linear_layer_and_a_convolution_are_the_closed_forms():
    """y = x W^T costs 2 B I O FLOPs forward; the backward computes dL/dW (2 B I O) and, when x
    needs a gradient (inside a network it does), dL/dx (2 B I O): 4 or 6 B I O per step. A 3x3
    convolution likewise: 2 B H W C_in C_out 9 forward, and 2x or 3x that per step."""
    B, I, O = 8, 32, 16
    linear = torch.nn.Linear(I, O, bias=False)
    leaf, inner = torch.zeros(B, I), torch.zeros(B, I, requires_grad=True)
    assert step_flops(lambda m, x: m(x).sum(), [linear], [leaf]) == 4 * B * I * O
    assert step_flops(lambda m, x: m(x).sum(), [linear], [inner]) == 6 * B * I * O
    B, H, W, Ci, Co = 2, 8, 8, 4, 6
    conv = torch.nn.Conv2d(Ci, Co, 3, padding=1)
    forward = 2 * B * H * W * Ci * Co * 9
    assert step_flops(lambda m, x: m(x).sum(), [conv], [torch.zeros(B, Ci, H, W)]) == 2 * forward
    assert step_flops(lambda m, x: m(x).sum(), [conv],
                      [torch.zeros(B, Ci, H, W, requires_grad=True)]) == 3 * forward


def test_step_flops_leaves_the_model_its_gradients_and_the_generator_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
    weights, rng = model[0].weight.clone(), torch.get_rng_state()
    step_flops(lambda m, x: m(x).sum(), [model], [torch.zeros(3, 4)])
    assert model[0].weight.grad is None and model[0].weight.device.type == "cpu"
    assert torch.equal(model[0].weight, weights) and torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("name, precision, expected", [
    ("NVIDIA GeForce RTX 4060 Laptop GPU", "bf16", DEVICE_CLASSES["RTX 4060 Laptop"]["bf16"]),
    ("NVIDIA GeForce RTX 4060 Laptop GPU", "fp32", DEVICE_CLASSES["RTX 4060 Laptop"]["fp32"]),
    ("NVIDIA GeForce RTX 3060 Laptop GPU", "fp16", DEVICE_CLASSES["RTX 3060 Laptop"]["bf16"]),
    ("NVIDIA GeForce RTX 4090", "bf16", 165.2),
    ("NVIDIA GeForce RTX 4090 Laptop GPU", "bf16", None),  # not the desktop part's peak
    ("NVIDIA H100 80GB HBM3", "bf16", None),
    ("", "fp32", None),                                    # a CPU or a Mac
])
def test_device_peak_matches_the_class_by_name(name, precision, expected):
    assert device_peak(name, precision) == expected


def test_logger_writes_achieved_tflops_and_utilization(tmp_path):
    """4 items per step, one step in 2 s: 2 items/s; 1.5 TFLOP per item gives 3 TFLOP/s, against
    a peak of 12 TFLOP/s a utilization of 25%."""
    logger = MetricLogger(tmp_path, batch_size=4, flops=(1.5e12, 12.0))
    logger.add(loss=torch.tensor(1.0))
    logger.started = time.time() - 2.0
    means = logger.write(1)
    assert means["items_per_s"] == pytest.approx(2.0, rel=1e-2)
    assert means["tflops_per_s"] == pytest.approx(3.0, rel=1e-2)
    assert means["utilization"] == pytest.approx(0.25, rel=1e-2)
    assert MetricLogger.speed(means) == {"tflop/s": "3.00", "util": "25%"}
    unknown = MetricLogger(tmp_path, batch_size=4, flops=(1.5e12, None))
    unknown.add(loss=torch.tensor(1.0))
    means = unknown.write(1)
    assert "tflops_per_s" in means and "utilization" not in means
