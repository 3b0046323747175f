"""The parts of the text UNet's training step, measured one by one (stage 4's CPU preset).

    python benchmarks/bench_parts.py                          # every part, 15 rounds each
    python benchmarks/bench_parts.py --parts attention adam --rounds 30
    python benchmarks/bench_parts.py --parts layout --compile # adds the compiled step, both layouts

docs/performance.md's table of what the training steps use quotes these parts:
- attention: F.scaled_dot_product_attention against the written-out softmax(q k^T / sqrt d) v,
  forward + backward, at the shapes of the UNet's blocks (batch 64, 4 heads, a caption of 28
  tokens of which 14 are real, as bench_models.py);
- adam: one AdamW step over the UNet's parameters with the fused kernel (training/optim.py:
  make_adam) against PyTorch's default (a loop over the tensors on the CPU), and the whole
  training step for scale;
- layout: the whole training step with contiguous tensors against channels_last, and with
  --compile the torch.compile'd step with inductor's layout optimisation off (maybe_compile's
  choice on the CPU) and on (torch.compile's default);
- qkv: an attention layer at the 8x8 level with three projections (models/attention.py) against
  one Linear(D, 3D) whose output is split, forward + backward;
- profile: torch.profiler's self time over the training step, grouped into convolutions, linear
  layers, attention kernels, the optimizer and the rest, with each group's GFLOP/s
  (torch.utils.flop_counter) and its rate against the convolutions' (the profiler cannot time a
  reference in alternation, so the groups compare with each other, in the same steps).

Every comparison is timed in alternation, round after round, and the medians are printed
(benchmarks/common.py: alternating_seconds), so a machine whose speed drifts slows every side.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (  # noqa: E402
    CONTEXT,
    REAL_TOKENS,
    alternating_seconds,
    config_of,
    latent_side,
    machine,
    text_unet_case,
    text_unet_step,
    timed,
)
from common.device import pick_device
from models.attention import Attention, attention_weights  # noqa: E402

CPU = config_of("ldm", "cpu")          # the text UNet timed: stage 4's CPU preset
HEADS = CPU["num_heads"]


def explicit_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d)) v with the weights written out (models/attention.py:
    attention_weights); q (B, h, L, d), k and v (B, h, L_ctx, d) -> (B, h, L, d)."""
    return attention_weights(q, k, mask) @ v


class FusedQKVAttention(Attention):
    """Self-attention with one Linear(D, 3D) for the queries, keys and values instead of three
    (the layout of some other codebases); the rest is models/attention.py's Attention."""

    def __init__(self, width: int, num_heads: int):
        super().__init__(width, None, num_heads)
        del self.to_q, self.to_k, self.to_v
        self.to_qkv = nn.Linear(width, 3 * width, bias=False)

    def forward(self, x, context=None, mask=None):
        B, L, D = x.shape
        heads, d = self.num_heads, self.head_dim
        qkv = self.to_qkv(x).reshape(B, L, 3, heads, d).permute(2, 0, 3, 1, 4)  # (3, B, h, L, d)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])            # (B, h, L, d)
        return self.to_out(out.transpose(1, 2).reshape(B, L, D))


def attention_levels() -> list[tuple[int, int]]:
    """(side, width) of the feature maps at the UNet's attention levels: 8x8 at width 64 and 4x4
    at width 128 for the CPU preset."""
    n = latent_side("cpu")
    return [(n // 2**i, CPU["base_channels"] * CPU["channel_mult"][i])
            for i in CPU["attention_levels"]]


def training_step(device, memory_format=torch.contiguous_format, compiled=None, seed=0):
    """(the UNet, its fused AdamW, a closure of one training step) at the CPU preset, the same
    step as bench_models.py's text-UNet row. compiled: None (eager) or torch.compile's options."""
    torch.manual_seed(seed)
    unet, optimizer, inputs = text_unet_case("cpu", device, memory_format)
    model = unet if compiled is None else torch.compile(unet, options=compiled)
    return unet, optimizer, text_unet_step(model, optimizer, inputs, device)


def part_attention(device, rounds):
    B = CPU["batch_size"]
    print(f"\nattention, forward + backward, batch {B}, {HEADS} heads (ms, medians of {rounds} "
          "alternated rounds)")
    print("| queries x keys, head width | fused (scaled_dot_product_attention) | explicit "
          "softmax(QK^T)V | explicit / fused |\n|---|---|---|---|")
    for size, width in attention_levels():
        d = width // HEADS
        for kind, L_ctx in (("self-attention", size * size), ("cross-attention, masked", CONTEXT)):
            q = torch.randn(B, HEADS, size * size, d, device=device, requires_grad=True)
            k = torch.randn(B, HEADS, L_ctx, d, device=device, requires_grad=True)
            v = torch.randn(B, HEADS, L_ctx, d, device=device, requires_grad=True)
            mask = None
            if kind != "self-attention":
                mask = (torch.arange(L_ctx, device=device) < REAL_TOKENS)[None, None, None]
                mask = mask.expand(B, 1, 1, L_ctx)

            def fused():
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()

            def explicit():
                explicit_attention(q, k, v, mask).sum().backward()

            a, b = alternating_seconds((fused, explicit), device, rounds)
            print(f"| {size * size} x {L_ctx}, {d} ({kind} at {size}x{size}) | {a * 1e3:.2f} | "
                  f"{b * 1e3:.2f} | {b / a:.1f}x |")


def part_adam(device, rounds):
    unet, fused_adam, step = training_step(device)
    default_adam = torch.optim.AdamW(unet.parameters(), lr=1e-4)  # PyTorch's default: on the
    # CPU a loop over the parameter tensors, on CUDA the multi-tensor (foreach) kernel
    step()                                                      # gradients to step with
    params = [p for p in unet.parameters() if p.grad is not None]
    fused, default, whole = alternating_seconds((fused_adam.step, default_adam.step, step),
                                                device, rounds)
    print(f"\nAdamW step over the text UNet's {len(params)} parameter tensors "
          f"({sum(p.numel() for p in params) / 1e6:.2f} M values), medians of {rounds} rounds:")
    print(f"fused kernel {fused * 1e3:.1f} ms, PyTorch's default on this device "
          f"{default * 1e3:.1f} ms; the whole training step with the fused one {whole * 1e3:.0f} "
          f"ms, of which the optimizer is {fused / whole:.1%} (the default: {default / whole:.1%} "
          "of the same step)")


def part_layout(device, rounds, compile_too):
    steps = {"eager, contiguous": training_step(device)[2],
             "eager, channels_last": training_step(device, torch.channels_last)[2]}
    if compile_too:
        for name, options in (("compiled, layout optimisation off (maybe_compile on the CPU)",
                               {"layout_optimization": False}),
                              ("compiled, layout optimisation on (torch.compile's default)", {})):
            steps[name] = training_step(device, compiled=options)[2]
            started = timed(steps[name], device, 1, 0)  # the first call traces and compiles
            print(f"{name}: first call {started:.0f} s")
    medians = alternating_seconds(tuple(steps.values()), device, rounds)
    print(f"\ntext UNet training step (CPU preset), medians of {rounds} alternated rounds:")
    for name, seconds in zip(steps, medians):
        print(f"- {name}: {seconds * 1e3:.0f} ms")


def part_qkv(device, rounds):
    size, width = attention_levels()[0]
    torch.manual_seed(0)
    three, one = Attention(width, None, HEADS).to(device), FusedQKVAttention(width, HEADS).to(device)
    x = torch.randn(CPU["batch_size"], size * size, width, device=device, requires_grad=True)
    a, b = alternating_seconds((lambda: three(x).sum().backward(), lambda: one(x).sum().backward()),
                               device, rounds)
    print(f"\nself-attention layer at {size}x{size} (width {width}, batch {CPU['batch_size']}), forward + "
          f"backward, medians of {rounds} rounds: three projections {a * 1e3:.2f} ms, one "
          f"Linear(D, 3D) {b * 1e3:.2f} ms")


# the groups of ops, by name: the profiler's names ("aten::mkldnn_convolution") and the FLOP
# counter's ("aten.convolution.default") both reduce to the bare op name
LINEAR_OPS = ("addmm", "mm", "bmm", "linear", "matmul")
GROUPS = ("convolution", "linear layers", "attention kernels", "optimizer", "the rest")


def group_of(op_name: str) -> str:
    name = op_name.replace("aten::", "").replace("aten.", "").split(".")[0].lower()
    if "conv" in name:
        return "convolution"
    if name in LINEAR_OPS:
        return "linear layers"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention kernels"
    if "adam" in name:
        return "optimizer"
    return "the rest"


def part_profile(device, steps):
    _, _, step = training_step(device)
    for _ in range(3):
        step()                                                  # warm-up
    with FlopCounterMode(display=False) as counter:
        step()
    flops = defaultdict(float)
    for op, count in counter.get_flop_counts()["Global"].items():
        flops[group_of(str(op))] += count
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    self_us = defaultdict(float)
    for event in prof.key_averages():
        self_us[group_of(event.key)] += event.self_cpu_time_total
    total = sum(self_us.values())
    # GFLOP/s per group: FLOPs of one step over its self time per step (the rest counts none)
    rates = {g: flops[g] / (self_us[g] / steps) / 1e3 for g in GROUPS if flops[g] and self_us[g]}
    print(f"\nwhere the text UNet's training step goes (torch.profiler self time over {steps} "
          f"steps: {total / steps / 1e3:.0f} ms per step under the profiler)")
    print("| group | share of the step | GFLOP/s | against the convolutions |\n|---|---|---|---|")
    for group in GROUPS:
        rate = (f"{rates[group]:.0f} | {rates[group] / rates['convolution']:.2f} |"
                if group in rates else "no counted FLOPs | |")
        print(f"| {group} | {self_us[group] / total:.0%} | {rate}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["attention", "adam", "layout", "qkv",
                                                       "profile"],
                        choices=("attention", "adam", "layout", "qkv", "profile"))
    parser.add_argument("--rounds", type=int, default=15, help="alternated rounds per comparison")
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true",
                        help="layout: also the torch.compile'd step, layout optimisation off and on")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    print(f"{machine(device)}, fp32")
    for part in args.parts:
        if part == "attention":
            part_attention(device, args.rounds)
        elif part == "adam":
            part_adam(device, args.rounds)
        elif part == "layout":
            part_layout(device, args.rounds, args.compile)
        elif part == "qkv":
            part_qkv(device, args.rounds)
        else:
            part_profile(device, args.profile_steps)


if __name__ == "__main__":
    main()
