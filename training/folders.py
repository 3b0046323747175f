"""A run that is never overwritten silently (common/paths.py checks that --out can be a folder).

A stage writes its run into --out (checkpoint.pt, metrics.jsonl, loss.png, image grids). Running
a stage again into the same folder without --resume is the likely mistake after a Ctrl-C, and
it would destroy the run: such an --out is refused, naming --resume (continue it) and
--overwrite (start over, deleting the old run's files first, and nothing else in the folder).
"""

from pathlib import Path

from common.errors import ConfigError

# What the stages, sample grids and evaluations write into a run's folder: --overwrite deletes
# these (and nothing else) before a new run starts there.
RUN_FILES = ("checkpoint.pt", "checkpoint.pt.tmp", "metrics.jsonl", "loss.png", "samples",
             "reconstructions", "latents_train.pt", "latents_val.pt", "eval.json", "zero_shot.png",
             "similarity.png", "eval")


def check_new_run(cfg, out: Path) -> list[Path]:
    """A new run (no --resume) never overwrites an old one silently: an --out that holds a run
    is refused unless --overwrite says to start over. Returns the old run's files to delete."""
    if cfg.resume:
        if cfg.overwrite:
            raise ConfigError("--resume and --overwrite: expected one of them (continue the run "
                              "in --out, or start over)")
        return []
    old = [out / name for name in RUN_FILES if (out / name).exists()]
    if old and not cfg.overwrite and any(p.name in ("checkpoint.pt", "metrics.jsonl") for p in old):
        raise ConfigError(f"--out {out}: holds a run already ({', '.join(p.name for p in old[:3])}"
                          f"{' ...' if len(old) > 3 else ''}); continue it with --resume, or "
                          "start over with --overwrite (which deletes that run's files)")
    return old if cfg.overwrite else []
