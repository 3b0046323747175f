"""Stage 3: a small CLIP on captions made from face attributes (video points 13-15).

[P13] Every training image has a row of attributes; each time it is drawn, the row becomes a new
random caption (data/captions.py). [P14] A word-level tokenizer built from the training captions
turns text into token ids, and a transformer encodes them into one vector per token. [P15] The
image side is the frozen autoencoder's encoder (its latents, cached by train_vae.py) followed by a
small convolutional head. Both sides are projected into one space, and the symmetric
cross-entropy over the N x N similarity matrix pulls each image towards its own caption and away
from the other N - 1 (models/clip.py).

    python train_clip.py --vae runs/vae/checkpoint.pt         # laptop-GPU defaults
    python train_clip.py --preset cpu                         # on runs/vae_cpu, CPU-sized

Held-out evaluation (models/clip_eval.py): zero-shot accuracy per attribute, retrieval top-1 and
top-5 in both directions within batches of 64, and a heatmap of the similarity of 16 pairs.
The checkpoint carries the tokenizer and the autoencoder, so later stages need only this file.

What the defaults need with --precision auto (benchmarks/estimate.py, an estimate until
measured on the device): 6,000 steps of 256 pairs in 0.8 GB, about 0.1 h
on an RTX 4060 Laptop GPU and 0.3 h on an Apple M2 Pro.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from common import (CheckpointError, ConfigError, PRECISION_CHOICES, PRECISION_HELP, load_weights,
                    main_guard, option, parse_config, require, require_positive, seed_everything,
                    to_device)
from data.captions import caption_row, captions_for, full_caption, step_rng
from data.latents import draw_latents, load_latents
from models import CLIP, Tokenizer, build_clip, clip_checkpoint_problem, clip_loss, load_vae
from models.clip_eval import (caption_keys, embed_latents, embed_texts, plot_similarity,
                              plot_zero_shot, retrieval_accuracy, row_dict, zero_shot_accuracy)
from training import (BatchOrder, MetricLogger, Prefetch, StopFlag, due, load_optimizer_state,
                      load_scaler_state, make_adam, optimizer_step, set_lr, start_run, unwrap,
                      warmup_cosine_lr)


@dataclass
class Config:
    # data: the latents train_vae.py cached next to its checkpoint
    vae: str = option("runs/vae/checkpoint.pt", "the trained autoencoder (train_vae.py)")
    vocab_captions: int = option(4, "random captions per training row that build the vocabulary")
    # model [P14] [P15]
    text_width: int = option(256, "D, width of the text encoder's token vectors", fixed=True)
    text_layers: int = option(4, "transformer blocks of the text encoder", fixed=True)
    text_heads: int = option(4, "attention heads per block", fixed=True)
    head_channels: int = option(64, "channels of the image head at the latent resolution", fixed=True)
    head_mult: tuple = option((1, 2, 4), "image head channel multiplier per level (each halves h, w)",
                              fixed=True)
    embed_dim: int = option(256, "E, width of the shared image-text space", fixed=True)
    # optimisation
    steps: int = option(6000, "optimizer steps in total")
    batch_size: int = option(256, "image-caption pairs per step: the N of the N x N matrix (under "
                                  "torchrun each process has its own N / processes x N / processes)")
    lr: float = option(5e-4, "AdamW peak learning rate (warm-up, then cosine decay to 0)")
    warmup_steps: int = option(300, "linear learning-rate warm-up")
    weight_decay: float = option(0.1, "AdamW weight decay on matrices (not on norms, biases, t)")
    precision: str = option("auto", PRECISION_HELP, choices=PRECISION_CHOICES)
    deterministic: bool = option(False, "deterministic kernels only: on a CPU runs repeat bit for "
                                        "bit anyway; on a GPU this trades speed for repeatable "
                                        "results (no TF32, no cudnn autotuning)")
    compile: bool = option(False, "torch.compile the model: faster steps after a first step that "
                                  "compiles (its time is printed); needs a C++ compiler on the CPU")
    # bookkeeping
    out: str = option("runs/clip", "output folder")
    log_every: int = option(50, "steps between metric lines")
    eval_every: int = option(1000, "steps between held-out evaluations")
    eval_images: int = option(2048, "held-out images for zero-shot accuracy and retrieval")
    retrieval_batch: int = option(64, "retrieval is measured within batches of this many pairs")
    ckpt_every: int = option(1000, "steps between checkpoints")
    seed: int = option(0, "random seed")
    device: str = option("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    resume: bool = option(False, "continue from OUT/checkpoint.pt exactly where it stopped")
    overwrite: bool = option(False, "start over in an --out that holds a run: delete its checkpoint, "
                                    "metrics and images first (without it, such an --out is refused)")


PRESETS = {
    "cpu": dict(_doc="a narrow CLIP on the CPU preset's 16x16x3 latents, ~9 min on a 2-core CPU",
                vae="runs/vae_cpu/checkpoint.pt", text_width=128, text_layers=3, text_heads=4,
                head_channels=32, head_mult=(1, 2, 4), embed_dim=128, steps=3000,
                batch_size=128, lr=1e-3, warmup_steps=100, log_every=25, eval_every=1000,
                eval_images=1024, ckpt_every=500, out="runs/clip_cpu"),
}
PRESETS["small"] = PRESETS["cpu"] | dict(
    _doc="on runs/vae_small (your own captioned folder): the cpu preset's CLIP with batches of 64, "
         "which a few hundred images fill",
    vae="runs/vae_small/checkpoint.pt", steps=1000, batch_size=64, eval_every=500,
    eval_images=256, retrieval_batch=32, ckpt_every=250, out="runs/clip_small")


def check_config(cfg: Config) -> None:
    require_positive(cfg, ("steps", "batch_size", "log_every", "eval_every", "eval_images",
                           "retrieval_batch", "ckpt_every", "text_width", "text_layers",
                           "text_heads", "head_channels", "embed_dim", "vocab_captions"))
    require(cfg.lr > 0, f"--lr {cfg.lr}: expected a positive number")
    require(cfg.text_width % cfg.text_heads == 0,
            f"--text-heads {cfg.text_heads}: must divide --text-width {cfg.text_width}")
    require(cfg.head_channels % 32 == 0,
            f"--head-channels {cfg.head_channels}: expected a multiple of 32 (GroupNorm groups)")
    require(cfg.weight_decay >= 0, f"--weight-decay {cfg.weight_decay}: expected 0 or more")
    require(cfg.eval_images >= cfg.retrieval_batch,
            f"--eval-images {cfg.eval_images}: at least --retrieval-batch {cfg.retrieval_batch}")


def build_tokenizer(cache: dict, captions_per_row: int, seed: int) -> Tokenizer:
    """[P14] The vocabulary of the training captions: random captions of every row and its full
    caption (the one evaluation uses), or the dataset's texts."""
    if cache["attributes"] is None:
        if cache["texts"] is None:
            raise ConfigError("the dataset has neither attributes nor captions: a CLIP needs "
                              "text (a CelebA folder, or an image folder with metadata.jsonl)")
        return Tokenizer.build(cache["texts"])
    rng = random.Random(seed)
    names = cache["attribute_names"]
    rows = cache["attributes"].tolist()
    texts = [full_caption(row_dict(names, row)) for row in rows]
    texts += [caption_row(names, row, rng) for row in rows for _ in range(captions_per_row)]
    return Tokenizer.build(texts)


def evaluation_sizes(cfg: Config, held_out: dict) -> tuple[int, int]:
    """(pairs, retrieval batch) that fit the held-out split: --eval-images and --retrieval-batch,
    or the split's size when it is smaller, so a small dataset is evaluated rather than lost."""
    available = len(held_out["mean"])
    if available == 0:
        raise ConfigError(f"--vae {cfg.vae}: its held-out latents (latents_val.pt) are empty; "
                          "expected at least one image in the val split")
    n = min(cfg.eval_images, available)
    return n, min(cfg.retrieval_batch, n)


@torch.no_grad()
def evaluate(clip: CLIP, tokenizer: Tokenizer, cache: dict, scale_factor: float, n: int,
             retrieval_batch: int, device) -> dict:
    """Zero-shot per attribute, and retrieval within batches of retrieval_batch, on the first n
    held-out pairs."""
    clip.eval()
    z = cache["mean"][:n].float() * scale_factor                 # posterior means, unit scale
    image_vectors = embed_latents(clip, z, device)               # (n, E)
    attributes = cache["attributes"][:n] if cache["attributes"] is not None else None
    texts = cache["texts"][:n] if cache["texts"] is not None else None
    keys = caption_keys(attributes, cache["attribute_names"], texts)
    # retrieval uses the full captions (the key texts themselves)
    result = {"retrieval": retrieval_accuracy(image_vectors, embed_texts(clip, tokenizer, keys,
                                                                         device),
                                              keys, batch_size=retrieval_batch)}
    if attributes is not None:
        zero_shot = zero_shot_accuracy(clip, tokenizer, image_vectors, attributes,
                                       cache["attribute_names"])
        result["zero_shot"] = zero_shot
        result["zero_shot_mean"] = sum(r["accuracy"] for r in zero_shot.values()) / len(zero_shot)
        result["zero_shot_min"] = min(r["accuracy"] for r in zero_shot.values())
        result["zero_shot_balanced_mean"] = (sum(r["balanced_accuracy"] for r in zero_shot.values())
                                             / len(zero_shot))
    clip.train()
    return result


def main():
    cfg = parse_config(Config, presets=PRESETS, description=__doc__.split("\n\n")[0])
    check_config(cfg)
    run = start_run(cfg)
    ranks, device = run.ranks, run.device

    # ---- Data: cached latents of the frozen autoencoder, and their attribute rows -------------
    try:
        vae, scale_factor, vae_config = load_vae(cfg.vae)
    except CheckpointError as error:
        raise ConfigError(f"--vae: {error}") from None
    train = load_latents(cfg.vae, "train", scale_factor)
    held_out = load_latents(cfg.vae, "val", scale_factor)
    batch_order = BatchOrder(len(train["mean"]), cfg.batch_size, cfg.seed, ranks.rank,
                           ranks.world_size)
    state = run.resume("clip", check=clip_checkpoint_problem)  # None unless --resume
    tokenizer = (Tokenizer.from_state_dict(state["tokenizer"]) if state else
                 build_tokenizer(train, cfg.vocab_captions, cfg.seed))
    _, C, h, w = train["mean"].shape
    run.print(f"data: {train['data']}, {len(train['mean'])} training and {len(held_out['mean'])} "
              f"held-out latents {C}x{h}x{w} (scale factor {scale_factor:.4f}); vocabulary "
              f"{len(tokenizer)} words, {tokenizer.max_length} tokens per caption")
    eval_images, retrieval_batch = evaluation_sizes(cfg, held_out)
    if retrieval_batch < cfg.retrieval_batch:
        run.print(f"note: the held-out split has {eval_images} pairs, fewer than --retrieval-batch "
                  f"{cfg.retrieval_batch}: retrieval is measured within batches of "
                  f"{retrieval_batch} (chance top-1 is higher)")

    # ---- Model and optimizer -----------------------------------------------------------------
    seed_everything(cfg.seed)
    clip = build_clip(dataclasses.asdict(cfg), tokenizer, vae.latent_channels).to(device)
    decay = [p for name, p in clip.named_parameters() if p.ndim >= 2 and "embedding" not in name]
    no_decay = [p for name, p in clip.named_parameters() if p.ndim < 2 or "embedding" in name]
    optimizer = make_adam(torch.optim.AdamW, [{"params": decay, "weight_decay": cfg.weight_decay},
                                              {"params": no_decay, "weight_decay": 0.0}],
                          lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)  # CLIP's betas, eps
    scaler = run.grad_scaler()
    if state:
        load_weights(clip, state["model"], f"--resume {run.checkpoint_path}")
        load_optimizer_state(optimizer, state["optimizer"])
        if "scaler" in state:  # checkpoints written before fp16 loss scaling came to stage 3
            load_scaler_state(scaler, state["scaler"])
    start_step = run.seed_or_restore(state)
    train_clip = run.wrap(clip)
    def count(module):  # parameters, in millions
        return sum(p.numel() for p in module.parameters()) / 1e6
    run.print(f"CLIP: text encoder {count(clip.text_encoder):.2f}M, image head "
              f"{count(clip.image_head):.2f}M parameters (+ the frozen autoencoder encoder)")

    # ---- Train -------------------------------------------------------------------------------
    # the progress line's utilization: one step's FLOPs, counted on a copy with shapes only
    b, L = cfg.batch_size // ranks.world_size, tokenizer.max_length
    flops = run.flops(lambda model, z, ids, mask: clip_loss(model(z, ids, mask)), [clip],
                      [torch.zeros(b, *train["mean"].shape[1:]),
                       torch.zeros(b, L, dtype=torch.long), torch.ones(b, L, dtype=torch.bool)])
    logger = MetricLogger(run.out, start_step, ranks.is_main, cfg.batch_size, "pairs_per_s", flops)
    stop = StopFlag()
    clock = run.compile_clock()
    clip.train()

    def captions_of(step: int):
        """[P13] A fresh caption for each image of the step's batch, tokenized: a pure function
        of the step, prepared on a background thread while the step before it runs."""
        indices = batch_order(step)
        captions = captions_for(train["attribute_names"], train["attributes"], train["texts"],
                                indices.tolist(), step_rng(cfg.seed, step, ranks.rank))
        return indices, *tokenizer(captions, warn_unknown=False)  # (N,), (N, L), (N, L)
    next_batch = Prefetch(captions_of, start_step, cfg.steps)

    for step in (progress := run.progress(start_step, "train clip")):
        logger.input.start()
        # [P13] N latents z ~ q(z | x), scaled to unit variance, and their captions
        indices, ids, mask = next_batch(step)
        z = to_device(draw_latents(train, indices, scale_factor), device)  # (N, C, h, w)
        ids, mask = to_device(ids, device), to_device(mask, device)  # (N, L) each
        logger.input.stop()
        # [P15] logits (N, N) = exp(t) * cos(image_i, text_j); the pairs sit on the diagonal
        with run.autocast():
            logits = train_clip(z, ids, mask).float()
        loss = clip_loss(logits)
        lr = warmup_cosine_lr(step, cfg.lr, cfg.warmup_steps, cfg.steps)
        set_lr(optimizer, lr)
        scaler.scale(loss).backward()
        optimizer_step(optimizer, scaler)
        clip.clamp_logit_scale_()  # exp(t) <= 100, as in CLIP and open_clip
        labels = torch.arange(len(logits), device=device)
        logger.add(loss=loss, batch_accuracy=(logits.argmax(1) == labels).float().mean(),
                   logit_scale=unwrap(train_clip).scale())
        if clock and (line := clock.tick()) and ranks.is_main:
            progress.write(line)

        # ---- Bookkeeping: log, evaluate, checkpoint, stop --------------------------------------
        done = step + 1
        stopping = run.any_rank(stop.requested)
        saving = due(done, cfg.ckpt_every) or done == cfg.steps or stopping
        if due(done, cfg.log_every) or saving:
            means = logger.write(done, lr=lr)
            progress.set_postfix(loss=f"{means['loss']:.3f}", acc=f"{means['batch_accuracy']:.2f}",
                                 **logger.speed(means))
        if saving:  # before the evaluation: an evaluation that fails loses no training
            run.save(done, "clip", model=clip.state_dict(), optimizer=optimizer.state_dict(),
                     scaler=scaler.state_dict(), tokenizer=tokenizer.state_dict(),
                     vae=vae.state_dict(), vae_config=vae_config, scale_factor=scale_factor,
                     attribute_names=train["attribute_names"])
        if ranks.is_main and (due(done, cfg.eval_every) or done == cfg.steps):
            result = evaluate(clip, tokenizer, held_out, scale_factor, eval_images,
                              retrieval_batch, device)
            retrieval = result["retrieval"]
            scores = {"val_i2t_top1": retrieval["image_to_text_top1"],
                      "val_t2i_top1": retrieval["text_to_image_top1"]}
            if "zero_shot_mean" in result:
                scores.update(val_zero_shot_mean=result["zero_shot_mean"],
                              val_zero_shot_min=result["zero_shot_min"],
                              val_zero_shot_balanced=result["zero_shot_balanced_mean"])
            logger.log(done, **scores)
            progress.write(f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        if saving:
            logger.plot()
        if stopping:
            run.print(f"stopped at step {done}; continue with the same command and --resume")
            break
    progress.close()

    if ranks.is_main and not stop.requested:
        report(clip, tokenizer, vae, held_out, scale_factor, eval_images, retrieval_batch, device,
               run.out)
    run.finish()
    return stop.exit_status  # 128 + the signal's number after Ctrl-C or SIGTERM, else 0


def report(clip, tokenizer, vae, held_out, scale_factor, eval_images: int, retrieval_batch: int,
           device, out: Path) -> None:
    """The final evaluation: a table, eval.json, zero_shot.png and similarity.png."""
    result = evaluate(clip, tokenizer, held_out, scale_factor, eval_images, retrieval_batch,
                      device)
    clip.eval()
    retrieval = result["retrieval"]
    print(f"\nheld-out retrieval within batches of {retrieval_batch} "
          f"({retrieval['pairs']} pairs; right = same set of features; chance top-1 "
          f"{retrieval['chance_top1']:.3f}):")
    for direction in ("image_to_text", "text_to_image"):
        print(f"  {direction.replace('_', ' '):14s} top-1 {retrieval[direction + '_top1']:.3f}  "
              f"top-5 {retrieval[direction + '_top5']:.3f}")
    if "zero_shot" in result:
        print(f"zero-shot attribute accuracy on {eval_images} held-out images "
              "(caption with vs without the attribute):")
        print(f"  {'attribute':18s} {'accuracy':>8s} {'balanced':>8s} {'present':>8s}")
        for name, r in result["zero_shot"].items():
            print(f"  {name:18s} {r['accuracy']:8.3f} {r['balanced_accuracy']:8.3f} "
                  f"{r['present']:8d}")
        print(f"  {'mean':18s} {result['zero_shot_mean']:8.3f} "
              f"{result['zero_shot_balanced_mean']:8.3f}   (lowest accuracy "
              f"{result['zero_shot_min']:.3f})")
        plot_zero_shot(result["zero_shot"], out / "zero_shot.png",
                       title=f"zero-shot attribute accuracy, {eval_images} held-out images")
    # 16 held-out pairs: the images as the autoencoder reconstructs them, and their full captions
    n = min(16, len(held_out["mean"]))
    z = held_out["mean"][:n].float()
    keys = caption_keys(held_out["attributes"][:n] if held_out["attributes"] is not None else None,
                        held_out["attribute_names"],
                        held_out["texts"][:n] if held_out["texts"] is not None else None)
    with torch.no_grad():
        similarity = (embed_latents(clip, z * scale_factor, device)
                      @ embed_texts(clip, tokenizer, keys, device).T)          # (n, n) image x text
        images = vae.to(device).decode(z.to(device)).cpu()
    plot_similarity(similarity.T.cpu(), images, keys, out / "similarity.png",
                    title="cosine similarity of 16 held-out pairs (rows: captions, columns: images)")
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    figures = "zero_shot.png, similarity.png" if "zero_shot" in result else "similarity.png"
    print(f"done: {out}/checkpoint.pt; {out}/eval.json, {figures}, loss.png")


if __name__ == "__main__":
    main_guard(main)
