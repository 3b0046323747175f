"""Data order: the batch of step s is a pure function of (seed, s), so resuming is exact."""

import torch

from common.errors import DataError, require


class BatchOrder:
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
