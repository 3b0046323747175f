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
--negative-prompt.

Image j of each prompt starts from the noise of seed --seed + j, for a pixel model as for a
latent one, so a (prompt, seed) pair names one image (exactly, with the deterministic DDIM at
--eta 0 or DPM-Solver++; the noise of stochastic steps is drawn from --seed). Every image goes
through diffusion/pipeline.py's generate, as in evaluate.py and the explorer.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from common import (ConfigError, check_output, check_seed, format_config, main_guard,
                    option, parse_config, pick_device, require, save_grid, save_labelled_grid,
                    upscaled)
from data.files import read_prompts_file
from data.images import IMAGE_EXTENSIONS, load_square_image, to_tensor
from diffusion import (Pipeline, SAMPLERS, default_sampler, generate, load_pipeline, make_sampler,
                       model_calls, spread_steps, visited_timesteps)
from diffusion.guidance import check_interval
from models import AttentionRecorder
from training.plots import save_attention_figure

# Every image of a run is kept in memory and drawn into one grid at the end, one row per prompt of
# a text model: work beyond these caps would run for hours before writing anything, or run out of
# memory at the end. More images: several runs (other --seed values, or the prompts split up).
MAX_IMAGES = 4096   # images in one run (--n, times the prompts of a text model)
MAX_PROMPTS = 1024  # prompts in one run (--prompt and --prompts-file together)
PER_PROMPT = 8      # images per prompt without --n (a model without text: one grid of 64)


@dataclass
class Config:
    ckpt: str = option("", "checkpoint.pt written by a training script", required=True)
    n: int = option(None, f"images (per prompt for a text model); default 64, or {PER_PROMPT} per "
                          f"prompt; at most {MAX_IMAGES} in all", type=int)
    seed: int = option(0, "seed of the noise: same seed, same images")
    sampler: str = option(None, "ddpm: all T stochastic steps; ddim: --steps steps (deterministic "
                                "at --eta 0); dpm++: DPM-Solver++(2M), --steps steps, trailing "
                                "spacing; euler, heun: a flow-matching model's ODE steps; default: "
                                "ddim, or euler for a flow checkpoint", choices=SAMPLERS, type=str)
    steps: int = option(50, "DDIM or DPM-Solver++ steps (ddpm always runs all T)")
    spacing: str = option(None, "which timesteps the few-step samplers visit; default: leading for "
                                "ddim, trailing for dpm++ (Lin et al. 2024)",
                          choices=("leading", "trailing"), type=str)
    eta: float = option(0.0, "DDIM noise: 0 deterministic, 1 DDPM-like (briefly trained models look "
                             "cleaner at 1; see docs/07-sampling.md)")
    # text-to-image (latent diffusion checkpoints)
    prompt: tuple = option((), "a prompt; repeat the flag for several. '' = unconditional",
                           repeat=True)
    prompts_file: str = option("", "a text file with one prompt per line")
    guidance: float = option(None, "classifier-free guidance scale w (1 = none, 0 = unconditional); "
                                   "default: the one the model was trained to show (train_ldm "
                                   "--guidance)", type=float)
    negative_prompt: str = option("", "what guidance pushes away from (replaces the empty prompt)")
    guidance_interval: tuple = option((0.0, 1.0), "guide only at noise levels LO..HI (0: data, "
                                                  "1: pure noise), the conditional model alone "
                                                  "elsewhere (Kynkaenniemi et al. 2024); default: "
                                                  "every step (docs/guidance-interval.md)")
    words: bool = option(False, "print the words the model's text encoder knows, then stop")
    attention_maps: bool = option(False, "also save OUT_attention.png: where each word's "
                                         "cross-attention looks")
    # outputs
    out: str = option("samples.png", "the grid PNG")
    out_dir: str = option("", "also write one PNG per image here (and index.json for text models)")
    trajectory: bool = option(False, "also save OUT_trajectory.png: x_t and the predicted x_0 along "
                                     "the way")
    init_image: str = option("", "start from this image instead of noise")
    strength: float = option(0.5, "with --init-image: noise it to step strength*T (0 = unchanged, "
                                  "1 = new)")
    ema: bool = option(True, "sample with the EMA weights (--no-ema: the raw weights)")
    ema_length: str = option("", "one of the power-function EMAs the checkpoint keeps (train with "
                                 "--ema-lengths); default: its first (docs/ema.md)")
    upscale: int = option(3, "the grid shows each image this many times larger (nearest "
                             "neighbour: a 32-pixel image becomes 96 pixels of sharp blocks); "
                             "--out-dir keeps the original pixels")
    batch_size: int = option(64, "images denoised at once")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")


def words_listing(words: list[str], width: int = 100) -> str:
    """--words: the vocabulary, alphabetical and wrapped, and what it cannot tell."""
    listing = textwrap.fill(", ".join(sorted(words)), width)
    return (f"{len(words)} words, each known from the training captions:\n{listing}\n"
            "Any other word becomes <unk> (sample.py names it). A known word used in a way the "
            "captions never used it\n(\"red\" learned from \"red lips\", asked for hair) "
            "passes unnoticed: no check can see that.")


def read_image(path: str, size: int) -> torch.Tensor:
    """--init-image -> (1, 3, size, size) in [-1, 1], center-cropped to a square, then resized."""
    try:
        return to_tensor(load_square_image(path, size))
    except (OSError, ValueError) as error:
        raise ConfigError(f"--init-image {path}: not a readable image ({error})") from None


def read_prompts(args) -> list[str]:
    """The prompts of --prompt and --prompts-file, at most MAX_PROMPTS: read before the
    checkpoint, so that too many are refused at once."""
    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += read_prompts_file(Path(args.prompts_file), "--prompts-file")
    where = f"--prompts-file {args.prompts_file}" if args.prompts_file else "--prompt"
    require(len(prompts) <= MAX_PROMPTS,
            f"{where}: {len(prompts)} prompts; at most {MAX_PROMPTS} in one run (each is a row of "
            "one grid, all held in memory until the end): split them over several runs")
    return prompts


def model_prompts(args, prompts: list[str], pipe: Pipeline) -> list[str]:
    """The prompts the model is given: [""] (unconditional) when there are none, and for a model
    without text, which refuses any other."""
    if pipe.text is None:
        model = ("an unconditional pixel model" if pipe.vae is None else
                 "an unconditional latent model (trained without --clip)")
        require(not any(prompts) and not args.negative_prompt,
                f"--prompt: {args.ckpt} is {model}; it takes no prompt")
        return [""]
    return prompts or [""]


def check_writable(flag: str, path: Path, folder: bool) -> None:
    """Create and remove a file where `path` will be written (its nearest folder that exists), so
    that an output the file system refuses (read-only, /proc, full quota) is refused before the
    sampling, not after it: check_output's look at the path cannot tell."""
    start = path if folder else path.parent
    there = next(p for p in (start, *start.parents) if p.is_dir())
    try:
        with tempfile.NamedTemporaryFile(dir=there, prefix=".sample-write-test-"):
            pass
    except OSError as error:
        raise ConfigError(f"{flag} {path}: cannot create a file in {there} "
                          f"({error.strerror or error}); expected a writable folder") from None


def slug(text: str, length: int = 40) -> str:
    """A prompt as a file-name part: "A bald man, glasses" -> "a_bald_man_glasses"; the empty
    prompt -> "unconditional"; a prompt with no ASCII letter or digit (emoji only) -> "prompt_"
    and the first 8 hex digits of its SHA-1, the same name for the same text."""
    if not text.strip():
        return "unconditional"
    words = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:length]
    return words or "prompt_" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def trajectory_columns(scheduler, strength: float, columns: int = 8) -> list:
    """The steps of the trajectory strip: up to `columns` of those the run visits, evenly spread,
    the first and the last included."""
    return spread_steps(visited_timesteps(scheduler, strength), columns)


def trajectory_strip(trajectory: list, max_images: int = 4) -> torch.Tensor:
    """Rows of x_t above rows of predicted x_0, one column per saved step: (rows*cols, 3, H, W)."""
    rows = []
    for i in range(min(max_images, trajectory[0][1].shape[0])):
        rows.append(torch.stack([x_t[i] for _, x_t, _ in trajectory]))      # x_t at each step
        rows.append(torch.stack([x0[i] for _, _, x0 in trajectory]))        # predicted x_0
    return torch.cat(rows)


def write_outputs(args, pipe: Pipeline, jobs: list, images: torch.Tensor, trajectory: list,
                  guidance: float, nrow: int | None) -> None:
    """The grid, the trajectory strip (decoded), and with --out-dir one PNG per image."""
    out = Path(args.out)
    if pipe.text is not None:  # one row per prompt, the prompt beside it, the seed above each column
        rows = [prompt or "(no prompt)" for prompt, _ in jobs[::nrow]]
        seeds = [f"seed {seed}" for _, seed in jobs[:nrow]]
        save_labelled_grid(images, out, rows, seeds, scale=args.upscale)
    else:
        save_grid(upscaled(images, args.upscale), out, nrow=nrow)
    print(f"wrote {out} ({len(images)} images, {args.sampler}, seeds from {args.seed})")
    if trajectory:
        strip_path = out.with_name(out.stem + "_trajectory.png")
        decoded = [(t, pipe.decode(x_t), pipe.decode(x0)) for t, x_t, x0 in trajectory]
        strip = trajectory_strip(decoded)                   # (2 * images * columns, 3, H, W)
        rows = [f"image {i // 2 + 1}: {('x_t', 'predicted x_0')[i % 2]}"
                for i in range(len(strip) // len(decoded))]
        columns = [f"t = {t:g}" for t, _, _ in trajectory]
        columns[-1] += " (last)"
        save_labelled_grid(strip, strip_path, rows, columns, scale=args.upscale)
        print(f"wrote {strip_path}: x_t and the predicted x_0 of each image at {len(columns)} "
              "steps; the last predicted x_0 is the image the run returns")
    if args.out_dir:
        out_dir, index = Path(args.out_dir), []
        for i, ((prompt, seed), image) in enumerate(zip(jobs, images)):
            name = f"{i:04d}_{slug(prompt)}_seed{seed}.png"
            save_grid(image[None], out_dir / name, nrow=1)
            index.append({"file": name, "prompt": prompt, "seed": seed, "guidance": guidance,
                          "negative_prompt": args.negative_prompt, "sampler": args.sampler,
                          "steps": args.steps if args.sampler != "ddpm" else None, "eta": args.eta})
        (out_dir / "index.json").write_text(json.dumps(index, indent=1))
        print(f"wrote {len(images)} images and index.json to {out_dir}/")


def main():
    args = parse_config(Config, description=__doc__.split("\n\n")[0])
    print("config:\n" + format_config(args))
    check_seed(args.seed)
    require(args.n is None or args.n > 0, f"--n {args.n}: expected a positive number")
    require(args.n is None or args.n <= MAX_IMAGES,
            f"--n {args.n}: at most {MAX_IMAGES} images in one run (every image is kept in memory "
            "until the grid is written at the end, and so many would sample for hours first): for "
            f"more, run again from --seed {args.seed + MAX_IMAGES}")
    require(args.guidance is None or (math.isfinite(args.guidance) and args.guidance >= 0),
            f"--guidance {args.guidance}: expected a finite number, 0 or more")
    require(args.batch_size > 0, f"--batch-size {args.batch_size}: expected a positive number")
    require(1 <= args.upscale <= 16, f"--upscale {args.upscale}: expected 1 to 16")
    require(0.0 <= args.strength <= 1.0, f"--strength {args.strength}: expected a value in [0, 1]")
    interval = check_interval(args.guidance_interval)
    check_output("--out", Path(args.out), folder=False, extensions=IMAGE_EXTENSIONS)
    check_writable("--out", Path(args.out), folder=False)
    if args.out_dir:
        check_output("--out-dir", Path(args.out_dir), folder=True)
        check_writable("--out-dir", Path(args.out_dir), folder=True)
    prompts = read_prompts(args)
    images = len(prompts or [""]) * (args.n or PER_PROMPT)  # (prompts: a text model's default)
    require(images <= MAX_IMAGES,
            f"--n {args.n or PER_PROMPT} x {len(prompts)} prompts = {images} images: at most "
            f"{MAX_IMAGES} in one run (all are kept in memory and drawn into one grid at the "
            "end): give a smaller --n, or split the prompts over several runs")
    device = pick_device(args.device)
    pipe = load_pipeline(args.ckpt, device, use_ema=args.ema, ema_length=args.ema_length or None)
    if args.words:  # what a prompt can say to this model
        require(pipe.text is not None, f"--words: {args.ckpt} has no text encoder, so it knows "
                                       "no words")
        print(words_listing(pipe.text.tokenizer.words))
        return
    prompts = model_prompts(args, prompts, pipe)
    n = args.n or (64 if pipe.vae is None else PER_PROMPT)  # a pixel grid, or a row per prompt
    guidance = pipe.config.get("guidance", 1.0) if args.guidance is None else args.guidance
    require(math.isfinite(guidance) and guidance >= 0,
            f"--guidance: {args.ckpt}'s default guidance {guidance} is not a finite number >= 0; "
            "give --guidance")
    require(not args.attention_maps or pipe.text is not None,
            "--attention-maps: this model has no text, so there is no cross-attention to show")
    args.sampler = args.sampler or default_sampler(pipe.scheduler)  # the checkpoint's kind decides
    scheduler, eta = make_sampler(pipe.scheduler, args.sampler, args.steps, args.spacing, args.eta)
    x_init = None
    if args.init_image:  # [P8] noised part-way, in the UNet's space (latents: encoded first)
        x_init = pipe.encode(read_image(args.init_image, pipe.image_size).to(device))
    strength = args.strength if x_init is not None else 1.0

    # every image: its prompt and seed, its own noise: (prompt, seed) names the image
    jobs = [(prompt, args.seed + j) for prompt in prompts for j in range(n)]
    if pipe.text is not None:  # names unknown words, once each (tokenized only: no encoding)
        pipe.text.tokenizer(prompts + [args.negative_prompt])
    generator = torch.Generator().manual_seed(args.seed)  # the noise of stochastic steps
    images, trajectory, attention = [], [], []
    C, h, w = pipe.sample_shape
    # one tick per UNet call of a batch, with the time left: batches x calls per image
    batches = -(-len(jobs) // args.batch_size)
    progress = tqdm(total=batches * model_calls(scheduler, strength), unit="step",
                    desc=f"sampling {len(jobs)} image(s) in {batches} batch(es)")
    for start in range(0, len(jobs), args.batch_size):
        batch = jobs[start:start + args.batch_size]
        recorder = AttentionRecorder(pipe.unet, len(batch), (h, w)) if args.attention_maps else None
        shown = trajectory_columns(scheduler, strength) if args.trajectory and start == 0 else None
        result = generate(pipe, [p for p, _ in batch], [s for _, s in batch], guidance, scheduler,
                          negative_prompt=args.negative_prompt, eta=eta, generator=generator,
                          x_init=x_init, strength=strength, recorder=recorder,
                          trajectory_steps=shown, guidance_interval=interval,
                          on_step=progress.update)
        images.append(result.images)
        trajectory = trajectory or result.trajectory
        if recorder is not None:
            attention.append(recorder.maps())
            recorder.close()
    progress.close()
    images = torch.cat(images)

    write_outputs(args, pipe, jobs, images, trajectory, guidance,
                  nrow=n if pipe.text is not None else None)
    if pipe.text is not None:
        print(f"  rows: {len(prompts)} prompt(s), columns: seeds {args.seed}..{args.seed + n - 1}, "
              f"guidance {guidance}" + (f", negative prompt {args.negative_prompt!r}"
                                        if args.negative_prompt else ""))
    if args.attention_maps:
        first = list(range(0, len(jobs), n))  # the first seed of every prompt
        path = Path(args.out).with_name(Path(args.out).stem + "_attention.png")
        save_attention_figure(path, images[first], torch.cat(attention)[first], prompts,
                              [pipe.text.tokenizer.tokens(p) for p in prompts])
        print(f"wrote {path}: cross-attention per word, mean over heads, layers and steps")


if __name__ == "__main__":
    main_guard(main)
