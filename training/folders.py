"""A run that is never overwritten silently (common/paths.py checks that --out can be a folder).

A stage writes its run into --out (checkpoint.pt, metrics.jsonl, loss.png, image grids). Running
a stage again into the same folder without --resume is the likely mistake after a Ctrl-C, and
it would destroy the run: such an --out is refused, naming --resume (continue it) and
--overwrite (start over, deleting the old run's files first, and nothing else in the folder).

Two runs into the same --out at once would interleave their metrics.jsonl and leave whichever
checkpoint was written last, both reporting success: a run holds OUT/run.lock, which names its
process (pid, host, start time), from start_run until it finishes or its process exits (an error,
Ctrl-C). A second run is refused while the holder lives; a lock whose process is gone (killed
with kill -9, a crash, on this host) is taken over with a note. Under torchrun rank 0 holds it.
"""

import atexit
import json
import os
import socket
import time
from pathlib import Path

from common.errors import ConfigError, warn
from common.paths import output_folder
from data.cache import is_running
from training.distributed import Distributed, any_rank

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


LOCK_NAME = "run.lock"  # in OUT while a run writes there: {"pid", "host", "started"}
held_locks: set[Path] = set()  # the locks this process took and has not released


def lock_run(out: Path, ranks: Distributed) -> None:
    """One run per --out at a time: rank 0 creates OUT and takes OUT/run.lock (take_lock); every
    rank raises the refusal, so that no rank waits for the others at the next barrier."""
    refusal = take_lock(output_folder(out) / LOCK_NAME) if ranks.is_main else None
    if any_rank(refusal is not None, ranks):
        raise ConfigError(refusal or f"--out {out}: in use by another run (the first process "
                                     "names it)")


def take_lock(path: Path) -> str | None:
    """Create the lock file `path` naming this process, or return why not (one line naming the
    folder and the holder). A lock of a process that is gone (same host) is taken over with a
    note; one this process took itself (a run that ended in an error, then main() called again
    in the same process) is taken again."""
    out = path.parent
    for _ in range(2):
        created = False
        try:
            with open(path, "x") as f:  # created only if absent: of two runs starting, one wins
                created = True
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
        except FileExistsError:
            holder = read_lock(path)
        except OSError as error:  # a full disk, a folder that takes no file
            if created:
                path.unlink(missing_ok=True)  # not left behind empty, refusing every later run
            raise ConfigError(f"--out {out}: cannot write {path} ({error.strerror})") from None
        else:
            if not held_locks:
                atexit.register(release_all)
            held_locks.add(path)
            return None
        if holder == {}:  # released just now: try again
            continue
        if holder is None:
            return (f"--out {out}: in use by another run ({path} is there but names no process); "
                    f"if no run is writing to this folder, delete {path}")
        pid, host, started = holder.get("pid"), holder.get("host"), holder.get("started")
        if path in held_locks and pid == os.getpid():
            return None
        if host != socket.gethostname():
            return (f"--out {out}: in use by another run (pid {pid} on {host}, started {started}; "
                    f"{path}); if that run is over, delete {path}")
        if os.name != "posix" or is_running(pid):  # (Windows: no safe check, so never stale)
            return (f"--out {out}: in use by another run (pid {pid} on {host}, started {started}); "
                    f"wait for it to finish or give another --out (if no run writes there, delete "
                    f"{path})")
        warn(f"--out {out}: taking over the lock of a run that is gone (pid {pid}, started "
             f"{started}: no such process; killed?)")
        path.unlink(missing_ok=True)  # then created anew above: of two takers, one wins
    return f"--out {out}: in use by another run ({path} was taken by another process just now)"


def read_lock(path: Path) -> dict | None:
    """The holder a lock file names, {} if it vanished meanwhile, None if it cannot be read."""
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def release_lock(out: Path) -> None:
    """Delete OUT/run.lock if this process holds it (the end of a run; a no-op otherwise)."""
    path = out / LOCK_NAME
    if path in held_locks:
        held_locks.discard(path)
        if (read_lock(path) or {}).get("pid") == os.getpid():  # not one a later run took over
            path.unlink(missing_ok=True)


def release_all() -> None:
    """At exit (after an error or Ctrl-C too): release every lock this process still holds."""
    for path in list(held_locks):
        release_lock(path.parent)
