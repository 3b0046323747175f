"""Training plumbing shared by every stage script.

Each stage script (train_unconditional.py, train_vae.py, ...) stays one flat loop that a reader can
follow top to bottom; the chores that every loop repeats live here, each in one small piece:

    config      `opt`, `parse_config`, `require`   dataclass defaults -> type-checked --flags, presets
    errors      `ConfigError`, `CheckpointError`, `main_guard`   one-line messages, never a traceback
    device      `pick_device`, `autocast`, `make_grad_scaler`   cuda > mps > cpu, fp32/bf16/fp16
    speed       `make_adam`, `load_optimizer_state`, `maybe_compile`, `CompileClock`, `InputClock`
                fused Adam, torch.compile and what it costs, the time spent waiting for batches
    randomness  `seed_everything`, `rng_state`, `set_rng_state`   exact resume
    data order  `BatchSampler`   the batch of step s is a pure function of (seed, s), sharded per rank
    distributed `setup_distributed`, `any_rank`   torchrun + DistributedDataParallel (gloo or nccl)
    weights     `EMA`   exponential moving average of the parameters
    files       `save_checkpoint`, `load_checkpoint`   atomic writes, weights_only loads
    reporting   `MetricLogger`, `save_grid`   metrics.jsonl + loss-curve PNG, image grids
    stopping    `StopFlag`   Ctrl-C / SIGTERM ask the loop to save and leave
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from data import DataError


# ----------------------------------------------------------------------------------------------
# Errors: bad input becomes one clear line on stderr and exit status 2.

class ConfigError(ValueError):
    """An impossible value on the command line (negative steps, batch size 0, ...)."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, or of the wrong kind."""


def main_guard(main) -> None:
    """Run `main()`, turning the project's input errors into one line and exit status 2."""
    try:
        main()
    except (ConfigError, CheckpointError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


def require_positive(cfg, names: tuple[str, ...]) -> None:
    """ConfigError naming the flag when any of these config fields is not > 0."""
    for name in names:
        value = getattr(cfg, name)
        require(value > 0, f"--{name.replace('_', '-')} {value}: expected a positive number")


# ----------------------------------------------------------------------------------------------
# Config: a dataclass whose fields are the defaults, one comment (help) each.

def opt(default, help: str):
    """A config field with its help text: `steps: int = opt(2000, "optimizer steps")`."""
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple for sequence defaults")
    return dataclasses.field(default=default, metadata={"help": help})


def parse_config(config_class, argv=None, presets: dict | None = None, description: str = ""):
    """Build an argparse parser from `config_class` and return a filled instance.

    Every field becomes `--field-name` with the field's type (bools become --flag/--no-flag,
    tuples take several values); unknown flags are rejected. `--preset NAME` first applies the
    values of `presets[NAME]`; flags given on the command line override them.
    """
    presets = presets or {}
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if presets:
        parser.add_argument("--preset", choices=sorted(presets), default=None,
                            help="a named set of defaults: " + "; ".join(
                                f"{name}: {values.get('_doc', '')}" for name, values in presets.items()))
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        kwargs = dict(default=field.default, help=field.metadata.get("help", ""))
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif isinstance(field.default, tuple):
            item_type = type(field.default[0]) if field.default else str
            parser.add_argument(flag, nargs="*", type=item_type, **kwargs)
        else:
            parser.add_argument(flag, type=type(field.default) if field.default is not None else str,
                                **kwargs)

    # Presets change the defaults, so explicit flags still win.
    known, _ = parser.parse_known_args(argv)
    preset = getattr(known, "preset", None)
    if preset is not None:
        values = {k: v for k, v in presets[preset].items() if not k.startswith("_")}
        parser.set_defaults(**values)
    args = vars(parser.parse_args(argv))
    args.pop("preset", None)
    for name, value in args.items():
        if isinstance(value, list):
            args[name] = tuple(value)
    return config_class(**args)


def config_diff(old: dict, new: dict) -> list[str]:
    """Names whose values differ between two config dicts (for resume warnings)."""
    return sorted(k for k in set(old) | set(new) if _jsonable(old.get(k)) != _jsonable(new.get(k)))


def _jsonable(value):
    return list(value) if isinstance(value, (tuple, list)) else value


# ----------------------------------------------------------------------------------------------
# Device and precision.

def pick_device(name: str = "auto") -> torch.device:
    """cuda > mps > cpu unless `name` says otherwise ("cpu", "cuda", "cuda:1", "mps")."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine")
    return device


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for the forward pass: fp32 (none), bf16, or fp16 (CUDA only)."""
    require(precision in PRECISIONS, f"--precision {precision!r}: expected fp32, bf16 or fp16")
    if precision == "fp32":
        return contextlib.nullcontext()
    require(precision != "fp16" or device.type == "cuda",
            f"--precision fp16 needs a CUDA device (got {device.type}); use bf16 or fp32")
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def make_grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA (fp16 gradients underflow without it); a no-op otherwise."""
    return torch.amp.GradScaler("cuda", enabled=(precision == "fp16" and device.type == "cuda"))


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels, so that a host clock reading includes them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# ----------------------------------------------------------------------------------------------
# Speed: the optimizer's kernel and torch.compile (docs/performance.md has the measurements).

def make_adam(optimizer_class, params, **kwargs) -> torch.optim.Optimizer:
    """Adam or AdamW with PyTorch's fused kernel where this torch has one for the device (CUDA,
    MPS and, from torch 2.4, CPU): one kernel over all parameters instead of a Python loop of
    small ops per parameter, the same update rule. On the CPU preset of stage 4 it takes the
    optimizer step from about 20 ms to 7 ms. Falls back to the default implementation."""
    params = list(params)
    try:
        return optimizer_class(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or torch
        return optimizer_class(params, **kwargs)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """optimizer.load_state_dict, keeping this run's kernel choice: the checkpoint may come from a
    machine or torch version that used the other one (fused is a setting, not part of the state)."""
    kernels = [(group.get("fused"), group.get("foreach")) for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, (fused, foreach) in zip(optimizer.param_groups, kernels):
        group["fused"], group["foreach"] = fused, foreach


def maybe_compile(model: torch.nn.Module, enabled: bool, device: torch.device) -> torch.nn.Module:
    """torch.compile(model) for --compile: the first call traces the model and generates fused
    kernels (C++ on the CPU, Triton on CUDA), which takes from seconds to minutes; later calls
    run the compiled code. The parameters stay shared with `model`, so EMA, checkpoints and
    sampling keep using the plain module. On the CPU the compiler is told to keep the tensors'
    layout: its default switches convolutions to channels_last, which measured slower on this
    project's CPU (docs/performance.md), as it did in eager mode."""
    if not enabled:
        return model
    return torch.compile(model, options={"layout_optimization": False} if device.type == "cpu"
                         else None)


class CompileClock:
    """Measures what --compile costs: the wall time of the first training step, which includes
    tracing and compiling, against the mean of the `window` steps after it."""

    def __init__(self, device: torch.device, window: int = 10):
        self.device, self.window, self.times = device, window, []
        self.last = time.perf_counter()

    def tick(self) -> str | None:
        """Call after every step; returns the one-line summary once, when the window is full."""
        if len(self.times) > self.window:
            return None
        synchronize(self.device)
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now
        if len(self.times) <= self.window:
            return None
        first, later = self.times[0], sum(self.times[1:]) / self.window
        self.compile_seconds = first - later
        return (f"torch.compile: the first step took {first:.1f} s, the next {self.window} steps "
                f"{later * 1000:.0f} ms each: compiling took about {first - later:.1f} s")


class InputClock:
    """input_fraction: the share of a loop's wall time spent preparing its batches on the host
    (reading the cache, augmenting, drawing captions, tokenizing). start() before, stop() after;
    fraction(elapsed) is the share of the last `elapsed` seconds, and starts a new window. No
    device synchronisation: the step's GPU work stays queued behind the host, not timed here."""

    def __init__(self):
        self.seconds, self.started = 0.0, 0.0

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> None:
        self.seconds += time.perf_counter() - self.started

    def fraction(self, elapsed: float) -> float:
        share, self.seconds = self.seconds / elapsed, 0.0
        return share


# ----------------------------------------------------------------------------------------------
# Randomness: everything random in a loop draws from torch's global generators, whose states go
# into the checkpoint, so a resumed run draws exactly the numbers the uninterrupted run would.

def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # seeds the CPU and every CUDA / MPS generator


def rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(_as_python_state(state["python"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    if device.type == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"])


def _as_python_state(state):
    # random.setstate wants tuples; a round trip through torch.save keeps them, lists are mended.
    version, internal, gauss = state
    return version, tuple(internal), gauss


# ----------------------------------------------------------------------------------------------
# Data order.

class BatchSampler:
    """The indices of the batch of step s, a pure function of (seed, s): resuming is exact.

    Each epoch is a fresh permutation of the n items drawn from a generator seeded with
    (seed, epoch); step s takes slice s % steps_per_epoch of it (the incomplete last batch is
    dropped). Under DDP, `batch_size` is the global batch and rank r keeps items r, r+W, r+2W...
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        require(batch_size > 0, f"--batch-size {batch_size}: expected a positive number")
        require(batch_size % world_size == 0,
                f"--batch-size {batch_size}: must be divisible by the {world_size} processes")
        if n < batch_size:
            raise DataError(f"the dataset has {n} images, fewer than --batch-size {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = n // batch_size
        self._epoch, self._perm = None, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
        batch = self._perm[position * self.batch_size:(position + 1) * self.batch_size]
        return batch[self.rank::self.world_size]  # (batch_size / world_size,)


# ----------------------------------------------------------------------------------------------
# Distributed data parallel: `torchrun --nproc_per_node N script.py ...` sets RANK, WORLD_SIZE
# and LOCAL_RANK; gradients are averaged across processes by DistributedDataParallel.

@dataclasses.dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the process group when launched by torchrun; return the rank info and the device."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return Distributed(), pick_device(device_name)
    info = Distributed(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", 0)))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def wrap_ddp(model: torch.nn.Module, device: torch.device, info: Distributed) -> torch.nn.Module:
    """The model to train: DistributedDataParallel under torchrun, the model itself otherwise."""
    if info.world_size == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def any_rank(flag: bool, info: Distributed) -> bool:
    """True when `flag` is true on any process (so every rank stops at the same step)."""
    if info.world_size == 1:
        return flag
    value = torch.tensor([float(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


@contextlib.contextmanager
def main_process_first(info: Distributed):
    """Let rank 0 do a one-off job first (generate data, build a cache); the others then reuse it."""
    if info.world_size > 1 and not info.is_main:
        dist.barrier()
    yield
    if info.world_size > 1 and info.is_main:
        dist.barrier()


def gather_rng_states(device: torch.device, info: Distributed) -> list[dict]:
    """Every rank's RNG state, collected on all ranks (each rank draws its own noise)."""
    state = rng_state(device)
    if info.world_size == 1:
        return [state]
    states = [None] * info.world_size
    dist.all_gather_object(states, state)
    return states


def rng_state_for_rank(checkpoint: dict, info: Distributed) -> dict:
    """This rank's saved RNG state; a run resumed on a different number of processes cannot
    replay the same noise, and says so."""
    states = checkpoint["rng"]
    if len(states) != info.world_size:
        raise ConfigError(f"the checkpoint was written by {len(states)} process(es); resume it "
                          f"with the same number (got {info.world_size})")
    return states[info.rank]


def replica_difference(model: torch.nn.Module, info: Distributed) -> float:
    """The largest difference between any weight on this rank and the same weight on another:
    0 when DistributedDataParallel kept every replica in step."""
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])  # (num_params,)
    if info.world_size == 1:
        return 0.0
    replicas = [torch.empty_like(flat) for _ in range(info.world_size)]
    dist.all_gather(replicas, flat)
    return max((replica - flat).abs().max().item() for replica in replicas)


def cleanup_distributed(info: Distributed) -> None:
    if info.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# Exponential moving average of the weights, the model that sampling uses by default.

class EMA:
    """theta_ema <- d * theta_ema + (1 - d) * theta, with d warmed up as min(decay, (1+n)/(10+n))
    so that short runs are not dominated by the random initial weights."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # ema += (1 - d) (theta - ema)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = state["num_updates"]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# ----------------------------------------------------------------------------------------------
# Checkpoints: a plain dict (kind, config, weights, optimizer, EMA, step, RNG states).

def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write atomically: to a temporary file first, then rename over the old checkpoint, so an
    interrupted write never leaves a half-written file where the last good checkpoint was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None) -> dict:
    """Load a checkpoint safely (weights_only=True: the file cannot run code) and check its kind."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, pickle of arbitrary objects, not a torch file...
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path}: unreadable (truncated or not a checkpoint of "
                              f"this project): {reason}") from None
    if not isinstance(state, dict) or "kind" not in state:
        raise CheckpointError(f"checkpoint {path}: not a checkpoint of this project (no 'kind')")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and state["kind"] not in kinds:
        raise CheckpointError(f"checkpoint {path}: is a '{state['kind']}' checkpoint, "
                              f"expected {' or '.join(repr(k) for k in kinds)}")
    return state


# ----------------------------------------------------------------------------------------------
# Reporting.

class MetricLogger:
    """Appends one JSON line per logged step to metrics.jsonl and redraws loss.png from it."""

    def __init__(self, out_dir: str | Path, resume_step: int = 0, enabled: bool = True):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.plot_path = Path(out_dir) / "loss.png"
        self.enabled = enabled
        if enabled and self.path.exists():
            # Lines written after the checkpoint we resume from belong to the lost stretch.
            lines = [l for l in self.path.read_text().splitlines()
                     if l.strip() and json.loads(l)["step"] <= resume_step] if resume_step else []
            self.path.write_text("".join(l + "\n" for l in lines))

    def log(self, step: int, **metrics: float) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")

    def plot(self) -> None:
        if not self.enabled or not self.path.exists():
            return
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [json.loads(l) for l in self.path.read_text().splitlines() if l.strip()]
        names = sorted({k for row in rows for k in row if k not in ("step", "time")})
        if not names:
            return
        fig, axes = plt.subplots(len(names), 1, figsize=(6, 2.2 * len(names)), sharex=True,
                                 squeeze=False)
        for ax, name in zip(axes[:, 0], names):
            points = [(r["step"], r[name]) for r in rows if name in r]
            ax.plot(*zip(*points), lw=1)
            ax.set_ylabel(name)
            if name.startswith("loss") and all(v > 0 for _, v in points):
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("step")
        fig.tight_layout()
        fig.savefig(self.plot_path, dpi=90)
        plt.close(fig)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> None:
    """Save a (B, 3, H, W) batch in [-1, 1] as one PNG grid."""
    from torchvision.utils import save_image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.sqrt(images.shape[0])))
    save_image((images.float().clamp(-1, 1) + 1) / 2, path, nrow=nrow, padding=1)


class StopFlag:
    """Ctrl-C or SIGTERM set `requested`; the loop checks it, saves a checkpoint and leaves.
    A second Ctrl-C exits at once."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint, then stopping "
              "(press Ctrl-C again to quit at once)", file=sys.stderr)
