"""Stage 4: latent diffusion, conditioned on text through cross-attention (video points 12, 16).

[P12] The diffusion model of stage 1 runs on the autoencoder's latents instead of pixels: the
training images were encoded once by train_vae.py (OUT/latents_*.pt), each step draws
z ~ q(z | x), multiplies it by the stored scale factor so it has unit variance, and trains the
UNet as in train_unconditional.py, to predict v by default (--prediction-type epsilon predicts
the noise, as stage 1 does). Samples are latents, which the decoder turns into images.

[P16] With --clip, every attention block of the UNet also attends to the frozen CLIP text
encoder's hidden states (cross-attention: the image features ask, the text tokens answer). The
caption is replaced by the empty prompt 10% of the time (--cond-drop), so the same model is also
unconditional and can be sampled with classifier-free guidance (diffusion/guidance.py).

    python train_ldm.py --vae runs/vae/checkpoint.pt --clip runs/clip/checkpoint.pt
    python train_ldm.py --preset cpu                  # on runs/vae_cpu and runs/clip_cpu
    python train_ldm.py --preset cpu_uncond           # unconditional latent diffusion (point 12)

The final checkpoint holds everything sample.py needs: UNet and EMA weights, the autoencoder,
the text encoder and tokenizer, the scale factor and every config.

What the defaults need with --precision auto (benchmarks/estimate.py, an estimate until
measured on the device): 14,000 steps of 96 latents in 5.3 GB, about 1.9 h
on an RTX 4060 Laptop GPU and 5.2 h on an Apple M2 Pro.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from common import (CheckpointError, ConfigError, PRECISION_CHOICES, PRECISION_HELP, load_weights,
                    main_guard, option, parse_config, range_problems, require, require_positive,
                    require_valid, save_labelled_grid, seed_everything, to_device)
from data.captions import VALIDATION_PROMPTS, captions_for, step_rng
from data.files import read_prompts_file
from data.latents import draw_latents, load_latents
from diffusion import (DDPMScheduler, Pipeline, checkpoint_problem, generate, make_sampler,
                       schedule_problems)
from diffusion.flow import FLOW_TIME_SCALE, FlowMatching, flow_loss, flow_path, logit_normal_t
from models import TextConditioner, build_unet, load_clip, load_vae, text_state, unet_problems
from training import (BatchOrder, EMA, ema_problems, LR_SCHEDULES, MetricLogger, StopFlag, due,
                      load_optimizer_state, load_scaler_state, make_adam, optimizer_step,
                      scheduled_lr, set_lr, start_run)


@dataclass
class Config:
    # inputs: the autoencoder (with its latent cache) and the CLIP text encoder
    vae: str = option("runs/vae/checkpoint.pt", "the trained autoencoder (train_vae.py)")
    clip: str = option("runs/clip/checkpoint.pt", "the trained CLIP (train_clip.py); '' = "
                                                  "unconditional latent diffusion")
    cond_drop: float = option(0.1, "probability of training on the empty prompt (classifier-free "
                                   "guidance needs it)")
    # model [P5] [P16]
    base_channels: int = option(128, "channels of the UNet's first level", fixed=True)
    channel_mult: tuple = option((1, 2, 2), "channel multiplier per level (32x32 latents: 32, 16, 8)",
                                 fixed=True)
    num_res_blocks: int = option(2, "residual blocks per level", fixed=True)
    attention_levels: tuple = option((1, 2), "levels with self- and cross-attention (0 = full res)",
                                     fixed=True)
    num_heads: int = option(4, "attention heads", fixed=True)
    dropout: float = option(0.0, "dropout inside the residual blocks")
    # diffusion [P2] [P3] [P4]
    num_train_timesteps: int = option(1000, "T, the number of noising steps", fixed=True)
    beta_start: float = option(1e-4, "beta_1 of the linear schedule", fixed=True)
    beta_end: float = option(0.02, "beta_T of the linear schedule", fixed=True)
    beta_schedule: str = option("linear", "linear or cosine", fixed=True)
    prediction_type: str = option("v", "what the UNet predicts: v (Salimans & Ho 2022) or epsilon; "
                                       "latents cannot be clipped like pixels, and x0 from an "
                                       "epsilon model amplifies its errors by sqrt((1-a)/a) at high "
                                       "noise (x157 at t = T-1), so v is the default here", fixed=True)
    # flow matching, beyond the video (docs/flow-matching.md)
    objective: str = option("ddpm", "ddpm: the video's noising and noise prediction; flow: flow "
                                    "matching on the straight path (the beta and prediction "
                                    "settings are then unused)", choices=("ddpm", "flow"),
                            fixed=True)
    logit_mean: float = option(0.0, "flow: location of the logit-normal timesteps (SD3: 0)")
    logit_std: float = option(1.0, "flow: scale of the logit-normal timesteps (SD3: 1)")
    # optimisation
    steps: int = option(14_000, "optimizer steps in total")
    batch_size: int = option(96, "latents per step (summed over processes under torchrun); 96 fits "
                                 "a 6-8 GB GPU in bf16 or fp16")
    lr: float = option(2e-4, "AdamW learning rate after warm-up")
    warmup_steps: int = option(1000, "linear learning-rate warm-up")
    min_snr_gamma: float = option(0.0, "min-SNR-gamma loss weighting (Hang et al. 2023 use 5); "
                                       "0: the plain mean squared error")
    lr_schedule: str = option("constant", "after the warm-up: constant, or cosine decay to 0 at --steps",
                              choices=LR_SCHEDULES)
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 = off)")
    ema_decay: float = option(0.9995, "decay of the weights' moving average used for sampling")
    ema_lengths: tuple = option((), "beyond the video (docs/ema.md): EDM2's power-function EMA, one "
                                    "per relative length sigma_rel (e.g. 0.1 0.2); the first is "
                                    "what sampling uses, the others are kept for evaluate.py "
                                    "--ema-length; none: the exponential EMA of --ema-decay",
                                type=float, fixed=True)
    precision: str = option("auto", PRECISION_HELP, choices=PRECISION_CHOICES)
    deterministic: bool = option(False, "deterministic kernels only: on a CPU runs repeat bit for "
                                        "bit anyway; on a GPU this trades speed for repeatable "
                                        "results (no TF32, no cudnn autotuning)")
    compile: bool = option(False, "torch.compile the model: faster steps after a first step that "
                                  "compiles (its time is printed); needs a C++ compiler on the CPU")
    # bookkeeping
    out: str = option("runs/ldm", "output folder")
    log_every: int = option(50, "steps between metric lines")
    sample_every: int = option(2000, "steps between validation grids (0 = only at the end)")
    ckpt_every: int = option(2000, "steps between checkpoints")
    sample_seeds: int = option(4, "images per validation prompt in the grids")
    validation_prompts: str = option("", "a text file, one prompt per line (at most 16), for the "
                                         "validation grids; default: the built-in face prompts, "
                                         "or for data with captions but no attributes its first "
                                         "8 distinct held-out captions")
    sample_steps: int = option(50, "DDIM steps for the validation grids")
    guidance: float = option(3.0, "classifier-free guidance scale of the validation grids")
    seed: int = option(0, "random seed")
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    resume: bool = option(False, "continue from OUT/checkpoint.pt exactly where it stopped")
    overwrite: bool = option(False, "start over in an --out that holds a run: delete its checkpoint, "
                                    "metrics and images first (without it, such an --out is refused)")


PRESETS = {
    # flow matching, EMA lengths and cosine decay learned most per CPU-minute (docs/equal-time.md)
    "cpu": dict(_doc="a small text-conditioned UNet on the CPU presets' 16x16x3 latents, flow "
                     "matching (beyond the video: docs/flow-matching.md)",
                vae="runs/vae_cpu/checkpoint.pt", clip="runs/clip_cpu/checkpoint.pt",
                base_channels=32, channel_mult=(1, 2, 4), num_res_blocks=1,
                attention_levels=(1, 2), steps=3000, batch_size=64, lr=1e-3, warmup_steps=100,
                objective="flow", lr_schedule="cosine", ema_lengths=(0.1, 0.05), log_every=25,
                sample_every=1000, ckpt_every=500, out="runs/ldm_cpu"),
    "cpu_uncond": dict(_doc="the video's DDPM on the cpu preset's latents, without text [P12]",
                       vae="runs/vae_cpu/checkpoint.pt", clip="", base_channels=32,
                       channel_mult=(1, 2, 4), num_res_blocks=1, attention_levels=(1, 2),
                       steps=3000, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.995,
                       log_every=25, sample_every=1000, ckpt_every=500, out="runs/ldm_cpu_uncond"),
}
PRESETS["small"] = PRESETS["cpu"] | dict(
    _doc="on runs/vae_small and runs/clip_small (your own captioned folder): the cpu preset's UNet "
         "and recipe, batches of 32; validation grids on its held-out captions",
    vae="runs/vae_small/checkpoint.pt", clip="runs/clip_small/checkpoint.pt", steps=2000,
    batch_size=32, out="runs/ldm_small")


def check_config(cfg: Config) -> None:
    require_positive(cfg, ("steps", "batch_size", "log_every", "ckpt_every", "sample_seeds",
                           "sample_steps", "num_train_timesteps", "base_channels",
                           "num_res_blocks", "num_heads"))
    require(cfg.lr > 0, f"--lr {cfg.lr}: expected a positive number")
    require(0.0 <= cfg.cond_drop < 1.0, f"--cond-drop {cfg.cond_drop}: expected 0 <= p < 1")
    require(cfg.sample_every >= 0, f"--sample-every {cfg.sample_every}: expected 0 or more")
    require(0 <= cfg.guidance < float("inf"), f"--guidance {cfg.guidance}: expected a finite "
                                              "number, 0 or more (1 = the conditional model, 0 = "
                                              "the unconditional one)")
    values = dataclasses.asdict(cfg)  # the latent size is checked once the latents are loaded
    require_valid(schedule_problems(values) + unet_problems(values, resolution=None)
                  + range_problems(values, fractions=("ema_decay",),
                                   non_negative=("grad_clip", "min_snr_gamma"))
                  + ema_problems(values))
    require(cfg.sample_steps <= cfg.num_train_timesteps,
            f"--sample-steps {cfg.sample_steps}: at most --num-train-timesteps")


def validation_prompts(cfg: Config, train: dict, scale_factor: float) -> list[str]:
    """The validation grids' prompts: --validation-prompts; else the built-in face prompts for
    data with attributes; else the first 8 distinct captions of the held-out split (own data)."""
    if cfg.validation_prompts:
        prompts = read_prompts_file(Path(cfg.validation_prompts), "--validation-prompts")
        require(len(prompts) <= 16, f"--validation-prompts {cfg.validation_prompts}: "
                                    f"{len(prompts)} prompts; at most 16 rows in a grid")
        return prompts
    if train["attributes"] is not None:
        return list(VALIDATION_PROMPTS)
    texts = load_latents(cfg.vae, "val", scale_factor)["texts"] or train["texts"]
    return list(dict.fromkeys(texts))[:8]


def main():
    cfg = parse_config(Config, presets=PRESETS, description=__doc__.split("\n\n")[0])
    check_config(cfg)
    run = start_run(cfg)
    ranks, device = run.ranks, run.device

    # ---- Inputs: the latent cache [P12] and the frozen text encoder [P14] --------------------
    try:
        vae, scale_factor, vae_config = load_vae(cfg.vae)
    except CheckpointError as error:
        raise ConfigError(f"--vae: {error}") from None
    train = load_latents(cfg.vae, "train", scale_factor)
    latent_shape = tuple(train["mean"].shape[1:])                    # (C, h, w)
    require_valid(unet_problems(dataclasses.asdict(cfg), resolution=latent_shape[-1]))
    text, stored_text = None, None
    if cfg.clip:
        try:
            clip = load_clip(cfg.clip, device)
        except CheckpointError as error:
            raise ConfigError(f"--clip: {error}") from None
        if abs(clip.scale_factor - scale_factor) > 1e-6:
            run.print(f"note: {cfg.clip} was trained on the latents of another autoencoder; its "
                      "text encoder is used as it is")
        text = TextConditioner(clip.clip.text_encoder, clip.tokenizer)
        stored_text = text_state(clip)  # the text side, stored in every checkpoint
        if train["attributes"] is None and train["texts"] is None:
            raise ConfigError("the latent cache has neither attributes nor captions: train an "
                              "unconditional model with --clip ''")
    prompts = validation_prompts(cfg, train, scale_factor) if text else [""]
    if text:
        text(prompts, device)  # names any word of the grids' prompts it does not know
    batch_order = BatchOrder(len(train["mean"]), cfg.batch_size, cfg.seed, ranks.rank,
                           ranks.world_size)
    run.print(f"data: {train['data']}, {len(train['mean'])} latents "
              f"{'x'.join(map(str, latent_shape))} (scale factor {scale_factor:.4f}); "
              + (f"text: {cfg.clip}, {len(text.tokenizer)} words" if text else "unconditional"))

    # ---- Model, schedule, optimizer ----------------------------------------------------------
    seed_everything(cfg.seed)
    context_dim = text.text_encoder.width if text else None
    config = dataclasses.asdict(cfg)  # the builders read the settings by name
    model = build_unet(config, latent_shape[0], context_dim).to(device)
    # no x0 clipping: latents are not bounded to [-1, 1] the way pixels are
    scheduler = DDPMScheduler.from_config(config, clip_sample=False).to(device)
    optimizer = make_adam(torch.optim.AdamW, model.parameters(), lr=cfg.lr, weight_decay=0.0)
    scaler = run.grad_scaler()
    ema = EMA(model, cfg.ema_decay, cfg.ema_lengths)
    state = run.resume("ldm", check=checkpoint_problem)  # None unless --resume
    if state:
        load_weights(model, state["model"], f"--resume {run.checkpoint_path}")
        ema.load_state_dict(state["ema"])
        load_optimizer_state(optimizer, state["optimizer"])
        load_scaler_state(scaler, state["scaler"])
    start_step = run.seed_or_restore(state)
    train_model = run.wrap(model)
    run.print(f"UNet: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"
              + (f", cross-attention to {context_dim}-wide text tokens" if text else ""))

    flow = cfg.objective == "flow"   # validation grids: DDIM, or Euler for flow matching
    sample_scheduler, _ = make_sampler(FlowMatching.from_config(config) if flow else scheduler,
                                       None, cfg.sample_steps)  # DDIM at eta 0, or Euler
    pipe = Pipeline(ema.model, latent_shape, vae=vae.to(device), text=text,
                    scale_factor=scale_factor)

    def validation_grid(step: int) -> None:
        """One row per validation prompt, labelled with it, seed j in column j (as `sample.py
        --seed j` makes it, and as its grid lays them out); DDIM, guidance, EMA weights."""
        jobs = [(p, seed) for p in prompts for seed in range(cfg.sample_seeds)]
        images = generate(pipe, [p for p, _ in jobs], [s for _, s in jobs], cfg.guidance,
                          sample_scheduler).images
        save_labelled_grid(images, run.out / "samples" / f"step_{step:06d}.png",
                           [p or "(unconditional)" for p in prompts],
                           [f"seed {seed}" for seed in range(cfg.sample_seeds)])
        if step == cfg.steps or not (run.out / "samples" / "prompts.txt").exists():
            (run.out / "samples" / "prompts.txt").write_text(
                "".join(f"row {i}: {p or '(unconditional)'}\n" for i, p in enumerate(prompts)))

    # ---- Train -------------------------------------------------------------------------------
    # the progress line's utilization: one step's FLOPs (the UNet's; the frozen text encoder's
    # are left out), counted on a copy with shapes only
    b, L = cfg.batch_size // ranks.world_size, text.tokenizer.max_length if text else 0
    inputs = [torch.zeros(b, *latent_shape), torch.zeros(b, dtype=torch.long)]
    flops = run.flops(lambda unet, z, t, *c: unet(z, t, *c).square().mean(), [model], inputs + (
        [torch.zeros(b, L, context_dim), torch.ones(b, L, dtype=torch.bool)] if text else []))
    logger = MetricLogger(run.out, start_step, ranks.is_main, cfg.batch_size, "latents_per_s",
                          flops)
    stop = StopFlag()
    clock = run.compile_clock()
    model.train()
    for step in (progress := run.progress(start_step, "train ldm")):
        logger.input.start()
        # [P12] 1. latents z ~ q(z | x) from the cache, scaled to unit variance
        indices = batch_order(step)
        z0 = to_device(draw_latents(train, indices, scale_factor), device)  # (B, C, h, w)
        # [P16] 2. a fresh caption per latent, the empty prompt with probability cond_drop
        context, context_mask = None, None
        if text:
            captions = captions_for(train["attribute_names"], train["attributes"], train["texts"],
                                    indices.tolist(), step_rng(cfg.seed, step, ranks.rank))
            drop = torch.rand(len(captions)) < cfg.cond_drop
            captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
            context, context_mask = text(captions, device, warn_unknown=False)  # (B, L, D), (B, L)
        logger.input.stop()
        # 3. as in stage 1: random t, closed-form noising, predict the noise (or v)
        if cfg.objective == "ddpm":
            t = torch.randint(0, cfg.num_train_timesteps, (z0.shape[0],), device=device)
            noise = torch.randn_like(z0)
            z_t = scheduler.add_noise(z0, noise, t)
            with run.autocast():
                prediction = train_model(z_t, t, context, context_mask)
            loss = scheduler.training_loss(prediction, z0, noise, t, cfg.min_snr_gamma)
        else:  # flow matching, beyond the video (docs/flow-matching.md): predict eps - z0
            t = to_device(logit_normal_t(z0.shape[0], cfg.logit_mean, cfg.logit_std), device)  # (B,)
            noise = torch.randn_like(z0)
            z_t = flow_path(z0, noise, t)                         # z_t = (1 - t) z0 + t eps
            with run.autocast():
                prediction = train_model(z_t, FLOW_TIME_SCALE * t, context, context_mask)
            loss = flow_loss(prediction, z0, noise)               # || v_theta - (eps - z0) ||^2
        lr = scheduled_lr(cfg.lr_schedule, step, cfg.lr, cfg.warmup_steps, cfg.steps)
        set_lr(optimizer, lr)
        scaler.scale(loss).backward()
        grad_norm = optimizer_step(optimizer, scaler, model.parameters(), cfg.grad_clip)
        ema.update(model)
        logger.add(loss=loss)
        if clock and (line := clock.tick()) and ranks.is_main:
            progress.write(line)

        # ---- Bookkeeping: log, checkpoint, validation grid, stop -------------------------------
        done = step + 1
        stopping = run.any_rank(stop.requested)
        saving = due(done, cfg.ckpt_every) or done == cfg.steps or stopping
        if due(done, cfg.log_every) or saving:
            means = logger.write(done, lr=lr, grad_norm=grad_norm.item())
            progress.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.1e}", **logger.speed(means))
        if saving:
            run.save(done, "ldm", model=model.state_dict(), ema=ema.state_dict(),
                     optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                     # everything sampling needs, so that sample.py reads this file alone
                     vae=vae.state_dict(), vae_config=vae_config, scale_factor=scale_factor,
                     latent_shape=list(latent_shape), attribute_names=train["attribute_names"],
                     **(stored_text or {"text_encoder": None, "tokenizer": None,
                                        "text_config": None}))
            logger.plot()
        if ranks.is_main and (due(done, cfg.sample_every) or done == cfg.steps):
            validation_grid(done)
        if stopping:
            run.print(f"stopped at step {done}; continue with the same command and --resume")
            break
    progress.close()
    run.finish(model)
    if stop.requested:
        return stop.exit_status  # 128 + the signal's number (130 after Ctrl-C, 143 SIGTERM)
    run.print(f"done: {run.checkpoint_path} (self-contained: sample with `python sample.py "
              f"--ckpt {run.checkpoint_path} --prompt \"...\"`), grids in {run.out}/samples, "
              f"curves in {run.out}/loss.png")


if __name__ == "__main__":
    main_guard(main)
