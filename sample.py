"""Draw images from any trained checkpoint: pixel DDPM or latent diffusion with text (points 4, 7,
8, 12 and 16).

    python sample.py --ckpt runs/unconditional/checkpoint.pt --n 64 --seed 0 \
        --sampler ddim --steps 50 --out grid.png --out-dir samples/ --trajectory
    python sample.py --ckpt ... --init-image face.png --strength 0.5    # [P8] variations
    python sample.py --ckpt runs/ldm/checkpoint.pt --prompt "a smiling woman with blond hair" \
        --prompt "a bald man with glasses" --n 8 --guidance 3 --attention-maps

[P7] Sampling starts from Gaussian noise x_T and applies the reverse step T times (DDPM) or on a
shorter subsequence of timesteps (DDIM). With --init-image, the image is first noised to step
strength * T in closed form and only the remaining steps are run: strength 0 returns the input,
1 is a fresh sample, values in between keep more or less of it (the video's "rerun the reverse
diffusion from any point"). The EMA weights are used unless --no-ema.

[P12, P16] A latent diffusion checkpoint samples latents (no x0 clipping: latents are not bounded
like pixels), divides them by the scale factor and decodes them with the autoencoder stored in
the same file. Each prompt is encoded by the stored text encoder; with --guidance w the noise
prediction is eps_uncond + w (eps_cond - eps_uncond), eps_uncond from the empty prompt or
--negative-prompt. Image j of each prompt starts from the noise of seed --seed + j, so a
(prompt, seed) pair names one image (exactly, with the deterministic DDIM at --eta 0).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from diffusion import DDIMScheduler, DPMSolverScheduler, sample
from diffusion.training import (ConfigError, load_checkpoint, main_guard, pick_device, require,
                                save_grid)
from models.attention import SpatialTransformer
from train_ldm import generate, ldm_from_state
from train_unconditional import build_scheduler, build_unet


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint.pt written by a training script")
    parser.add_argument("--n", type=int, default=None,
                        help="images (per prompt for a text model); default 64, or 8 per prompt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise: same seed, same images")
    parser.add_argument("--sampler", choices=("ddpm", "ddim", "dpm++"), default="ddim",
                        help="ddpm: all T stochastic steps; ddim: --steps steps (deterministic at "
                             "--eta 0); dpm++: DPM-Solver++(2M), --steps steps, trailing spacing")
    parser.add_argument("--steps", type=int, default=50,
                        help="DDIM or DPM-Solver++ steps (ddpm always runs all T)")
    parser.add_argument("--spacing", choices=("leading", "trailing"), default=None,
                        help="which timesteps the few-step samplers visit; default: leading for "
                             "ddim, trailing for dpm++ (Lin et al. 2024)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 DDPM-like (briefly trained models look "
                             "cleaner at 1; see docs/07-sampling.md)")
    text = parser.add_argument_group("text-to-image (latent diffusion checkpoints)")
    text.add_argument("--prompt", action="append", default=None,
                      help="a prompt; repeat the flag for several. '' = unconditional")
    text.add_argument("--prompts-file", default=None, help="a text file with one prompt per line")
    text.add_argument("--guidance", type=float, default=None,
                      help="classifier-free guidance scale w (1 = none, 0 = unconditional); "
                           "default: the one the model was trained to show (train_ldm --guidance)")
    text.add_argument("--negative-prompt", default="",
                      help="what guidance pushes away from (replaces the empty prompt)")
    text.add_argument("--attention-maps", action="store_true",
                      help="also save OUT_attention.png: where each word's cross-attention looks")
    parser.add_argument("--out", default="samples.png", help="the grid PNG")
    parser.add_argument("--out-dir", default=None,
                        help="also write one PNG per image here (and index.json for text models)")
    parser.add_argument("--trajectory", action="store_true",
                        help="also save OUT_trajectory.png: x_t and the predicted x_0 along the way")
    parser.add_argument("--init-image", default=None, help="start from this image instead of noise")
    parser.add_argument("--strength", type=float, default=0.5,
                        help="with --init-image: noise it to step strength*T (0 = unchanged, 1 = new)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    parser.add_argument("--batch-size", type=int, default=64, help="images denoised at once")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser.parse_args(argv)


def load_image(path: str, size: int) -> torch.Tensor:
    """A file -> (1, 3, size, size) in [-1, 1], center-cropped to a square, then resized."""
    try:
        image = Image.open(path).convert("RGB")
    except (OSError, ValueError) as error:
        raise ConfigError(f"--init-image {path}: not a readable image ({error})") from None
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(1, size, size, 3).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def trajectory_strip(trajectory: list, max_images: int = 4) -> torch.Tensor:
    """Rows of x_t above rows of predicted x_0, one column per saved step: (rows*cols, 3, H, W)."""
    rows = []
    for i in range(min(max_images, trajectory[0][1].shape[0])):
        rows.append(torch.stack([x_t[i] for _, x_t, _ in trajectory]))      # x_t at each step
        rows.append(torch.stack([x0[i] for _, _, x0 in trajectory]))        # predicted x_0
    return torch.cat(rows)


def make_scheduler(args, ddpm_scheduler):
    T = ddpm_scheduler.num_train_timesteps
    require(args.sampler == "ddpm" or 0 < args.steps <= T,
            f"--steps {args.steps}: expected 1 to {T} (the model's number of timesteps)")
    if args.sampler == "ddpm":
        return ddpm_scheduler
    if args.sampler == "ddim":
        scheduler = DDIMScheduler.from_ddpm(ddpm_scheduler, args.spacing or "leading")
    else:
        require(args.eta == 0.0, f"--eta {args.eta}: DPM-Solver++ is deterministic (eta 0)")
        scheduler = DPMSolverScheduler.from_ddpm(ddpm_scheduler, args.spacing or "trailing")
    scheduler.set_timesteps(args.steps)
    return scheduler


def trajectory_columns(scheduler, strength: float) -> list[int]:
    """Up to 8 evenly spaced timesteps among those the run visits."""
    run_steps = [t for t in scheduler.timesteps.tolist()
                 if t < round(strength * scheduler.num_train_timesteps)]
    return run_steps[::max(1, len(run_steps) // 8)][:8] if run_steps else []


def write_outputs(args, images: torch.Tensor, trajectory, nrow: int | None = None) -> None:
    out = Path(args.out)
    save_grid(images, out, nrow=nrow)
    print(f"wrote {out} ({len(images)} images, {args.sampler}, seed {args.seed})")
    if trajectory:
        strip_path = out.with_name(out.stem + "_trajectory.png")
        save_grid(trajectory_strip(trajectory), strip_path, nrow=len(trajectory))
        print(f"wrote {strip_path}: x_t (odd rows) and predicted x_0 (even rows) at steps "
              f"{', '.join(str(int(t)) for t, _, _ in trajectory)}")


# ---- Pixel-space DDPM (stage 1) ----------------------------------------------------------------

def sample_pixels(args, checkpoint: dict, device) -> None:
    require(args.prompt is None and args.prompts_file is None,
            f"--prompt: {args.ckpt} is an unconditional pixel model; it takes no prompt")
    n = 64 if args.n is None else args.n
    config = checkpoint["config"]
    model = build_unet(config).to(device).eval()
    model.load_state_dict(checkpoint["model"] if args.no_ema else checkpoint["ema"]["model"])
    scheduler = make_scheduler(args, build_scheduler(config, clip_sample=True).to(device))
    size = config["image_size"]
    x_init = load_image(args.init_image, size).to(device) if args.init_image else None
    strength = args.strength if x_init is not None else 1.0
    shown = trajectory_columns(scheduler, strength)
    generator = torch.Generator().manual_seed(args.seed)  # CPU noise: the same images on any device
    images, trajectory = [], None
    for start in range(0, n, args.batch_size):
        count = min(args.batch_size, n - start)
        x_T = torch.randn(count, 3, size, size, generator=generator).to(device)
        result = sample(lambda x_t, t: model(x_t, t), scheduler, x_T,
                        eta=args.eta if args.sampler != "ddpm" else 0.0, generator=generator,
                        x_init=None if x_init is None else x_init.expand(count, -1, -1, -1),
                        strength=strength,
                        trajectory_steps=shown if args.trajectory and start == 0 else None)
        if isinstance(result, tuple):
            result, trajectory = result
        images.append(result.cpu())
    images = torch.cat(images)
    write_outputs(args, images, trajectory)
    if args.out_dir:
        out_dir = Path(args.out_dir)
        for i, image in enumerate(images):
            save_grid(image[None], out_dir / f"{i:04d}_seed{args.seed}.png", nrow=1)
        print(f"wrote {n} images to {out_dir}/")


# ---- Latent diffusion, with or without text (stage 4) ------------------------------------------

def read_prompts(args, has_text: bool) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise ConfigError(f"--prompts-file {path}: no such file")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not has_text:
        require(not any(prompts) and not args.negative_prompt,
                f"--prompt: {args.ckpt} is an unconditional latent model (trained without --clip);"
                " it takes no prompt")
        return [""]
    return prompts or [""]  # no prompt: unconditional samples of the text model


def slug(text: str, length: int = 40) -> str:
    """A prompt as a file-name part: "A bald man, glasses" -> "a_bald_man_glasses"."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:length] or "unconditional"


class AttentionRecorder:
    """Sums the cross-attention weights of the conditional branch over heads, layers and steps,
    per image position and text token, at the latent resolution. [P16]"""

    def __init__(self, unet, batch: int, latent_hw: tuple[int, int]):
        self.layers = [m.block.cross_attention for m in unet.modules()
                       if isinstance(m, SpatialTransformer)]
        for layer in self.layers:
            layer.record = True   # the written-out attention that keeps its weights
        self.batch, self.latent_hw, self.total, self.count = batch, latent_hw, None, 0

    def collect(self) -> None:
        """After a model call: add every layer's weights (the first `batch` rows: the
        conditional branch of guidance)."""
        h, w = self.latent_hw
        for layer in self.layers:
            weights = layer.last_weights[:self.batch].float().mean(1)    # (B, h_l*w_l, L) mean of heads
            factor = round((h * w / weights.shape[1]) ** 0.5)            # this layer's downsampling
            maps = weights.transpose(1, 2).reshape(self.batch, -1, h // factor, w // factor)
            maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)
            self.total = maps if self.total is None else self.total + maps  # (B, L, h, w)
            self.count += 1

    def maps(self) -> torch.Tensor:
        """(B, L, h, w): the mean over heads, layers and steps, on the CPU."""
        return (self.total / self.count).cpu()

    def close(self) -> None:
        """Back to the fused attention kernel."""
        for layer in self.layers:
            layer.record, layer.last_weights = False, None


def save_attention_figure(path: Path, images: torch.Tensor, maps: torch.Tensor, prompts: list[str],
                          tokenizer) -> None:
    """One row per prompt: the image, then each word's attention map over it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.tokenizer import split_words

    rows = [(i, ["<bos>"] + split_words(p)[:tokenizer.max_length - 2] + ["<eos>"])
            for i, p in enumerate(prompts)]
    cols = 1 + max(len(words) for _, words in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols, 1.45 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (i, words) in enumerate(rows):
        picture = ((images[i].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
        axes[r, 0].imshow(picture)
        axes[r, 0].set_title(prompts[i] if len(prompts[i]) < 60 else prompts[i][:57] + "...",
                             fontsize=6, loc="left")
        for j, word in enumerate(words):
            heat = maps[i, j][None, None]
            heat = F.interpolate(heat, size=picture.shape[:2], mode="bilinear",
                                                   align_corners=False)[0, 0]
            axes[r, j + 1].imshow(picture)
            axes[r, j + 1].imshow((heat / heat.max().clamp(min=1e-8)).numpy(), cmap="jet",
                                  alpha=0.5, vmin=0, vmax=1)
            axes[r, j + 1].set_title(word, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sample_latents(args, checkpoint: dict, device) -> None:
    ldm = ldm_from_state(checkpoint, device, use_ema=not args.no_ema)
    unet, vae, text, scale_factor = ldm["unet"], ldm["vae"], ldm["text"], ldm["scale_factor"]
    prompts = read_prompts(args, text is not None)
    n = 8 if args.n is None else args.n
    guidance = ldm["config"]["guidance"] if args.guidance is None else args.guidance
    require(guidance >= 0, f"--guidance {guidance}: expected 0 or more")
    require(not args.attention_maps or text is not None,
            "--attention-maps: this model has no text, so there is no cross-attention to show")
    scheduler = make_scheduler(args, ldm["scheduler"])
    C, h, w = ldm["latent_shape"]
    f = vae.downsampling_factor
    x_init = None
    if args.init_image:  # [P8] in latent space: encode, scale, re-noise part-way
        with torch.no_grad():
            x_init = vae.encode(load_image(args.init_image, h * f).to(device)).mean * scale_factor
    strength = args.strength if x_init is not None else 1.0
    shown = trajectory_columns(scheduler, strength)

    # every image: its prompt and seed; its own noise, so (prompt, seed) names the image
    jobs = [(p, args.seed + j) for p in prompts for j in range(n)]
    if text is not None:
        text(prompts + [args.negative_prompt], device)  # names unknown words, once each
    generator = torch.Generator().manual_seed(args.seed)  # the noise of stochastic steps
    images, trajectory, attention = [], None, []
    for start in range(0, len(jobs), args.batch_size):
        batch = jobs[start:start + args.batch_size]
        recorder = AttentionRecorder(unet, len(batch), (h, w)) if args.attention_maps else None
        result = generate(ldm, [p for p, _ in batch], [s for _, s in batch], guidance, scheduler,
                          negative_prompt=args.negative_prompt,
                          eta=args.eta if args.sampler != "ddpm" else 0.0, generator=generator,
                          x_init=x_init, strength=strength, recorder=recorder,
                          trajectory_steps=shown if args.trajectory and start == 0 else None)
        if isinstance(result, tuple):
            result, trajectory = result
        images.append(result)
        if recorder is not None:
            attention.append(recorder.maps())
            recorder.close()
    images = torch.cat(images)

    write_outputs(args, images, trajectory, nrow=n)
    if len(prompts) > 1 or prompts[0]:
        print(f"  rows: {len(prompts)} prompt(s), columns: seeds {args.seed}..{args.seed + n - 1}, "
              f"guidance {guidance}" + (f", negative prompt {args.negative_prompt!r}"
                                        if args.negative_prompt else ""))
    if args.out_dir:
        out_dir = Path(args.out_dir)
        index = []
        for i, ((prompt, seed), image) in enumerate(zip(jobs, images)):
            name = f"{i:04d}_{slug(prompt)}_seed{seed}.png"
            save_grid(image[None], out_dir / name, nrow=1)
            index.append({"file": name, "prompt": prompt, "seed": seed, "guidance": guidance,
                          "negative_prompt": args.negative_prompt, "sampler": args.sampler,
                          "steps": args.steps if args.sampler != "ddpm" else None, "eta": args.eta})
        (out_dir / "index.json").write_text(json.dumps(index, indent=1))
        print(f"wrote {len(images)} images and index.json to {out_dir}/")
    if args.attention_maps:
        first = list(range(0, len(jobs), n))  # the first seed of every prompt
        maps = torch.cat(attention)[first]
        path = Path(args.out).with_name(Path(args.out).stem + "_attention.png")
        save_attention_figure(path, images[first], maps, prompts, text.tokenizer)
        print(f"wrote {path}: cross-attention per word, mean over heads, layers and steps")


def main():
    args = parse_args()
    require(args.n is None or args.n > 0, f"--n {args.n}: expected a positive number")
    require(args.batch_size > 0, f"--batch-size {args.batch_size}: expected a positive number")
    require(0.0 <= args.strength <= 1.0, f"--strength {args.strength}: expected a value in [0, 1]")
    require(0.0 <= args.eta <= 1.0, f"--eta {args.eta}: expected a value in [0, 1]")
    device = pick_device(args.device)
    checkpoint = load_checkpoint(args.ckpt, kind=("ddpm", "ldm"))
    if checkpoint["kind"] == "ddpm":
        sample_pixels(args, checkpoint, device)
    else:
        sample_latents(args, checkpoint, device)


if __name__ == "__main__":
    main_guard(main)
