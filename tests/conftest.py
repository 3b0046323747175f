"""What the test modules share: `run`, which runs a program of the project as a user does (its
main() in this process, one thread, or a subprocess), the tiny stage-1 settings TINY, and the
session's briefly trained autoencoder, CLIP and text-to-image model, each trained once per
session."""

import contextlib
import importlib
import io
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

from common.errors import main_guard

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "synthetic:64", "--image-size", "16", "--base-channels", "32",
        "--channel-mult", "1", "2", "--num-res-blocks", "1", "--attention-levels", "1",
        "--batch-size", "8", "--num-samples", "4", "--sample-steps", "4", "--sample-every", "0",
        "--log-every", "1", "--device", "cpu", "--warmup-steps", "2", "--lr", "1e-3"]


# The programs `run` calls in this process: starting Python and importing torch for each would
# cost about 2 s of the suite's 10 minutes per call, over a hundred calls.
IN_PROCESS = ("train_unconditional.py", "train_vae.py", "train_clip.py", "train_ldm.py",
              "sample.py", "evaluate.py")


def run(args, check=True, subprocess_only=False, **kwargs):
    """Run `python ARGS...` in the repository with one thread, as a user runs a program: a stage
    script, sample.py or evaluate.py as its main() in this process (run_in_process), anything
    else (or with subprocess_only, or subprocess options) as a subprocess. Returns a
    CompletedProcess; an AssertionError with the end of its output when it fails (unless
    check=False)."""
    if args[0] in IN_PROCESS and not subprocess_only and not kwargs:
        result = run_in_process(args)
    else:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


def run_in_process(args) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS...` as main_guard(SCRIPT.main) in this process, as the subprocess would
    see it: in the repository, one thread, its stdout and stderr captured, its exit status from
    SystemExit (an unexpected exception: its traceback on stderr and status 1). What a run sets
    for the whole process (signal handlers, deterministic algorithms, the thread count, argv) is
    put back afterwards."""
    module = importlib.import_module(args[0].removesuffix(".py"))
    out, err, status = io.StringIO(), io.StringIO(), 0
    saved = (os.getcwd(), sys.argv, torch.get_num_threads(),
             torch.are_deterministic_algorithms_enabled(),
             {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)})
    try:
        os.chdir(ROOT)
        sys.argv = list(args)
        torch.set_num_threads(1)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main_guard(module.main)
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else (exit_.code is not None)
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
            except Exception:  # noqa: BLE001 (a crash, as the subprocess would print it)
                traceback.print_exc()
                status = 1
    finally:
        cwd, sys.argv, threads, deterministic, handlers = saved
        os.chdir(cwd)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return subprocess.CompletedProcess(args, int(status), out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def vae_run(tmp_path_factory):
    """A briefly trained 32 px autoencoder (about 16 dB PSNR) with its latent cache, on 1200 synthetic faces."""
    root = tmp_path_factory.mktemp("clip")
    cache, out = root / "cache", root / "vae"
    run(["train_vae.py", "--preset", "cpu", "--data", "synthetic:1200", "--image-size", "32",
         "--cache-dir", str(cache), "--steps", "120", "--disc-start", "1000", "--batch-size", "16",
         "--perceptual", "none", "--eval-images", "8", "--scale-images", "64", "--log-every", "10",
         "--eval-every", "120", "--device", "cpu", "--out", str(out)])
    return out


TINY_LDM = ["--lr", "1e-3", "--warmup-steps", "1", "--base-channels", "32", "--channel-mult", "1", "2", "--num-res-blocks", "1",
            "--attention-levels", "1", "--batch-size", "8", "--sample-seeds", "1",
            "--sample-steps", "2", "--sample-every", "0", "--log-every", "1", "--device", "cpu"]


@pytest.fixture(scope="session")
def clip_run(vae_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip_for_ldm") / "clip"
    run(["train_clip.py", "--preset", "cpu", "--vae", str(vae_run / "checkpoint.pt"),
         "--steps", "2", "--batch-size", "16", "--text-width", "32", "--text-layers", "1",
         "--embed-dim", "32", "--eval-images", "64", "--device", "cpu", "--out", str(out)])
    return out


@pytest.fixture(scope="session")
def ldm_run(vae_run, clip_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ldm") / "ldm"
    result = run(["train_ldm.py", "--vae", str(vae_run / "checkpoint.pt"),
                  "--clip", str(clip_run / "checkpoint.pt"), *TINY_LDM, "--steps", "2",
                  "--out", str(out)])
    assert "cross-attention to 32-wide text tokens" in result.stdout
    return out
