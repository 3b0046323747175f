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

    python evaluate.py --ckpt runs/unconditional_cpu/checkpoint.pt   # a stage-1 pixel model

A stage-1 checkpoint gets only the Frechet distance of --unconditional samples to real held-out
images, next to its noise floor (real train vs real held-out images, the same number of each).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import load_dataset, warn
from data.augment import augment
from data.captions import full_caption
from diffusion import SAMPLERS, make_sampler
from diffusion.pipeline import (TextToImage, generate, generate_pixels, pixel_model_from_state,
                                text_to_image_from_state)
from models.classifier import AttributeClassifier
from models.clip import TrainedCLIP, encode_images, load_clip
from models.clip_eval import embed_texts, zero_shot_attributes
from models.metrics import (attribute_preservation, diversity_ratio, feature_statistics,
                            frechet_distance, frechet_distance_spread, psnr)
from training.checkpoints import load_checkpoint, load_weights, save_checkpoint
from training.config import format_config, opt, parse_config
from training.device import pick_device
from training.errors import CheckpointError, ConfigError, main_guard, require
from training.folders import check_output
from training.plots import save_grid


@dataclass
class Config:
    ckpt: str = opt("", "a train_ldm.py checkpoint (with --clip)", required=True)
    clip: str = opt("", "CLIP checkpoint for the CLIP score; default: the one the model used")
    n: int = opt(8, "images per prompt (seeds 0..n-1)")
    combinations: int = opt(16, "prompts with 2 features, and as many with 3 (0: single "
                                "attributes only)")
    unconditional: int = opt(128, "unconditional samples for the baseline")
    guidance: float = opt(None, "guidance scale; default: the model's (train_ldm --guidance)",
                          type=float)
    sampler: str = opt("ddim", "ddim (eta: --eta), dpm++ (DPM-Solver++(2M)) or ddpm (all T steps)",
                       choices=SAMPLERS)
    steps: int = opt(50, "DDIM or DPM-Solver++ steps")
    eta: float = opt(0.0, "DDIM only: 0 deterministic, 1 DDPM-like noise at every step")
    spacing: str = opt(None, "timesteps of the few-step samplers; default leading for ddim, "
                             "trailing for dpm++", choices=("leading", "trailing"), type=str)
    real_images: int = opt(1000, "at most this many images per set for the Frechet distance "
                                 "(every set is cut to the smallest) and real images for the "
                                 "CLIP score")
    classifier_steps: int = opt(2000, "training steps of the judge when it is not cached")
    retrain_judge: bool = opt(False, "train the judge again even when it is cached (and write "
                                     "over the cached one)")
    batch_size: int = opt(128, "images generated at once")
    out: str = opt("", "output folder; default: CKPT's folder/eval")
    seed: int = opt(0, "seed of the prompt combinations")
    device: str = opt("auto", "auto, cpu, cuda, cuda:N or mps")


# ---- The judge ---------------------------------------------------------------------------------

def train_classifier(train, held_out, steps: int, device, batch_size: int = 64) -> dict:
    """Train the attribute classifier on real images; returns its checkpoint dict."""
    torch.manual_seed(0)
    model = AttributeClassifier(train.attributes.shape[1]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    for step in tqdm(range(steps), desc="training the judge", leave=False):
        indices = torch.randint(0, len(train), (batch_size,), generator=generator)
        batch = train.batch(indices, device)
        x = augment(batch["image"], max_rotation_deg=5.0)
        labels = (batch["attributes"] > 0).float()
        loss = F.binary_cross_entropy_with_logits(model(x), labels)
        for group in optimizer.param_groups:  # cosine decay
            group["lr"] = 2e-3 * 0.5 * (1 + torch.cos(torch.tensor(step / steps * torch.pi)).item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(held_out.batch(torch.arange(i, min(i + 256, len(held_out))),
                                                 device)["image"]).cpu()
                            for i in range(0, len(held_out), 256)])
    labels = torch.from_numpy(held_out.attributes) > 0
    accuracy = ((logits > 0) == labels).float().mean(0)
    return {"kind": "classifier", "model": model.state_dict(), "num_attributes": labels.shape[1],
            "attribute_names": train.attribute_names, "steps": steps,
            "val_accuracy": {name: accuracy[i].item() for i, name in enumerate(train.attribute_names)}}


def cached_judge(path: Path, attribute_names: list[str], steps: int) -> dict | None:
    """The judge cached at `path` when it was trained for these attributes and steps, else None.
    A cache that cannot be read (a torn write, another kind of file) is only a warning: a new
    judge is trained and written over it."""
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path, kind="classifier")
    except CheckpointError as error:
        reason = str(error).removeprefix(f"checkpoint {path}: ")
        warn(f"judge cache {path}: {reason}; training a new one in its place")
        return None
    if state.get("attribute_names") != attribute_names or state.get("steps") != steps:
        return None  # a judge of other attributes or training steps: train the one asked for
    return state


def load_judge(data: str, size: int, cache_dir: Path, steps: int, device,
               retrain: bool = False) -> tuple[AttributeClassifier, dict]:
    train = load_dataset(data, size, split="train", cache_dir=cache_dir)
    if train.attributes is None:
        raise ConfigError(f"the dataset {data} has no attribute labels: evaluate.py judges "
                          "attributes (synthetic faces or CelebA)")
    path = cache_dir / f"classifier-{train.name.replace('/', '_').replace(':', '_')}-{size}px.pt"
    state = None if retrain else cached_judge(path, train.attribute_names, steps)
    if state is None:
        held_out = load_dataset(data, size, split="val", cache_dir=cache_dir)
        started = time.time()
        state = train_classifier(train, held_out, steps, device)
        save_checkpoint(path, state)
        print(f"trained the judge in {time.time() - started:.0f} s, cached in {path}")
    else:
        print(f"judge: {path}")
    model = AttributeClassifier(state["num_attributes"])
    load_weights(model, state["model"], f"judge {path}")
    return model.to(device).eval().requires_grad_(False), state


# ---- Prompts from attribute requirements ----------------------------------------------------------

def single_requirements(names: list[str]) -> list[dict[str, bool]]:
    """One prompt per nameable attribute; No_Beard is asked as "a beard" (No_Beard False), and
    Male both ways ("a man", "a woman")."""
    singles = [{name: name != "No_Beard"} for name in zero_shot_attributes(names)]
    if "Male" in names:
        singles.append({"Male": False})
    return singles


def combined_requirements(rows: torch.Tensor, names: list[str], k: int, count: int,
                          rng: random.Random) -> list[dict[str, bool]]:
    """`count` distinct sets of k features that occur together in real rows (so each is possible)."""
    nameable = set(zero_shot_attributes(names))
    found, tries = [], 0
    while len(found) < count and tries < 100 * count:
        tries += 1
        row = {n: v > 0 for n, v in zip(names, rows[rng.randrange(len(rows))].tolist())}
        options = [(n, v) for n, v in row.items()
                   if n in nameable and (v or n == "Male") and n != "No_Beard"]
        if "No_Beard" in row and not row["No_Beard"]:
            options.append(("No_Beard", False))                      # "with a beard"
        if len(options) >= k:
            chosen = dict(sorted(rng.sample(options, k), key=lambda o: names.index(o[0])))
            if chosen not in found:
                found.append(chosen)
    return found


def prompt_for(requirement: dict[str, bool]) -> str:
    """The full caption of exactly these features: {"Male": True, "Eyeglasses": True} ->
    "a photo of a man with glasses"."""
    return full_caption(requirement)


def judge_rates(probabilities: torch.Tensor, requirement: dict[str, bool],
                names: list[str]) -> torch.Tensor:
    """(N, A) judge probabilities -> (N,) bool: does each image meet every requirement?"""
    right = torch.ones(len(probabilities), dtype=torch.bool)
    for name, wanted in requirement.items():
        right &= (probabilities[:, names.index(name)] > 0.5) == wanted
    return right


# ---- Generation ----------------------------------------------------------------------------------

def generate_all(pipe: TextToImage, prompts: list[str], n: int, guidance: float, scheduler,
                 batch_size: int, desc: str, eta: float = 0.0) -> torch.Tensor:
    """n images per prompt, image j from seed j (as sample.py --seed 0 --n n makes them) ->
    images (P*n, 3, S, S) in [-1, 1], on the CPU. DDPM's stochastic steps draw from seed 0."""
    jobs = [(p, j) for p in prompts for j in range(n)]
    generator = torch.Generator().manual_seed(0)
    images = []
    for start in tqdm(range(0, len(jobs), batch_size), desc=desc, leave=False):
        batch = jobs[start:start + batch_size]
        images.append(generate(pipe, [p for p, _ in batch], [j for _, j in batch], guidance,
                               scheduler, eta=eta, generator=generator).clamp(-1, 1))
    return torch.cat(images)


@torch.no_grad()
def judge(classifier, images: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) -> probabilities (N, A), features (N, F)."""
    probabilities, features = [], []
    for i in range(0, len(images), 256):
        x = images[i:i + 256].to(device)
        f = classifier.features(x)
        features.append(f.cpu())
        probabilities.append(torch.sigmoid(classifier.head(f)).cpu())
    return torch.cat(probabilities), torch.cat(features)


@torch.no_grad()
def clip_image_vectors(clip: TrainedCLIP, images: torch.Tensor, device) -> torch.Tensor:
    """Images (N, 3, S, S) -> unit vectors (N, E) of the project's CLIP, on the CPU."""
    return torch.cat([encode_images(clip.clip, clip.vae, images[i:i + 256].to(device),
                                    clip.scale_factor).float().cpu()
                      for i in range(0, len(images), 256)])


def prompt_diversity(generated: torch.Tensor, meets: torch.Tensor, real_features: torch.Tensor,
                     most: int = 64) -> float:
    """Diversity of one prompt's images: the mean pairwise distance of their judge features (n, F)
    over that of up to `most` real held-out images that meet the same requirement (`meets`, (N,)
    bool by their labels; real_features (N, F), the judge's features of every held-out image),
    evenly spaced among them."""
    indices = meets.nonzero().flatten()
    indices = indices[torch.linspace(0, len(indices) - 1, min(most, len(indices))).round().long()]
    if len(indices) < 2 or len(generated) < 2:
        return float("nan")
    return diversity_ratio(generated, real_features[indices])


def clip_score(clip: TrainedCLIP, images: torch.Tensor, prompts: list[str], device) -> torch.Tensor:
    """(N,) cosine similarity between each image and its prompt in the CLIP space."""
    texts = embed_texts(clip.clip, clip.tokenizer, prompts, device).cpu()
    return (clip_image_vectors(clip, images, device) * texts).sum(-1)


def sampler_from_args(ddpm, args):
    """The sampler of --sampler, --steps and --spacing for a model trained with `ddpm`."""
    try:
        return make_sampler(ddpm, args.sampler, args.steps, args.spacing)
    except ValueError as error:  # a step count the model's schedule does not have
        raise ConfigError(f"--steps {error}") from None


def real_frechet_sets(data: str, size: int, cache_dir: Path, classifier, k: int, device):
    """Judge features of k evenly spaced held-out images and of k training images: the reference
    set and the noise floor's second set (every set of one comparison has the same size k)."""
    sets = {}
    for split in ("val", "train"):
        dataset = load_dataset(data, size, split=split, cache_dir=cache_dir)
        pick = torch.linspace(0, len(dataset) - 1, k).round().long()
        sets[split] = judge(classifier, dataset.batch(pick, "cpu")["image"], device)[1]
    return sets["val"], sets["train"]


def evaluate_pixel_model(args, state: dict, data: str, size: int, cache_dir: Path, out: Path,
                         device, started: float) -> None:
    """Stage 1: are the samples faces? The Frechet distance of --unconditional samples to real
    held-out images, against the noise floor of real training images against the same ones."""
    model, ddpm = pixel_model_from_state(state, device)
    scheduler = sampler_from_args(ddpm, args)
    classifier, judge_state = load_judge(data, size, cache_dir, args.classifier_steps, device,
                                         retrain=args.retrain_judge)
    held_out = load_dataset(data, size, split="val", cache_dir=cache_dir)
    k = min(args.unconditional, args.real_images, len(held_out))
    generator = torch.Generator().manual_seed(0)
    images = []
    for start in tqdm(range(0, k, args.batch_size), desc="samples", leave=False):
        images.append(generate_pixels(model, scheduler, min(args.batch_size, k - start), size,
                                      generator, eta=args.eta if args.sampler == "ddim" else 0.0
                                      ).clamp(-1, 1))
    images = torch.cat(images)
    generated = judge(classifier, images, device)[1]
    real, real_train = real_frechet_sets(data, size, cache_dir, classifier, k, device)
    fd = {"images_per_set": k,
          "generated_vs_real": frechet_distance(*feature_statistics(generated),
                                                *feature_statistics(real)),
          "generated_vs_real_spread": frechet_distance_spread(generated, real),
          "real_train_vs_real_val": frechet_distance(*feature_statistics(real_train),
                                                     *feature_statistics(real))}
    fd["ratio_to_floor"] = fd["generated_vs_real"] / fd["real_train_vs_real_val"]
    report = {"checkpoint": str(args.ckpt), "kind": "ddpm", "step": state["step"],
              "sampler": args.sampler, "steps": None if args.sampler == "ddpm" else args.steps,
              "eta": args.eta if args.sampler == "ddim" else None, "frechet_distance": fd,
              "judge_val_accuracy": judge_state["val_accuracy"],
              "seconds": time.time() - started}
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    save_grid(images[:64], out / "samples.png", nrow=8)
    steps = "all T" if args.sampler == "ddpm" else f"{args.steps}"
    eta = f", eta {args.eta}" if args.sampler == "ddim" else ""
    print(f"\nstage-1 samples ({args.sampler}, {steps} steps{eta}), Frechet distance in the "
          f"judge's features, {k} images per set:\n"
          f"  generated vs real held-out {fd['generated_vs_real']:.3f} (bootstrap sd "
          f"{fd['generated_vs_real_spread']:.3f}); real train vs real held-out "
          f"{fd['real_train_vs_real_val']:.3f} (noise floor); ratio {fd['ratio_to_floor']:.2f}")
    print(f"wrote {out}/eval.json, {out}/samples.png ({time.time() - started:.0f} s)")


@torch.no_grad()
def autoencoder_report(pipe: TextToImage, held_out, classifier, count: int, device) -> dict:
    """[P10] What survives the latents: held-out PSNR of mode reconstructions, and per attribute
    the share of images the judge reads the same way before and after (attribute preservation)."""
    pick = torch.linspace(0, len(held_out) - 1, count).round().long()
    originals, reconstructions = [], []
    for chunk in pick.split(128):
        x = held_out.batch(chunk, device)["image"]
        originals.append(x.cpu())
        reconstructions.append(pipe.vae(x, sample_posterior=False)[0].float().clamp(-1, 1).cpu())
    originals, reconstructions = torch.cat(originals), torch.cat(reconstructions)
    preserved = attribute_preservation(judge(classifier, originals, device)[0],
                                       judge(classifier, reconstructions, device)[0])
    return {"images": count, "psnr": psnr(originals, reconstructions).mean().item(),
            "attribute_preservation": dict(zip(held_out.attribute_names, preserved.tolist()))}


def main():
    args = parse_config(Config, description=__doc__.split("\n\n")[0])
    print("config:\n" + format_config(args))
    require(args.combinations >= 0, f"--combinations {args.combinations}: expected 0 or more")
    for name in ("n", "unconditional", "steps", "real_images", "batch_size", "classifier_steps"):
        require(getattr(args, name) > 0, f"--{name.replace('_', '-')} {getattr(args, name)}: "
                                         "expected a positive number")
    out = Path(args.out) if args.out else Path(args.ckpt).parent / "eval"
    check_output("--out", out)
    device = pick_device(args.device)
    started = time.time()
    try:
        state = load_checkpoint(args.ckpt, kind=("ldm", "ddpm"))
    except CheckpointError as error:
        raise ConfigError(str(error)) from None
    # The data and the judge live in the training cache folder; a relative --cache-dir is read
    # from the current folder, so say which folder that is.
    data_config = state["vae_config"] if state["kind"] == "ldm" else state["config"]
    data, size = data_config["data"], data_config["image_size"]
    cache_dir = Path(data_config["cache_dir"])
    relative = "" if cache_dir.is_absolute() else ", relative to the current folder"
    missing = "" if cache_dir.exists() else ("; it does not exist yet: the data and the judge "
                                             "will be built there")
    script = "train_vae.py" if state["kind"] == "ldm" else "train_unconditional.py"
    print(f"data and judge cache: {cache_dir.resolve()} ({script}'s --cache-dir{relative})"
          f"{missing}")
    if state["kind"] == "ddpm":
        evaluate_pixel_model(args, state, data, size, cache_dir, out, device, started)
        return
    pipe = text_to_image_from_state(state, device)
    require(pipe.text is not None, f"--ckpt {args.ckpt}: an unconditional model (trained "
                                     "without --clip); evaluate.py measures prompt following")
    names = state["attribute_names"]
    require(names is not None, f"--ckpt {args.ckpt}: trained on data without attributes")
    guidance = pipe.config["guidance"] if args.guidance is None else args.guidance
    out.mkdir(parents=True, exist_ok=True)
    classifier, judge_state = load_judge(data, size, cache_dir, args.classifier_steps, device,
                                         retrain=args.retrain_judge)

    # prompts: singles, then pairs and triples seen together in held-out rows
    held_out = load_dataset(data, size, split="val", cache_dir=cache_dir)
    rows = torch.from_numpy(held_out.attributes)
    rng = random.Random(args.seed)
    groups = {"single": single_requirements(names),
              "pair": combined_requirements(rows, names, 2, args.combinations, rng),
              "triple": combined_requirements(rows, names, 3, args.combinations, rng)}
    requirements = [r for group in groups.values() for r in group]
    prompts = [prompt_for(r) for r in requirements]
    steps = "all T" if args.sampler == "ddpm" else args.steps
    print(f"{len(prompts)} prompts x {args.n} seeds, guidance {guidance}, {args.sampler} {steps} "
          f"steps; {args.unconditional} unconditional samples")

    scheduler = sampler_from_args(pipe.scheduler, args)
    sampling_started = time.time()
    eta = args.eta if args.sampler == "ddim" else 0.0
    images = generate_all(pipe, prompts, args.n, guidance, scheduler, args.batch_size, "prompts",
                          eta)
    sampling_seconds = time.time() - sampling_started
    unconditional = generate_all(pipe, [""], args.unconditional, 1.0, scheduler, args.batch_size,
                                 "unconditional", eta)
    probabilities, features = judge(classifier, images, device)
    uncond_probabilities, uncond_features = judge(classifier, unconditional, device)

    # ---- Prompt following -------------------------------------------------------------------
    held_out_features = judge(classifier, held_out.batch(torch.arange(len(held_out)),
                                                          "cpu")["image"], device)[1]  # (N, F)
    results = {"single": [], "pair": [], "triple": []}
    index = 0
    for group, group_requirements in groups.items():
        for requirement in group_requirements:
            right = judge_rates(probabilities[index * args.n:(index + 1) * args.n], requirement,
                                names)
            baseline = judge_rates(uncond_probabilities, requirement, names)
            real = judge_rates(rows.float(), requirement, names)  # labels: the data's own rate
            results[group].append({"prompt": prompts[index], "requirement": requirement,
                                   "accuracy": right.float().mean().item(),
                                   "unconditional": baseline.float().mean().item(),
                                   "data_rate": real.float().mean().item(),
                                   "diversity": prompt_diversity(
                                       features[index * args.n:(index + 1) * args.n], real,
                                       held_out_features)})
            index += 1
    summary = {group: {"accuracy": sum(r["accuracy"] for r in rs) / len(rs),
                       "unconditional": sum(r["unconditional"] for r in rs) / len(rs),
                       "diversity": sum(r["diversity"] for r in rs) / len(rs),
                       "prompts": len(rs)} for group, rs in results.items() if rs}
    autoencoder = autoencoder_report(pipe, held_out, classifier,
                                     min(args.real_images, len(held_out)), device)

    # ---- Frechet distance in the judge's feature space, and the CLIP score ------------------
    # Every set is cut to the same size k (evenly spaced picks): the estimate grows as k shrinks,
    # so distances computed from different sample sizes would not compare.
    train_real = load_dataset(data, size, split="train", cache_dir=cache_dir)
    k = min(len(images), len(unconditional), args.real_images, len(held_out), len(train_real))
    pick = lambda count: torch.linspace(0, count - 1, k).round().long()  # noqa: E731
    real_images = held_out.batch(pick(len(held_out)), "cpu")["image"]
    real_rows = rows[pick(len(held_out))]
    features = {name: judge(classifier, x, device)[1] for name, x in (
        ("real", real_images), ("generated", images[pick(len(images))]),
        ("unconditional", unconditional[pick(len(unconditional))]),
        ("real_train", train_real.batch(pick(len(train_real)), "cpu")["image"]))}
    statistics = {name: feature_statistics(f) for name, f in features.items()}
    fd = {"images_per_set": k,
          "generated_vs_real": frechet_distance(*statistics["generated"], *statistics["real"]),
          # bootstrap standard deviation: how far the distance moves with the draw of images
          "generated_vs_real_spread": frechet_distance_spread(features["generated"],
                                                              features["real"]),
          "unconditional_vs_real": frechet_distance(*statistics["unconditional"],
                                                    *statistics["real"]),
          "real_train_vs_real_val": frechet_distance(*statistics["real_train"], *statistics["real"])}
    clip_path = args.clip or pipe.config["clip"]
    scores = {}
    if clip_path and Path(clip_path).is_file():
        clip = load_clip(clip_path, device)
        per_image_prompts = [p for p in prompts for _ in range(args.n)]
        real_captions = [full_caption({n: v > 0 for n, v in zip(names, r)})
                         for r in real_rows.tolist()]
        scores = {"generated": clip_score(clip, images, per_image_prompts, device).mean().item(),
                  "real_with_own_captions": clip_score(clip, real_images, real_captions,
                                                       device).mean().item(),
                  # every unconditional image against every prompt: what ignoring the text scores
                  "unconditional_with_the_prompts": (
                      clip_image_vectors(clip, unconditional, device)
                      @ embed_texts(clip.clip, clip.tokenizer, prompts, device).cpu().T
                  ).mean().item()}
    else:
        print(f"CLIP score skipped: no CLIP checkpoint at {clip_path!r} (give --clip)")

    report = {"checkpoint": str(args.ckpt), "step": pipe.step, "guidance": guidance,
              "sampler": args.sampler, "steps": None if args.sampler == "ddpm" else args.steps,
              "spacing": None if args.sampler == "ddpm" else scheduler.timestep_spacing,
              "sampling_seconds_prompts": sampling_seconds, "images_per_prompt": args.n, "summary": summary,
              "prompts": results, "frechet_distance": fd, "clip_score": scores,
              "autoencoder": autoencoder,
              "judge_val_accuracy": judge_state["val_accuracy"],
              "seconds": time.time() - started}
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    singles = len(groups["single"])
    save_grid(images[:singles * args.n], out / "prompts.png", nrow=args.n)
    (out / "prompts.txt").write_text("".join(f"row {i}: {p}\n" for i, p in
                                             enumerate(prompts[:singles])))
    print_report(report, names)
    print(f"wrote {out}/eval.json, {out}/prompts.png ({time.time() - started:.0f} s)")


def print_report(report: dict, names: list[str]) -> None:
    steps = "" if report["steps"] is None else f" {report['steps']} steps"
    print(f"\nprompt following at guidance {report['guidance']}, {report['sampler']}{steps} "
          f"({report['images_per_prompt']} images per prompt; judge = attribute classifier):")
    print(f"  {'prompt':58s} {'right':>6s} {'uncond':>6s} {'judge':>6s} {'divers':>6s}")
    for r in report["prompts"]["single"]:
        judge_acc = min(report["judge_val_accuracy"][n] for n in r["requirement"])
        print(f"  {r['prompt'][:58]:58s} {r['accuracy']:6.2f} {r['unconditional']:6.2f} "
              f"{judge_acc:6.2f} {r['diversity']:6.2f}")
    for group, s in report["summary"].items():
        print(f"  {group + ' (mean of ' + str(s['prompts']) + ' prompts)':58s} "
              f"{s['accuracy']:6.2f} {s['unconditional']:6.2f} {'':6s} {s['diversity']:6.2f}")
    print("  (judge: its held-out accuracy on the prompt's attributes, the lowest of them; "
          "divers: diversity, generated over real)")
    ae = report["autoencoder"]
    print(f"autoencoder on {ae['images']} held-out images: PSNR {ae['psnr']:.2f} dB; attribute "
          "preservation (judge's held-out accuracy):")
    for name, kept in ae["attribute_preservation"].items():
        print(f"  {name:18s} {kept:5.3f} ({report['judge_val_accuracy'][name]:.3f})")
    fd = report["frechet_distance"]
    print(f"Frechet distance in the judge's features ({fd['images_per_set']} images per set): "
          f"generated {fd['generated_vs_real']:.3f} (bootstrap sd "
          f"{fd.get('generated_vs_real_spread', float('nan')):.3f}), "
          f"unconditional {fd['unconditional_vs_real']:.3f}, real train vs val "
          f"{fd['real_train_vs_real_val']:.3f} (noise floor)")
    if report["clip_score"]:
        c = report["clip_score"]
        print(f"CLIP score (cosine): generated {c['generated']:.3f}, real images with their "
              f"captions {c['real_with_own_captions']:.3f}, unconditional samples with the same "
              f"prompts {c['unconditional_with_the_prompts']:.3f}")


if __name__ == "__main__":
    main_guard(main)
