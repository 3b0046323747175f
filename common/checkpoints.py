"""Checkpoints: a plain dict (kind, config, weights, optimizer, EMA, step, RNG states), written
atomically and read with weights_only=True, so that a file from the internet cannot run code.

Each kind is checked on load by the module that rebuilds its models, which passes its `check`:
models/vae.py ("vae"), models/clip.py ("clip"), diffusion/pipeline.py ("ddpm", "ldm"),
data/latents.py ("latents"). A check names the first entry or setting that is missing, of the
wrong type (`entries_problem`) or impossible for the model (models/unet.py: unet_problems, ...).
"""

import errno
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


def _is(value, expected) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is list:
        return isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value)
    return isinstance(value, expected)


def entries_problem(entries: dict, required: dict, where: str) -> str | None:
    """The first of `required` ({name: type}) that `entries` lacks or holds with another type:
    "its config has no 'dropout'", "it has step = 'x', expected int"; None if all are there."""
    if not isinstance(entries, dict):
        return f"{where} is not a dictionary"
    for name, expected in required.items():
        if name not in entries:
            return f"{where} has no {name!r}"
        if not _is(entries[name], expected):
            return (f"{where} has {name} = {str(entries[name])[:40]!r}, expected "
                    f"{'a list of integers' if expected is list else expected.__name__}")
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
