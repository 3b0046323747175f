"""Output folders: a path that can be one, and a run that is never overwritten silently.

A stage writes its run into --out (checkpoint.pt, metrics.jsonl, loss.png, image grids). Running
a stage again into the same folder without --resume is the likely mistake after a Ctrl-C, and
it would destroy the run: such an --out is refused, naming --resume (continue it) and
--overwrite (start over, deleting the old run's files first, and nothing else in the folder).
"""

import os
from pathlib import Path

from training.errors import ConfigError

# What the stages, sample grids and evaluations write into a run's folder: --overwrite deletes
# these (and nothing else) before a new run starts there.
RUN_FILES = ("checkpoint.pt", "checkpoint.pt.tmp", "metrics.jsonl", "loss.png", "samples",
             "reconstructions", "latents_train.pt", "latents_val.pt", "eval.json", "zero_shot.png",
             "similarity.png", "eval")


def check_output(flag: str, path: str | Path, folder: bool = True,
                 extensions: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output that could not be written: `path` must be (or become)
    a folder when `folder`, else a file with one of `extensions` (an image PIL writes). One
    ConfigError line naming the flag, the path and what is expected."""
    path = Path(path)
    expected = "a folder" if folder else f"an image file ({' '.join(extensions)})"
    there = next(p for p in (path, *path.parents) if p.exists())  # the part that exists already
    if there == path and path.is_dir() != folder:
        raise ConfigError(f"{flag} {path}: is a {'file' if folder else 'folder'}; "
                          f"expected {expected}")
    if there != path and not there.is_dir():
        raise ConfigError(f"{flag} {path}: {there} is a file; expected a folder there")
    if not folder and path.suffix.lower() not in extensions:
        found = f"extension {path.suffix}" if path.suffix else "no extension"
        raise ConfigError(f"{flag} {path}: {found}; expected {expected}")
    if not os.access(there, os.W_OK):
        raise ConfigError(f"{flag} {path}: {there} is not writable")
    return path


def output_folder(path: str | Path, name: str = "--out") -> Path:
    """Create the folder `path` (and its parents), once check_output has passed it; a
    ConfigError if the file system still refuses."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{name} {path}: cannot create the folder ({error.strerror})") from None
    return path


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
