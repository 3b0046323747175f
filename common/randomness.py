"""Randomness: seeds, the generators' states for an exact resume, and device-independent noise.

Everything random in a training loop draws from torch's global generators, whose states go into
the checkpoint, so a resumed run draws exactly the numbers the uninterrupted run would.
"""

import random

import torch

from common.errors import ConfigError

# Seeds are 32-bit: every seed derived from one (seed + j for image j, seed * 1_000_003 + epoch
# for the data order, seed + rank) then stays within the 64 bits torch's generators take.
MAX_SEED = 2**32 - 1


def check_seed(seed: int, flag: str = "--seed") -> None:
    """ConfigError naming the flag unless 0 <= seed <= MAX_SEED."""
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{flag} {seed}: expected 0 to {MAX_SEED} (a 32-bit seed)")


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


def rng_state_problem(state, where: str) -> str | None:
    """What keeps a checkpoint's saved RNG state (rng_state's dict) from being restored, or None:
    Python's (version, 625 words, gauss) and torch's byte tensors of the sizes this torch uses."""
    if not isinstance(state, dict) or not isinstance(state.get("torch"), torch.Tensor):
        return f"{where} is not a saved random state (no 'torch' generator state)"
    python = state.get("python")
    if not (isinstance(python, (tuple, list)) and len(python) == 3 and python[0] == random.Random.VERSION
            and isinstance(python[1], (tuple, list)) and len(python[1]) == 625
            and all(isinstance(word, int) and 0 <= word < 2**32 for word in python[1])
            and python[1][-1] <= 624 and (python[2] is None or isinstance(python[2], float))):
        return f"{where} has python = {str(python)[:40]!r}: expected Python's random state"
    for name, expected in (("torch", torch.get_rng_state()), ("cuda", None), ("mps", None)):
        value = state.get(name)
        if value is None and name != "torch":
            continue
        if not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1
                and (expected is None or value.shape == expected.shape)):
            return (f"{where} has {name} = {str(value)[:40]!r}: expected the generator's state "
                    "(a byte tensor)")
    return None


def _as_python_state(state):
    # random.setstate wants tuples; a round trip through torch.save keeps them, lists are mended.
    version, internal, gauss = state
    return version, tuple(internal), gauss


def gaussian_noise_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like x. It is drawn on the generator's device and then moved,
    so a CPU generator gives the same noise (and the same samples) on cpu, cuda and mps."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
