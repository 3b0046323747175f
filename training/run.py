"""The scaffold every stage script shares: start a run, resume it, stop it, save it, finish it.

    run = start_run(cfg)                         # processes, device, OUT folder; prints the config
    state = run.resume("ddpm")                   # None unless --resume (the one rule of resuming)
    ...load the weights from state...
    start_step = run.seed_or_restore(state)      # the RNG where the checkpoint left it, or fresh
    stop = StopFlag()                            # Ctrl-C / SIGTERM: save, then leave the loop
    for step in (progress := run.progress(start_step, "train")):
        ...
        run.save(done, "ddpm", model=..., optimizer=...)
    run.finish(model)                            # DDP: the replicas agree; leave the group
    return stop.exit_status                      # 130 after Ctrl-C, 143 after SIGTERM, else 0

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

from common.checkpoints import entries_problem, load_checkpoint, save_checkpoint
from common.config import flag, format_config, same_value, shown
from common.device import auto_precision, autocast, configure_backends, make_grad_scaler
from common.errors import CheckpointError, ConfigError
from common.paths import check_output, output_folder
from common.randomness import check_seed, rng_state_problem, set_rng_state
from training.distributed import (Distributed, any_rank, barrier, cleanup_distributed,
                                  gather_rng_states, main_process_first, replica_difference,
                                  rng_state_for_rank, setup_distributed, wrap_ddp)
from training.folders import check_new_run, lock_run, release_lock
from training.speed import CompileClock, device_peak, maybe_compile, step_flops


@dataclasses.dataclass
class Run:
    """A training run: its config, its processes, its device and its output folder."""
    cfg: object
    ranks: Distributed
    device: torch.device
    out: Path

    @property
    def is_main(self) -> bool:
        return self.ranks.is_main

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

    # ---- resuming and finishing --------------------------------------------------------------

    def resume(self, kind: str, check=None) -> dict | None:
        """With --resume: OUT/checkpoint.pt (`check` as load_checkpoint's, and what training
        needs besides: resume_problem), checked against this run's config (check_resume); None
        for a new run."""
        if not self.cfg.resume:
            return None
        try:
            state = load_checkpoint(self.checkpoint_path, kind=kind, check=lambda state: (
                (check(state) if check is not None else None) or resume_problem(state)))
        except CheckpointError as error:
            raise CheckpointError(f"--resume: {error}") from None
        changed = check_resume(self.cfg, state["config"], self.checkpoint_path)
        if changed:
            self.print(f"resume: these settings differ from the checkpoint's: {', '.join(changed)}")
        return state

    def seed_or_restore(self, state: dict | None) -> int:
        """Seed the random generators for training, or restore them, and return the step to
        start at: the checkpoint's states and step when resuming (so the run draws exactly the
        numbers it would have drawn), else a different seed per process (different noise on
        every rank) and step 0."""
        if state is None:
            torch.manual_seed(self.cfg.seed + self.ranks.rank)
            return 0
        set_rng_state(rng_state_for_rank(state, self.ranks), self.device)
        self.print(f"resumed from {self.checkpoint_path} at step {state['step']}")
        return state["step"]

    def finish(self, model: torch.nn.Module | None = None) -> None:
        """Under torchrun: check that the replicas of `model` agree, and leave the process group.
        Release OUT/run.lock (an error or Ctrl-C releases it when the process exits)."""
        if self.ranks.world_size > 1 and model is not None:
            difference = replica_difference(model, self.ranks)
            self.print(f"DDP: the weights of the {self.ranks.world_size} processes differ by at "
                       f"most {difference}")
        cleanup_distributed(self.ranks)
        release_lock(self.out)  # OUT/run.lock, taken by start_run

    # ---- what a stage's loop asks of its device and processes ---------------------------------

    def autocast(self):
        """The forward pass's mixed-precision context for --precision (fp32: none)."""
        return autocast(self.device, self.cfg.precision)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 loss scaling on CUDA and MPS (torch 2.8+); a no-op otherwise (common/device.py)."""
        return make_grad_scaler(self.device, self.cfg.precision)

    def wrap(self, model: torch.nn.Module, compile: bool = True) -> torch.nn.Module:
        """The model the loop calls: DistributedDataParallel under torchrun, compiled with
        --compile (unless compile=False); its parameters are `model`'s (EMA, checkpoints and
        sampling use `model`)."""
        return maybe_compile(wrap_ddp(model, self.device, self.ranks),
                             compile and self.cfg.compile, self.device)

    def compile_clock(self) -> CompileClock | None:
        """With --compile: the clock that prints what compiling cost (training/speed.py)."""
        return CompileClock(self.device) if self.cfg.compile else None

    def flops(self, loss_of, modules: list, inputs: list,
              what: str = "step") -> tuple[float, float | None]:
        """For MetricLogger's utilization: the FLOPs of one item's training forward and backward,
        counted on meta copies of `modules` at this process's batch (training/speed.py
        step_flops: no compute, no effect on the run), and the peak TFLOP/s of this device's
        class at --precision, times the processes (None for a device of no known class). On the
        CPU nothing is counted, (0, None): the counter's first use costs about a second of
        start-up, and a CPU has no published peak here."""
        if self.device.type == "cpu":
            return 0.0, None
        batch = len(inputs[0])
        per_item = step_flops(loss_of, modules, inputs) / batch
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else ""
        peak = device_peak(name, self.cfg.precision)
        self.print(f"utilization: {per_item * batch / 1e12:.3f} TFLOP per {what} of {batch} "
                   + (f"against a peak of {peak:.1f} TFLOP/s ({self.cfg.precision})" if peak else
                      "(no published peak for this device: the progress line shows TFLOP/s)"))
        return per_item, peak * self.ranks.world_size if peak else None

    def any_rank(self, flag: bool) -> bool:
        """True when `flag` is true on any process, so every rank stops at the same step."""
        return any_rank(flag, self.ranks)

    def main_process_first(self):
        """Rank 0 builds the data cache first, the other ranks then reuse it."""
        return main_process_first(self.ranks)

    def save(self, step: int, kind: str, **state) -> None:
        """Write OUT/checkpoint.pt atomically: {kind, config, step, **state, rng of every rank}.
        Every rank must call it (the RNG states are gathered); only the first one writes."""
        rng = gather_rng_states(self.device, self.ranks)
        if self.is_main:
            save_checkpoint(self.checkpoint_path, {
                "kind": kind, "config": dataclasses.asdict(self.cfg), "step": step, **state,
                "rng": rng})


def start_run(cfg) -> Run:
    """Join the processes (under torchrun), pick the device and set its backends (TF32, or
    --deterministic), check and create OUT (an existing run in it is refused unless --resume or
    --overwrite, a run still writing there always: OUT/run.lock, training/folders.py), resolve
    --precision auto, and print the config."""
    check_seed(cfg.seed)  # before anything is started or written
    ranks, device = setup_distributed(cfg.device)
    # TF32 and autotuning, or --deterministic: set before the first matrix product on the device
    backends_note = configure_backends(device, getattr(cfg, "deterministic", False))
    run = Run(cfg, ranks, device, check_output("--out", cfg.out))  # every rank looks first
    lock_run(run.out, ranks)  # one run per --out at a time: a second one is refused
    old_files = check_new_run(cfg, run.out)
    barrier(ranks)  # every rank has looked before the first one deletes or writes anything
    if run.is_main:
        for path in old_files:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if old_files:
            print(f"--overwrite: deleted the previous run's {', '.join(p.name for p in old_files)}")
        output_folder(run.out)
    if getattr(cfg, "precision", None) == "auto":
        cfg.precision, note = auto_precision(device)
        run.print(note)
    if backends_note:
        run.print(backends_note)
    if run.is_main:
        print(f"device {device}, {ranks.world_size} process(es); config:")
        print(format_config(cfg))
    barrier(ranks)
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
            raise ConfigError(f"{flag(field.name)} {shown(new)}: {path} was trained with "
                              f"{flag(field.name)} {shown(old)}, which cannot change on --resume "
                              "(give the checkpoint's value, or start a new run in another --out)")
        changed.append(field.name)
    return sorted(changed)


# What a checkpoint holds to resume training, besides what sampling reads (the kind's check): the
# optimizers' states, and the weights that only training uses. Every one also holds the RNG
# states of its processes ("rng"); a loss scaler's state, where there is one, is checked too.
RESUME_ENTRIES = {"ddpm": ("optimizer",), "ldm": ("optimizer",), "clip": ("optimizer",),
                  "vae": ("optimizer", "optimizer_discriminator", "discriminator")}
SCALER_ENTRIES = {"scale": float, "growth_factor": float, "backoff_factor": float,
                  "growth_interval": int, "_growth_tracker": int}


def resume_problem(state: dict) -> str | None:
    """What keeps a checkpoint (already checked by its kind's check) from resuming its training,
    or None: optimizer states, RNG states, and scaler states that can be loaded."""
    for entry in RESUME_ENTRIES.get(state["kind"], ()):
        if entry not in state:
            return f"it has no {entry!r} (it cannot resume training)"
        problem = (entries_problem(state, {entry: dict}, "it") if entry == "discriminator" else
                   optimizer_problem(state[entry], entry))
        if problem:
            return problem
    for entry in ("scaler", "scaler_discriminator"):
        scaler = state.get(entry, {})
        problem = (entries_problem({entry: scaler}, {entry: dict}, "it")
                   or (entries_problem(scaler, SCALER_ENTRIES, f"its {entry}") if scaler else None))
        if problem:
            return problem
        if scaler and not scaler["scale"] > 0:
            return f"its {entry} has scale {scaler['scale']}: expected a positive number"
    ranks = state.get("rng")
    if not isinstance(ranks, list) or not ranks:
        return (f"it has rng = {str(ranks)[:40]!r}: expected the random states of its processes"
                if "rng" in state else "it has no 'rng' (the random states of its processes)")
    for rank, rng in enumerate(ranks):
        if problem := rng_state_problem(rng, f"its rng of process {rank}"):
            return problem
    return None


def optimizer_problem(state, entry: str) -> str | None:
    """What keeps a stored optimizer state (optimizer.state_dict()) from being loaded, or None:
    param_groups of parameter numbers, and per parameter finite floating-point tensors."""
    if not (isinstance(state, dict) and isinstance(state.get("state"), dict)
            and isinstance(state.get("param_groups"), list) and state["param_groups"]
            and all(isinstance(group, dict) and isinstance(group.get("params"), list)
                    and all(isinstance(i, int) for i in group["params"])
                    for group in state["param_groups"])):
        return f"it has {entry} = {str(state)[:40]!r}: expected an optimizer's state"
    numbers = {i for group in state["param_groups"] for i in group["params"]}
    for number, values in state["state"].items():
        if number not in numbers or not isinstance(values, dict):
            return f"its {entry} has a state for parameter {number!r}, which it does not optimize"
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and not (value.is_floating_point()
                                                        and bool(torch.isfinite(value).all())):
                return (f"its {entry} has {name} of parameter {number} = {str(value)[:40]!r}: "
                        "expected finite floating-point numbers")
    return None


def due(done: int, every: int) -> bool:
    """True every `every` steps (never when every is 0)."""
    return every > 0 and done % every == 0


class StopFlag:
    """Ctrl-C or SIGTERM set `requested`; the loop checks it, saves a checkpoint and leaves.
    A second Ctrl-C exits at once."""

    def __init__(self):
        self.requested, self.signal = False, None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    @property
    def exit_status(self) -> int:
        """0, or for a run stopped by a signal 128 + its number (130 for Ctrl-C, 143 for
        SIGTERM), as a stopped program exits: the stage's main returns it."""
        return 0 if self.signal is None else 128 + self.signal

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt  # main_guard: a quiet exit 130
        self.requested, self.signal = True, signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint, then stopping "
              "(press Ctrl-C again to quit at once)", file=sys.stderr)
