"""Checkpoints: a plain dict (kind, config, weights, optimizer, EMA, step, RNG states), written
atomically and read with weights_only=True, so that a file from the internet cannot run code."""

import os
from pathlib import Path

import torch

from training.errors import CheckpointError


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


def load_weights(module: torch.nn.Module, weights: dict, what: str) -> None:
    """module.load_state_dict(weights), with one line instead of a page of size mismatches when
    the weights do not fit the module that the stored config describes."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as error:
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        raise CheckpointError(f"{what}: the stored weights do not fit the model its config "
                              f"describes ({details[0] if details else error})") from None
