"""benchmarks/estimate.py: its FLOP counts against closed forms, its extension from two small
batches, and its memory estimate against a measured peak."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks.estimate import STEPS, Case, OpRecorder, affine, count, estimate

ROOT = Path(__file__).resolve().parents[1]


def test_a_convolution_counts_its_closed_form():
    """Conv2d 3x3, C_in 8 -> C_out 16 on (B 2, 8, 12, 12), padding 1: 2 B C_out H W C_in k^2
    FLOPs (a multiply and an add per weight per output position), and the bytes of the input,
    the weight, the bias and the output."""
    x, weight, bias = torch.randn(2, 8, 12, 12), torch.randn(16, 8, 3, 3), torch.randn(16)
    with OpRecorder() as recorder:
        F.conv2d(x, weight, bias, padding=1)
    assert [op.name for op in recorder.ops] == ["aten.convolution"]
    assert recorder.ops[0].flops == 2 * 2 * 16 * 12 * 12 * 8 * 3 * 3
    assert recorder.ops[0].bytes == 4 * (x.numel() + weight.numel() + bias.numel() + 2 * 16 * 12 * 12)


def test_attention_counts_its_closed_form():
    """softmax(Q K^T / sqrt(d)) V for B 2, h 4 heads, L 10 queries, S 7 keys, d 8: Q K^T and A V are
    2 B h L S d FLOPs each, 4 B h L S d in all (the softmax is not counted)."""
    import benchmarks.common  # noqa: F401  registers the CPU attention kernel's formula
    q, k, v = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 8)
    with OpRecorder() as recorder:
        F.scaled_dot_product_attention(q, k, v)
    assert sum(op.flops for op in recorder.ops) == 4 * 2 * 4 * 10 * 7 * 8


def test_two_batches_give_every_op_at_any_batch():
    """Per op, FLOPs and bytes are affine in the batch: extended from batches 2 and 4, the step of
    a small MLP at batch 16 has exactly the FLOPs recorded at batch 16."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.GELU(), torch.nn.Linear(32, 5))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def make_step(batch):
        x = torch.randn(batch, 12)

        def step():
            loss = model(x).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    est = estimate(Case("mlp", "test", 16, make_step, count(model), 0, 0), "fp32")
    step = make_step(16)
    with OpRecorder() as recorder:
        step()
    assert est.flops == sum(op.flops for op in recorder.ops)
    # forward 2 B (12*32 + 32*5); backward both products of layer 2, only the weight one of layer 1
    assert est.flops == 2 * 16 * (2 * 12 * 32 + 3 * 32 * 5)
    assert affine(3.0, 5.0, 2, 4, 10) == 11.0


def test_the_steps_are_the_stage_scripts():
    """STEPS copies each stage script's default --steps and its --preset cpu's."""
    for stage, script in (("unconditional", "train_unconditional"), ("vae", "train_vae"),
                          ("clip", "train_clip"), ("ldm", "train_ldm")):
        module = importlib.import_module(script)
        assert STEPS[stage] == {"default": module.Config().steps,
                                "cpu": module.PRESETS["cpu"]["steps"]}, script


MEASURE = """
import sys, torch, torch.nn.functional as F
sys.path.insert(0, {root!r})
from benchmarks.estimate import Case, count, estimate
from models.unet import UNet
from training.optim import make_adam

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

torch.set_num_threads(1)
unet = UNet(in_channels=3, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
            attention_levels=(2,), dropout=0.0)
opt = make_adam(torch.optim.AdamW, unet.parameters(), lr=1e-4)

def make_step(batch):
    x, t = torch.randn(batch, 3, 32, 32), torch.randint(0, 1000, (batch,))
    def step():
        loss = F.mse_loss(unet(x, t), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step

est = estimate(Case("UNet", "test", 96, make_step, count(unet), 0, 0), "fp32")
opt.state.clear()                          # the measured step starts without optimizer state
step = make_step(96)
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")   # reset the peak (VmHWM) to the current size
step()
print((status("VmHWM") - before) / (est.memory(96) - 4 * count(unet)))
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc")
def test_the_memory_estimate_matches_a_measured_peak():
    """The first training step of the cpu preset's pixel UNet at batch 96 raises the process's
    peak memory by what the estimate says, less the weights that already exist: gradients, AdamW's
    moments and the saved activations, within 20%. malloc returns every block over 64 KB to the
    system, so the resident size follows what is allocated."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    result = subprocess.run([sys.executable, "-c", MEASURE.format(root=str(ROOT))], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    ratio = float(result.stdout.split()[-1])
    assert 0.8 <= ratio <= 1.2, f"measured / estimated = {ratio:.3f}"
