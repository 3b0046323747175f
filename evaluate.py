"""Does the generated image show what the prompt asked? The project's measure of prompt following.

    python evaluate.py --ckpt runs/ldm_cpu/checkpoint.pt            # after train_ldm.py --preset cpu

1. A judge: an attribute classifier (models/classifier.py) trained on real images of the dataset
   the model was trained on, or loaded from its cache (CACHE/classifier-<data>-<size>px.pt;
   --retrain-judge trains it again).
   Its held-out accuracy per attribute is printed: a judge is only as good as that.
2. Prompts built from attribute requirements: every single attribute ("a photo of a person with
   glasses", and "a photo of a woman"), and pairs and triples of features that occur together in
   held-out rows ("a photo of a man with glasses and black hair"). Each prompt is sampled with
   --n seeds at the given guidance, and an image is right when the judge sees every requirement
   (attribute present, or absent for "woman" = not Male and "a beard" = not No_Beard).
3. The baseline: the same judge on unconditional samples of the same model (the empty prompt);
   the rate at which they happen to satisfy each requirement is what a model that ignores the
   text would score.
4. The Frechet distance between real held-out images and the generated ones in the judge's
   feature space (the FID formula, Heusel et al. 2017, with this small classifier instead of
   Inception: comparable between runs of this project, not with published FIDs), next to the
   distance between real training and real held-out images as its noise floor, every set cut to
   the same size (the estimate grows as the sets shrink); and the CLIP score (mean
   cosine similarity of image and prompt) from the project's CLIP, next to real images with their
   own captions.

5. Diversity: per prompt, the mean pairwise distance of its images in the judge's features over
   that of real held-out images meeting the same requirement (1: as varied as real faces with
   those attributes; 0: one image repeated).
6. The autoencoder inside the model: held-out PSNR of its reconstructions, and attribute
   preservation, the share of held-out images whose reconstruction the judge reads the same way as
   the original, per attribute (what of each attribute survives the latents).

It prints a table and writes OUT/eval.json and OUT/prompts.png (one row per single-attribute prompt).

On a folder of your own captioned images (no attribute rows, so no judge), it measures with the
model's CLIP instead: caption retrieval among K held-out captions, the CLIP score and the Frechet
distance in the CLIP image features, each beside real held-out and unconditional images
(own_captions_report; docs/16-cross-attention.md).

    python evaluate.py --ckpt runs/unconditional_cpu/checkpoint.pt   # a stage-1 pixel model

A stage-1 checkpoint gets only the Frechet distance of --unconditional samples to real held-out
images, next to its noise floor (real train vs real held-out images, the same number of each).
"""
from __future__ import annotations

import functools
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from common import (CheckpointError, check_output, check_seed, format_config, main_guard, option,
                    parse_config, pick_device, require, require_positive, save_grid,
                    save_labelled_grid, upscaled)
from data import ImageDataset, load_dataset
from data.imagefolder import VAL_PERCENT
from data.captions import combined_requirements, full_caption, single_requirements
from diffusion import (Pipeline, SAMPLERS, default_sampler, generate, load_pipeline, make_sampler,
                       model_calls)
from diffusion.guidance import check_interval
from evaluation.frechet import evenly_spaced, frechet_report
from evaluation.judge import judge_dataset, judge_images, load_judge
from evaluation.report import print_own_captions_report, print_pixel_report, print_report
from evaluation.scores import (autoencoder_report, caption_retrieval, clip_image_vectors,
                               clip_score_of, clip_scores, prompt_following)
from models import load_clip
from models.clip_eval import embed_texts


@dataclass
class Config:
    ckpt: str = option("", "a train_ldm.py checkpoint (with --clip)", required=True)
    clip: str = option("", "CLIP checkpoint for the CLIP score; default: the one the model used")
    ema_length: str = option("", "one of the power-function EMAs the checkpoint keeps (train with "
                                 "--ema-lengths); default: its first (docs/ema.md)")
    n: int = option(8, "images per prompt (seeds 0..n-1)")
    combinations: int = option(16, "prompts with 2 features, and as many with 3 (0: single "
                                   "attributes only)")
    unconditional: int = option(128, "unconditional samples for the baseline")
    guidance: float = option(None, "guidance scale; default: the model's (train_ldm --guidance)",
                             type=float)
    guidance_interval: tuple = option((0.0, 1.0), "guide only at noise levels LO..HI (0: data, "
                                                  "1: pure noise), the conditional model alone "
                                                  "elsewhere (Kynkaenniemi et al. 2024); default: "
                                                  "every step (docs/guidance-interval.md)")
    sampler: str = option(None, "ddim (eta: --eta), dpm++ (DPM-Solver++(2M)) or ddpm (all T "
                                "steps); euler or heun for a flow checkpoint; default: ddim, or "
                                "euler for a flow checkpoint", choices=SAMPLERS, type=str)
    steps: int = option(50, "DDIM or DPM-Solver++ steps")
    eta: float = option(0.0, "DDIM only: 0 deterministic, 1 DDPM-like noise at every step")
    spacing: str = option(None, "timesteps of the few-step samplers; default leading for ddim, "
                                "trailing for dpm++", choices=("leading", "trailing"), type=str)
    real_images: int = option(1000, "at most this many images per set for the Frechet distance "
                                    "(every set is cut to the smallest) and real images for the "
                                    "CLIP score")
    classifier_steps: int = option(2000, "training steps of the judge when it is not cached")
    judge_dir: str = option("", "where the judge is cached (one file per data, size, steps, lr and "
                                "batch size); default: the data's --cache-dir")
    retrain_judge: bool = option(False, "train the judge again even when it is cached (and write "
                                        "over the cached one)")
    batch_size: int = option(128, "images generated (or reconstructed by the autoencoder) at once")
    score_batch_size: int = option(256, "images the judge and the CLIP read at once")
    judge_lr: float = option(2e-3, "peak learning rate of the judge (cosine decay to 0)")
    judge_batch_size: int = option(64, "real images per step of the judge's training")
    diversity_reference: int = option(64, "real held-out images, at most, that a prompt's "
                                             "diversity is measured against")
    out: str = option("", "output folder; default: CKPT's folder/eval")
    seed: int = option(0, "seed of the prompt combinations")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")


def check_config(args: Config) -> None:
    require(args.combinations >= 0, f"--combinations {args.combinations}: expected 0 or more")
    require_positive(args, ("n", "unconditional", "steps", "real_images", "batch_size",
                            "classifier_steps", "score_batch_size", "judge_lr",
                            "judge_batch_size", "diversity_reference"))
    check_seed(args.seed)


def data_source(pipe: Pipeline, ckpt: str) -> tuple[str, int, Path, int]:
    """The dataset the model was trained on, its image size, its cache folder (where the judge
    is cached too) and its held-out share (--val-percent); says which folder that is, as a
    relative one is read from here."""
    config = pipe.data_config
    absent = [key for key in ("data", "image_size", "cache_dir") if key not in config]
    if absent:
        raise CheckpointError(f"checkpoint {ckpt}: its config does not name the training data "
                              f"({', '.join(absent)} missing), which evaluate.py needs for the "
                              "held-out images and the judge; it was written by an older version "
                              "of this project: train it again")
    cache_dir = Path(config["cache_dir"])
    relative = "" if cache_dir.is_absolute() else ", relative to the current folder"
    missing = "" if cache_dir.exists() else ("; it does not exist yet: the data and the judge "
                                             "will be built there")
    script = "train_unconditional.py" if pipe.vae is None else "train_vae.py"
    print(f"data and judge cache: {cache_dir.resolve()} ({script}'s --cache-dir{relative})"
          f"{missing}")
    return config["data"], config["image_size"], cache_dir, config.get("val_percent", VAL_PERCENT)


def held_out_and_train(data: str, size: int, cache_dir: Path, val_percent: int
                       ) -> tuple[ImageDataset, ImageDataset]:
    """The real images of the model's data: its held-out split and its training split."""
    return tuple(load_dataset(data, size, split=split, cache_dir=cache_dir,
                              val_percent=val_percent) for split in ("val", "train"))


def sampling_settings(args: Config, pipe: Pipeline) -> tuple:
    """(guidance, scheduler, eta, guidance interval) of the evaluation's images: the flags, or the
    checkpoint's guidance and the default sampler of its kind (sets args.sampler)."""
    guidance = pipe.config.get("guidance", 1.0) if args.guidance is None else args.guidance
    args.sampler = args.sampler or default_sampler(pipe.scheduler)  # the checkpoint's kind decides
    scheduler, eta = make_sampler(pipe.scheduler, args.sampler, args.steps, args.spacing, args.eta)
    return guidance, scheduler, eta, check_interval(args.guidance_interval)


def generate_images(pipe: Pipeline, prompts: list[str], n: int, guidance: float, scheduler,
                    eta: float, batch_size: int, desc: str,
                    guidance_interval: tuple = (0.0, 1.0)) -> dict[str, torch.Tensor]:
    """n images per prompt, image j from seed j, as `sample.py --seed 0 --n n` draws them (the
    noise of stochastic steps from seed 0) -> {prompt: images (n, 3, S, S) in [-1, 1], CPU}."""
    jobs = [(prompt, seed) for prompt in prompts for seed in range(n)]
    if not jobs:
        return {}
    generator = torch.Generator().manual_seed(0)
    images = []
    batches = -(-len(jobs) // batch_size)  # one tick per UNet call of a batch, with the time left
    with tqdm(total=batches * model_calls(scheduler), unit="step",
              desc=f"{desc}: {len(jobs)} images") as progress:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            images.append(generate(pipe, [p for p, _ in batch], [s for _, s in batch], guidance,
                                   scheduler, eta=eta, generator=generator, on_step=progress.update,
                                   guidance_interval=guidance_interval).images.clamp(-1, 1))
    return dict(zip(prompts, torch.cat(images).split(n)))


def main():
    args = parse_config(Config, description=__doc__.split("\n\n")[0])
    print("config:\n" + format_config(args))
    check_config(args)
    out = Path(args.out) if args.out else Path(args.ckpt).parent / "eval"
    check_output("--out", out)
    device, started = pick_device(args.device), time.time()

    # ---- 1. The model, its data, the judge -------------------------------------------------
    pipe = load_pipeline(args.ckpt, device, ema_length=args.ema_length or None)
    require(pipe.vae is None or pipe.text is not None, f"--ckpt {args.ckpt}: an unconditional "
            "latent model (trained without --clip); evaluate.py measures prompt following")
    data, size, cache_dir, val_percent = data_source(pipe, args.ckpt)
    if pipe.vae is not None and pipe.attribute_names is None:  # your own captioned data
        return own_captions_report(args, pipe, data, size, cache_dir, val_percent, out, device)
    guidance, scheduler, eta, interval = sampling_settings(args, pipe)
    classifier, judge_state = load_judge(data, size, cache_dir, args.classifier_steps, device,
                                         args.retrain_judge, args.judge_lr, args.judge_batch_size,
                                         args.score_batch_size, args.judge_dir or None,
                                         val_percent)
    judge = functools.partial(judge_images, classifier, device=device, chunk=args.score_batch_size)
    held_out, train = held_out_and_train(data, size, cache_dir, val_percent)
    report = {"checkpoint": str(args.ckpt), "kind": "ddpm" if pipe.vae is None else "ldm",
              "step": pipe.step, "guidance": guidance,
              "guidance_interval": list(interval),
              "sampler": args.sampler,
              "steps": None if args.sampler == "ddpm" else args.steps,
              "spacing": getattr(scheduler, "timestep_spacing", None),
              "eta": eta if args.sampler == "ddim" else None}

    # ---- 2. Images: every prompt's n seeds, and unconditional ones -------------------------
    names = pipe.attribute_names
    groups = requirement_groups(names, held_out, args) if pipe.text is not None else {}
    prompts = [full_caption(r) for group in groups.values() for r in group]
    if prompts:
        print(f"{len(prompts)} prompts x {args.n} seeds, guidance {guidance}, {args.sampler} "
              f"{report['steps'] or 'all T'} steps; {args.unconditional} unconditional samples")
    sampling_started = time.time()
    images = generate_images(pipe, prompts, args.n, guidance, scheduler, eta, args.batch_size,
                             "prompts", interval)
    report["sampling_seconds_prompts"] = time.time() - sampling_started
    count = args.unconditional if prompts else min(args.unconditional, args.real_images,
                                                   len(held_out))  # stage 1: the Frechet sets
    unconditional = generate_images(pipe, [""], count, 1.0, scheduler, eta, args.batch_size,
                                    "unconditional")[""]

    # ---- 3. Scores: prompt following (text), Frechet distance, CLIP score (text) ------------
    generated = torch.cat(list(images.values())) if prompts else unconditional
    k = min(len(generated), len(unconditional), args.real_images, len(held_out), len(train))
    real = evenly_spaced(len(held_out), k)
    sets = {"real": held_out.batch(real, "cpu")["image"],
            "generated": generated[evenly_spaced(len(generated), k)],
            "real_train": train.batch(evenly_spaced(len(train), k), "cpu")["image"]}
    if prompts:
        sets["unconditional"] = unconditional[evenly_spaced(len(unconditional), k)]
        report.update(text_model_scores(args, pipe, images, unconditional, groups, held_out,
                                        sets["real"], real, classifier, judge, device))
    report["frechet_distance"] = frechet_report({name: judge(x)[1] for name, x in sets.items()})
    report["judge_val_accuracy"] = judge_state["val_accuracy"]
    report["seconds"] = time.time() - started

    # ---- 4. Report: eval.json, a grid, the tables ------------------------------------------
    singles = prompts[:len(groups.get("single", []))]
    grid = torch.cat([images[p] for p in singles]) if singles else unconditional[:64]
    write_report(out, report, grid, args.n if singles else 8, singles)
    print(f"({time.time() - started:.0f} s)")


def write_report(out: Path, report: dict, grid: torch.Tensor, nrow: int, rows: list[str]) -> None:
    """OUT/eval.json, and the grid: a row per single-attribute prompt (prompts.png, its rows in
    prompts.txt), or for stage 1 the first samples (samples.png); then the printed tables."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    name = "prompts.png" if rows else "samples.png"
    if rows:  # each prompt beside its row, each seed above its column, images enlarged 3x
        save_labelled_grid(grid, out / name, rows, [f"seed {i}" for i in range(nrow)])
        (out / "prompts.txt").write_text("".join(f"row {i}: {p}\n" for i, p in enumerate(rows)))
        print_report(report)
    else:
        save_grid(upscaled(grid, 3), out / name, nrow=nrow)
        print_pixel_report(report)
    print(f"wrote {out}/eval.json, {out}/{name}", end=" ")


def requirement_groups(names: list[str], held_out, args: Config) -> dict[str, list[dict]]:
    """The requirements of the prompts: every single attribute, then pairs and triples of
    features seen together in held-out rows."""
    rows, rng = torch.from_numpy(held_out.attributes), random.Random(args.seed)
    return {"single": single_requirements(names),
            "pair": combined_requirements(rows, names, 2, args.combinations, rng),
            "triple": combined_requirements(rows, names, 3, args.combinations, rng)}


def own_captions_report(args: Config, pipe: Pipeline, data: str, size: int, cache_dir: Path,
                        val_percent: int, out: Path, device) -> None:
    """Captioned data without attribute rows has no judge, so the model's own CLIP measures its
    prompt following instead, each measure next to real held-out images (what this CLIP can
    tell: the ceiling) and unconditional samples (what ignoring the text scores):

    1. caption retrieval: K distinct held-out captions (at most --combinations, evenly spaced),
       --n images each; an image is right when the CLIP finds its own caption the closest of
       the K (chance 1/K);
    2. the CLIP score: the mean cosine of each image and its caption;
    3. the Frechet distance in the CLIP image tower's features, against real held-out images,
       with its noise floor (real train vs real held-out), every set cut to the same size.

    It is the project's CLIP judging the project's model: it was trained on these captions and
    its text tower conditions the model, so it rewards what that CLIP can tell apart and is
    blind to what it cannot (it proves nothing a person would check by eye)."""
    clip_path = args.clip or pipe.config["clip"]
    require(bool(clip_path) and Path(clip_path).is_file(),
            f"--ckpt {args.ckpt}: its data has no attributes, so prompt following is measured "
            f"with its CLIP, and there is none at {clip_path!r}: give --clip")
    started, chunk = time.time(), args.score_batch_size
    clip = load_clip(clip_path, device)
    held_out, train = held_out_and_train(data, size, cache_dir, val_percent)
    distinct = list(dict.fromkeys(held_out.texts))            # held-out captions, first seen first
    K = min(args.combinations, len(distinct))
    require(K >= 2, f"--combinations {args.combinations}: the held-out split has "
                    f"{len(distinct)} distinct captions; at least 2 are needed to tell them apart")
    picked = [distinct[int(i)] for i in evenly_spaced(len(distinct), K)]

    guidance, scheduler, eta, interval = sampling_settings(args, pipe)
    print(f"{K} held-out captions x {args.n} seeds, guidance {guidance}, {args.sampler} "
          f"{args.steps} steps; {args.unconditional} unconditional samples")
    images = generate_images(pipe, picked, args.n, guidance, scheduler, eta, args.batch_size,
                             "prompts", interval)
    unconditional = generate_images(pipe, [""], args.unconditional, 1.0, scheduler, eta,
                                    args.batch_size, "unconditional")[""]
    generated = torch.cat([images[c] for c in picked])          # (K n, 3, S, S): caption k, n each

    # real held-out images captioned with one of the K: the same test on images the CLIP knows
    rows = torch.tensor([i for i, text in enumerate(held_out.texts) if text in picked])
    rows = rows[evenly_spaced(len(rows), min(args.real_images, len(rows)))]
    real = held_out.batch(rows, "cpu")["image"]
    real_truth = torch.tensor([picked.index(held_out.texts[i]) for i in rows])

    # every set through the CLIP once: unit vectors (N, E) of the images, (K, E) of the captions
    texts = embed_texts(clip.clip, clip.tokenizer, picked, device).cpu()
    truth = {"generated": torch.arange(K).repeat_interleave(args.n),       # caption k, n each
             "real_held_out": real_truth,
             "unconditional": torch.arange(len(unconditional)) % K}       # any caption: chance
    vectors = {name: clip_image_vectors(clip, x, device, chunk) for name, x in
               (("generated", generated), ("real_held_out", real), ("unconditional", unconditional))}
    right = {name: caption_retrieval(vectors[name], texts, truth[name]).float() for name in truth}
    rates = {name: r.mean().item() for name, r in right.items()} | {"chance": 1 / K}
    scores = {"generated": clip_score_of(vectors["generated"], texts[truth["generated"]]),
              "real_with_own_captions": clip_score_of(vectors["real_held_out"], texts[real_truth]),
              "unconditional_with_the_prompts": (vectors["unconditional"] @ texts.T).mean().item()}
    k = min(len(generated), len(unconditional), args.real_images, len(held_out), len(train))
    real_sets = {"real": held_out.batch(evenly_spaced(len(held_out), k), "cpu")["image"],
                 "real_train": train.batch(evenly_spaced(len(train), k), "cpu")["image"]}
    frechet = frechet_report(
        {name: clip_image_vectors(clip, x, device, chunk) for name, x in real_sets.items()}
        | {name: vectors[name][evenly_spaced(len(vectors[name]), k)]
           for name in ("generated", "unconditional")})
    per_caption = dict(zip(picked, right["generated"].view(K, args.n).mean(1).tolist()))
    report = {"checkpoint": str(args.ckpt), "kind": "ldm", "step": pipe.step, "judge": clip_path,
              "guidance": guidance, "sampler": args.sampler, "steps": args.steps,
              "images_per_prompt": args.n, "captions": picked, "caption_retrieval": rates,
              "per_caption": per_caption, "clip_score": scores,
              "frechet_distance_clip": frechet, "seconds": time.time() - started}

    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    save_labelled_grid(generated, out / "prompts.png", picked, [f"seed {i}" for i in range(args.n)])
    (out / "prompts.txt").write_text("".join(f"row {i}: {p}\n" for i, p in enumerate(picked)))
    print_own_captions_report(report)
    print(f"wrote {out}/eval.json, {out}/prompts.png ({time.time() - started:.0f} s)")


def text_model_scores(args: Config, pipe: Pipeline, images: dict, unconditional: torch.Tensor,
                      groups: dict, held_out, real_images: torch.Tensor, real: torch.Tensor,
                      classifier, judge, device) -> dict:
    """Prompt following with its baseline and diversity, the autoencoder's report and the CLIP
    score (real_images: the held-out images at the indices `real`, with their own captions):
    the part of the report only a text model has."""
    names = pipe.attribute_names
    probabilities, features = judge(torch.cat(list(images.values())))
    judged = dict(zip(images, zip(probabilities.split(args.n), features.split(args.n))))
    rows = torch.from_numpy(held_out.attributes)
    results, summary = prompt_following(
        groups, judged, judge(unconditional)[0], rows,
        judge_dataset(classifier, held_out, device, args.score_batch_size)[1], names,
        args.diversity_reference)
    scores = {"images_per_prompt": args.n, "summary": summary, "prompts": results,
              "autoencoder": autoencoder_report(pipe, held_out, classifier,
                                                min(args.real_images, len(held_out)), device,
                                                args.batch_size, args.score_batch_size),
              "clip_score": {}}
    clip_path = args.clip or pipe.config["clip"]
    if clip_path and Path(clip_path).is_file():
        captions = [full_caption({n: v > 0 for n, v in zip(names, r)}) for r in rows[real].tolist()]
        scores["clip_score"] = clip_scores(load_clip(clip_path, device), images, unconditional,
                                           real_images, captions, device, args.score_batch_size)
    else:
        print(f"CLIP score skipped: no CLIP checkpoint at {clip_path!r} (give --clip)")
    return scores


if __name__ == "__main__":
    main_guard(main)
