"""The scaffold every stage script shares: start a run, resume it, stop it, save it, finish it.

    run = start_run(cfg)                         # processes, device, OUT folder; prints the config
    state = resume_state(run, kind="ddpm")       # None unless --resume (the one rule of resuming)
    ...load the weights from state...
    start_step = start_noise(run, state)         # the RNG where the checkpoint left it, or fresh
    stop = StopFlag()                            # Ctrl-C / SIGTERM: save, then leave the loop
    for step in (progress := run.progress(start_step, "train")):
        ...
        run.save(done, "ddpm", model=..., optimizer=...)
    finish_run(run, model)

The one rule of resuming, the same in every stage: the settings marked `fixed=True` in a stage's
Config (the architecture, the noise schedule, the resolution: whatever shapes the weights or what
they mean) must equal the checkpoint's, or the run stops with one line naming the flag and the
checkpoint's value; every other setting (steps, learning rate, logging, device...) may change,
and the changes are listed.
"""

import dataclasses
import shutil
import signal
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from training.checkpoints import load_checkpoint, save_checkpoint
from training.config import flag, format_config, same_value
from training.device import auto_precision
from training.distributed import (Distributed, barrier, cleanup_distributed, gather_rng_states,
                                  replica_difference, rng_state_for_rank, setup_distributed)
from training.errors import ConfigError
from training.folders import check_new_run, check_output, output_folder
from training.randomness import set_rng_state


@dataclasses.dataclass
class Run:
    """A training run: its config, its processes, its device and its output folder."""
    cfg: object
    info: Distributed
    device: torch.device
    out: Path

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def print(self, *args) -> None:
        """print() on the first process only."""
        if self.is_main:
            print(*args)

    def progress(self, start_step: int, desc: str) -> tqdm:
        """The progress bar over the steps still to run (with the time left)."""
        return tqdm(range(start_step, self.cfg.steps), initial=start_step, total=self.cfg.steps,
                    disable=not self.is_main, desc=desc, dynamic_ncols=True)

    def save(self, step: int, kind: str, **state) -> None:
        """Write OUT/checkpoint.pt atomically: {kind, config, step, **state, rng of every rank}.
        Every rank must call it (the RNG states are gathered); only the first one writes."""
        rng = gather_rng_states(self.device, self.info)
        if self.is_main:
            save_checkpoint(self.checkpoint_path, {
                "kind": kind, "config": dataclasses.asdict(self.cfg), "step": step, **state,
                "rng": rng})


def start_run(cfg) -> Run:
    """Join the processes (under torchrun), pick the device, check and create OUT (an existing
    run in it is refused unless --resume or --overwrite), and print the config."""
    info, device = setup_distributed(cfg.device)
    run = Run(cfg, info, device, check_output("--out", cfg.out))  # every rank looks first
    old_files = check_new_run(cfg, run.out)
    barrier(info)  # every rank has looked before the first one deletes or writes anything
    if run.is_main:
        for path in old_files:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if old_files:
            print(f"--overwrite: deleted the previous run's {', '.join(p.name for p in old_files)}")
        output_folder(run.out)
    if getattr(cfg, "precision", None) == "auto":
        cfg.precision, note = auto_precision(device)
        run.print(note)
    if run.is_main:
        print(f"device {device}, {info.world_size} process(es); config:")
        print(format_config(cfg))
    barrier(info)
    return run


def check_resume(cfg, saved: dict, path: Path) -> list[str]:
    """The rule of resuming: ConfigError naming the first `fixed` setting that differs from the
    checkpoint's config `saved`; returns the names of the other settings that differ."""
    changed = []
    for field in dataclasses.fields(cfg):
        if field.name in ("resume", "overwrite") or field.name not in saved:
            continue
        new, old = getattr(cfg, field.name), saved[field.name]
        if same_value(new, old):
            continue
        if field.metadata.get("fixed"):
            show = lambda v: " ".join(map(str, v)) if isinstance(v, (tuple, list)) else v  # noqa: E731
            raise ConfigError(f"{flag(field.name)} {show(new)}: {path} was trained with "
                              f"{flag(field.name)} {show(old)}, which cannot change on --resume "
                              "(give the checkpoint's value, or start a new run in another --out)")
        changed.append(field.name)
    return sorted(changed)


def resume_state(run: Run, kind: str) -> dict | None:
    """With --resume: OUT/checkpoint.pt, checked against this run's config (check_resume)."""
    if not run.cfg.resume:
        return None
    state = load_checkpoint(run.checkpoint_path, kind=kind)
    changed = check_resume(run.cfg, state["config"], run.checkpoint_path)
    if changed:
        run.print(f"resume: these settings differ from the checkpoint's: {', '.join(changed)}")
    return state


def start_noise(run: Run, state: dict | None) -> int:
    """The random generators for training, and the step to start at: the checkpoint's states
    and step when resuming (so the run draws exactly the numbers it would have drawn), else a
    different seed per process (different noise on every rank) and step 0."""
    if state is None:
        torch.manual_seed(run.cfg.seed + run.info.rank)
        return 0
    set_rng_state(rng_state_for_rank(state, run.info), run.device)
    run.print(f"resumed from {run.checkpoint_path} at step {state['step']}")
    return state["step"]


def due(done: int, every: int) -> bool:
    """True every `every` steps (never when every is 0)."""
    return every > 0 and done % every == 0


def finish_run(run: Run, model: torch.nn.Module | None = None, stop=None) -> None:
    """Under torchrun: check that the replicas of `model` agree, and leave the process group.
    A run stopped by a signal (`stop`, a StopFlag) then exits with status 128 + the signal's
    number (130 for Ctrl-C, 143 for SIGTERM), as a stopped program does, not 0 as if finished."""
    if run.info.world_size > 1 and model is not None:
        difference = replica_difference(model, run.info)
        run.print(f"DDP: the weights of the {run.info.world_size} processes differ by at most "
                  f"{difference}")
    cleanup_distributed(run.info)
    if stop is not None and stop.signal is not None:
        sys.exit(128 + stop.signal)


class StopFlag:
    """Ctrl-C or SIGTERM set `requested`; the loop checks it, saves a checkpoint and leaves.
    A second Ctrl-C exits at once."""

    def __init__(self):
        self.requested, self.signal = False, None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt  # main_guard: a quiet exit 130
        self.requested, self.signal = True, signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint, then stopping "
              "(press Ctrl-C again to quit at once)", file=sys.stderr)
