"""How often a training step makes the host wait for the device. On a GPU the host queues work
and runs ahead; an op whose result the host must read (`.item()`, `bool(tensor)`, a data-dependent
shape such as `nonzero`) stops it until the GPU has caught up. Such ops are counted here on the
CPU path, under a dispatch hook, for runs of two lengths: what the extra steps add is what one
step costs, outside the logging, evaluation and checkpoint steps (the target: at most 1)."""

import re

from tests.conftest import TINY, TINY_LDM, run

# Runs a stage script under a TorchDispatchMode that counts the ops which make a GPU host wait,
# and prints the count when the script exits.
COUNTED = """
import atexit, runpy, sys
import torch
from torch.utils._python_dispatch import TorchDispatchMode
aten = torch.ops.aten
WAITS = {aten._local_scalar_dense, aten.is_nonzero, aten.nonzero, aten.masked_select,
         aten._unique2, aten.equal}

class Waits(TorchDispatchMode):
    count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        Waits.count += func._overloadpacket in WAITS
        return func(*args, **(kwargs or {}))

Waits().__enter__()
atexit.register(lambda: print(f"host waits: {Waits.count}"))
sys.path.insert(0, ".")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def waits(args: list[str]) -> int:
    out = run(["-c", COUNTED, *args]).stdout
    return int(re.search(r"host waits: (\d+)", out).group(1))


def test_a_pixel_training_step_never_makes_the_host_wait(tmp_path):
    def count(steps):
        return waits(["train_unconditional.py", *TINY, "--log-every", "1000", "--ckpt-every",
                      "1000", "--steps", str(steps), "--cache-dir", str(tmp_path / "cache"),
                      "--overwrite", "--out", str(tmp_path / "run")])
    assert count(2) == count(6)  # 4 more steps, no more waits


def test_a_text_to_image_training_step_never_makes_the_host_wait(tmp_path, vae_run, clip_run):
    def count(steps):
        return waits(["train_ldm.py", *TINY_LDM, "--vae", str(vae_run / "checkpoint.pt"),
                      "--clip", str(clip_run / "checkpoint.pt"), "--objective", "flow",
                      "--log-every", "1000", "--ckpt-every", "1000", "--steps", str(steps),
                      "--overwrite", "--out", str(tmp_path / "run")])
    assert count(2) == count(6)
