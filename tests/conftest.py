"""What the test modules share: `run`, which runs a program of the project as a user does (a
subprocess in the repository, one thread), the tiny stage-1 settings TINY, and the session's
briefly trained autoencoder, CLIP and text-to-image model, each trained once per session."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "synthetic:64", "--image-size", "16", "--base-channels", "32",
        "--channel-mult", "1", "2", "--num-res-blocks", "1", "--attention-levels", "1",
        "--batch-size", "8", "--num-samples", "4", "--sample-steps", "4", "--sample-every", "0",
        "--log-every", "1", "--device", "cpu", "--warmup-steps", "2", "--lr", "1e-3"]


def run(args, check=True, **kwargs):
    """Run `python ARGS...` in the repository with one thread, as a user runs a program; an
    AssertionError with the end of its output when it fails (unless check=False)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


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
