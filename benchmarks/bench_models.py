"""Benchmark of stages 2-4: the autoencoder, the CLIP encoders and the text-conditioned UNet.

    python benchmarks/bench_models.py                       # CPU presets and laptop-GPU defaults
    python benchmarks/bench_models.py --configs cpu --precision bf16

For each model, at a stage script's CPU preset and at its laptop-GPU default (as copied into
benchmarks/common.py's MODEL_CONFIGS), it prints one row:
parameters, forward GFLOPs per item (torch.utils.flop_counter), training items/s of the step the
script takes (forward, backward, optimizer; the autoencoder row is the reconstruction + KL part
of its step, without the perceptual and GAN terms), the achieved GFLOP/s, the GFLOP/s of a plain
3x3 conv2d at the model's first-level width, batch and resolution (forward and backward, timed in
alternation with the step: benchmarks/common.py) and the ratio of the two, and peak memory.
With --compile each model's torch.compile'd twin is timed in the same rounds as the eager step,
and the table adds its speed, ratio and compile time. The pixel UNet has its own script,
bench_unet.py, with the sampling speeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (  # noqa: E402
    CONTEXT,
    MAX_LENGTH,
    REAL_TOKENS,
    VOCABULARY,
    compiled_twin,
    config_of,
    conv_reference,
    count_gflop,
    latent_side,
    machine,
    matmul_reference,
    paired_seconds,
    peak_memory_mb,
    text_unet_case,
    text_unet_step,
)
from common.device import autocast, pick_device
from models.clip import build_clip, clip_loss  # noqa: E402
from models.tokenizer import Tokenizer  # noqa: E402
from models.vae import build_vae  # noqa: E402
from training.optim import make_adam  # noqa: E402


def measure(name, model, make_step, forward_one, batch, conv_shape, device, args) -> dict:
    """make_step(model) -> a training-step closure calling that model; forward_one() runs one
    item forward. With --compile the eager step and its torch.compile'd twin (the same
    parameters and optimizer) are timed in the same rounds, so the two compare directly."""
    forward_gflop = count_gflop(forward_one)
    step = make_step(model)
    train_gflop = count_gflop(step)  # the same arithmetic, compiled or not
    others, compile_s = (), None
    if args.compile:
        compiled_step, compile_s = compiled_twin(make_step, model, device)
        others = (compiled_step,)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    channels, size = conv_shape
    conv_step, conv_gflop = conv_reference(channels, size, batch, device, args.precision)
    seconds, conv_seconds, *compiled = paired_seconds(step, conv_step, device, args.repeats,
                                                      others=others)
    conv = conv_gflop / conv_seconds
    row = dict(name=name, params=sum(p.numel() for p in model.parameters()) / 1e6, batch=batch,
               fwd_gflop=forward_gflop, items_s=batch / seconds, gflops=train_gflop / seconds,
               conv_gflops=conv, ratio=train_gflop / seconds / conv,
               memory=peak_memory_mb(device))
    if compiled:
        row.update(compiled_items_s=batch / compiled[0],
                   compiled_ratio=train_gflop / compiled[0] / conv,
                   compile_s=compile_s - compiled[0])  # the first call beyond an ordinary step
    return row


def bench_vae(config: str, device, args) -> dict:
    cfg = config_of("vae", config)
    vae = build_vae(cfg).to(device)
    optimizer = make_adam(torch.optim.Adam, vae.parameters(), lr=1e-4)
    batch, size = cfg["batch_size"], cfg["image_size"]
    x = torch.randn(batch, 3, size, size, device=device)

    def make_step(model):
        def step():
            with autocast(device, args.precision):
                x_rec, posterior = model(x)
                loss = F.l1_loss(x_rec.float(), x) + 1e-6 * posterior.kl().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    return measure(f"autoencoder ({config}, {size}px)", vae, make_step, lambda: vae(x[:1]), batch,
                   (cfg["base_channels"], size), device, args)


def bench_clip(config: str, device, args) -> dict:
    cfg = config_of("clip", config)
    vae_cfg = config_of("vae", config)
    latent = latent_side(config)
    tokenizer = Tokenizer(["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(
        VOCABULARY - 4)], MAX_LENGTH)
    clip = build_clip(cfg, tokenizer, vae_cfg["latent_channels"]).to(device)
    optimizer = make_adam(torch.optim.AdamW, clip.parameters(), lr=1e-4)
    batch = cfg["batch_size"]
    z = torch.randn(batch, vae_cfg["latent_channels"], latent, latent, device=device)
    ids = torch.randint(4, VOCABULARY, (batch, CONTEXT), device=device)
    mask = (torch.arange(CONTEXT, device=device)[None] < REAL_TOKENS).expand(batch, -1)

    def make_step(model):
        def step():
            with autocast(device, args.precision):
                loss = clip_loss(model(z, ids, mask).float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    return measure(f"CLIP text + image head ({config}, {latent}x{latent} latents)", clip, make_step,
                   lambda: clip(z[:1], ids[:1], mask[:1]), batch,
                   (cfg["head_channels"], latent), device, args)


def bench_ldm(config: str, device, args) -> dict:
    unet, optimizer, inputs = text_unet_case(config, device)
    z = inputs[0]                                                   # (B, C, n, n)
    return measure(f"text UNet ({config}, {z.shape[-1]}x{z.shape[-1]} latents)", unet,
                   lambda model: text_unet_step(model, optimizer, inputs, device, args.precision),
                   lambda: unet(*(x[:1] for x in inputs)), len(z),
                   (config_of("ldm", config)["base_channels"], z.shape[-1]), device, args)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["cpu", "default"],
                        choices=("default", "cpu"),
                        help="'default' (laptop GPU) and/or 'cpu' (the stage scripts' CPU presets)")
    parser.add_argument("--models", nargs="+", default=["vae", "clip", "ldm"],
                        choices=("vae", "clip", "ldm"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds of one training step and the reference conv3x3")
    parser.add_argument("--compile", action="store_true",
                        help="also time each model through torch.compile (as the scripts' "
                             "--compile), with its compile time")
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    benches = {"vae": bench_vae, "clip": bench_clip, "ldm": bench_ldm}
    rows = [benches[m](config, device, args) for config in args.configs for m in args.models]
    matmul = matmul_reference(device, args.precision, args.repeats)
    print(f"{machine(device)}, precision {args.precision}, compile {args.compile}; plain "
          f"2048x2048 matmul: {matmul:.0f} GFLOP/s")
    header = ("model", "params M", "batch", "fwd GFLOP/item", "train items/s", "GFLOP/s",
              "conv3x3 GFLOP/s", "ratio", "peak MB")
    if args.compile:
        header += ("compiled items/s", "compiled ratio", "compile s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['name']} | {r['params']:.2f} | {r['batch']} | {r['fwd_gflop']:.3f} | "
              f"{r['items_s']:.1f} | {r['gflops']:.0f} | {r['conv_gflops']:.0f} | {r['ratio']:.2f} "
              f"| {r['memory']:.0f} |" + (f" {r['compiled_items_s']:.1f} | {r['compiled_ratio']:.2f}"
                                         f" | {r['compile_s']:.0f} |" if args.compile else ""))
    print("FLOPs from torch.utils.flop_counter (with the CPU attention kernel counted); each step "
          "and its conv3x3 are timed in alternation, medians over --repeats rounds; peak MB is "
          f"{'CUDA allocated' if device.type == 'cuda' else 'process RSS'}.")


if __name__ == "__main__":
    main()
