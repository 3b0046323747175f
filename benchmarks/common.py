"""What the benchmark scripts share: timers, FLOP counting and the machine's reference speeds.

The figure each script reports is a ratio: the achieved GFLOP/s of a model's whole training step
against a plain 3x3 conv2d (forward and backward) at the model's first-level width, batch and
resolution. `paired_seconds` times the two in alternation, round after round, and takes the
median of each, so a machine whose speed drifts during the run (shared cores, clock limits)
slows both sides alike instead of skewing the ratio. On a shared machine the ratio still moves
from run to run (docs/performance.md reports the spread over repeated runs).
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.flop_counter as flop_counter
from torch.utils.flop_counter import FlopCounterMode

from common.device import autocast, synchronize
from models.unet import build_unet
from training.optim import make_adam
from training.speed import maybe_compile

aten = torch.ops.aten

VOCABULARY, MAX_LENGTH = 77, 41  # the synthetic captions' tokenizer (train_clip.py, cpu preset)
# A batch of 64 synthetic captions is padded to its longest, about 27 tokens; 14 are real on average.
CONTEXT, REAL_TOKENS = 28, 14


# The models that bench_models.py and bench_parts.py time, per stage: the architecture and batch
# of each stage script's Config defaults ("default", sized for a laptop GPU) and of its
# PRESETS["cpu"] (vae: train_vae.py, clip: train_clip.py, ldm: train_ldm.py). They mirror the scripts' values (benchmarks must not
# import a stage script); tests/test_benchmarks.py checks that every value here equals the
# script's, so a change there fails the tests until it is copied here.
MODEL_CONFIGS = {
    "vae": {
        "default": dict(image_size=128, batch_size=16, base_channels=64, channel_mult=(1, 2, 4),
                        num_res_blocks=2, latent_channels=3, attention=True),
        "cpu": dict(image_size=64, batch_size=16, base_channels=32, channel_mult=(1, 2, 2),
                    num_res_blocks=1, latent_channels=3, attention=True),
    },
    "clip": {
        "default": dict(batch_size=256, text_width=256, text_layers=4, text_heads=4,
                        head_channels=64, head_mult=(1, 2, 4), embed_dim=256),
        "cpu": dict(batch_size=128, text_width=128, text_layers=3, text_heads=4,
                    head_channels=32, head_mult=(1, 2, 4), embed_dim=128),
    },
    "ldm": {
        "default": dict(batch_size=96, base_channels=128, channel_mult=(1, 2, 2),
                        num_res_blocks=2, attention_levels=(1, 2), num_heads=4, dropout=0.0,
                        num_train_timesteps=1000, ema_lengths=()),
        "cpu": dict(batch_size=64, base_channels=32, channel_mult=(1, 2, 4),
                    num_res_blocks=1, attention_levels=(1, 2), num_heads=4, dropout=0.0,
                    num_train_timesteps=1000, ema_lengths=(0.1, 0.05)),
    },
}


def config_of(model: str, name: str) -> dict:
    """MODEL_CONFIGS[model][name]: one stage's configuration ("default" or "cpu"), as a config dict."""
    return MODEL_CONFIGS[model][name]


def latent_side(name: str) -> int:
    """The side of the latents the autoencoder of configuration `name` makes: image_size / f,
    with f = 2^(levels - 1)."""
    vae = config_of("vae", name)
    return vae["image_size"] // 2 ** (len(vae["channel_mult"]) - 1)


def text_unet_case(name: str, device, memory_format=torch.contiguous_format) -> tuple:
    """Stage 4's text UNet at configuration `name` ("default" or "cpu"), its fused AdamW (as
    train_ldm.py) and one batch of inputs: latents z (B, C, n, n), timesteps t (B,), text tokens
    (B, CONTEXT, D) and their mask (B, CONTEXT), REAL_TOKENS of them real."""
    cfg = config_of("ldm", name)
    C, D, n = config_of("vae", name)["latent_channels"], config_of("clip", name)["text_width"], \
        latent_side(name)
    unet = build_unet(cfg, C, D).to(device, memory_format=memory_format)
    optimizer = make_adam(torch.optim.AdamW, unet.parameters(), lr=1e-4)
    B = cfg["batch_size"]
    z = torch.randn(B, C, n, n, device=device).contiguous(memory_format=memory_format)
    t = torch.randint(0, cfg["num_train_timesteps"], (B,), device=device)
    context = torch.randn(B, CONTEXT, D, device=device)
    mask = (torch.arange(CONTEXT, device=device)[None] < REAL_TOKENS).expand(B, -1)
    return unet, optimizer, (z, t, context, mask)


def text_unet_step(model, optimizer, inputs: tuple, device, precision: str = "fp32"):
    """A closure of one training step of `model` (the UNet or its compiled twin) on
    text_unet_case's inputs: forward, an MSE loss against z standing in for the v target,
    backward and the optimizer step."""
    z, t, context, mask = inputs

    def step():
        with autocast(device, precision):
            loss = F.mse_loss(model(z, t, context, mask).float(), z)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


# torch's FLOP counter knows the CUDA attention kernels but not the CPU one, which would leave
# every attention product out of the CPU figures. The same formulas: 2 matmuls forward
# (Q K^T and A V, 2 b h L L_ctx d FLOPs each), 4 backward (5 with the softmax recomputation that
# torch's own backward formula counts).
@flop_counter.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


@flop_counter.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
def _cpu_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args,
                                  out_shape=None, **kwargs):
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape,
                                                 value_shape)


def count_gflop(fn) -> float:
    """GFLOPs of one call of fn (matmuls, convolutions and attention; elementwise ops are free)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def timed(fn, device, repeats: int, warmup: int = 2) -> float:
    """Seconds per call of fn, after warm-up."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def paired_seconds(step, reference, device, rounds: int, warmup: int = 2,
                   others: tuple = ()) -> tuple[float, ...]:
    """Median seconds per call of step() and of reference(), timed in alternation over `rounds`
    rounds; each round calls reference() often enough to take about as long as one step.
    `others` are more steps timed in the same rounds (e.g. the compiled twin of step); their
    medians follow: (step, reference, *others)."""
    for _ in range(warmup):
        for fn in (step, reference, *others):
            fn()
    inner = max(1, math.ceil(timed(step, device, 1, 0) / timed(reference, device, 3, 0)))
    times = [[] for _ in range(2 + len(others))]
    for _ in range(rounds):
        times[0].append(timed(step, device, 1, 0))
        times[1].append(timed(reference, device, inner, 0))
        for i, fn in enumerate(others):
            times[2 + i].append(timed(fn, device, 1, 0))
    return tuple(statistics.median(t) for t in times)


def alternating_seconds(fns: tuple, device, rounds: int, warmup: int = 2) -> tuple[float, ...]:
    """Median seconds per call of each fn, calling them in turn, one call each per round, over
    `rounds` rounds: a machine whose speed drifts slows every fn alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[timed(fn, device, 1, 0) for fn in fns] for _ in range(rounds)]
    return tuple(statistics.median(column) for column in zip(*times))


def compiled_twin(make_step, model: torch.nn.Module, device) -> tuple:
    """make_step(network) -> a training-step closure. Returns the step through maybe_compile (as
    the scripts' --compile) and the seconds of its first call, which traces and compiles."""
    step = make_step(maybe_compile(model, True, device))
    started = time.perf_counter()
    step()
    synchronize(device)
    return step, time.perf_counter() - started


def conv_reference(channels: int, size: int, batch: int, device, precision,
                   memory_format=torch.contiguous_format) -> tuple:
    """A plain 3x3 conv2d (forward + backward, input gradient included) at a model's first-level
    width, batch and resolution -> (a closure running it once, its GFLOPs per call)."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(device, memory_format=memory_format)
    x = torch.randn(batch, channels, size, size, device=device).contiguous(memory_format=memory_format)
    x.requires_grad_(True)

    def step():
        with autocast(device, precision):
            y = conv(x)
        y.float().sum().backward()

    gflop = 3 * 2 * batch * channels * channels * 9 * size * size / 1e9  # backward = 2x forward
    return step, gflop


def matmul_reference(device, precision, repeats: int, n: int = 2048) -> float:
    """GFLOP/s of a plain n x n matmul."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, device, repeats) / 1e9


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def machine(device: torch.device) -> str:
    """One line naming the device, threads and torch version."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        cpuinfo = Path("/proc/cpuinfo")
        name = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                     if line.startswith("model name")), "?") if cpuinfo.exists() else "?"
    return f"device {device} ({name}), {torch.get_num_threads()} threads, torch {torch.__version__}"
