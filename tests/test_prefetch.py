"""training/batches.py Prefetch: the next step's batch made on a background thread is exactly
the batch a serial loop makes, from any start step (so resuming stays exact)."""

import threading

import pytest

from data.captions import caption_row, step_rng
from training.batches import BatchOrder, Prefetch


def test_prefetch_gives_the_serial_batches_and_works_one_step_ahead():
    order = BatchOrder(n=50, batch_size=8, seed=3)
    names = ["Smiling", "Male", "Eyeglasses"]
    rows = [[i % 2, (i // 2) % 2, (i // 4) % 2] for i in range(50)]
    threads, calls = set(), []

    def prepare(step):  # as train_clip.py: indices and a caption per index, pure in the step
        threads.add(threading.get_ident())
        calls.append(step)
        rng = step_rng(0, step)
        indices = order(step)
        return indices.tolist(), [caption_row(names, rows[i], rng) for i in indices.tolist()]

    serial = {step: prepare(step) for step in range(5, 14)}  # across an epoch boundary (6 / epoch)
    threads.clear(), calls.clear()
    next_batch = Prefetch(prepare, 5, 14)
    for step in range(5, 14):
        assert next_batch(step) == serial[step]
        if step + 1 < 14:
            next_batch.pending.result()  # made before it is asked for
            assert calls[-1] == step + 1
    assert calls == list(range(5, 14)) and threading.get_ident() not in threads


def test_prefetch_refuses_steps_out_of_order_and_passes_on_errors():
    next_batch = Prefetch(lambda step: step * 10, 0, 3)
    assert next_batch(0) == 0
    with pytest.raises(ValueError, match="asked for step 2, prepared step 1"):
        next_batch(2)

    def failing(step):
        raise RuntimeError(f"bad caption at step {step}")
    with pytest.raises(RuntimeError, match="bad caption at step 4"):
        Prefetch(failing, 4, 10)(4)
