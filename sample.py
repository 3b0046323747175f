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

[P12] [P16] A latent diffusion checkpoint samples latents (no x0 clipping: latents are not bounded
like pixels), divides them by the scale factor and decodes them with the autoencoder stored in
the same file. Each prompt is encoded by the stored text encoder; with --guidance w the noise
prediction is eps_uncond + w (eps_cond - eps_uncond), eps_uncond from the empty prompt or
--negative-prompt. Image j of each prompt starts from the noise of seed --seed + j, so a
(prompt, seed) pair names one image (exactly, with the deterministic DDIM at --eta 0).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from data import DataError, read_utf8
from data.images import IMAGE_EXTENSIONS, load_square_image, to_tensor
from diffusion import SAMPLERS, make_sampler, visited_timesteps
from diffusion.pipeline import (generate, generate_pixels, pixel_model_from_state,
                                text_to_image_from_state)
from models.attention import AttentionRecorder
from training.checkpoints import load_checkpoint
from training.config import format_config, opt, parse_config
from training.device import pick_device
from training.errors import ConfigError, main_guard, require
from training.folders import check_output
from training.plots import save_attention_figure, save_grid


@dataclass
class Config:
    ckpt: str = opt("", "checkpoint.pt written by a training script", required=True)
    n: int = opt(None, "images (per prompt for a text model); default 64, or 8 per prompt", type=int)
    seed: int = opt(0, "seed of the noise: same seed, same images")
    sampler: str = opt("ddim", "ddpm: all T stochastic steps; ddim: --steps steps (deterministic "
                               "at --eta 0); dpm++: DPM-Solver++(2M), --steps steps, trailing "
                               "spacing", choices=SAMPLERS)
    steps: int = opt(50, "DDIM or DPM-Solver++ steps (ddpm always runs all T)")
    spacing: str = opt(None, "which timesteps the few-step samplers visit; default: leading for "
                             "ddim, trailing for dpm++ (Lin et al. 2024)",
                       choices=("leading", "trailing"), type=str)
    eta: float = opt(0.0, "DDIM noise: 0 deterministic, 1 DDPM-like (briefly trained models look "
                          "cleaner at 1; see docs/07-sampling.md)")
    # text-to-image (latent diffusion checkpoints)
    prompt: tuple = opt((), "a prompt; repeat the flag for several. '' = unconditional",
                        repeat=True)
    prompts_file: str = opt("", "a text file with one prompt per line")
    guidance: float = opt(None, "classifier-free guidance scale w (1 = none, 0 = unconditional); "
                                "default: the one the model was trained to show (train_ldm "
                                "--guidance)", type=float)
    negative_prompt: str = opt("", "what guidance pushes away from (replaces the empty prompt)")
    attention_maps: bool = opt(False, "also save OUT_attention.png: where each word's "
                                      "cross-attention looks")
    # outputs
    out: str = opt("samples.png", "the grid PNG")
    out_dir: str = opt("", "also write one PNG per image here (and index.json for text models)")
    trajectory: bool = opt(False, "also save OUT_trajectory.png: x_t and the predicted x_0 along "
                                  "the way")
    init_image: str = opt("", "start from this image instead of noise")
    strength: float = opt(0.5, "with --init-image: noise it to step strength*T (0 = unchanged, "
                               "1 = new)")
    ema: bool = opt(True, "sample with the EMA weights (--no-ema: the raw weights)")
    batch_size: int = opt(64, "images denoised at once")
    device: str = opt("auto", "auto, cpu, cuda, cuda:N or mps")


def read_image(path: str, size: int) -> torch.Tensor:
    """--init-image -> (1, 3, size, size) in [-1, 1], center-cropped to a square, then resized."""
    try:
        return to_tensor(load_square_image(path, size))
    except (OSError, ValueError) as error:
        raise ConfigError(f"--init-image {path}: not a readable image ({error})") from None


def trajectory_strip(trajectory: list, max_images: int = 4) -> torch.Tensor:
    """Rows of x_t above rows of predicted x_0, one column per saved step: (rows*cols, 3, H, W)."""
    rows = []
    for i in range(min(max_images, trajectory[0][1].shape[0])):
        rows.append(torch.stack([x_t[i] for _, x_t, _ in trajectory]))      # x_t at each step
        rows.append(torch.stack([x0[i] for _, _, x0 in trajectory]))        # predicted x_0
    return torch.cat(rows)


def make_scheduler(args, ddpm):
    """The sampler of --sampler, --steps and --spacing for a model trained with `ddpm`."""
    require(args.sampler != "dpm++" or args.eta == 0.0,
            f"--eta {args.eta}: DPM-Solver++ is deterministic (eta 0)")
    try:
        return make_sampler(ddpm, args.sampler, args.steps, args.spacing)
    except ValueError as error:  # a step count the model's schedule does not have
        raise ConfigError(f"--steps {error}") from None


def trajectory_columns(scheduler, strength: float) -> list[int]:
    """Up to 8 evenly spaced timesteps among those the run visits."""
    run_steps = visited_timesteps(scheduler, strength)
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
    require(not args.prompt and not args.prompts_file,
            f"--prompt: {args.ckpt} is an unconditional pixel model; it takes no prompt")
    n = 64 if args.n is None else args.n
    model, ddpm = pixel_model_from_state(checkpoint, device, use_ema=args.ema)
    scheduler = make_scheduler(args, ddpm)
    size = checkpoint["config"]["image_size"]
    x_init = read_image(args.init_image, size).to(device) if args.init_image else None
    strength = args.strength if x_init is not None else 1.0
    shown = trajectory_columns(scheduler, strength)
    generator = torch.Generator().manual_seed(args.seed)  # CPU noise: the same images on any device
    images, trajectory = [], None
    for start in range(0, n, args.batch_size):
        count = min(args.batch_size, n - start)
        result = generate_pixels(model, scheduler, count, size, generator,
                                 eta=args.eta if args.sampler != "ddpm" else 0.0, x_init=x_init,
                                 strength=strength,
                                 trajectory_steps=shown if args.trajectory and start == 0 else None)
        if isinstance(result, tuple):
            result, trajectory = result
        images.append(result)
    images = torch.cat(images)
    write_outputs(args, images, trajectory)
    if args.out_dir:
        out_dir = Path(args.out_dir)
        for i, image in enumerate(images):
            save_grid(image[None], out_dir / f"{i:04d}_seed{args.seed}.png", nrow=1)
        print(f"wrote {n} images to {out_dir}/")


# ---- Latent diffusion, with or without text (stage 4) ------------------------------------------

def read_prompts_file(path: Path) -> list[str]:
    """The prompts of --prompts-file: one per line, blank lines skipped; at least one."""
    if not path.is_file():
        raise ConfigError(f"--prompts-file {path}: no such file")
    try:
        text = read_utf8(path)
    except DataError as error:  # "PATH:LINE: byte N of the file (0x..) is not UTF-8; ..."
        raise ConfigError(f"--prompts-file {error}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    require(len(prompts) > 0, f"--prompts-file {path}: no prompt in it (expected one per line; "
                              "for unconditional samples give --prompt '')")
    return prompts


def read_prompts(args, has_text: bool) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += read_prompts_file(Path(args.prompts_file))
    if not has_text:
        require(not any(prompts) and not args.negative_prompt,
                f"--prompt: {args.ckpt} is an unconditional latent model (trained without --clip);"
                " it takes no prompt")
        return [""]
    return prompts or [""]  # no prompt: unconditional samples of the text model


def slug(text: str, length: int = 40) -> str:
    """A prompt as a file-name part: "A bald man, glasses" -> "a_bald_man_glasses"; the empty
    prompt -> "unconditional"; a prompt with no ASCII letter or digit (emoji only) -> "prompt_"
    and the first 8 hex digits of its SHA-1, the same name for the same text."""
    if not text.strip():
        return "unconditional"
    words = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:length]
    return words or "prompt_" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def sample_latents(args, checkpoint: dict, device) -> None:
    pipe = text_to_image_from_state(checkpoint, device, use_ema=args.ema)
    unet, vae, text, scale_factor = pipe.unet, pipe.vae, pipe.text, pipe.scale_factor
    prompts = read_prompts(args, text is not None)
    n = 8 if args.n is None else args.n
    guidance = pipe.config["guidance"] if args.guidance is None else args.guidance
    require(guidance >= 0, f"--guidance {guidance}: expected 0 or more")
    require(not args.attention_maps or text is not None,
            "--attention-maps: this model has no text, so there is no cross-attention to show")
    scheduler = make_scheduler(args, pipe.scheduler)
    C, h, w = pipe.latent_shape
    f = vae.downsampling_factor
    x_init = None
    if args.init_image:  # [P8] in latent space: encode, scale, re-noise part-way
        with torch.no_grad():
            x_init = vae.encode(read_image(args.init_image, h * f).to(device)).mean * scale_factor
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
        result = generate(pipe, [p for p, _ in batch], [s for _, s in batch], guidance, scheduler,
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
    args = parse_config(Config, description=__doc__.split("\n\n")[0])
    print("config:\n" + format_config(args))
    require(args.n is None or args.n > 0, f"--n {args.n}: expected a positive number")
    require(args.batch_size > 0, f"--batch-size {args.batch_size}: expected a positive number")
    require(0.0 <= args.strength <= 1.0, f"--strength {args.strength}: expected a value in [0, 1]")
    require(0.0 <= args.eta <= 1.0, f"--eta {args.eta}: expected a value in [0, 1]")
    check_output("--out", Path(args.out), folder=False, extensions=IMAGE_EXTENSIONS)
    if args.out_dir:
        check_output("--out-dir", Path(args.out_dir), folder=True)
    device = pick_device(args.device)
    checkpoint = load_checkpoint(args.ckpt, kind=("ddpm", "ldm"))
    if checkpoint["kind"] == "ddpm":
        sample_pixels(args, checkpoint, device)
    else:
        sample_latents(args, checkpoint, device)


if __name__ == "__main__":
    main_guard(main)
