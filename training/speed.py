"""torch.compile, the two clocks that say where a step's time goes, and the utilization of the
device: a step's FLOPs against the published peak of its class (docs/performance.md)."""

import copy
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from common.device import synchronize

# Published peaks: dense FP32 and BF16/FP16-tensor TFLOP/s, memory bandwidth GB/s, memory GB.
# NVIDIA: FP32 = CUDA cores x 2 x the highest boost clock of the spec page (laptop parts vary
# with the maker's power limit); GeForce Ampere and Ada run BF16/FP16 tensor math with FP32
# accumulation at twice that (NVIDIA Ampere GA102 and Ada Lovelace architecture whitepapers).
# Apple: the GPU's FP32 TFLOP/s and unified-memory bandwidth of Apple's M2 and M2 Pro
# announcements (2022, 2023); its GPU runs half precision at the FP32 rate, so 16-bit halves
# only the bytes. The memory is the device's (for a Mac, unified memory the OS shares).
DEVICE_CLASSES = {
    "RTX 3060 Laptop": dict(fp32=3840 * 2 * 1.703e9 / 1e12, bf16=2 * 3840 * 2 * 1.703e9 / 1e12,
                            bandwidth=336, memory=6),
    "RTX 4060 Laptop": dict(fp32=3072 * 2 * 2.370e9 / 1e12, bf16=2 * 3072 * 2 * 2.370e9 / 1e12,
                            bandwidth=256, memory=8),
    "RTX 4090": dict(fp32=82.6, bf16=165.2, bandwidth=1008, memory=24),
    "Apple M2 (10-core GPU)": dict(fp32=3.6, bf16=3.6, bandwidth=100, memory=16),
    "Apple M2 Pro (19-core GPU)": dict(fp32=6.8, bf16=6.8, bandwidth=200, memory=16),
}


def device_peak(device_name: str, precision: str) -> float | None:
    """The published peak TFLOP/s for `precision` of the class in DEVICE_CLASSES whose name is in
    the device's name (CUDA's, e.g. "NVIDIA GeForce RTX 4060 Laptop GPU"), a laptop part only
    matching a laptop class; None for a device of no known class (a CPU, a Mac, another GPU)."""
    laptop = "Laptop" in device_name
    for name, spec in DEVICE_CLASSES.items():
        if name in device_name and ("Laptop" in name) == laptop:
            return spec["fp32" if precision == "fp32" else "bf16"]
    return None


def step_flops(loss_of, modules: list[torch.nn.Module], inputs: list[torch.Tensor]) -> float:
    """FLOPs of one training step's forward and backward, counted op by op with torch's
    flop_counter (matrix products, convolutions, attention). It runs loss_of(*modules, *inputs)
    and its backward on copies on the meta device, which have shapes but no data: nothing is
    computed or allocated, and the real modules, their gradients and the random generators are
    untouched, so the count changes no result. Pass inputs at the real batch size."""
    copies = [copy.deepcopy(module).to("meta") for module in modules]
    with FlopCounterMode(display=False) as counter:
        loss_of(*copies, *[x.detach().to("meta").requires_grad_(x.requires_grad)
                           for x in inputs]).backward()
    return float(counter.get_total_flops())


def maybe_compile(model: torch.nn.Module, enabled: bool, device: torch.device) -> torch.nn.Module:
    """torch.compile(model) for --compile: the first call traces the model and generates fused
    kernels (C++ on the CPU, Triton on CUDA), which takes from seconds to minutes; later calls
    run the compiled code. The parameters stay shared with `model`, so EMA, checkpoints and
    sampling keep using the plain module. On the CPU the compiler is told to keep the tensors'
    layout: its default switches convolutions to channels_last, which measured slower on this
    project's CPU (docs/performance.md), as it did in eager mode."""
    if not enabled:
        return model
    return torch.compile(model, options={"layout_optimization": False} if device.type == "cpu"
                         else None)


class CompileClock:
    """Measures what --compile costs: the wall time of the first training step, which includes
    tracing and compiling, against the mean of the `window` steps after it."""

    def __init__(self, device: torch.device, window: int = 10):
        self.device, self.window, self.times = device, window, []
        self.last = time.perf_counter()

    def tick(self) -> str | None:
        """Call after every step; returns the one-line summary once, when the window is full."""
        if len(self.times) > self.window:
            return None
        synchronize(self.device)
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now
        if len(self.times) <= self.window:
            return None
        first, later = self.times[0], sum(self.times[1:]) / self.window
        self.compile_seconds = first - later
        return (f"torch.compile: the first step took {first:.1f} s, the next {self.window} steps "
                f"{later * 1000:.0f} ms each: compiling took about {first - later:.1f} s")


class InputClock:
    """input_fraction: the share of a loop's wall time spent preparing its batches on the host
    (reading the cache, augmenting, drawing captions, tokenizing). start() before, stop() after;
    fraction(elapsed) is the share of the last `elapsed` seconds, and starts a new window. No
    device synchronisation: the step's GPU work stays queued behind the host, not timed here."""

    def __init__(self):
        self.seconds, self.started = 0.0, 0.0

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> None:
        self.seconds += time.perf_counter() - self.started

    def fraction(self, elapsed: float) -> float:
        share, self.seconds = self.seconds / elapsed, 0.0
        return share
