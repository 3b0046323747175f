"""Stage 4: latent diffusion, conditioned on text through cross-attention (video points 12, 16).

[P12] The diffusion model of stage 1 runs on the autoencoder's latents instead of pixels: the
training images were encoded once by train_vae.py (OUT/latents_*.pt), each step draws
z ~ q(z | x), multiplies it by the stored scale factor so it has unit variance, and trains the
UNet to predict the noise exactly as in train_unconditional.py. Samples are latents, which the
decoder turns into images.

[P16] With --clip, every attention block of the UNet also attends to the frozen CLIP text
encoder's hidden states (cross-attention: the image features ask, the text tokens answer). The
caption is replaced by the empty prompt 10% of the time (--cond-drop), so the same model is also
unconditional and can be sampled with classifier-free guidance (diffusion/guidance.py).

    python train_ldm.py --vae runs/vae/checkpoint.pt --clip runs/clip/checkpoint.pt
    python train_ldm.py --preset cpu                  # on runs/vae_cpu and runs/clip_cpu
    python train_ldm.py --preset cpu_uncond           # unconditional latent diffusion (point 12)

The final checkpoint holds everything sample.py needs: UNet and EMA weights, the autoencoder,
the text encoder and tokenizer, the scale factor and every config.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data.captions import captions_for, step_rng
from diffusion import DDIMScheduler, DDPMScheduler, sample
from diffusion.guidance import guided_prediction
from diffusion.training import (BatchSampler, CheckpointError, CompileClock, ConfigError, EMA,
                                InputClock, MetricLogger, StopFlag, any_rank, autocast,
                                cleanup_distributed, config_diff, gather_rng_states,
                                load_checkpoint, load_optimizer_state, main_guard, make_adam,
                                make_grad_scaler, maybe_compile, opt, parse_config,
                                replica_difference, require, require_positive, rng_state_for_rank,
                                save_checkpoint, save_grid, seed_everything, set_rng_state,
                                setup_distributed, wrap_ddp)
from models import UNet
from models.clip import TextEncoder
from models.tokenizer import Tokenizer
from train_clip import load_clip
from train_vae import build_vae, load_latents, load_vae

VALIDATION_PROMPTS = [
    "a photo of a smiling woman with blond hair",
    "a photo of a man with black hair and a beard",
    "a photo of a bald man with glasses",
    "a photo of a woman with brown hair, wearing a hat",
    "a photo of a man with gray hair and a mustache",
    "a photo of a woman with black hair, bangs and lipstick",
    "a portrait of a pale woman with glasses",
    "a picture of a smiling man wearing a hat",
]


@dataclass
class Config:
    # inputs: the autoencoder (with its latent cache) and the CLIP text encoder
    vae: str = opt("runs/vae/checkpoint.pt", "the trained autoencoder (train_vae.py)")
    clip: str = opt("runs/clip/checkpoint.pt", "the trained CLIP (train_clip.py); '' = "
                                               "unconditional latent diffusion")
    cond_drop: float = opt(0.1, "probability of training on the empty prompt (classifier-free "
                                "guidance needs it)")
    # model [P5, P16]
    base_channels: int = opt(128, "channels of the UNet's first level")
    channel_mult: tuple = opt((1, 2, 2), "channel multiplier per level (32x32 latents: 32, 16, 8)")
    num_res_blocks: int = opt(2, "residual blocks per level")
    attention_levels: tuple = opt((1, 2), "levels with self- and cross-attention (0 = full res)")
    num_heads: int = opt(4, "attention heads")
    dropout: float = opt(0.0, "dropout inside the residual blocks")
    # diffusion [P2-P4]
    num_train_timesteps: int = opt(1000, "T, the number of noising steps")
    beta_start: float = opt(1e-4, "beta_1 of the linear schedule")
    beta_end: float = opt(0.02, "beta_T of the linear schedule")
    beta_schedule: str = opt("linear", "linear or cosine")
    prediction_type: str = opt("v", "what the UNet predicts: v (Salimans & Ho 2022) or epsilon; "
                                    "latents cannot be clipped like pixels, and x0 from an "
                                    "epsilon model amplifies its errors by sqrt((1-a)/a) at high "
                                    "noise (x150 at t = T-1), so v is the default here")
    # optimisation
    steps: int = opt(40_000, "optimizer steps in total")
    batch_size: int = opt(128, "latents per step (summed over processes under torchrun)")
    lr: float = opt(2e-4, "AdamW learning rate after warm-up")
    warmup_steps: int = opt(1000, "linear learning-rate warm-up")
    grad_clip: float = opt(1.0, "clip the gradient norm to this (0 = off)")
    ema_decay: float = opt(0.9995, "decay of the weights' moving average used for sampling")
    precision: str = opt("fp32", "fp32, bf16 or fp16 (CUDA only, with loss scaling)")
    compile: bool = opt(False, "torch.compile the model: faster steps after a first step that "
                               "compiles (its time is printed); needs a C++ compiler on the CPU")
    # bookkeeping
    out: str = opt("runs/ldm", "output folder")
    log_every: int = opt(50, "steps between metric lines")
    sample_every: int = opt(2000, "steps between validation grids (0 = only at the end)")
    ckpt_every: int = opt(2000, "steps between checkpoints")
    sample_seeds: int = opt(4, "images per validation prompt in the grids")
    sample_steps: int = opt(50, "DDIM steps for the validation grids")
    guidance: float = opt(3.0, "classifier-free guidance scale of the validation grids")
    seed: int = opt(0, "random seed")
    device: str = opt("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    resume: bool = opt(False, "continue from OUT/checkpoint.pt exactly where it stopped")


PRESETS = {
    "cpu": dict(_doc="a small text-conditioned UNet on the CPU presets' 16x16x3 latents",
                vae="runs/vae_cpu/checkpoint.pt", clip="runs/clip_cpu/checkpoint.pt",
                base_channels=32, channel_mult=(1, 2, 4), num_res_blocks=1,
                attention_levels=(1, 2), steps=3000, batch_size=64, lr=1e-3, warmup_steps=100,
                ema_decay=0.995, log_every=25, sample_every=1000, ckpt_every=500,
                out="runs/ldm_cpu"),
    "cpu_uncond": dict(_doc="the cpu preset without text: unconditional latent diffusion [P12]",
                       vae="runs/vae_cpu/checkpoint.pt", clip="", base_channels=32,
                       channel_mult=(1, 2, 4), num_res_blocks=1, attention_levels=(1, 2),
                       steps=3000, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.995,
                       log_every=25, sample_every=1000, ckpt_every=500, out="runs/ldm_cpu_uncond"),
}


def build_unet(cfg: dict, latent_channels: int, context_dim: int | None) -> UNet:
    """The latent UNet described by a config (sample.py rebuilds it from the checkpoint)."""
    return UNet(in_channels=latent_channels, base_channels=cfg["base_channels"],
                channel_mult=tuple(cfg["channel_mult"]), num_res_blocks=cfg["num_res_blocks"],
                attention_levels=tuple(cfg["attention_levels"]), dropout=cfg["dropout"],
                num_heads=cfg["num_heads"], context_dim=context_dim)


def build_scheduler(cfg: dict) -> DDPMScheduler:
    """No x0 clipping: latents are not bounded to [-1, 1] the way pixels are."""
    return DDPMScheduler(num_train_timesteps=cfg["num_train_timesteps"],
                         beta_start=cfg["beta_start"], beta_end=cfg["beta_end"],
                         beta_schedule=cfg["beta_schedule"],
                         prediction_type=cfg["prediction_type"], clip_sample=False)


class TextConditioner:
    """Prompts -> (hidden (B, L, D), mask (B, L)) from the frozen text encoder. [P14]"""

    def __init__(self, text_encoder: TextEncoder, tokenizer: Tokenizer):
        self.text_encoder, self.tokenizer = text_encoder.eval().requires_grad_(False), tokenizer

    @torch.no_grad()
    def __call__(self, prompts: list[str], device, warn_unknown: bool = True):
        ids, mask = self.tokenizer(prompts, warn_unknown=warn_unknown)
        encoding = self.text_encoder(ids.to(device), mask.to(device))
        return encoding.hidden, encoding.mask


def load_ldm(path: str | Path, device: torch.device | str = "cpu", use_ema: bool = True) -> dict:
    """A train_ldm.py checkpoint -> {"unet", "vae", "text" (TextConditioner or None),
    "scheduler", "scale_factor", "latent_shape", "config", "step"}: everything sampling needs."""
    return ldm_from_state(load_checkpoint(path, kind="ldm"), device, use_ema)


def ldm_from_state(state: dict, device: torch.device | str = "cpu", use_ema: bool = True) -> dict:
    """load_ldm() for a checkpoint already read with load_checkpoint."""
    cfg = state["config"]
    vae = build_vae(state["vae_config"])
    vae.load_state_dict(state["vae"])
    text = None
    if state["text_encoder"] is not None:
        tokenizer = Tokenizer.from_state_dict(state["tokenizer"])
        text_cfg = state["text_config"]
        encoder = TextEncoder(len(tokenizer), tokenizer.max_length, width=text_cfg["text_width"],
                              num_layers=text_cfg["text_layers"], num_heads=text_cfg["text_heads"])
        encoder.load_state_dict(state["text_encoder"])
        text = TextConditioner(encoder.to(device), tokenizer)
    latent_shape = tuple(state["latent_shape"])
    unet = build_unet(cfg, latent_shape[0], None if text is None else text.text_encoder.width)
    unet.load_state_dict(state["ema"]["model"] if use_ema else state["model"])
    return {"unet": unet.to(device).eval().requires_grad_(False),
            "vae": vae.to(device).eval().requires_grad_(False), "text": text,
            "scheduler": build_scheduler(cfg).to(device), "scale_factor": state["scale_factor"],
            "latent_shape": latent_shape, "config": cfg, "step": state["step"]}


@torch.no_grad()
def generate(ldm: dict, prompts: list[str], seeds: list[int], guidance: float, scheduler,
             negative_prompt: str = "", eta: float = 0.0, generator: torch.Generator | None = None,
             x_init: torch.Tensor | None = None, strength: float = 1.0, trajectory_steps=None,
             recorder=None):
    """[P12, P16] One batch of images, image i for (prompts[i], seeds[i]): the way every script
    of the project samples a latent model (sample.py, evaluate.py, the validation grids, figures).

    ldm: {"unet", "vae", "text" (TextConditioner or None), "scale_factor", "latent_shape"}.
    z_T of image i comes from torch.Generator().manual_seed(seeds[i]) on the CPU, so a (prompt,
    seed) pair names one image whatever the batch (exactly so for DDIM at eta 0; the noise of
    stochastic steps comes from `generator`). With text, eps = eps_uncond + guidance * (eps_cond -
    eps_uncond), eps_uncond from negative_prompt ("" = unconditional). x_init, strength and
    trajectory_steps as in diffusion.sample, in latent space. recorder: a sample.AttentionRecorder,
    collected after every step. Returns images (B, 3, S, S) on the CPU (not clamped), and the
    decoded trajectory [(t, x_t, x0_pred)] when trajectory_steps is given.
    """
    unet, vae, text, scale = ldm["unet"], ldm["vae"], ldm["text"], ldm["scale_factor"]
    device = next(unet.parameters()).device
    z_T = torch.stack([torch.randn(*ldm["latent_shape"], generator=torch.Generator().manual_seed(s))
                       for s in seeds]).to(device)                          # (B, C, h, w)
    if text is None:
        model_fn = lambda z, t: unet(z, t)  # noqa: E731
    else:
        cond = text(prompts, device, warn_unknown=False)                    # (B, L, D), (B, L)
        uncond = text([negative_prompt] * len(prompts), device, warn_unknown=False)

        def model_fn(z, t):
            eps = guided_prediction(unet, z, t, cond, uncond, guidance)
            if recorder is not None:
                recorder.collect()
            return eps
    result = sample(model_fn, scheduler, z_T, eta=eta, generator=generator,
                    x_init=None if x_init is None else x_init.expand(len(seeds), -1, -1, -1),
                    strength=strength, trajectory_steps=trajectory_steps, progress=False)
    decode = lambda z: vae.decode(z / scale).float().cpu()  # noqa: E731  [P12] unscale, decode
    if trajectory_steps is None:
        return decode(result)
    z0, trajectory = result
    return decode(z0), [(t, decode(z_t), decode(x0)) for t, z_t, x0 in trajectory]


def check_config(cfg: Config) -> None:
    require_positive(cfg, ("steps", "batch_size", "log_every", "ckpt_every", "sample_seeds",
                           "sample_steps", "num_train_timesteps", "base_channels",
                           "num_res_blocks", "num_heads"))
    require(cfg.lr > 0, f"--lr {cfg.lr}: expected a positive number")
    require(0.0 <= cfg.cond_drop < 1.0, f"--cond-drop {cfg.cond_drop}: expected 0 <= p < 1")
    require(cfg.sample_every >= 0, f"--sample-every {cfg.sample_every}: expected 0 or more")
    require(cfg.prediction_type in ("epsilon", "v"),
            f"--prediction-type {cfg.prediction_type!r}: expected epsilon or v")
    require(all(0 <= level < len(cfg.channel_mult) for level in cfg.attention_levels),
            f"--attention-levels {cfg.attention_levels}: levels run from 0 to "
            f"{len(cfg.channel_mult) - 1}")
    require(cfg.sample_steps <= cfg.num_train_timesteps,
            f"--sample-steps {cfg.sample_steps}: at most --num-train-timesteps")


def main():
    cfg = parse_config(Config, presets=PRESETS, description=__doc__.split("\n\n")[0])
    check_config(cfg)
    info, device = setup_distributed(cfg.device)
    out = Path(cfg.out)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        print(f"device {device}, {info.world_size} process(es); config:")
        print("\n".join(f"  {k} = {v}" for k, v in dataclasses.asdict(cfg).items()))

    # ---- Inputs: the latent cache [P12] and the frozen text encoder [P14] --------------------
    vae_path = Path(cfg.vae)
    try:
        vae, scale_factor, vae_config = load_vae(vae_path)
    except CheckpointError as error:
        raise ConfigError(f"--vae: {error}") from None
    train = load_latents(vae_path, "train", scale_factor)
    latent_shape = tuple(train["mean"].shape[1:])                    # (C, h, w)
    text, text_state = None, None
    if cfg.clip:
        try:
            clip = load_clip(cfg.clip, device)
        except CheckpointError as error:
            raise ConfigError(f"--clip: {error}") from None
        if abs(clip["scale_factor"] - scale_factor) > 1e-6 and info.is_main:
            print(f"note: {cfg.clip} was trained on the latents of another autoencoder; its text "
                  "encoder is used as it is")
        text = TextConditioner(clip["clip"].text_encoder, clip["tokenizer"])
        text_state = {"text_encoder": clip["clip"].text_encoder.state_dict(),
                      "tokenizer": clip["tokenizer"].state_dict(),
                      "text_config": {k: clip["config"][k]
                                      for k in ("text_width", "text_layers", "text_heads")}}
        text(VALIDATION_PROMPTS, device)  # names any word of the grids' prompts it does not know
        if train["attributes"] is None and train["texts"] is None:
            raise ConfigError("the latent cache has neither attributes nor captions: train an "
                              "unconditional model with --clip ''")
    sampler = BatchSampler(len(train["mean"]), cfg.batch_size, cfg.seed, info.rank,
                           info.world_size)
    if info.is_main:
        print(f"data: {train['data']}, {len(train['mean'])} latents {'x'.join(map(str, latent_shape))}"
              f" (scale factor {scale_factor:.4f}); "
              + (f"text: {cfg.clip}, {len(text.tokenizer)} words" if text else "unconditional"))

    # ---- Model, schedule, optimizer ----------------------------------------------------------
    seed_everything(cfg.seed)
    config = dataclasses.asdict(cfg)
    context_dim = text.text_encoder.width if text else None
    model = build_unet(config, latent_shape[0], context_dim).to(device)
    scheduler = build_scheduler(config).to(device)
    optimizer = make_adam(torch.optim.AdamW, model.parameters(), lr=cfg.lr, weight_decay=0.0)
    scaler = make_grad_scaler(device, cfg.precision)
    ema = EMA(model, cfg.ema_decay)
    start_step = 0
    checkpoint_path = out / "checkpoint.pt"
    if cfg.resume:
        state = load_checkpoint(checkpoint_path, kind="ldm")
        changed = [k for k in config_diff(state["config"], config) if k not in ("resume", "steps")]
        if info.is_main and changed:
            print(f"resume: these settings differ from the checkpoint's: {', '.join(changed)}")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        load_optimizer_state(optimizer, state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_step = state["step"]
        set_rng_state(rng_state_for_rank(state, info), device)
        if info.is_main:
            print(f"resumed from {checkpoint_path} at step {start_step}")
    else:
        torch.manual_seed(cfg.seed + info.rank)
    train_model = maybe_compile(wrap_ddp(model, device, info), cfg.compile, device)
    if info.is_main:
        print(f"UNet: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"
              + (f", cross-attention to {context_dim}-wide text tokens" if text else ""))

    def save(step: int) -> None:
        rng = gather_rng_states(device, info)
        if info.is_main:
            save_checkpoint(checkpoint_path, {
                "kind": "ldm", "config": config, "step": step, "model": model.state_dict(),
                "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "rng": rng,
                # everything sampling needs, so that sample.py reads this file alone
                "vae": vae.state_dict(), "vae_config": vae_config, "scale_factor": scale_factor,
                "latent_shape": list(latent_shape), "attribute_names": train["attribute_names"],
                **(text_state or {"text_encoder": None, "tokenizer": None, "text_config": None})})

    sample_scheduler = DDIMScheduler.from_ddpm(scheduler)

    def validation_grid(step: int) -> None:
        """Each validation prompt in a column, seed j in row j (as `sample.py --seed j` makes it);
        DDIM, guidance, EMA weights."""
        prompts = VALIDATION_PROMPTS if text else [""]
        jobs = [(p, seed) for seed in range(cfg.sample_seeds) for p in prompts]
        sample_scheduler.set_timesteps(cfg.sample_steps)
        current = {"unet": ema.model, "vae": vae.to(device), "text": text,
                   "scale_factor": scale_factor, "latent_shape": latent_shape}
        images = generate(current, [p for p, _ in jobs], [s for _, s in jobs], cfg.guidance,
                          sample_scheduler)
        save_grid(images, out / "samples" / f"step_{step:06d}.png", nrow=len(prompts))
        if step == cfg.steps or not (out / "samples" / "prompts.txt").exists():
            (out / "samples" / "prompts.txt").write_text(
                "".join(f"column {i}: {p or '(unconditional)'}\n" for i, p in enumerate(prompts)))

    # ---- Train -------------------------------------------------------------------------------
    logger = MetricLogger(out, resume_step=start_step, enabled=info.is_main)
    stop = StopFlag()
    progress = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps,
                    disable=not info.is_main, desc="train ldm", dynamic_ncols=True)
    loss_sum, loss_count, last_time = torch.zeros((), device=device), 0, time.time()
    model.train()
    input_clock = InputClock()  # input_fraction: the share of time spent preparing batches
    clock = CompileClock(device) if cfg.compile else None
    for step in progress:
        input_clock.start()
        # [P12] 1. latents z ~ q(z | x) from the cache, scaled to unit variance
        indices = sampler(step)
        mean, std = train["mean"][indices].float(), train["std"][indices].float()
        z0 = ((mean + std * torch.randn_like(mean)) * scale_factor).to(device)  # (B, C, h, w)
        # [P16] 2. a fresh caption per latent, the empty prompt with probability cond_drop
        context, context_mask = None, None
        if text:
            captions = captions_for(train["attribute_names"], train["attributes"], train["texts"],
                                    indices.tolist(), step_rng(cfg.seed, step, info.rank))
            drop = torch.rand(len(captions)) < cfg.cond_drop
            captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
            context, context_mask = text(captions, device, warn_unknown=False)  # (B, L, D), (B, L)
        input_clock.stop()
        # 3. as in stage 1: random t, closed-form noising, predict the noise
        t = torch.randint(0, cfg.num_train_timesteps, (z0.shape[0],), device=device)
        noise = torch.randn_like(z0)
        z_t = scheduler.add_noise(z0, noise, t)
        with autocast(device, cfg.precision):
            prediction = train_model(z_t, t, context, context_mask)
        loss = F.mse_loss(prediction.float(), scheduler.training_target(z0, noise, t))
        lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                   cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        scaler.step(optimizer)
        scaler.update()
        ema.update(model)
        if clock and (line := clock.tick()) and info.is_main:
            progress.write(line)

        # ---- Bookkeeping ---------------------------------------------------------------------
        loss_sum += loss.detach()
        loss_count += 1
        done = step + 1
        stopping = any_rank(stop.requested, info)
        saving = done % cfg.ckpt_every == 0 or done == cfg.steps or stopping
        if done % cfg.log_every == 0 or saving:
            mean_loss = (loss_sum / loss_count).item()
            if not math.isfinite(mean_loss):
                raise SystemExit(f"error: the loss became {mean_loss} near step {done}; stopping. "
                                 f"The last good checkpoint ({checkpoint_path}) is kept. Try a "
                                 "lower --lr, --precision fp32, or --grad-clip 1.0.")
            elapsed, last_time = time.time() - last_time, time.time()
            logger.log(done, loss=mean_loss, lr=lr, grad_norm=grad_norm.item(),
                       latents_per_s=loss_count * cfg.batch_size / elapsed,
                       input_fraction=input_clock.fraction(elapsed))
            progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.1e}")
            loss_sum.zero_()
            loss_count = 0
        if saving:
            save(done)
            logger.plot()
        if info.is_main and ((cfg.sample_every and done % cfg.sample_every == 0) or done == cfg.steps):
            validation_grid(done)
        if stopping:
            if info.is_main:
                print(f"stopped at step {done}; continue with the same command and --resume")
            break
    progress.close()
    if info.world_size > 1:
        difference = replica_difference(model, info)
        if info.is_main:
            print(f"DDP: the weights of the {info.world_size} processes differ by at most {difference}")
    if info.is_main:
        print(f"done: {checkpoint_path} (self-contained: sample with `python sample.py --ckpt "
              f"{checkpoint_path} --prompt \"...\"`), grids in {out}/samples, curves in {out}/loss.png")
    cleanup_distributed(info)


if __name__ == "__main__":
    main_guard(main)
