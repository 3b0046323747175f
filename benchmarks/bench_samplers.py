"""Sampling quality against steps: DDPM-1000, DDIM and DPM-Solver++ on one text-to-image model.

    python benchmarks/bench_samplers.py --ckpt runs/ldm_cpu/checkpoint.pt

Runs evaluate.py once per sampler setting (the same prompts, seeds, guidance and judge) and prints
one table: network evaluations per image, seconds per image, single-attribute prompt accuracy,
the rate over all prompts, and the Frechet distance to real images in the judge's features with
its bootstrap standard deviation (how much it moves with the draw of images).
Classifier-free guidance makes each step two network evaluations.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [("ddpm", 1000, None), ("ddim", 50, "leading"), ("ddim", 20, "trailing"),
            ("dpm++", 20, "trailing"), ("dpm++", 10, "trailing")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default="runs/ldm_cpu/checkpoint.pt")
    parser.add_argument("--n", type=int, default=8, help="images per prompt")
    parser.add_argument("--combinations", type=int, default=0, help="pair and triple prompts")
    parser.add_argument("--unconditional", type=int, default=128)
    parser.add_argument("--out", default=None, help="default: CKPT's folder/samplers")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(args.ckpt).parent / "samplers"
    rows = []
    for sampler, steps, spacing in SETTINGS:
        folder = out / f"{sampler}_{steps}"
        command = [sys.executable, str(ROOT / "evaluate.py"), "--ckpt", args.ckpt, "--n", str(args.n),
                   "--combinations", str(args.combinations), "--unconditional",
                   str(args.unconditional), "--sampler", sampler, "--steps", str(steps),
                   "--device", args.device, "--out", str(folder)]
        if spacing:
            command += ["--spacing", spacing]
        print(" ".join(command[1:]), flush=True)
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        report = json.loads((folder / "eval.json").read_text())
        images = sum(s["prompts"] for s in report["summary"].values()) * report["images_per_prompt"]
        overall = sum(s["accuracy"] * s["prompts"] for s in report["summary"].values()) / sum(
            s["prompts"] for s in report["summary"].values())
        rows.append((f"{sampler} {steps}" + (f" ({spacing})" if spacing else ""),
                     steps * (2 if report["guidance"] != 1 else 1),
                     report["sampling_seconds_prompts"] / images,
                     report["summary"]["single"]["accuracy"], overall,
                     report["frechet_distance"]["generated_vs_real"],
                     report["frechet_distance"]["generated_vs_real_spread"],
                     report["frechet_distance"]["real_train_vs_real_val"]))
    images = report["frechet_distance"]["images_per_set"]
    print(f"\n{args.ckpt}, guidance {report['guidance']}, {args.n} images per prompt, "
          f"Frechet distances on {images} images per set (+- the bootstrap standard deviation)")
    print("| sampler | network evals / image | s / image | speed-up over the first row "
          "| single-attribute accuracy | all prompts | Frechet distance | real vs real |")
    print("|---|---|---|---|---|---|---|---|")
    for name, nfe, seconds, single, overall, fd, spread, floor in rows:
        print(f"| {name} | {nfe} | {seconds:.3f} | {rows[0][2] / seconds:.1f}x | {single:.3f} "
              f"| {overall:.3f} | {fd:.1f} +- {spread:.1f} | {floor:.1f} |")


if __name__ == "__main__":
    main()
