"""Data order: the batch of step s is a pure function of (seed, s), so resuming is exact."""

from concurrent.futures import ThreadPoolExecutor

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


class Prefetch:
    """The batch of step s + 1 prepared on a background thread while step s runs on the device,
    so that host work (drawing captions, tokenizing) is off the step's critical path.

        next_batch = Prefetch(prepare, start_step, steps)
        for step in range(start_step, steps):
            batch = next_batch(step)        # prepare(step), made while step - 1 ran

    prepare(step) must be a pure function of the step (BatchOrder, step_rng: no global random
    generator, no state shared with the loop), so the batches are exactly those of a serial loop
    and resuming stays exact. Steps must be asked for in order."""

    def __init__(self, prepare, start: int, stop: int):
        self.prepare, self.stop = prepare, stop
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self.step, self.pending = start, self._submit(start)

    def _submit(self, step: int):
        return self.pool.submit(self.prepare, step) if step < self.stop else None

    def __call__(self, step: int):
        if step != self.step or self.pending is None:
            raise ValueError(f"Prefetch: asked for step {step}, prepared step {self.step} "
                             f"(steps {self.stop}): steps must come in order")
        batch = self.pending.result()  # re-raises an error of prepare() here
        self.step, self.pending = step + 1, self._submit(step + 1)
        return batch
