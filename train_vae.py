"""Stage 2: the KL autoencoder that latent diffusion runs in (video points 9-11).

[P10] An encoder compresses a 128x128x3 image into a 32x32x3 latent (factor 4) and a decoder
reconstructs it. [P11] It is trained, as in latent diffusion (Rombach et al. 2022), with an L1
reconstruction loss, a VGG perceptual loss on the first three blocks, a very small KL term that
keeps the latents bounded, and a PatchGAN discriminator switched on after --disc-start steps:

    autoencoder step:    L_AE = L1 + w_p * perceptual + w_kl * KL + lambda * w_gan * (-mean D(x_rec))
    discriminator step:  L_D  = 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_rec)))

    python train_vae.py                           # laptop-GPU defaults: 128x128 -> 32x32x3
    python train_vae.py --preset cpu              # 64x64 -> 16x16x3, about 10 min on a 2-core CPU
    python train_vae.py --preset cpu --resume --encode-latents   # (re)write the latent cache

At the end it measures the standard deviation of the latents and stores scale_factor = 1/std in
the checkpoint, so that diffusion sees unit-variance latents, and with --encode-latents (on by
default) it encodes the train and val splits once into OUT/latents_{split}.pt for train_ldm.py.

What the defaults need with --precision auto (benchmarks/estimate.py, an estimate until
measured on the device): 12,000 steps of 16 images in 3.1 GB, about 0.9 h
on an RTX 4060 Laptop GPU and 3.0 h on an Apple M2 Pro.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from common import (ConfigError, PRECISION_CHOICES, PRECISION_HELP, load_weights, main_guard,
                    option, parse_config, range_problems, require, require_positive, require_valid,
                    save_grid, seed_everything)
from data import load_dataset
from data.augment import augment
from data.latents import encode_dataset
from models import (PatchDiscriminator, build_vae, discriminator_problems, latent_std,
                    vae_checkpoint_problem, widths_problems)
from models.losses import (adaptive_gan_weight, generator_loss, hinge_d_loss, kl_loss,
                           kl_weight_note, reconstruction_loss)
from models.metrics import psnr, ssim
from models.perceptual import build_perceptual_loss
from training import (BatchOrder, LR_SCHEDULES, MetricLogger, StopFlag, due, load_optimizer_state,
                      load_scaler_state, make_adam, optimizer_step, scheduled_lr, set_lr,
                      start_run)


@dataclass
class Config:
    # data
    data: str = option("synthetic", "'synthetic', 'synthetic:N', a CelebA folder, or an image folder")
    cache_dir: str = option("cache", "where decoded images and the synthetic dataset are kept")
    val_percent: int = option(5, "an image folder's share held out for evaluation, in percent "
                                 "(by a hash of each file name; CelebA and the synthetic faces "
                                 "keep their own split)", fixed=True)
    image_size: int = option(128, "training resolution (the video: 128x128 images, 32x32 latents)",
                             fixed=True)
    augment: bool = option(True, "random flip, small rotation, brightness and contrast")
    # model [P10]
    base_channels: int = option(64, "channels of the first level (GroupNorm: multiples of 32)",
                                fixed=True)
    channel_mult: tuple = option((1, 2, 4), "multiplier per level; downsampling factor 2^(levels-1)",
                                 fixed=True)
    num_res_blocks: int = option(2, "residual blocks per level", fixed=True)
    latent_channels: int = option(3, "channels of the latent (3, as in the video)", fixed=True)
    attention: bool = option(True, "self-attention in the middle blocks", fixed=True)
    # losses [P11]; every term is a MEAN over its elements and the batch (models/losses.py)
    perceptual: str = option("vgg", "vgg (ImageNet weights if found, else fixed random ones) or none")
    vgg_weights: str = option("", "a torchvision vgg16 state-dict file (optional)")
    perceptual_weight: float = option(1.0, "w_p, weight of the perceptual loss")
    kl_weight: float = option(1e-6, "w_kl on the per-element MEAN KL (the video: very small); "
                                    "= 1.6e-5 in LDM's per-image-sum units at f=4, C=3")
    disc_start: int = option(2000, "step at which the discriminator and its loss switch on")
    disc_weight: float = option(0.5, "w_gan, on top of the adaptive weight lambda (LDM: 0.5)")
    disc_channels: int = option(64, "width of the PatchGAN's first layer", fixed=True)
    disc_layers: int = option(3, "stride-2 layers of the PatchGAN", fixed=True)
    # optimisation
    steps: int = option(12_000, "optimizer steps in total")
    batch_size: int = option(16, "images per step (summed over processes under torchrun)")
    lr: float = option(1e-4, "Adam learning rate of both optimizers, betas (0.5, 0.9) as in LDM")
    warmup_steps: int = option(500, "linear learning-rate warm-up")
    lr_schedule: str = option("cosine", "after the warm-up: constant, or cosine decay to 0 at --steps",
                              choices=LR_SCHEDULES)
    precision: str = option("auto", PRECISION_HELP, choices=PRECISION_CHOICES)
    deterministic: bool = option(False, "deterministic kernels only: on a CPU runs repeat bit for "
                                        "bit anyway; on a GPU this trades speed for repeatable "
                                        "results (no TF32, no cudnn autotuning)")
    compile: bool = option(False, "torch.compile the autoencoder: faster steps after a first step that "
                                  "compiles (its time is printed); needs a C++ compiler on the CPU")
    # bookkeeping
    out: str = option("runs/vae", "output folder")
    log_every: int = option(50, "steps between metric lines")
    eval_every: int = option(2000, "steps between held-out PSNR / SSIM and a reconstruction grid")
    eval_images: int = option(256, "held-out images for PSNR and SSIM")
    ckpt_every: int = option(2000, "steps between checkpoints")
    scale_images: int = option(1024, "training images whose latents set the scale factor")
    encode_latents: bool = option(True, "at the end, encode train and val into OUT/latents_*.pt")
    seed: int = option(0, "random seed")
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    resume: bool = option(False, "continue from OUT/checkpoint.pt exactly where it stopped")
    overwrite: bool = option(False, "start over in an --out that holds a run: delete its checkpoint, "
                                    "metrics and images first (without it, such an --out is refused)")


PRESETS = {
    # L1 + KL alone with cosine decay learned most per CPU-minute; the perceptual term and the
    # PatchGAN (points 10-11, the defaults) are left to longer runs (docs/equal-time.md)
    "cpu": dict(_doc="64x64 faces -> 16x16x3 latents, a small autoencoder, ~14 min on a 2-core CPU",
                image_size=64, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                steps=2400, batch_size=16, lr=1e-3, warmup_steps=100, lr_schedule="cosine",
                perceptual="none", disc_start=2400, disc_channels=32, disc_layers=2, log_every=25,
                eval_every=800, eval_images=256, ckpt_every=400, out="runs/vae_cpu"),
}
# your own folder of a few hundred to a few thousand captioned images (--data DIR): the cpu
# preset's recipe on the demo's autoencoder, 32x32 -> 16x16x3, L1 + KL, a few minutes on a CPU
PRESETS["small"] = PRESETS["cpu"] | dict(
    _doc="your own small captioned folder (--data DIR): 32x32 -> 16x16x3, the demo's "
         "autoencoder, a few minutes on a CPU",
    image_size=32, channel_mult=(1, 2), steps=1000, disc_start=1000, eval_every=500,
    eval_images=64, scale_images=256, ckpt_every=250, out="runs/vae_small")


def check_config(cfg: Config) -> None:
    require_positive(cfg, ("steps", "batch_size", "log_every", "eval_every", "eval_images",
                           "ckpt_every", "scale_images", "image_size", "base_channels",
                           "num_res_blocks", "latent_channels"))
    require(cfg.lr > 0, f"--lr {cfg.lr}: expected a positive number")
    require(cfg.disc_start >= 0, f"--disc-start {cfg.disc_start}: expected 0 or more")
    require(cfg.perceptual in ("vgg", "none"), f"--perceptual {cfg.perceptual!r}: expected vgg or none")
    factor = 2 ** (len(cfg.channel_mult) - 1)
    require(not cfg.channel_mult or cfg.image_size % factor == 0,
            f"--image-size {cfg.image_size}: must be divisible by {factor}, the autoencoder's "
            f"downsampling factor for {len(cfg.channel_mult)} levels")
    values = dataclasses.asdict(cfg)
    require_valid(widths_problems(values, cfg.image_size, "autoencoder")
                  + discriminator_problems(values)
                  + range_problems(values, non_negative=("kl_weight", "perceptual_weight",
                                                         "disc_weight")))


@torch.no_grad()
def evaluate(vae, dataset, run) -> tuple[dict, torch.Tensor]:
    """Held-out PSNR and SSIM of mode reconstructions, and a grid of 8 inputs above 8 outputs."""
    cfg, device = run.cfg, run.device
    vae.eval()
    scores, first = {"psnr": [], "ssim": []}, None
    count = min(cfg.eval_images, len(dataset))
    for start in range(0, count, cfg.batch_size):
        x = dataset.batch(torch.arange(start, min(start + cfg.batch_size, count)), device)["image"]
        with run.autocast():
            x_rec, _ = vae(x, sample_posterior=False)
        x_rec = x_rec.float().clamp(-1, 1)
        scores["psnr"].append(psnr(x, x_rec))
        scores["ssim"].append(ssim(x, x_rec))
        if first is None:
            first = torch.cat([x[:8], x_rec[:8]])  # inputs above outputs
    vae.train()
    return {name: torch.cat(values).mean().item() for name, values in scores.items()}, first


def main():
    cfg = parse_config(Config, presets=PRESETS, description=__doc__.split("\n\n")[0])
    check_config(cfg)
    run = start_run(cfg)
    ranks, device = run.ranks, run.device

    # ---- Data --------------------------------------------------------------------------------
    with run.main_process_first():
        dataset, held_out = (load_dataset(cfg.data, cfg.image_size, split=split,
                                          cache_dir=cfg.cache_dir, val_percent=cfg.val_percent)
                             for split in ("train", "val"))
    batch_order = BatchOrder(len(dataset), cfg.batch_size, cfg.seed, ranks.rank, ranks.world_size)
    run.print(f"data: {dataset.name}, {len(dataset)} training and {len(held_out)} held-out images "
              f"at {cfg.image_size}x{cfg.image_size}")

    # ---- Models, losses, optimizers ----------------------------------------------------------
    seed_everything(cfg.seed)
    vae = build_vae(dataclasses.asdict(cfg)).to(device)
    disc = PatchDiscriminator(base_channels=cfg.disc_channels, num_layers=cfg.disc_layers).to(device)
    perceptual = None
    if cfg.perceptual == "vgg":
        with run.main_process_first():  # rank 0 may download; the others then read its cache
            try:
                perceptual, description = build_perceptual_loss(cfg.vgg_weights or None,
                                                                allow_download=ranks.is_main)
            except ValueError as error:  # a --vgg-weights file that is missing or not VGG16
                raise ConfigError(str(error)) from None
        perceptual = perceptual.to(device)
    else:
        description = "perceptual loss: none (--perceptual none): L1, KL and GAN terms only"
    run.print(description)
    run.print(f"losses are means over elements and batch; "
              f"{kl_weight_note(cfg.kl_weight, cfg.latent_channels, vae.downsampling_factor)}")
    run.print(f"autoencoder: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M parameters, "
              f"latents {cfg.latent_channels}x{cfg.image_size // vae.downsampling_factor}x"
              f"{cfg.image_size // vae.downsampling_factor}; discriminator "
              f"{sum(p.numel() for p in disc.parameters()) / 1e6:.2f}M")
    optimizer_ae = make_adam(torch.optim.Adam, vae.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    optimizer_d = make_adam(torch.optim.Adam, disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    scaler_ae, scaler_d = run.grad_scaler(), run.grad_scaler()
    scale_factor = None
    state = run.resume("vae", check=vae_checkpoint_problem)  # None unless --resume
    if state:
        load_weights(vae, state["model"], f"--resume {run.checkpoint_path}")
        load_weights(disc, state["discriminator"], f"--resume {run.checkpoint_path}")
        load_optimizer_state(optimizer_ae, state["optimizer"])
        load_optimizer_state(optimizer_d, state["optimizer_discriminator"])
        if "scaler" in state:  # checkpoints written before fp16 loss scaling came to stage 2
            load_scaler_state(scaler_ae, state["scaler"])
            load_scaler_state(scaler_d, state["scaler_discriminator"])
        # A finished run resumed for more steps must measure its latents again at the end.
        scale_factor = state.get("scale_factor") if state["step"] >= cfg.steps else None
    start_step = run.seed_or_restore(state)
    train_vae, train_disc = run.wrap(vae), run.wrap(disc, compile=False)

    # ---- Train -------------------------------------------------------------------------------
    # the progress line's utilization: a step's FLOPs without and with the GAN terms, counted on
    # copies with shapes only
    def step_loss(gan_on):
        def loss_of(vae, disc, vgg, x):
            x_rec, _ = vae(x)
            loss = (x_rec - x).abs().mean() + (vgg(x, x_rec) if perceptual is not None else 0)
            if gan_on:  # the generator's term; the discriminator on reals and reconstructions
                loss = loss + disc(x_rec).mean() + disc(torch.cat([x, x_rec.detach()])).mean()
            return loss
        return loss_of
    images = [torch.zeros(cfg.batch_size // ranks.world_size, 3, cfg.image_size, cfg.image_size)]
    modules = [vae, disc, perceptual or torch.nn.Identity()]
    flops = {gan: run.flops(step_loss(gan), modules, images, f"step {('without', 'with')[gan]} "
                            "the GAN") for gan in (False, True)}
    logger = MetricLogger(run.out, start_step, ranks.is_main, cfg.batch_size, "images_per_s",
                          flops[start_step >= cfg.disc_start])
    stop = StopFlag()
    zero = torch.zeros((), device=device)
    clock = run.compile_clock()
    for step in (progress := run.progress(start_step, "train vae")):
        logger.input.start()
        x = dataset.batch(batch_order(step), device)["image"]  # (B, 3, H, W) in [-1, 1]
        if cfg.augment:
            x = augment(x)
        logger.input.stop()
        gan_on = step >= cfg.disc_start
        logger.flops_per_item, logger.peak_tflops = flops[gan_on]
        lr = scheduled_lr(cfg.lr_schedule, step, cfg.lr, cfg.warmup_steps, cfg.steps)
        set_lr(optimizer_ae, lr)
        set_lr(optimizer_d, lr)

        # 1. autoencoder step: L1 + w_p perceptual + w_kl KL + lambda w_gan generator loss [P11]
        disc.requires_grad_(False)  # the generator loss trains the decoder, not D
        with run.autocast():
            x_rec, posterior = train_vae(x)  # decodes z ~ q(z | x), reparameterised
            l1 = reconstruction_loss(x, x_rec.float())
            p_loss = perceptual(x, x_rec.float()) if perceptual is not None else zero
            kl = kl_loss(posterior)
            g_loss = generator_loss(disc(x_rec).float()) if gan_on else zero
        nll = l1 + cfg.perceptual_weight * p_loss
        gan_weight = adaptive_gan_weight(nll, g_loss, vae.last_layer) if gan_on else zero
        loss_ae = nll + cfg.kl_weight * kl + gan_weight * cfg.disc_weight * g_loss
        scaler_ae.scale(loss_ae).backward()
        optimizer_step(optimizer_ae, scaler_ae)

        # 2. discriminator step: hinge loss on real images vs. detached reconstructions
        disc.requires_grad_(True)
        d_loss, logits_real, logits_fake = zero, zero, zero
        if gan_on:
            with run.autocast():
                logits = train_disc(torch.cat([x, x_rec.detach()])).float()  # (2B, 1, h', w')
            logits_real, logits_fake = logits.chunk(2)
            d_loss = hinge_d_loss(logits_real, logits_fake)
            scaler_d.scale(d_loss).backward()
            optimizer_step(optimizer_d, scaler_d)
        logger.add(loss=loss_ae, l1=l1, perceptual=p_loss, kl=kl, g_loss=g_loss, d_loss=d_loss,
                   gan_weight=gan_weight, logits_real=logits_real.mean(),
                   logits_fake=logits_fake.mean())
        if clock and (line := clock.tick()) and ranks.is_main:
            progress.write(line)

        # ---- Bookkeeping: log, evaluate, checkpoint, stop --------------------------------------
        done = step + 1
        stopping = run.any_rank(stop.requested)
        saving = due(done, cfg.ckpt_every) or done == cfg.steps or stopping
        if due(done, cfg.log_every) or saving:
            means = logger.write(done, lr=lr)
            progress.set_postfix(l1=f"{means['l1']:.4f}", p=f"{means['perceptual']:.3f}",
                                 d=f"{means['d_loss']:.3f}", **logger.speed(means))
        if ranks.is_main and (due(done, cfg.eval_every) or done == cfg.steps):
            scores, grid = evaluate(vae, held_out, run)
            logger.log(done, val_psnr=scores["psnr"], val_ssim=scores["ssim"])
            save_grid(grid, run.out / "reconstructions" / f"step_{done:06d}.png", nrow=8)
            progress.write(f"step {done}: held-out PSNR {scores['psnr']:.2f} dB, "
                           f"SSIM {scores['ssim']:.4f}")
        if saving:
            if done == cfg.steps:  # [P12] unit-variance latents for diffusion: z * scale_factor
                scale_factor = 1.0 / latent_std(vae, dataset, cfg.scale_images, cfg.batch_size, device)
            run.save(done, "vae", model=vae.state_dict(), discriminator=disc.state_dict(),
                     optimizer=optimizer_ae.state_dict(), optimizer_discriminator=optimizer_d.state_dict(),
                     scaler=scaler_ae.state_dict(), scaler_discriminator=scaler_d.state_dict(),
                     scale_factor=scale_factor)
            logger.plot()
        if stopping:
            run.print(f"stopped at step {done}; continue with the same command and --resume")
            break
    progress.close()

    # ---- Latent cache for the diffusion stage ------------------------------------------------
    if ranks.is_main and scale_factor is not None:  # finished
        print(f"latent std {1 / scale_factor:.4f} -> scale_factor {scale_factor:.4f} (in the checkpoint)")
        if cfg.encode_latents:
            for split, data in (("train", dataset), ("val", held_out)):
                encode_dataset(vae, data, 4 * cfg.batch_size, device,  # no gradients: 4x batch
                               run.out / f"latents_{split}.pt", scale_factor, cfg.data,
                               cfg.image_size)
            print(f"latents cached in {run.out}/latents_train.pt and latents_val.pt")
        print(f"done: {run.checkpoint_path}, reconstructions in {run.out}/reconstructions, "
              f"curves in {run.out}/loss.png")
    run.finish()
    return stop.exit_status  # 128 + the signal's number after Ctrl-C or SIGTERM, else 0


if __name__ == "__main__":
    main_guard(main)
