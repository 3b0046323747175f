"""The logging window and metrics.jsonl: what every stage writes about its loss as it trains.

Each step adds its loss terms (tensors on the device: no synchronisation per step); at a log step
`write` turns the window's sums into means with one synchronisation, stops the run if the loss
is not finite, appends one JSON line to OUT/metrics.jsonl and starts a new window.
"""

import json
import math
import time
from pathlib import Path

import torch

from common.errors import warn
from training.plots import plot_metrics
from training.speed import InputClock


class MetricLogger:
    """metrics.jsonl (one line per logged step) and loss.png, with the current logging window.

    out_dir:     the run's folder
    resume_step: lines after this step belong to a stretch the resumed run repeats: dropped
    enabled:     False on every process but the first under torchrun (only rank 0 writes)
    batch_size:  items per step, for the throughput column `rate_name` (images_per_s, ...)
    flops:       Run.flops(): the FLOPs of one item's forward and backward and the peak TFLOP/s
                 of the device's class (None when unknown), for the columns tflops_per_s and
                 utilization, nanoGPT's MFU (model FLOPs per second over the peak)
    """

    def __init__(self, out_dir: str | Path, resume_step: int = 0, enabled: bool = True,
                 batch_size: int = 0, rate_name: str = "items_per_s",
                 flops: tuple[float, float | None] = (0.0, None)):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.plot_path = Path(out_dir) / "loss.png"
        self.checkpoint_path = Path(out_dir) / "checkpoint.pt"
        self.enabled, self.batch_size, self.rate_name = enabled, batch_size, rate_name
        self.flops_per_item, self.peak_tflops = flops
        self.sums, self.count, self.started = {}, 0, time.time()
        self.input = InputClock()  # input_fraction: the share of time spent preparing batches
        if enabled and self.path.exists():
            # Lines written after the checkpoint we resume from belong to the lost stretch.
            rows = [r for r in read_metrics(self.path) if r["step"] <= resume_step] \
                if resume_step else []
            self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def add(self, **terms: torch.Tensor) -> None:
        """One step's loss terms, summed into the window on their device."""
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0) + value.detach()
        self.count += 1

    def write(self, step: int, **extra: float) -> dict:
        """Close the window: its means (and `extra`, e.g. lr), the throughput and input_fraction
        as one line of metrics.jsonl. The NaN stop: a loss that is inf or NaN ends the run here,
        before any checkpoint is written, so the last good checkpoint stays."""
        means = {name: (value / self.count).item() for name, value in self.sums.items()}
        if not math.isfinite(means["loss"]):
            raise SystemExit(f"error: the loss became {means['loss']} near step {step}; stopping. "
                             f"The last good checkpoint ({self.checkpoint_path}) is kept. Try a "
                             "lower --lr, or --precision fp32.")
        elapsed = time.time() - self.started
        means.update(extra)
        means[self.rate_name] = self.count * self.batch_size / elapsed
        means["input_fraction"] = self.input.fraction(elapsed)
        if self.flops_per_item:
            # achieved TFLOP/s = items per second x FLOPs per item; utilization = that / peak
            means["tflops_per_s"] = means[self.rate_name] * self.flops_per_item / 1e12
            if self.peak_tflops:
                means["utilization"] = means["tflops_per_s"] / self.peak_tflops
        self.log(step, **means)
        self.sums, self.count, self.started = {}, 0, time.time()
        return means

    @staticmethod
    def speed(means: dict) -> dict:
        """The progress line's speed fields of a written window: the achieved TFLOP/s, and the
        utilization where the device's peak is known."""
        fields = {}
        if "tflops_per_s" in means:
            fields["tflop/s"] = f"{means['tflops_per_s']:.2f}"
        if "utilization" in means:
            fields["util"] = f"{means['utilization']:.0%}"
        return fields

    def log(self, step: int, **metrics: float) -> None:
        """One line of metrics.jsonl as it is (evaluation scores)."""
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")

    def plot(self) -> None:
        """Redraw loss.png from metrics.jsonl."""
        if self.enabled and self.path.exists():
            plot_metrics(read_metrics(self.path), self.plot_path)


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl. A crash or a full disk can leave a torn last line (half a
    JSON object, or NUL bytes): such lines are skipped, with one warning."""
    rows, torn = [], 0
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        if "\x00" in line:  # what a full disk or a crash leaves where a line should be
            torn += 1
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            torn += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
        else:
            torn += 1
    if torn:
        warn(f"{path}: skipped {torn} torn line(s) (left by a crash or a full disk)")
    return rows
