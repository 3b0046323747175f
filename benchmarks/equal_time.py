"""Equal CPU-minutes: train a stage for the same wall-clock seconds per setting, score every
setting with evaluate.py at fixed seeds, and print one table (docs/equal-time.md keeps the
measured one).

    python benchmarks/equal_time.py --stage 1 --seconds 75 --seeds 0 1
    python benchmarks/equal_time.py --stage 4 --seconds 250 \
        --vae runs/demo/vae/checkpoint.pt --clip runs/demo/clip/checkpoint.pt

A setting is a list of training flags on top of the demo's recipe for the stage (the Makefile's
flags, repeated here because a benchmark does not import a script). For each setting and seed:
1. a probe of PROBE_STEPS steps measures its images per second on this machine, at this moment;
2. the setting trains for steps = seconds * images_per_s / batch_size, with cosine decay to 0 at
   its last step, so every setting gets the same seconds and ends its schedule;
3. each of its evaluation variants (an EMA length, a sampler, a guidance interval) is scored by
   evaluate.py on that one checkpoint: stage 1 by its Frechet distance over the noise floor,
   stage 4 by prompt following.
Results go to OUT/results.json as they come (a second run skips what is there) and OUT/table.md.
Time only on a quiet machine: anything else running changes the steps a setting gets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE_STEPS = 12

# The demo's recipe per stage (Makefile, `make demo`), without --steps, --seed and --out.
RECIPES = {
    1: ["train_unconditional.py", "--preset", "cpu", "--lr-schedule", "cosine",
        "--sample-every", "0", "--num-samples", "16"],
    4: ["train_ldm.py", "--preset", "cpu", "--lr-schedule", "cosine", "--sample-every", "0"],
}
BATCH = {1: 32, 4: 64}  # the cpu presets' --batch-size, unless a setting gives its own
EVALUATIONS = {  # evaluate.py's flags of `make demo`, without --ckpt
    1: ["--unconditional", "256", "--steps", "25", "--classifier-steps", "1000"],
    4: ["--n", "8", "--combinations", "8", "--unconditional", "64", "--steps", "25",
        "--classifier-steps", "1000"],
}
# Each sampling path's flags: DDPM's few-step sampler as the demo uses it, or Euler for flow.
SAMPLER = {(1, "ddpm"): ["--eta", "1"], (4, "ddpm"): [],
           (1, "flow"): ["--sampler", "euler"], (4, "flow"): ["--sampler", "euler"]}
# Kynkaenniemi et al. 2024 guide at EDM sigma in (0.28, 5.42]; as noise levels (docs/
# guidance-interval.md) that is about 0.08..0.58 on DDPM's linear schedule (alpha_bar = 1 /
# (1 + sigma^2)) and 0.22..0.84 on the flow path (sigma = t / (1 - t)).
INTERVAL = {"ddpm": ["--guidance-interval", "0.08", "0.58"],
            "flow": ["--guidance-interval", "0.22", "0.84"]}
LENGTHS = ["--ema-lengths", "0.1", "0.05", "0.2"]  # stage 1: three lengths, the first samples
POWER = {f"EMA sigma_rel {s}": ["--ema-length", s] for s in LENGTHS[1:]}
LENGTHS4 = ["--ema-lengths", "0.1", "0.2"]  # stage 4: two (an evaluation takes about a minute)
POWER4 = {f"EMA sigma_rel {s}": ["--ema-length", s] for s in LENGTHS4[1:]}

# name -> (training flags, {variant: evaluate.py flags})
SETTINGS = {
    1: {
        "ddpm, EMA 0.995 (demo)": ([], {"": []}),
        "ddpm, power EMA": (LENGTHS, POWER),
        "flow, power EMA": (["--objective", "flow", *LENGTHS], POWER),
        "ddpm, power EMA, lr 2e-3": (["--lr", "2e-3", *LENGTHS], POWER),
        "flow, power EMA, lr 2e-3": (["--objective", "flow", "--lr", "2e-3", *LENGTHS], POWER),
        "ddpm, power EMA, batch 64": (["--batch-size", "64", *LENGTHS], POWER),
        "ddpm v-prediction, cosine schedule, power EMA": (
            ["--prediction-type", "v", "--beta-schedule", "cosine", *LENGTHS], POWER),
    },
    4: {
        "ddpm, EMA 0.995 (demo)": ([], {"": [], "guidance interval": INTERVAL["ddpm"]}),
        "ddpm, power EMA": (LENGTHS4, POWER4 | {"EMA sigma_rel 0.1, guidance interval":
                                                POWER4["EMA sigma_rel 0.1"] + INTERVAL["ddpm"]}),
        "flow, power EMA": (["--objective", "flow", *LENGTHS4],
                            POWER4 | {"EMA sigma_rel 0.1, guidance interval":
                                      POWER4["EMA sigma_rel 0.1"] + INTERVAL["flow"]}),
    },
}


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").replace("--", "-")


def python(args: list[str], log: Path) -> float:
    """Run `python ARGS` in the repository, its output in `log`; its wall seconds."""
    started = time.time()
    with log.open("w") as file:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=file,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(args)} failed (exit {done.returncode}); see {log}")
    return time.time() - started


def flag_value(args: list[str], name: str, default):
    return type(default)(args[args.index(name) + 1]) if name in args else default


def images_per_second(command: list[str], folder: Path) -> float:
    """The throughput of the last logging window of a PROBE_STEPS-step run of `command`."""
    python([*command, "--steps", str(PROBE_STEPS), "--log-every", str(PROBE_STEPS // 2),
            "--warmup-steps", "1", "--overwrite", "--out", str(folder)], folder.with_suffix(".log"))
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return next(value for name, value in rows[-1].items() if name.endswith("_per_s"))


def scores(stage: int, report: dict) -> dict:
    """The numbers of the table from evaluate.py's eval.json."""
    if stage == 1:
        return {"frechet_over_floor": report["frechet_distance"]["ratio_to_floor"]}
    summary, singles = report["summary"], report["prompts"]["single"]
    return {"single": summary["single"]["accuracy"], "pair": summary["pair"]["accuracy"],
            "triple": summary["triple"]["accuracy"],
            "worst_single": min(r["accuracy"] for r in singles),
            "singles_not_above_unconditional": sum(r["accuracy"] <= r["unconditional"]
                                                   for r in singles),
            "diversity": summary["single"]["diversity"]}


def table(stage: int, results: dict) -> str:
    """One row per (setting, variant): the mean over seeds, and min..max when there are several."""
    rows = {}
    for entry in results.values():
        rows.setdefault((entry["setting"], entry["variant"]), []).append(entry)
    columns = list(next(iter(results.values()))["scores"])
    lines = ["| setting | evaluation | seeds | steps | " + " | ".join(columns) + " |",
             "|---|---|---|---|" + "---|" * len(columns)]
    for (setting, variant), entries in rows.items():
        cells = []
        for column in columns:
            values = [e["scores"][column] for e in entries]
            cell = f"{statistics.mean(values):.3f}"
            if len(values) > 1:
                cell += f" ({min(values):.3f}..{max(values):.3f})"
            cells.append(cell)
        steps = "/".join(str(e["steps"]) for e in entries)
        lines.append(f"| {setting} | {variant or 'default'} | {len(entries)} | {steps} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", type=int, choices=(1, 4), required=True)
    parser.add_argument("--seconds", type=float, required=True,
                        help="training seconds per setting (the demo: about 75 for stage 1, "
                             "250 for stage 4 on a 2-core CPU)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="*", default=None, help="run only these settings")
    parser.add_argument("--vae", default="runs/demo/vae/checkpoint.pt", help="stage 4's autoencoder")
    parser.add_argument("--clip", default="runs/demo/clip/checkpoint.pt", help="stage 4's CLIP")
    parser.add_argument("--judge-dir", default="", help="evaluate.py --judge-dir")
    parser.add_argument("--out", default=None, help="default: runs/equal_time/stageN")
    args = parser.parse_args()

    out = Path(args.out or f"runs/equal_time/stage{args.stage}")
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    recipe = list(RECIPES[args.stage])
    if args.stage == 4:
        for path in (args.vae, args.clip):
            if not Path(path).is_file():
                raise SystemExit(f"error: {path}: no such checkpoint (stage 4 needs the demo's "
                                 "autoencoder and CLIP: --vae, --clip)")
        recipe += ["--vae", args.vae, "--clip", args.clip]
    evaluation = EVALUATIONS[args.stage] + (["--judge-dir", args.judge_dir] if args.judge_dir else [])

    for name, (flags, variants) in SETTINGS[args.stage].items():
        if args.only is not None and name not in args.only:
            continue
        objective = flag_value(flags, "--objective", "ddpm")
        batch = flag_value(flags, "--batch-size", BATCH[args.stage])
        for seed in args.seeds:
            keys = {variant: f"{name} | {variant} | seed {seed}" for variant in variants}
            if all(key in results for key in keys.values()):
                continue
            folder = out / f"{slug(name)}-seed{seed}"
            command = [*recipe, *flags, "--seed", str(seed)]
            rate = images_per_second(command, folder.with_name(folder.name + "-probe"))
            steps = max(1, round(args.seconds * rate / batch))
            print(f"{name}, seed {seed}: {rate:.1f} images/s -> {steps} steps", flush=True)
            seconds = python([*command, "--steps", str(steps), "--overwrite", "--out",
                              str(folder)], folder.with_suffix(".log"))
            for variant, variant_flags in variants.items():
                eval_out = folder / f"eval-{slug(variant) or 'default'}"
                python(["evaluate.py", "--ckpt", str(folder / "checkpoint.pt"), *evaluation,
                        *SAMPLER[(args.stage, objective)], *variant_flags, "--out", str(eval_out)],
                       eval_out.with_suffix(".log"))
                report = json.loads((eval_out / "eval.json").read_text())
                results[keys[variant]] = {"setting": name, "variant": variant, "seed": seed,
                                          "steps": steps, "train_seconds": round(seconds, 1),
                                          "images_per_s": round(rate, 1),
                                          "scores": scores(args.stage, report)}
                results_path.write_text(json.dumps(results, indent=1))
                print(f"  {variant or 'default'}: {results[keys[variant]]['scores']}", flush=True)

    text = table(args.stage, results)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
