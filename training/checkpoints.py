"""Checkpoints: a plain dict (kind, config, weights, optimizer, EMA, step, RNG states), written
atomically and read with weights_only=True, so that a file from the internet cannot run code."""

import errno
import os
import re
import shutil
import textwrap
from pathlib import Path

import torch

from training.checks import checkpoint_problem, schedule_problems, unet_problems, widths_problems
from training.errors import CheckpointError

# What each kind of checkpoint must hold for the project to rebuild its models: the top-level
# entries and the settings of its config, with their types (checked on load, one line if not).
UNET = {"base_channels": int, "channel_mult": list, "num_res_blocks": int,
        "attention_levels": list, "dropout": float}
SCHEDULE = {"num_train_timesteps": int, "beta_start": float, "beta_end": float,
            "beta_schedule": str, "prediction_type": str}
VAE = {"base_channels": int, "channel_mult": list, "num_res_blocks": int,
       "latent_channels": int, "attention": bool, "image_size": int}
TEXT = {"text_width": int, "text_layers": int, "text_heads": int}
FORMAT = {  # kind: (entries, settings of "config", settings of "vae_config")
    "ddpm": ({"config": dict, "step": int, "model": dict, "ema": dict},
             {**UNET, **SCHEDULE, "image_size": int}, None),
    "ldm": ({"config": dict, "step": int, "model": dict, "ema": dict, "vae": dict,
             "vae_config": dict, "scale_factor": float, "latent_shape": list},
            {**UNET, **SCHEDULE, "num_heads": int, "guidance": float, "clip": str}, VAE),
    "vae": ({"config": dict, "step": int, "model": dict}, VAE, None),
    "clip": ({"config": dict, "step": int, "model": dict, "tokenizer": dict, "vae": dict,
              "vae_config": dict, "scale_factor": float},
             {**TEXT, "head_channels": int, "head_mult": list, "embed_dim": int}, VAE),
    "latents": ({"mean": torch.Tensor, "std": torch.Tensor, "scale_factor": float}, None, None),
}


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


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None) -> dict:
    """Load a checkpoint safely (weights_only=True: the file cannot run code) and check its kind."""
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
    if kinds is not None and state["kind"] in FORMAT:
        problem = format_problem(state)
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


def _missing_or_mistyped(entries: dict, required: dict, where: str) -> str | None:
    for name, expected in required.items():
        if name not in entries:
            return f"{where} has no {name!r}"
        if not _is(entries[name], expected):
            return (f"{where} has {name} = {str(entries[name])[:40]!r}, expected "
                    f"{'a list of integers' if expected is list else expected.__name__}")
    return None


def format_problem(state: dict) -> str | None:
    """What keeps a checkpoint of a known kind from being rebuilt (FORMAT), or None."""
    entries, settings, vae_settings = FORMAT[state["kind"]]
    problem = _missing_or_mistyped(state, entries, "it")
    if problem is None and settings is not None:
        problem = _missing_or_mistyped(state["config"], settings, "its config")
    if problem is None and vae_settings is not None:
        problem = _missing_or_mistyped(state["vae_config"], vae_settings, "its vae_config")
    if problem is not None:
        return problem
    config = state.get("config", {})
    if state["kind"] in ("ddpm", "ldm"):
        resolution = config["image_size"] if state["kind"] == "ddpm" else state["latent_shape"][-1]
        return checkpoint_problem(schedule_problems(config) + unet_problems(config, resolution))
    if state["kind"] == "vae":
        return checkpoint_problem(widths_problems(config, config["image_size"], "autoencoder"))
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
