"""Randomness: seeds, the generators' states for an exact resume, and device-independent noise.

Everything random in a training loop draws from torch's global generators, whose states go into
the checkpoint, so a resumed run draws exactly the numbers the uninterrupted run would.
"""

import random

import torch


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


def gaussian_noise_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like x. It is drawn on the generator's device and then moved,
    so a CPU generator gives the same noise (and the same samples) on cpu, cuda and mps."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
