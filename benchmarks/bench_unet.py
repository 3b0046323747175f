"""Benchmark of the pixel-space UNet: training and sampling speed against what the machine can do.

    python benchmarks/bench_unet.py                       # CPU preset and laptop-GPU default
    python benchmarks/bench_unet.py --configs cpu --precision bf16 --channels-last

For each configuration of train_unconditional.py (its laptop-GPU default and its CPU preset,
as copied into CONFIGS below) it prints: parameters, forward GFLOPs per image
(torch.utils.flop_counter), training images/s (forward, backward and Adam step), the achieved
GFLOP/s, the GFLOP/s of a plain 3x3 conv2d of the same width, batch and resolution (forward and
backward, timed in alternation with the step: benchmarks/common.py) and the ratio of the two,
peak memory, and sampling images/s for DDIM-50 and DDPM-1000. DDPM-1000 is timed over its first --ddpm-steps steps and scaled, since
every one of its steps costs the same network call (the table says so).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (  # noqa: E402
    compiled_twin,
    conv_reference,
    count_gflop,
    machine,
    matmul_reference,
    paired_seconds,
    peak_memory_mb,
    timed,
)
from common.device import autocast, pick_device
from diffusion import DDIMScheduler, DDPMScheduler, sample  # noqa: E402
from models.unet import build_unet  # noqa: E402
from training.optim import make_adam  # noqa: E402

# The pixel UNets that are timed: the architecture, schedule and batch of train_unconditional.py's
# Config defaults ("default", sized for a laptop GPU) and of its PRESETS["cpu"]. They mirror the
# script's values (benchmarks must not import a stage script); tests/test_benchmarks.py checks
# that every value here equals the script's, so a change there fails the tests until it is
# copied here.
CONFIGS = {
    "default": dict(image_size=32, batch_size=128,
                    base_channels=96, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                    attention_levels=(1, 2), dropout=0.1,
                    num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                    beta_schedule="linear", prediction_type="epsilon"),
    "cpu": dict(image_size=32, batch_size=32,
                base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                attention_levels=(2,), dropout=0.0,
                num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                beta_schedule="linear", prediction_type="epsilon"),
}


def bench(name: str, config: dict, device, args) -> dict:
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = build_unet(config, in_channels=3).to(device, memory_format=memory_format)
    optimizer = make_adam(torch.optim.Adam, model.parameters(), lr=1e-4)  # as the script
    batch, size = config["batch_size"], config["image_size"]
    x0 = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    t = torch.randint(0, config["num_train_timesteps"], (batch,), device=device)

    forward_gflop = count_gflop(lambda: model(x0[:1], t[:1]))  # per image

    def make_train_step(network):
        def train_step():
            with autocast(device, args.precision):
                loss = F.mse_loss(network(x0, t).float(), x0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return train_step

    train_step = make_train_step(model)
    train_gflop = count_gflop(train_step)  # per batch, forward + backward
    others, compile_s = (), None
    if args.compile:  # as train_unconditional.py --compile, timed in the same rounds as eager
        compiled_step, compile_s = compiled_twin(make_train_step, model, device)
        others = (compiled_step,)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    conv_step, conv_gflop = conv_reference(config["base_channels"], size, batch, device,
                                           args.precision, memory_format)
    step_s, conv_s, *compiled_s = paired_seconds(train_step, conv_step, device, args.repeats,
                                                 others=others)
    conv = conv_gflop / conv_s
    compiled = {}
    if compiled_s:
        compiled = dict(compiled_img_s=batch / compiled_s[0],
                        compiled_ratio=train_gflop / compiled_s[0] / conv,
                        compile_s=compile_s - compiled_s[0])  # beyond an ordinary step
    memory = peak_memory_mb(device)

    # Sampling: DDIM-50 in full; DDPM-1000 over args.ddpm_steps of its identical steps.
    model.eval()
    n = args.sample_batch
    x_T = torch.randn(n, 3, size, size, device=device)
    scheduler = DDPMScheduler.from_config(config, clip_sample=True).to(device)  # pixels

    def model_fn(x_t, t_batch):
        with autocast(device, args.precision):
            return model(x_t.contiguous(memory_format=memory_format), t_batch).float()

    with torch.no_grad():
        model_fn(x_T, t[:n])  # warm-up call
    ddim = DDIMScheduler.from_ddpm(scheduler)
    ddim.set_timesteps(50)
    ddim_s = timed(lambda: sample(model_fn, ddim, x_T, progress=False), device, 1, warmup=0)
    # DDPM-1000: the first ddpm_steps of its loop (each step is one network call and one update).
    scheduler.timesteps = scheduler.timesteps[:args.ddpm_steps]
    part_s = timed(lambda: sample(model_fn, scheduler, x_T, progress=False), device, 1, warmup=0)
    ddpm_s = part_s * scheduler.num_train_timesteps / args.ddpm_steps
    return dict(name=name, params=sum(p.numel() for p in model.parameters()) / 1e6,
                batch=batch, size=size, fwd_gflop=forward_gflop,
                train_img_s=batch / step_s, gflops=train_gflop / step_s, conv_gflops=conv,
                ratio=train_gflop / step_s / conv, memory=memory,
                ddim_img_s=n / ddim_s, ddpm_img_s=n / ddpm_s, speedup=ddpm_s / ddim_s,
                **compiled)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["cpu", "default"], choices=tuple(CONFIGS),
                        help="'default' (laptop GPU) and/or 'cpu' (train_unconditional.py's CPU "
                             "preset)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="also time the step through torch.compile (as --compile), with its "
                             "compile time")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds of one training step and the reference conv3x3")
    parser.add_argument("--sample-batch", type=int, default=16, help="images per sampling run")
    parser.add_argument("--ddpm-steps", type=int, default=50,
                        help="DDPM steps actually timed (of 1000) before scaling")
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)

    rows = []
    for name in args.configs:
        rows.append(bench(name, CONFIGS[name], device, args))
    matmul = matmul_reference(device, args.precision, args.repeats)

    print(f"{machine(device)}, precision {args.precision}, channels_last {args.channels_last}, "
          f"compile {args.compile}")
    print(f"plain {2048}x{2048} matmul: {matmul:.0f} GFLOP/s")
    header = ("config", "params M", "batch", "px", "fwd GFLOP/img", "train img/s", "GFLOP/s",
              "conv3x3 GFLOP/s", "ratio", "peak MB", "DDIM-50 img/s", "DDPM-1000 img/s*", "speedup")
    if args.compile:
        header += ("compiled img/s", "compiled ratio", "compile s")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        print(f"{r['name']} | {r['params']:.2f} | {r['batch']} | {r['size']} | {r['fwd_gflop']:.3f} | "
              f"{r['train_img_s']:.1f} | {r['gflops']:.0f} | {r['conv_gflops']:.0f} | "
              f"{r['ratio']:.2f} | {r['memory']:.0f} | {r['ddim_img_s']:.2f} | "
              f"{r['ddpm_img_s']:.3f} | {r['speedup']:.1f}x"
              + (f" | {r['compiled_img_s']:.1f} | {r['compiled_ratio']:.2f} | "
                 f"{r['compile_s']:.0f}" if args.compile else ""))
    print("FLOPs from torch.utils.flop_counter (with the CPU attention kernel counted); the model "
          "and the conv3x3 are timed in alternation, medians over --repeats rounds")
    print(f"* DDPM-1000 timed over {args.ddpm_steps} of its 1000 identical steps and scaled; "
          f"sampling with batches of {args.sample_batch}; peak MB is "
          f"{'CUDA allocated' if device.type == 'cuda' else 'process RSS'}.")


if __name__ == "__main__":
    main()
