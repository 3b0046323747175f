"""Fixtures shared by the test modules of stages 3 and 4."""

import pytest

from tests.test_scripts import run


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
