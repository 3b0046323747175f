"""How the stage-4 text UNet's training step grows with the work: resolution x batch.

    python benchmarks/bench_scaling.py                          # 16, 32, 64 latents x batch 16, 64, 128
    python benchmarks/bench_scaling.py --sizes 16 32 --batches 16 64 --repeats 5

The UNet is the one compared with diffusers in docs/performance.md (widths 64/128/256, one
ResBlock per level, cross-attention at levels 1 and 2 and in the middle, 8 heads, 16 text tokens
of width 128, 4 latent channels; 16.48M parameters). Each configuration runs in a fresh process,
so that its peak memory is its own. A row gives the step time (forward, MSE, backward, AdamW; the
median of --repeats after one warm-up step), the time per latent pixel per image relative to the
first row (1.00 means the step grows exactly linearly with pixels x batch), the forward GFLOPs per
step and the share of them spent in attention (q k^T and the weighted sum of v, whose cost grows
with the square of the number of positions), and the process's peak resident memory above what
it held before building the model (the step's weights, optimizer state and activations).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, peak_memory_mb  # noqa: E402
from models.unet import UNet  # noqa: E402

ATTENTION_OPS = ("scaled_dot_product",)  # the fused attention kernels, forward and backward


def build(latent_size: int, batch: int):
    torch.manual_seed(0)
    unet = UNet(in_channels=4, base_channels=64, channel_mult=(1, 2, 4), num_res_blocks=1,
                attention_levels=(1, 2), num_heads=8, context_dim=128)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    x = torch.randn(batch, 4, latent_size, latent_size)            # (B, C, h, w) noisy latents
    t = torch.randint(0, 1000, (batch,))                            # (B,)
    context = torch.randn(batch, 16, 128)                           # (B, L, D) text tokens
    mask = torch.ones(batch, 16, dtype=torch.bool)                  # (B, L)
    target = torch.randn_like(x)

    def step():
        loss = F.mse_loss(unet(x, t, context, mask), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward():
        with torch.no_grad():
            unet(x, t, context, mask)

    return step, forward


def attention_share(forward) -> tuple[float, float]:
    """(forward GFLOPs, the share of them in attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        forward()
    total = counter.get_total_flops()
    attention = sum(flops for op, flops in counter.get_flop_counts()["Global"].items()
                    if any(name in str(op) for name in ATTENTION_OPS))
    return total / 1e9, attention / max(total, 1)


def one(latent_size: int, batch: int, repeats: int) -> dict:
    """Measure one configuration in this process."""
    before = peak_memory_mb(torch.device("cpu"))  # torch itself, before any tensor of the run
    step, forward = build(latent_size, batch)
    gflop, share = attention_share(forward)  # CPU attention formulas: benchmarks/common.py
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"size": latent_size, "batch": batch, "seconds": statistics.median(times),
            "spread": max(times) - min(times), "gflop": gflop, "attention_share": share,
            "peak_mb": peak_memory_mb(torch.device("cpu")) - before}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64],
                        help="latent resolutions h = w")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--one", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.repeats)))
        return

    print(machine(torch.device("cpu")))
    print(f"{'latent':>7s} {'batch':>6s} {'s/step':>8s} {'spread':>7s} {'per px*img':>11s} "
          f"{'GFLOP fwd':>10s} {'attention':>10s} {'+peak MB':>8s}")
    first = None
    for size in args.sizes:
        for batch in args.batches:
            out = subprocess.run([sys.executable, __file__, "--one", str(size), str(batch),
                                  "--repeats", str(args.repeats)],
                                 capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            per_item = row["seconds"] / (size * size * batch)
            first = first or per_item
            print(f"{size:>4d}x{size:<2d} {batch:>6d} {row['seconds']:8.3f} {row['spread']:7.3f} "
                  f"{per_item / first:11.2f} {row['gflop']:10.1f} {row['attention_share']:10.1%} "
                  f"{row['peak_mb']:8.0f}")


if __name__ == "__main__":
    main()
