"""What each stage needs at a configuration, before buying time on a device: parameters, FLOPs
per training step, memory at the batch (weights + optimizer against activations), the largest
batch under a memory budget, and the hours each stage takes on named device classes.

    python benchmarks/estimate.py                        # the laptop-GPU defaults, fp32 and bf16
    python benchmarks/estimate.py --configs cpu default --budget-gb 6.5

How it counts, per stage, on the CPU and without the device:
- One real training step of the stage (forward, loss, backward, optimizer; stage 2 with its
  perceptual term and a PatchGAN step) runs at two small batches under a dispatch hook that
  records every aten op: its FLOPs (torch.utils.flop_counter's formulas: matmuls, convolutions,
  attention) and the bytes it reads and writes (its tensor inputs and outputs).
- Every op's FLOPs and bytes are affine in the batch, so the two batches give them at any batch.
- Memory = weights + gradients + AdamW's two moments (+ EMA copies, + frozen networks), plus the
  activations saved for the backward pass (counted with torch.autograd.graph.saved_tensors_hooks,
  each storage once), affine in the batch too. Workspace and allocator slack are not counted.
- Time per step = the sum over ops of max(FLOPs / (peak x 0.65), bytes / (bandwidth x 0.75)),
  a roofline at 65% of peak compute and 75% of peak bandwidth (a typical achieved share, an
  assumption until measured on the device: see `--measure`).

This is an estimate until measured on the device. `--measure` times 20 real steps on the device
it runs on and prints the achieved TFLOP/s and the utilization against --peak-tflops.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_unet import CONFIGS as PIXEL_CONFIGS  # noqa: E402
from benchmarks.common import (CONTEXT, MAX_LENGTH, REAL_TOKENS, VOCABULARY,  # noqa: E402
                               config_of, latent_side, text_unet_step)
from common.device import autocast, pick_device, synchronize  # noqa: E402
from models.clip import build_clip, clip_loss  # noqa: E402
from models.discriminator import PatchDiscriminator  # noqa: E402
from models.losses import generator_loss, hinge_d_loss  # noqa: E402
from models.perceptual import PerceptualLoss  # noqa: E402
from models.tokenizer import Tokenizer  # noqa: E402
from models.unet import build_unet  # noqa: E402
from models.vae import build_vae  # noqa: E402
from training.optim import make_adam  # noqa: E402
from training.speed import DEVICE_CLASSES  # noqa: E402

# Optimizer steps of each stage script, "default" and --preset cpu (copies: a benchmark may not
# import a stage script; tests/test_benchmarks.py checks them against the scripts)
STEPS = {"unconditional": {"default": 12_000, "cpu": 1000},
         "vae": {"default": 12_000, "cpu": 2400},
         "clip": {"default": 6000, "cpu": 3000},
         "ldm": {"default": 14_000, "cpu": 3000}}

DEVICES = DEVICE_CLASSES  # published peaks per device class (training/speed.py cites them)
COMPUTE_SHARE, BANDWIDTH_SHARE = 0.65, 0.75  # achieved fractions of the peaks (assumed)
ADAM_BYTES = 4 + 4 + 8                        # fp32 weight, its gradient, AdamW's m and v
CPU = torch.device("cpu")


@dataclass
class Op:
    """One aten op of a step: its FLOPs and the bytes of its tensor inputs and outputs."""
    name: str
    flops: float
    bytes: float


class OpRecorder(TorchDispatchMode):
    """Records every aten op run inside it as an Op (FLOPs from torch.utils.flop_counter's
    registry, 0 for ops it has no formula for: elementwise work counts by its bytes only)."""

    def __init__(self):
        super().__init__()
        self.ops: list[Op] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_counter.flop_registry.get(func._overloadpacket)
        flops = formula(*args, **kwargs, out_val=out) if formula else 0
        tensors = [x for x in tree_flatten((args, kwargs, out))[0] if isinstance(x, torch.Tensor)]
        self.ops.append(Op(str(func._overloadpacket), float(flops),
                           float(sum(t.numel() * t.element_size() for t in tensors))))
        return out


def saved_activation_bytes(step) -> int:
    """Bytes of the tensors autograd keeps for the backward pass during step(), each storage
    counted once (a tensor saved by two ops is one allocation)."""
    storages = {}

    def pack(t):
        if t.device.type != "meta":
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(storages.values())


@dataclass
class Case:
    """One stage at one configuration: make_step(batch) -> a training-step closure at that
    batch; trained / frozen: parameter counts; ema: EMA copies of the trained weights."""
    stage: str
    config: str
    batch: int
    make_step: callable
    trained: int
    frozen: int
    ema: int


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def training_step(loss_fn, opt, device, precision: str):
    """A closure of one optimizer step: loss_fn() under autocast, backward, AdamW."""
    def step():
        with autocast(device, precision):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def pixel_case(name: str, precision: str, device=CPU) -> Case:
    """Stage 1: the pixel UNet predicting the noise of x_t (as train_unconditional.py)."""
    cfg = PIXEL_CONFIGS[name]
    unet = build_unet(cfg, in_channels=3).to(device)
    opt = make_adam(torch.optim.AdamW, unet.parameters(), lr=1e-4)

    def make_step(batch):
        size = cfg["image_size"]
        x = torch.randn(batch, 3, size, size, device=device)             # (B, 3, S, S)
        t = torch.randint(0, 1000, (batch,), device=device)               # (B,)
        return training_step(lambda: F.mse_loss(unet(x, t).float(), x), opt, device, precision)
    return Case("1 pixel DDPM", name, cfg["batch_size"], make_step, count(unet), 0, 1)


def vae_case(name: str, precision: str, device=CPU) -> Case:
    """Stage 2: the autoencoder's step (L1 + KL + perceptual + the generator's GAN term) and the
    PatchGAN's hinge step, as train_vae.py after --disc-start."""
    cfg = config_of("vae", name)
    vae, perceptual = build_vae(cfg).to(device), PerceptualLoss().requires_grad_(False).to(device)
    disc = PatchDiscriminator(base_channels=64 if name == "default" else 32,
                              num_layers=3 if name == "default" else 2).to(device)
    opt, opt_d = (make_adam(torch.optim.Adam, m.parameters(), lr=1e-4) for m in (vae, disc))
    size = cfg["image_size"]

    def make_step(batch):
        x = torch.randn(batch, 3, size, size, device=device)

        def step():
            with autocast(device, precision):
                x_rec, posterior = vae(x)
                loss = (F.l1_loss(x_rec.float(), x) + 1e-6 * posterior.kl().mean()
                        + perceptual(x_rec.float(), x) + 0.5 * generator_loss(disc(x_rec)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with autocast(device, precision):
                d_loss = hinge_d_loss(disc(x), disc(x_rec.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        return step
    return Case("2 autoencoder", name, cfg["batch_size"], make_step, count(vae) + count(disc),
                count(perceptual), 0)


def clip_case(name: str, precision: str, device=CPU) -> Case:
    """Stage 3: the CLIP's contrastive step on cached latents and tokenized captions."""
    cfg, vae_cfg = config_of("clip", name), config_of("vae", name)
    tokenizer = Tokenizer(["<pad>", "<bos>", "<eos>", "<unk>"]
                          + [f"w{i}" for i in range(VOCABULARY - 4)], MAX_LENGTH)
    clip = build_clip(cfg, tokenizer, vae_cfg["latent_channels"]).to(device)
    opt = make_adam(torch.optim.AdamW, clip.parameters(), lr=1e-4)
    n = latent_side(name)

    def make_step(batch):
        z = torch.randn(batch, vae_cfg["latent_channels"], n, n, device=device)
        ids = torch.randint(4, VOCABULARY, (batch, CONTEXT), device=device)
        mask = (torch.arange(CONTEXT, device=device)[None] < REAL_TOKENS).expand(batch, -1)
        return training_step(lambda: clip_loss(clip(z, ids, mask).float()), opt, device, precision)
    return Case("3 CLIP", name, cfg["batch_size"], make_step, count(clip), 0, 0)


def ldm_case(name: str, precision: str, device=CPU) -> Case:
    """Stage 4: the text UNet on latents with cross-attention to CONTEXT text tokens (the text
    encoder is frozen and its tokens are computed outside the counted step)."""
    cfg = config_of("ldm", name)
    C, D, n = config_of("vae", name)["latent_channels"], config_of("clip", name)["text_width"], \
        latent_side(name)
    unet = build_unet(cfg, C, D).to(device)
    opt = make_adam(torch.optim.AdamW, unet.parameters(), lr=1e-4)

    def make_step(batch):
        inputs = (torch.randn(batch, C, n, n, device=device),                  # z (B, C, n, n)
                  torch.randint(0, 1000, (batch,), device=device),             # t (B,)
                  torch.randn(batch, CONTEXT, D, device=device),               # text tokens
                  (torch.arange(CONTEXT, device=device)[None] < REAL_TOKENS).expand(batch, -1))
        return text_unet_step(unet, opt, inputs, device, precision)  # as bench_models.py
    return Case("4 latent diffusion", name, cfg["batch_size"], make_step, count(unet), 0,
                len(cfg["ema_lengths"]) or 1)  # one average per EMA length


CASES = {"unconditional": pixel_case, "vae": vae_case, "clip": clip_case, "ldm": ldm_case}


def affine(a: float, b: float, batch_a: int, batch_b: int, batch: int) -> float:
    """The value at `batch` of the line through (batch_a, a) and (batch_b, b)."""
    return a + (b - a) * (batch - batch_a) / (batch_b - batch_a)


@dataclass
class Estimate:
    ops: list[tuple[str, float, float]]   # (name, FLOPs, bytes) per op at the target batch
    fixed_bytes: float                    # weights, gradients, optimizer, EMA, frozen weights
    activation_bytes: tuple[float, float]  # (per item, constant): saved for the backward pass

    @property
    def flops(self) -> float:
        return sum(f for _, f, _ in self.ops)

    def memory(self, batch: int) -> float:
        per_item, constant = self.activation_bytes
        return self.fixed_bytes + constant + per_item * batch

    def largest_batch(self, budget_bytes: float) -> int:
        per_item, constant = self.activation_bytes
        return max(0, int((budget_bytes - self.fixed_bytes - constant) // per_item))

    def seconds(self, device: dict, precision: str) -> float:
        """The roofline: every op at the slower of its compute time and its memory time."""
        peak = device["bf16" if precision != "fp32" else "fp32"] * 1e12 * COMPUTE_SHARE
        bandwidth = device["bandwidth"] * 1e9 * BANDWIDTH_SHARE
        return sum(max(f / peak, b / bandwidth) for _, f, b in self.ops)


def estimate(case: Case, precision: str, batches: tuple[int, int] = (2, 4)) -> Estimate:
    """Record the step's ops at two small batches and extend every op's FLOPs and bytes, and the
    saved activations, to case.batch along a line."""
    records, saved = [], []
    for b in batches:
        torch.manual_seed(0)
        step = case.make_step(b)
        step()                                    # the optimizer's state exists from here on
        with OpRecorder() as recorder:
            step()
        records.append(recorder.ops)
        saved.append(saved_activation_bytes(step))
    (ba, bb), (ops_a, ops_b) = batches, records
    if [o.name for o in ops_a] != [o.name for o in ops_b]:
        raise RuntimeError(f"{case.stage}: the step runs different ops at batch {ba} and {bb}")
    ops = [(a.name, affine(a.flops, b.flops, ba, bb, case.batch),
            affine(a.bytes, b.bytes, ba, bb, case.batch)) for a, b in zip(ops_a, ops_b)]
    per_item = (saved[1] - saved[0]) / (bb - ba)
    fixed = case.trained * (ADAM_BYTES + 4 * case.ema) + case.frozen * 4
    return Estimate(ops, fixed, (per_item, saved[0] - per_item * ba))


def measure_step(case: Case, device: torch.device, steps: int = 20) -> float:
    """Seconds per real step on `device` at case.batch, over `steps` steps after 3 warm-up ones."""
    step = case.make_step(case.batch)
    for _ in range(3):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["default"], choices=("default", "cpu"),
                        help="the laptop-GPU defaults and/or the --preset cpu configurations")
    parser.add_argument("--stages", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        choices=("fp32", "bf16"))
    parser.add_argument("--budget-gb", type=float, default=6.5,
                        help="memory budget for the largest batch (6.5 GB: an 8 GB laptop GPU "
                             "with room for the desktop)")
    parser.add_argument("--measure", action="store_true",
                        help="also time 20 real steps of each stage on --device at its batch and "
                             "print the achieved TFLOP/s and the utilization of --device-class")
    parser.add_argument("--device", default="auto", help="where --measure runs: auto, cuda, mps, cpu")
    parser.add_argument("--device-class", default="RTX 4060 Laptop", choices=list(DEVICES),
                        help="the peaks --measure compares with, and its estimated step time")
    args = parser.parse_args()
    GB = 1e9
    for config in args.configs:
        rows, hours = [], {p: {d: 0.0 for d in DEVICES} for p in args.precisions}
        for stage in args.stages:
            for precision in args.precisions:
                case = CASES[stage](config, precision)
                est = estimate(case, precision)
                steps = STEPS[stage][config]
                rows.append((case, precision, est, steps))
                for d, spec in DEVICES.items():
                    hours[precision][d] += est.seconds(spec, precision) * steps / 3600
        print(f"\n## configuration: {config} (an estimate until measured on the device)\n")
        print("| stage | precision | params M (trained + frozen) | batch | TFLOP / step | "
              "weights + optimizer GB | activations GB | total GB | largest batch in "
              f"{args.budget_gb:g} GB | " + " | ".join(f"{d} h" for d in DEVICES) + " |")
        print("|" + "---|" * (9 + len(DEVICES)))
        for case, precision, est, steps in rows:
            act = est.memory(case.batch) - est.fixed_bytes
            times = " | ".join(f"{est.seconds(spec, precision) * steps / 3600:.2f}"
                               for spec in DEVICES.values())
            print(f"| {case.stage} | {precision} | {case.trained / 1e6:.1f} + "
                  f"{case.frozen / 1e6:.1f} | {case.batch} | {est.flops / 1e12:.3f} | "
                  f"{est.fixed_bytes / GB:.2f} | {act / GB:.2f} | {est.memory(case.batch) / GB:.2f} "
                  f"| {est.largest_batch(args.budget_gb * GB)} | {times} |")
        for precision in args.precisions:
            print(f"\nwhole chain, {precision}: " + ", ".join(
                f"{d} {h:.1f} h" for d, h in hours[precision].items()))
    if args.measure:
        device, spec = pick_device(args.device), DEVICES[args.device_class]
        print(f"\n## measured on {device} against {args.device_class}'s peaks\n")
        print("| stage | config | precision | batch | measured s / step | estimated s / step | "
              "achieved TFLOP/s | utilization of peak | peak memory GB |")
        print("|" + "---|" * 9)
        for config in args.configs:
            for stage in args.stages:
                for precision in args.precisions:
                    est = estimate(CASES[stage](config, precision), precision)
                    case = CASES[stage](config, precision, device)
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    seconds = measure_step(case, device)
                    peak = spec["bf16" if precision != "fp32" else "fp32"]
                    memory = (torch.cuda.max_memory_allocated(device) / GB
                              if device.type == "cuda" else float("nan"))
                    print(f"| {case.stage} | {config} | {precision} | {case.batch} | {seconds:.4f} "
                          f"| {est.seconds(spec, precision):.4f} | {est.flops / seconds / 1e12:.2f} | "
                          f"{est.flops / seconds / 1e12 / peak:.0%} | {memory:.2f} |")
    print("\nFLOPs: torch.utils.flop_counter formulas over one real step; bytes: every op's tensor "
          f"inputs and outputs; time: per-op roofline at {COMPUTE_SHARE:.0%} of peak compute and "
          f"{BANDWIDTH_SHARE:.0%} of peak bandwidth; memory: weights, gradients, AdamW and EMA, "
          "frozen weights and the activations saved for backward (no workspace).")


if __name__ == "__main__":
    main()
