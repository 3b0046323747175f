"""Checkpoints: a plain dict (kind, config, weights, optimizer, EMA, step, RNG states), written
atomically and read with weights_only=True, so that a file from the internet cannot run code.

Each kind is checked on load by the module that rebuilds its models, which passes its `check`:
models/vae.py ("vae"), models/clip.py ("clip"), diffusion/pipeline.py ("ddpm", "ldm"),
data/latents.py ("latents"). A check names the first entry or setting that is missing, of the
wrong type (`entries_problem`), out of the bounds of a laptop-sized model (SIZE_BOUNDS: checked
before any module is built or tensor allocated), weights that are not finite floating-point
numbers (`weights_problem`), or impossible for the model (models/unet.py: unet_problems, ...).
"""

import errno
import math
import os
import re
import shutil
import textwrap
from pathlib import Path

import torch

from common.errors import CheckpointError


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write atomically: to a temporary file first, then rename over the old checkpoint, so an
    interrupted write never leaves a half-written file where the last good checkpoint was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:
        # A full disk shows up as ENOSPC, or as torch's "unexpected pos" when the zip writer
        # cannot write what it wrote into its buffer.
        if not (getattr(error, "errno", None) == errno.ENOSPC or "unexpected pos" in str(error)):
            raise
        needed, free = tensor_bytes(state), shutil.disk_usage(path.parent).free
        raise CheckpointError(f"no space left on device writing {path}: about {needed / 1e6:.1f} "
                              f"MB needed, {free / 1e6:.1f} MB free; "
                              + ("the previous checkpoint is kept" if path.exists() else
                                 "nothing was written")) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def tensor_bytes(state) -> int:
    """The bytes of every tensor in a nested checkpoint dict: about the size of its file."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(tensor_bytes(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_bytes(value) for value in state)
    return 0


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None,
                    check=None) -> dict:
    """Load a checkpoint safely (weights_only=True: the file cannot run code) and check its kind;
    `check(state) -> problem or None` then checks what that kind must hold (CheckpointError)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, pickle of arbitrary objects, not a torch file...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        reason = re.sub(r"\x1b\[[0-9;]*m", "", reason)  # torch's bold and colour codes
        reason = textwrap.shorten(reason, 160, placeholder=" ...")  # cut between words
        raise CheckpointError(f"checkpoint {path}: unreadable (truncated or not a checkpoint of "
                              f"this project): {reason}") from None
    if not isinstance(state, dict) or "kind" not in state:
        raise CheckpointError(f"checkpoint {path}: not a checkpoint of this project (no 'kind')")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and state["kind"] not in kinds:
        raise CheckpointError(f"checkpoint {path}: is a '{state['kind']}' checkpoint, "
                              f"expected {' or '.join(repr(k) for k in kinds)}")
    problem = check(state) if check is not None else None
    if problem:
        raise CheckpointError(f"checkpoint {path}: {problem}")
    return state


# The sizes a stored entry or setting may ask for, (least, most): generous bounds for a model that
# trains on a laptop, so that a checkpoint from elsewhere cannot ask for gigabytes (a UNet of
# 65536 channels, T = 10^10 noising steps, 2^20 x 2^20 latents) before anything is checked.
SIZE_BOUNDS = {
    "base_channels": (1, 4096), "head_channels": (1, 4096),   # C of the first level; every
    "channel_mult": (1, 16), "head_mult": (1, 16),            # level's width C x mult <= 4096
    "num_res_blocks": (1, 16),                                # blocks per level
    "latent_channels": (1, 64),                               # C of the autoencoder's latents
    "latent_shape": (1, 256),                                 # (C, h, w) that the UNet denoises
    "image_size": (1, 1024),                                  # S of the (3, S, S) images
    "num_heads": (1, 64), "text_heads": (1, 64),              # attention heads
    "text_width": (1, 4096), "embed_dim": (1, 4096),          # D of tokens, E of CLIP's space
    "text_layers": (1, 64),                                   # transformer blocks
    "num_train_timesteps": (1, 10_000),                       # T
    "max_length": (3, 1024),                                  # L: <bos>, a word, <eos> at least
    "vocabulary": (4, 1_000_000),                             # words, the 4 special ones first
    "step": (0, 10**9), "num_updates": (0, 10**9),            # optimizer steps done
}
MAX_WIDTH = 4096   # channels of any level: base_channels x channel_mult
MAX_LIST = 16      # entries of a list setting (levels)
BOUND_NOTE = "a bound for a laptop-sized model"


def _is(value, expected) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is list:
        return (isinstance(value, (list, tuple)) and len(value) <= MAX_LIST
                and all(_is(v, int) for v in value))
    return isinstance(value, expected)


def bound_problem(name: str, value, where: str) -> str | None:
    """`value` (an int, or a list of them) outside SIZE_BOUNDS[name]: "its config has
    base_channels 65536: expected at most 4096 (a bound for a laptop-sized model)"."""
    if name not in SIZE_BOUNDS:
        return None
    least, most = SIZE_BOUNDS[name]
    values = value if isinstance(value, (list, tuple)) else [value]
    entries = "entries of " if isinstance(value, (list, tuple)) else ""
    if any(v < least for v in values):
        return f"{where} has {name} {value}: expected {entries}{least} or more"
    if any(v > most for v in values):
        return f"{where} has {name} {value}: expected {entries}at most {most} ({BOUND_NOTE})"
    return None


def entries_problem(entries: dict, required: dict, where: str) -> str | None:
    """The first of `required` ({name: type}) that `entries` lacks, holds with another type (an
    int is never a bool, a float is finite), or holds outside SIZE_BOUNDS: "its config has no
    'dropout'", "it has step = 'x', expected int"; None if all are there."""
    if not isinstance(entries, dict):
        return f"{where} is not a dictionary"
    for name, expected in required.items():
        if name not in entries:
            return f"{where} has no {name!r}"
        value = entries[name]
        if not _is(value, expected):
            return (f"{where} has {name} = {str(value)[:40]!r}, expected "
                    + (f"a list of at most {MAX_LIST} integers" if expected is list else
                       expected.__name__))
        if isinstance(value, float) and not math.isfinite(value):
            return f"{where} has {name} {value}: expected a finite number"
        if expected in (int, list) and (problem := bound_problem(name, value, where)):
            return problem
    return None


def widths_bound_problem(config: dict, base: str, mult: str, where: str) -> str | None:
    """Every level's width base x mult at most MAX_WIDTH channels (the entries are checked)."""
    widest = config[base] * max(config[mult], default=1)
    if widest > MAX_WIDTH:
        return (f"{where} has {mult} {config[mult]}: {base} x {mult} = {widest} channels, "
                f"expected at most {MAX_WIDTH} ({BOUND_NOTE})")
    return None


def weights_problem(stored: dict, build, what: str) -> str | None:
    """The first of the weights `stored` ({entry: weights}) that are not the {name: tensor} of
    the `what` that `build()` makes from the checkpoint's config, or not finite floating-point
    numbers (a bool, int8 or complex tensor, a NaN); None if all are. The module is built on the
    meta device (shapes only, no memory: the config's sizes are within SIZE_BOUNDS first), so a
    config cannot ask for a model bigger than the weights its file holds."""
    try:
        with torch.device("meta"):
            shapes = {name: tuple(value.shape) for name, value in build().state_dict().items()}
    except ValueError as error:  # a setting the checks before did not catch
        return f"its config describes no {what}: {error}"
    for entry, weights in stored.items():
        if not isinstance(weights, dict):
            return f"it has {entry} = {str(weights)[:40]!r}: expected a dictionary of weights"
        detail = _misfit(weights, shapes)
        if detail:
            return f"the weights in its {entry} do not fit the {what} its config describes ({detail})"
        for name, value in weights.items():
            if not value.is_floating_point():
                return (f"its {entry} has {name} of type "
                        f"{str(value.dtype).removeprefix('torch.')}: expected floating-point weights")
            if not bool(torch.isfinite(value).all()):
                bad = value[~torch.isfinite(value)].flatten()[0].item()
                return f"its {entry} has {name} = {bad}: expected finite floating-point weights"
    return None


def _misfit(weights: dict, shapes: dict) -> str | None:
    """The first weight missing, not a tensor, or of another shape than `shapes` says, or the
    first unexpected one, as load_state_dict would name it; None if they fit."""
    for name, shape in shapes.items():
        if name not in weights:
            return f"no {name}"
        if not isinstance(weights[name], torch.Tensor):
            return f"{name} = {str(weights[name])[:40]!r}, expected a tensor"
        if tuple(weights[name].shape) != shape:
            return f"size mismatch for {name}: stored {tuple(weights[name].shape)}, expected {shape}"
    unexpected = [name for name in weights if name not in shapes]
    if unexpected:
        return f"unexpected {unexpected[0]}" + (f" and {len(unexpected) - 1} more"
                                                 if len(unexpected) > 1 else "")
    return None


def load_weights(module: torch.nn.Module, weights: dict, what: str) -> None:
    """module.load_state_dict(weights), with one line instead of a page of size mismatches when
    the weights do not fit the module that the stored config describes."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as error:  # "size mismatch for conv_in.weight: copying a param ..."
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        detail = textwrap.shorten(details[0] if details else str(error), 200, placeholder=" ...")
        raise CheckpointError(f"{what}: the stored weights do not fit the model its config "
                              f"describes ({detail})") from None
