"""Distributed data parallel: `torchrun --nproc_per_node N script.py ...` sets RANK, WORLD_SIZE
and LOCAL_RANK; gradients are averaged across processes by DistributedDataParallel."""

import contextlib
import dataclasses
import os

import torch
import torch.distributed as dist

from common.device import pick_device
from common.errors import ConfigError
from common.randomness import rng_state


@dataclasses.dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the process group when launched by torchrun; return the ranks and the device."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return Distributed(), pick_device(device_name)
    ranks = Distributed(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", 0)))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def wrap_ddp(model: torch.nn.Module, device: torch.device, ranks: Distributed) -> torch.nn.Module:
    """The model to train: DistributedDataParallel under torchrun, the model itself otherwise."""
    if ranks.world_size == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def any_rank(flag: bool, ranks: Distributed) -> bool:
    """True when `flag` is true on any process (so every rank stops at the same step)."""
    if ranks.world_size == 1:
        return flag
    value = torch.tensor([float(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


@contextlib.contextmanager
def main_process_first(ranks: Distributed):
    """Let rank 0 do a one-off job first (generate data, build a cache); the others then reuse it."""
    if ranks.world_size > 1 and not ranks.is_main:
        dist.barrier()
    yield
    if ranks.world_size > 1 and ranks.is_main:
        dist.barrier()


def barrier(ranks: Distributed) -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    if ranks.world_size > 1:
        dist.barrier()


def gather_rng_states(device: torch.device, ranks: Distributed) -> list[dict]:
    """Every rank's RNG state, collected on all ranks (each rank draws its own noise)."""
    state = rng_state(device)
    if ranks.world_size == 1:
        return [state]
    states = [None] * ranks.world_size
    dist.all_gather_object(states, state)
    return states


def rng_state_for_rank(checkpoint: dict, ranks: Distributed) -> dict:
    """This rank's saved RNG state; a run resumed on a different number of processes cannot
    replay the same noise, and says so."""
    states = checkpoint["rng"]
    if len(states) != ranks.world_size:
        raise ConfigError(f"the checkpoint was written by {len(states)} process(es); resume it "
                          f"with the same number (got {ranks.world_size})")
    return states[ranks.rank]


def replica_difference(model: torch.nn.Module, ranks: Distributed) -> float:
    """The largest difference between any weight on this rank and the same weight on another:
    0 when DistributedDataParallel kept every replica in step."""
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])  # (num_params,)
    if ranks.world_size == 1:
        return 0.0
    replicas = [torch.empty_like(flat) for _ in range(ranks.world_size)]
    dist.all_gather(replicas, flat)
    return max((replica - flat).abs().max().item() for replica in replicas)


def cleanup_distributed(ranks: Distributed) -> None:
    if ranks.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
