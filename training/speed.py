"""torch.compile and the two clocks that say where a step's time goes (docs/performance.md)."""

import time

import torch

from common.device import synchronize


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
