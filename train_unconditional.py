"""Stage 1: an unconditional DDPM trained in pixel space on 32x32 faces (video points 2-7).

The loop is the video's [P6]: take a batch, augment it (rotation, flip, brightness, contrast),
resize to 32x32x3, draw a random timestep and Gaussian noise per image, jump to x_t in closed form
[P3], let the UNet predict the noise [P5], and minimise the mean squared error (DDPM Algorithm 1).

    python train_unconditional.py                     # laptop-GPU defaults (below)
    python train_unconditional.py --preset cpu        # a few minutes on a CPU, synthetic faces
    python train_unconditional.py --resume            # continue runs/unconditional exactly
    torchrun --nproc_per_node 2 train_unconditional.py --preset cpu   # data parallel

Writes to --out: checkpoint.pt (model, EMA, optimizer, step, RNG states, config), metrics.jsonl,
loss.png, and samples/step_XXXXXX.png grids drawn with DDIM from the EMA weights.

What the defaults need with --precision auto (benchmarks/estimate.py, an estimate until
measured on the device): 12,000 steps of 128 images in 3.2 GB, about 0.9 h
on an RTX 4060 Laptop GPU and 2.6 h on an Apple M2 Pro.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from common import (PRECISION_CHOICES, PRECISION_HELP, load_weights, main_guard, option,
                    parse_config, range_problems, require, require_positive, require_valid,
                    save_grid, seed_everything, to_device)
from data import load_dataset
from data.augment import augment
from diffusion import (DDPMScheduler, Pipeline, checkpoint_problem, generate, make_sampler,
                       schedule_problems)
from diffusion.flow import FLOW_TIME_SCALE, FlowMatching, flow_loss, flow_path, logit_normal_t
from models import build_unet, unet_problems
from training import (BatchOrder, EMA, ema_problems, LR_SCHEDULES, MetricLogger, StopFlag, due,
                      load_optimizer_state, load_scaler_state, make_adam, optimizer_step,
                      scheduled_lr, set_lr, start_run)


@dataclass
class Config:
    # data
    data: str = option("synthetic", "'synthetic' (embedded faces, made on first use), 'synthetic:N', "
                                    "a CelebA folder, or an image folder")
    cache_dir: str = option("cache", "where decoded images and the synthetic dataset are kept")
    val_percent: int = option(5, "an image folder's share held out for evaluation, in percent "
                                 "(by a hash of each file name; CelebA and the synthetic faces "
                                 "keep their own split)", fixed=True)
    image_size: int = option(32, "training resolution in pixels (the video uses 32x32x3)", fixed=True)
    augment: bool = option(True, "random flip, small rotation, brightness and contrast [P6]")
    # model [P5]
    base_channels: int = option(96, "channels of the UNet's first level", fixed=True)
    channel_mult: tuple = option((1, 2, 2, 2), "channel multiplier per level (one level per entry)",
                                 fixed=True)
    num_res_blocks: int = option(2, "residual blocks per level", fixed=True)
    attention_levels: tuple = option((1, 2), "level indices (0 = full resolution) with self-attention",
                                     fixed=True)
    dropout: float = option(0.1, "dropout inside the residual blocks")
    # diffusion [P2] [P3] [P4]
    num_train_timesteps: int = option(1000, "T, the number of noising steps", fixed=True)
    beta_start: float = option(1e-4, "beta_1 of the linear schedule (DDPM)", fixed=True)
    beta_end: float = option(0.02, "beta_T of the linear schedule (DDPM)", fixed=True)
    beta_schedule: str = option("linear", "linear (DDPM, the video) or cosine (Nichol & Dhariwal)",
                                fixed=True)
    prediction_type: str = option("epsilon", "what the UNet predicts: epsilon (the video) or v",
                                  fixed=True)
    # flow matching, beyond the video (docs/flow-matching.md)
    objective: str = option("ddpm", "ddpm: the video's noising and noise prediction; flow: flow "
                                    "matching on the straight path (the beta and prediction "
                                    "settings are then unused)", choices=("ddpm", "flow"),
                            fixed=True)
    logit_mean: float = option(0.0, "flow: location of the logit-normal timesteps (SD3: 0)")
    logit_std: float = option(1.0, "flow: scale of the logit-normal timesteps (SD3: 1)")
    # optimisation
    steps: int = option(12_000, "optimizer steps in total")
    batch_size: int = option(128, "images per step (summed over processes under torchrun)")
    lr: float = option(2e-4, "Adam learning rate after warm-up (DDPM used 2e-4)")
    warmup_steps: int = option(1000, "linear learning-rate warm-up")
    min_snr_gamma: float = option(0.0, "min-SNR-gamma loss weighting (Hang et al. 2023 use 5); "
                                       "0: the plain mean squared error")
    lr_schedule: str = option("cosine", "after the warm-up: constant, or cosine decay to 0 at --steps",
                              choices=LR_SCHEDULES)
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 = off)")
    ema_decay: float = option(0.9995, "decay of the exponential moving average of the weights (with "
                                      "--ema-lengths given no value)")
    ema_lengths: tuple = option((0.05,), "beyond the video (docs/ema.md): EDM2's power-function EMA, "
                                         "one per relative length sigma_rel (e.g. 0.05 0.1); the "
                                         "first is what sampling uses, the others are kept for "
                                         "evaluate.py --ema-length; no value: the exponential EMA "
                                         "of --ema-decay", type=float, fixed=True)
    precision: str = option("auto", PRECISION_HELP, choices=PRECISION_CHOICES)
    deterministic: bool = option(False, "deterministic kernels only: on a CPU runs repeat bit for "
                                        "bit anyway; on a GPU this trades speed for repeatable "
                                        "results (no TF32, no cudnn autotuning)")
    compile: bool = option(False, "torch.compile the model: faster steps after a first step that "
                                  "compiles (its time is printed); needs a C++ compiler on the CPU")
    channels_last: bool = option(True, "NHWC memory layout (faster convolutions on most devices)")
    # bookkeeping
    out: str = option("runs/unconditional", "output folder")
    log_every: int = option(50, "steps between metric lines")
    sample_every: int = option(2000, "steps between sample grids (0 = only at the end)")
    ckpt_every: int = option(2000, "steps between checkpoints")
    num_samples: int = option(64, "images in each sample grid")
    sample_steps: int = option(50, "DDIM steps for the sample grids")
    sample_eta: float = option(0.0, "DDIM noise for the sample grids: 0 deterministic, 1 DDPM-like "
                                    "(1 hides the grain a briefly trained model leaves)")
    seed: int = option(0, "random seed")
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    resume: bool = option(False, "continue from OUT/checkpoint.pt exactly where it stopped")
    overwrite: bool = option(False, "start over in an --out that holds a run: delete its checkpoint, "
                                    "metrics and images first (without it, such an --out is refused)")


PRESETS = {
    "cpu": dict(_doc="a small UNet that learns the synthetic faces in a few minutes on a CPU",
                base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(2,),
                dropout=0.0, channels_last=False, steps=1000, batch_size=32, lr=1e-3,
                warmup_steps=100, lr_schedule="cosine", ema_lengths=(0.05,), log_every=25,
                sample_every=500, ckpt_every=500, sample_steps=100, sample_eta=1.0,
                out="runs/unconditional_cpu"),
}


def check_config(cfg: Config) -> None:
    require_positive(cfg, ("steps", "batch_size", "log_every", "ckpt_every", "num_samples",
                           "sample_steps", "num_train_timesteps", "image_size", "base_channels",
                           "num_res_blocks"))
    require(cfg.sample_every >= 0, f"--sample-every {cfg.sample_every}: expected 0 or more")
    require(cfg.lr > 0, f"--lr {cfg.lr}: expected a positive number")
    factor = 2 ** (len(cfg.channel_mult) - 1)
    require(not cfg.channel_mult or cfg.image_size % factor == 0,
            f"--image-size {cfg.image_size}: must be divisible by {factor}, the UNet's "
            f"downsampling factor for {len(cfg.channel_mult)} levels")
    values = dataclasses.asdict(cfg)
    require_valid(schedule_problems(values) + unet_problems(values, cfg.image_size)
                  + range_problems(values, fractions=("ema_decay",),
                                   non_negative=("grad_clip", "min_snr_gamma"))
                  + ema_problems(values))
    require(0.0 <= cfg.sample_eta <= 1.0, f"--sample-eta {cfg.sample_eta}: expected 0 to 1")
    require(cfg.sample_steps <= cfg.num_train_timesteps,
            f"--sample-steps {cfg.sample_steps}: at most --num-train-timesteps")


def main():
    cfg = parse_config(Config, presets=PRESETS, description=__doc__.split("\n\n")[0])
    check_config(cfg)
    run = start_run(cfg)
    ranks, device = run.ranks, run.device

    # ---- Data --------------------------------------------------------------------------------
    with run.main_process_first():  # rank 0 generates / decodes the data once
        dataset = load_dataset(cfg.data, cfg.image_size, split="train", cache_dir=cfg.cache_dir,
                               val_percent=cfg.val_percent)
    batch_order = BatchOrder(len(dataset), cfg.batch_size, cfg.seed, ranks.rank, ranks.world_size)
    run.print(f"data: {dataset.name}, {len(dataset)} training images at {cfg.image_size}x"
              f"{cfg.image_size}, {batch_order.steps_per_epoch} steps per epoch")

    # ---- Model, schedule, optimizer ----------------------------------------------------------
    seed_everything(cfg.seed)  # the same initial weights on every rank
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    config = dataclasses.asdict(cfg)  # the builders read the settings by name
    model = build_unet(config, in_channels=3).to(device, memory_format=memory_format)
    scheduler = DDPMScheduler.from_config(config, clip_sample=True).to(device)
    optimizer = make_adam(torch.optim.Adam, model.parameters(), lr=cfg.lr)
    scaler = run.grad_scaler()
    ema = EMA(model, cfg.ema_decay, cfg.ema_lengths)
    state = run.resume("ddpm", check=checkpoint_problem)  # None unless --resume
    if state:
        load_weights(model, state["model"], f"--resume {run.checkpoint_path}")
        ema.load_state_dict(state["ema"])
        load_optimizer_state(optimizer, state["optimizer"])
        load_scaler_state(scaler, state["scaler"])
    start_step = run.seed_or_restore(state)
    train_model = run.wrap(model)
    run.print(f"UNet: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")

    # Sample grids use their own generators, so drawing them does not change the training noise.
    flow = cfg.objective == "flow"
    sample_scheduler, eta = make_sampler(FlowMatching.from_config(config) if flow else scheduler,
                                         None, cfg.sample_steps,  # DDIM, or Euler for flow
                                         eta=0.0 if flow else cfg.sample_eta)
    pipe = Pipeline(ema.model, (3, cfg.image_size, cfg.image_size))  # pixels: no autoencoder

    def sample_grid(step: int) -> None:
        """Image j from seed j, with the EMA weights, as `sample.py --seed 0 --sampler ddim
        --steps SAMPLE_STEPS --eta SAMPLE_ETA` draws it from the checkpoint."""
        seeds = list(range(cfg.num_samples))
        images = generate(pipe, [""] * len(seeds), seeds, 1.0, sample_scheduler, eta=eta,
                          generator=torch.Generator().manual_seed(0)).images
        save_grid(images, run.out / "samples" / f"step_{step:06d}.png")

    # ---- Train -------------------------------------------------------------------------------
    # the progress line's utilization: one step's FLOPs, counted on a copy with shapes only
    b, size = cfg.batch_size // ranks.world_size, cfg.image_size
    flops = run.flops(lambda unet, x, t: unet(x, t).square().mean(), [model],
                      [torch.zeros(b, 3, size, size), torch.zeros(b, dtype=torch.long)])
    logger = MetricLogger(run.out, start_step, ranks.is_main, cfg.batch_size, "images_per_s",
                          flops)
    stop = StopFlag()
    clock = run.compile_clock()
    model.train()
    for step in (progress := run.progress(start_step, "train")):
        logger.input.start()
        # [P6] 1. a batch of 32x32x3 images in [-1, 1], augmented as in the video
        x0 = dataset.batch(batch_order(step), device)["image"]  # (B, 3, H, W)
        if cfg.augment:
            x0 = augment(x0)
        x0 = x0.contiguous(memory_format=memory_format)
        logger.input.stop()
        if cfg.objective == "ddpm":
            # 2. a random timestep and Gaussian noise per image
            t = torch.randint(0, cfg.num_train_timesteps, (x0.shape[0],), device=device)  # (B,)
            noise = torch.randn_like(x0)  # eps ~ N(0, I)
            # [P3] 3. jump to step t in closed form: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps
            x_t = scheduler.add_noise(x0, noise, t)
            # [P6] 4. the UNet predicts the noise (or v); DDPM Algorithm 1: || eps - eps_theta(x_t, t) ||^2
            with run.autocast():
                prediction = train_model(x_t, t)
            loss = scheduler.training_loss(prediction, x0, noise, t, cfg.min_snr_gamma)
        else:  # flow matching, beyond the video (docs/flow-matching.md): the same three steps
            t = to_device(logit_normal_t(x0.shape[0], cfg.logit_mean, cfg.logit_std), device)  # (B,)
            noise = torch.randn_like(x0)
            x_t = flow_path(x0, noise, t)                         # x_t = (1 - t) x0 + t eps
            with run.autocast():
                prediction = train_model(x_t, FLOW_TIME_SCALE * t)  # v_theta(x_t, t)
            loss = flow_loss(prediction, x0, noise)               # || v_theta - (eps - x0) ||^2
        # 5. backward, and one optimizer step with the learning rate warmed up linearly
        lr = scheduled_lr(cfg.lr_schedule, step, cfg.lr, cfg.warmup_steps, cfg.steps)
        set_lr(optimizer, lr)
        scaler.scale(loss).backward()
        grad_norm = optimizer_step(optimizer, scaler, model.parameters(), cfg.grad_clip)
        ema.update(model)
        logger.add(loss=loss)
        if clock and (line := clock.tick()) and ranks.is_main:
            progress.write(line)

        # ---- Bookkeeping: log, checkpoint, sample grid, stop -----------------------------------
        done = step + 1
        stopping = run.any_rank(stop.requested)
        saving = due(done, cfg.ckpt_every) or done == cfg.steps or stopping
        if due(done, cfg.log_every) or saving:
            means = logger.write(done, lr=lr, grad_norm=grad_norm.item())
            progress.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.1e}", **logger.speed(means))
        if saving:
            run.save(done, "ddpm", model=model.state_dict(), ema=ema.state_dict(),
                     optimizer=optimizer.state_dict(), scaler=scaler.state_dict())
            logger.plot()
        if ranks.is_main and (due(done, cfg.sample_every) or done == cfg.steps):
            sample_grid(done)
        if stopping:
            run.print(f"stopped at step {done}; continue with the same command and --resume")
            break
    progress.close()
    run.finish(model)
    if stop.requested:
        return stop.exit_status  # 128 + the signal's number (130 after Ctrl-C, 143 SIGTERM)
    run.print(f"done: {run.out}/checkpoint.pt, samples in {run.out}/samples, curves in "
              f"{run.out}/loss.png")


if __name__ == "__main__":
    main_guard(main)
