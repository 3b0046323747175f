"""Pinned values: a seeded 10-step loop of each sampler with a fixed dummy model (as diffusers'
scheduler tests pin theirs), and the images and scores of the programs on fixed checkpoints
(tests/fixed_checkpoints.py). They were computed before the code around them was reorganised,
so a refactor that moves a single image, or a single score, fails here.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion import DDIMScheduler, DDPMScheduler, DPMSolverScheduler, sample
from tests import fixed_checkpoints
from tests.conftest import run


def dummy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed, deterministic stand-in for a network: eps = 0.3 x + 0.1 sin(t / 100)."""
    return 0.3 * x + 0.1 * torch.sin(t.float() / 100).view(-1, 1, 1, 1)


def ten_step_loop(name: str, eta: float, prediction_type: str) -> torch.Tensor:
    if name == "ddpm":   # DDPM takes every step of its schedule: a 10-step schedule
        scheduler = DDPMScheduler(num_train_timesteps=10, beta_start=1e-3, beta_end=0.2,
                                  prediction_type=prediction_type, clip_sample=False)
    else:
        kind = DDIMScheduler if name == "ddim" else DPMSolverScheduler
        scheduler = kind(prediction_type=prediction_type, clip_sample=False)
        scheduler.set_timesteps(10)
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return sample(dummy_model, scheduler, x_T, eta=eta, progress=False,
                  generator=torch.Generator().manual_seed(1))


# (sampler, eta, prediction type) -> (sum, mean of |x_0|) of the result
PINNED_LOOPS = {
    ("ddpm", 0.0, "epsilon"): (22.20394515991211, 0.9905681014060974),
    ("ddpm", 0.0, "v"): (8.624320983886719, 0.4981696605682373),
    ("ddim", 0.0, "epsilon"): (-165.5325469970703, 13.923539161682129),
    ("ddim", 1.0, "epsilon"): (-142.0799102783203, 8.928967475891113),
    ("ddim", 0.0, "v"): (-5.109813213348389, 0.385429710149765),
    ("dpm++", 0.0, "epsilon"): (292.24908447265625, 22.5134334564209),
    ("dpm++", 0.0, "v"): (-11.427711486816406, 0.45209693908691406),
}


@pytest.mark.parametrize("case", list(PINNED_LOOPS))
def test_a_seeded_ten_step_loop_gives_its_pinned_values(case):
    x0 = ten_step_loop(*case)
    total, mean_abs = PINNED_LOOPS[case]
    assert x0.sum().item() == pytest.approx(total, rel=1e-4, abs=1e-3)
    assert x0.abs().mean().item() == pytest.approx(mean_abs, rel=1e-5)


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    """The fixed text-to-image and pixel checkpoints, with evaluate.py's judge in their cache."""
    root = tmp_path_factory.mktemp("fixed")
    cache = root / "cache"
    fixed_checkpoints.judge_cache(cache, "synthetic-64-n64-seed0-train", steps=5)
    return {"text": fixed_checkpoints.text_checkpoint(root / "text.pt", cache),
            "pixel": fixed_checkpoints.pixel_checkpoint(root / "pixel.pt", cache), "root": root}


def pixel_sums(folder: Path) -> list[tuple[int, int]]:
    """Every PNG in `folder`, in file-name order, as two exact integers of its 8-bit values v_i:
    their sum, and their sum weighted by position (sum_i v_i * (i mod 97)), which also moves when
    the same values move to other places."""
    sums = []
    for file in sorted(folder.glob("*.png")):
        values = np.asarray(Image.open(file), dtype=np.int64).reshape(-1)     # (H*W*3,)
        sums.append((int(values.sum()), int((values * (np.arange(len(values)) % 97)).sum())))
    return sums


# sampler flags -> the pixel sums of sample.py's images for the prompts below, seeds 3 and 4
PROMPTS = ["a photo of a man with glasses", ""]
PINNED_TEXT_IMAGES = {
    "--sampler ddim --steps 10": [(100777, 4752312), (100489, 4761273), (100635, 4759932),
                                  (100684, 4761349)],
    "--sampler ddim --steps 10 --eta 1": [(100625, 4760290), (100609, 4706666), (101154, 4783513),
                                          (100426, 4686833)],
    "--sampler dpm++ --steps 8": [(100775, 4754368), (100523, 4760467), (100636, 4761070),
                                  (100688, 4761856)],
    "--sampler ddim --steps 10 --guidance 1 --negative-prompt smiling": [
        (100648, 4756810), (100602, 4761917), (100635, 4759932), (100684, 4761349)],
}


@pytest.mark.parametrize("flags", list(PINNED_TEXT_IMAGES))
def test_sample_py_draws_the_pinned_images_of_a_text_model(fixed, tmp_path, flags):
    args = ["sample.py", "--ckpt", str(fixed["text"]), "--n", "2", "--seed", "3",
            "--out", str(tmp_path / "grid.png"), "--out-dir", str(tmp_path / "images"),
            "--device", "cpu", *[a for p in PROMPTS for a in ("--prompt", p)], *flags.split()]
    run(args)
    assert pixel_sums(tmp_path / "images") == PINNED_TEXT_IMAGES[flags]


# eval.json's numbers on the fixed text checkpoint, as pinned_scores() lists them
PINNED_SCORES = json.loads((Path(__file__).parent / "pinned" / "evaluate_scores.json").read_text())


def test_evaluate_gives_the_pinned_scores_on_a_fixed_checkpoint(fixed):
    out = fixed["root"] / "eval"
    run(["evaluate.py", "--ckpt", str(fixed["text"]), "--n", "2", "--combinations", "2",
         "--unconditional", "4", "--steps", "4", "--real-images", "16",
         "--classifier-steps", "5", "--device", "cpu", "--out", str(out)])
    report = json.loads((out / "eval.json").read_text())
    scores = pinned_scores(report)
    assert scores.keys() == PINNED_SCORES.keys()
    for name, value in PINNED_SCORES.items():
        assert scores[name] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), name


def pinned_scores(report: dict) -> dict:
    """The numbers of an eval.json that the pins compare: every prompt's scores, the summary,
    the Frechet distances and the autoencoder's."""
    scores = {}
    for group, entries in report["prompts"].items():
        for entry in entries:
            for key in ("accuracy", "unconditional", "data_rate", "diversity"):
                scores[f"{group}/{entry['prompt']}/{key}"] = entry[key]
    for group, summary in report["summary"].items():
        for key in ("accuracy", "unconditional", "diversity"):
            scores[f"summary/{group}/{key}"] = summary[key]
    for key, value in report["frechet_distance"].items():
        scores[f"frechet/{key}"] = value
    scores["autoencoder/psnr"] = report["autoencoder"]["psnr"]
    for name, value in report["autoencoder"]["attribute_preservation"].items():
        scores[f"autoencoder/{name}"] = value
    return scores
