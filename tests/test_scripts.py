"""The stage-1 scripts end to end, as a user runs them: train_unconditional.py and sample.py.

Tiny models on a tiny synthetic set, so each run takes seconds on a CPU.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT, TINY, run

@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def test_stopped_and_resumed_run_matches_an_uninterrupted_one(tmp_path, cache_dir):
    # a constant rate: the cosine default depends on --steps, which differs between the two runs
    common = ["train_unconditional.py", *TINY, "--cache-dir", cache_dir, "--ckpt-every", "1000",
              "--lr-schedule", "constant"]
    straight = tmp_path / "straight"
    run([*common, "--steps", "12", "--out", str(straight)])

    # Stop a long run with SIGTERM part-way: it saves a checkpoint at the step it reached.
    stopped = tmp_path / "stopped"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, *common, "--steps", "100000", "--out", str(stopped)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = stopped / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    # a stopped run says so and exits 128 + SIGTERM, not 0 as if it had finished
    assert process.returncode == 143, stderr.decode()[-2000:]
    assert "continue with the same command and --resume" in stdout.decode()
    assert "done:" not in stdout.decode()
    stopped_at = torch.load(stopped / "checkpoint.pt", weights_only=True)["step"]
    assert 3 <= stopped_at < 12, "the run should stop within the first 12 steps; slow machine?"

    run([*common, "--steps", "12", "--out", str(stopped), "--resume"])
    expected, resumed = losses(straight), losses(stopped)
    assert sorted(resumed) == list(range(1, 13))  # no step lost or logged twice
    for step in range(1, 13):
        assert resumed[step] == expected[step], f"step {step}: {resumed[step]} != {expected[step]}"
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(stopped / "checkpoint.pt", weights_only=True)
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert (stopped / "loss.png").exists() and (stopped / "samples" / "step_000012.png").exists()


def test_sample_writes_files_is_deterministic_and_strength_zero_returns_the_input(tmp_path, cache_dir):
    out = tmp_path / "run"
    run(["train_unconditional.py", *TINY, "--cache-dir", cache_dir, "--steps", "3",
         "--out", str(out)])
    ckpt = str(out / "checkpoint.pt")
    args = ["sample.py", "--ckpt", ckpt, "--n", "5", "--seed", "3", "--device", "cpu"]
    run([*args, "--sampler", "ddim", "--steps", "5", "--out", str(tmp_path / "a.png"),
         "--out-dir", str(tmp_path / "each"), "--trajectory"])
    run([*args, "--sampler", "ddim", "--steps", "5", "--out", str(tmp_path / "b.png")])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert len(list((tmp_path / "each").glob("*.png"))) == 5
    assert (tmp_path / "a_trajectory.png").exists()
    run([*args, "--sampler", "ddpm", "--out", str(tmp_path / "c.png")])
    # 5 images of 16 px shown 3x larger (48 px) with 1 px padding: 2 columns, 3 rows
    assert np.asarray(Image.open(tmp_path / "c.png")).shape == (3 * 49 + 1, 2 * 49 + 1, 3)

    # --strength 0: the re-noised start is the input itself and no step runs.
    face = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(face).save(tmp_path / "face.png")
    run([*args, "--n", "1", "--init-image", str(tmp_path / "face.png"), "--strength", "0",
         "--out", str(tmp_path / "same.png"), "--upscale", "1"])
    same = np.asarray(Image.open(tmp_path / "same.png"))  # a one-image grid has no padding
    assert np.abs(same.astype(int) - face.astype(int)).max() <= 1


@pytest.mark.parametrize("args, message", [
    (["--steps", "-5"], "--steps -5: expected a positive number"),
    (["--batch-size", "0"], "--batch-size 0: expected a positive number"),
    (["--image-size", "17"], "--image-size 17: must be divisible by 2"),
    (["--data", "/no/such/folder"], "/no/such/folder"),
    (["--resume", "--out", "/no/such/run"], "no such file"),
])
def test_train_rejects_bad_input_in_one_line(args, message, cache_dir):
    result = run(["train_unconditional.py", *TINY, "--cache-dir", cache_dir, "--steps", "2", *args],
                 check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_sample_rejects_a_checkpoint_of_the_wrong_kind(tmp_path):
    torch.save({"kind": "vae", "config": {}}, tmp_path / "vae.pt")
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 not really a zip")
    for name, message in (("vae.pt", "is a 'vae' checkpoint, expected 'ddpm' or 'ldm'"),
                          ("broken.pt", "unreadable")):
        result = run(["sample.py", "--ckpt", str(tmp_path / name)], check=False)
        assert result.returncode == 2 and message in result.stderr
        assert "Traceback" not in result.stderr


def test_two_processes_under_ddp_end_with_identical_weights(tmp_path, cache_dir):
    out = tmp_path / "ddp"
    result = run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "train_unconditional.py", *TINY, "--cache-dir", cache_dir, "--steps", "4",
         "--out", str(out)])
    assert "DDP: the weights of the 2 processes differ by at most 0.0\n" in result.stdout
    log = losses(out)
    assert sorted(log) == [1, 2, 3, 4]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert len(ckpt["rng"]) == 2  # each rank's noise state, for an exact resume


def test_vae_run_saves_an_autoencoder_that_round_trips_with_its_scale_factor(tmp_path, cache_dir):
    from common.checkpoints import load_checkpoint
    from data import load_dataset
    from models.vae import build_vae

    out = tmp_path / "vae"
    result = run(["train_vae.py", "--preset", "cpu", "--data", "synthetic:64", "--image-size", "32",
                  "--cache-dir", cache_dir, "--steps", "4", "--disc-start", "2", "--batch-size", "8",
                  "--eval-images", "8", "--scale-images", "16", "--log-every", "1",
                  "--device", "cpu", "--out", str(out)])
    assert "perceptual loss:" in result.stdout  # says once which VGG16 weights it uses
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"l1", "perceptual", "kl", "g_loss", "d_loss", "gan_weight", "logits_real"} <= rows[-2].keys()
    assert all(0 < r["input_fraction"] < 1 for r in rows[:-1])  # the wait for data is measured
    assert rows[-1].keys() == {"step", "val_psnr", "val_ssim"}
    assert rows[2]["d_loss"] > 0 and rows[0]["d_loss"] == 0  # the discriminator starts at step 2

    checkpoint = load_checkpoint(out / "checkpoint.pt", kind="vae")
    scale_factor = checkpoint["scale_factor"]
    assert 0 < scale_factor < 100
    vae = build_vae(checkpoint["config"]).eval()
    vae.load_state_dict(checkpoint["model"])
    latents = load_checkpoint(out / "latents_val.pt", kind="latents")
    assert latents["scale_factor"] == scale_factor
    images = load_dataset("synthetic:64", 32, split="val", cache_dir=cache_dir)
    assert latents["mean"].shape == (len(images), 3, 8, 8)
    with torch.no_grad():
        mean = vae.encode(images.batch(torch.arange(len(images)), "cpu")["image"]).mean
    assert torch.allclose(latents["mean"].float(), mean, atol=2e-2, rtol=1e-2)  # float16 cache

    # Resumed for more steps and stopped part-way, a finished run no longer counts as finished:
    # its stale scale factor is dropped (measured again at the new end) and the cache is kept.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    before = (out / "latents_val.pt").read_bytes()
    process = subprocess.Popen(
        [sys.executable, "train_vae.py", "--preset", "cpu", "--data", "synthetic:64",
         "--image-size", "32", "--cache-dir", cache_dir, "--steps", "100000", "--disc-start", "2",
         "--batch-size", "8", "--eval-images", "8", "--scale-images", "16", "--log-every", "1",
         "--device", "cpu", "--out", str(out), "--resume"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len((out / "metrics.jsonl").read_text().splitlines()) < 8:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr.decode()[-2000:]  # stopped by SIGTERM
    stopped = load_checkpoint(out / "checkpoint.pt", kind="vae")
    assert stopped["step"] > 4 and stopped["scale_factor"] is None
    assert b"latents cached" not in stdout and (out / "latents_val.pt").read_bytes() == before


def test_evaluate_scores_a_pixel_model_against_the_real_noise_floor(tmp_path, cache_dir):
    out = tmp_path / "pixel"
    run(["train_unconditional.py", *TINY, "--cache-dir", cache_dir, "--steps", "2",
         "--out", str(out)])
    result = run(["evaluate.py", "--ckpt", str(out / "checkpoint.pt"), "--unconditional", "12",
                  "--steps", "2", "--real-images", "5", "--classifier-steps", "3",
                  "--device", "cpu"])
    report = json.loads((out / "eval" / "eval.json").read_text())
    fd = report["frechet_distance"]
    assert report["kind"] == "ddpm" and fd["images_per_set"] == 5  # every set cut to 5
    assert fd["real_train_vs_real_val"] > 0 and fd["generated_vs_real"] > 0
    assert math.isclose(fd["ratio_to_floor"], fd["generated_vs_real"] / fd["real_train_vs_real_val"])
    assert "noise floor" in result.stdout and (out / "eval" / "samples.png").is_file()
