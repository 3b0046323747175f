"""Write the results page of a `make demo` run: RUN/README.md with every stage's grids, curves
and scores, read from the files the stage scripts wrote.

    python -m docs.demo_page --run runs/demo

RUN/timings.txt (written by the Makefile) holds one "stage seconds" line per stage.
"""

import argparse
import json
from pathlib import Path


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def last_metric(run: Path, name: str) -> float | None:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    values = [row[name] for row in map(json.loads, path.read_text().splitlines()) if name in row]
    return values[-1] if values else None


def image(path: Path, root: Path, alt: str) -> str:
    return f"![{alt}]({path.relative_to(root).as_posix()})" if path.is_file() else f"({alt}: missing)"


def latest(folder: Path) -> Path:
    files = sorted(folder.glob("step_*.png"))
    return files[-1] if files else folder / "missing.png"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/demo", help="the demo's output folder")
    args = parser.parse_args(argv)
    root = Path(args.run)
    lines = ["# Demo results", ""]

    timings = {}
    if (root / "timings.txt").is_file():
        for line in (root / "timings.txt").read_text().splitlines():
            stage, seconds = line.rsplit(" ", 1)
            timings[stage] = float(seconds)
    if timings:
        lines += ["| stage | wall time |", "|---|---|"]
        lines += [f"| {stage} | {seconds / 60:.1f} min |" for stage, seconds in timings.items()]
        lines += [f"| **total** | **{sum(timings.values()) / 60:.1f} min** |", ""]

    lines += ["## Stage 1: pixel-space DDPM (points 1-8)", "",
              image(root / "unconditional_samples.png", root, "unconditional samples"), ""]
    pixel = read_json(root / "unconditional" / "eval" / "eval.json")
    if pixel:
        fd = pixel["frechet_distance"]
        lines += [f"Frechet distance of {fd['images_per_set']} samples to as many real held-out "
                  f"images, in the judge's features: {fd['generated_vs_real']:.3f} (bootstrap sd "
                  f"{fd['generated_vs_real_spread']:.3f}), against {fd['real_train_vs_real_val']:.3f}"
                  f" for real training images (the noise floor): {fd['ratio_to_floor']:.1f}x the "
                  "floor (evaluate.py).", ""]
    lines += [image(root / "unconditional" / "loss.png", root, "stage 1 loss"), ""]

    vae = root / "vae"
    psnr, ssim = last_metric(vae, "val_psnr"), last_metric(vae, "val_ssim")
    lines += ["## Stage 2: the autoencoder (points 9-11)", ""]
    if psnr is not None:
        lines += [f"Held-out PSNR {psnr:.2f} dB, SSIM {ssim:.3f} (inputs above reconstructions).", ""]
    lines += [image(latest(vae / "reconstructions"), root, "reconstructions"), ""]
    evaluation = read_json(root / "ldm" / "eval" / "eval.json")
    if evaluation and "autoencoder" in evaluation:
        ae, accuracy = evaluation["autoencoder"], evaluation["judge_val_accuracy"]
        lines += [f"Attribute preservation on {ae['images']} held-out images (evaluate.py): the "
                  "share whose reconstruction the judge reads as it reads the original, next to "
                  "the judge's own held-out accuracy.", "",
                  "| attribute | preserved | judge accuracy |", "|---|---|---|"]
        lines += [f"| {name} | {kept:.3f} | {accuracy[name]:.3f} |"
                  for name, kept in ae["attribute_preservation"].items()]
        lines += [""]

    clip = read_json(root / "clip" / "eval.json")
    lines += ["## Stage 3: CLIP (points 13-15)", ""]
    if clip:
        r = clip["retrieval"]
        lines += [f"Held-out retrieval within batches of 64: image to text top-1 "
                  f"{r['image_to_text_top1']:.3f} (top-5 {r['image_to_text_top5']:.3f}), text to "
                  f"image top-1 {r['text_to_image_top1']:.3f} (chance {r['chance_top1']:.3f}).", ""]
        if "zero_shot" in clip:
            lines += ["| attribute | zero-shot accuracy | balanced |", "|---|---|---|"]
            lines += [f"| {name} | {z['accuracy']:.3f} | {z['balanced_accuracy']:.3f} |"
                      for name, z in clip["zero_shot"].items()]
            lines += [""]
    lines += [image(root / "clip" / "similarity.png", root, "similarity of 16 held-out pairs"), ""]

    lines += ["## Stage 4: text-to-image latent diffusion (points 12, 16)", "",
              image(root / "prompts.png", root, "samples for the demo prompts"), ""]
    if (root / "prompts.txt").is_file():
        lines += ["Rows, top to bottom: " + "; ".join(
            p for p in (root / "prompts.txt").read_text().splitlines() if p), ""]
    lines += [image(root / "prompts_attention.png", root, "cross-attention per word"), ""]
    if evaluation:
        sampler = evaluation.get("sampler")
        how = f", {sampler} {evaluation.get('steps')} steps" if sampler else ""
        lines += [f"evaluate.py at guidance {evaluation['guidance']}{how} ({evaluation['images_per_prompt']}"
                  " images per prompt; right = the attribute classifier sees every requirement):", "",
                  "| prompts | right | unconditional baseline | diversity |", "|---|---|---|---|"]
        lines += [f"| {group} ({s['prompts']}) | {s['accuracy']:.2f} | {s['unconditional']:.2f} "
                  f"| {s.get('diversity', float('nan')):.2f} |"
                  for group, s in evaluation["summary"].items()]
        accuracy = evaluation["judge_val_accuracy"]
        lines += ["", "| single-attribute prompt | right | unconditional | diversity | judge "
                      "accuracy |", "|---|---|---|---|---|"]
        lines += [f"| {r['prompt']} | {r['accuracy']:.2f} | {r['unconditional']:.2f} | "
                  f"{r.get('diversity', float('nan')):.2f} | "
                  f"{min(accuracy[n] for n in r['requirement']):.3f} |"
                  for r in evaluation["prompts"]["single"]]
        lines += ["", "Diversity: the mean pairwise distance of a prompt's images in the judge's "
                      "features over that of real held-out images with the same attributes "
                      "(1 = as varied as real faces)."]
        fd = evaluation["frechet_distance"]
        lines += ["", f"Frechet distance in the classifier's features: generated "
                      f"{fd['generated_vs_real']:.3f}, unconditional {fd['unconditional_vs_real']:.3f},"
                      f" real vs real {fd['real_train_vs_real_val']:.3f}."]
        if evaluation["clip_score"]:
            c = evaluation["clip_score"]
            lines += [f"CLIP score: generated {c['generated']:.3f}, real images with their captions "
                      f"{c['real_with_own_captions']:.3f}."]
        lines += ["", image(root / "ldm" / "eval" / "prompts.png", root,
                            "one row per single-attribute prompt"), ""]
    lines += ["## Loss curves", ""]
    for stage in ("unconditional", "vae", "clip", "ldm"):
        lines += [f"{stage}:", "", image(root / stage / "loss.png", root, f"{stage} loss"), ""]
    (root / "README.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {root / 'README.md'}")


if __name__ == "__main__":
    main()
