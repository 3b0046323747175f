"""Stage 4: cross-attention, classifier-free guidance, the Frechet distance, and train_ldm.py /
sample.py / evaluate.py end to end on a tiny synthetic set."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.guidance import guided_prediction
from models import UNet
from models.attention import Attention, SpatialTransformer
from models.metrics import frechet_distance
from tests.conftest import TINY_LDM
from tests.conftest import run

# ---- Cross-attention [P16] -----------------------------------------------------------------

def test_cross_attention_keeps_the_query_shape_and_ignores_padded_keys():
    torch.manual_seed(0)
    attention = Attention(32, context_dim=24, num_heads=4).eval()
    x = torch.randn(2, 10, 32)                       # 10 image tokens
    context = torch.randn(2, 7, 24)                  # 7 text tokens
    mask = torch.tensor([[True] * 4 + [False] * 3, [True] * 7])
    out = attention(x, context, mask=mask)
    assert out.shape == x.shape                      # the image keeps its shape
    # padded keys get exactly zero weight
    attention.record = True
    recorded = attention(x, context, mask=mask)
    assert torch.equal(recorded, out)                # recording leaves the output bit for bit
    weights = attention.last_weights                 # (B, heads, L, L_ctx)
    assert weights.shape == (2, 4, 10, 7)
    # the kept weights are the ones the fused kernel applied: to_out(weights @ v) is the output
    v = attention.to_v(context).reshape(2, 7, 4, 8).transpose(1, 2)          # (B, heads, L_ctx, d)
    written_out = attention.to_out((weights @ v).transpose(1, 2).reshape(2, 10, 32))
    assert torch.allclose(written_out, out, atol=1e-5)
    assert (weights[0, :, :, 4:] == 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 10), atol=1e-6)
    # contexts that differ only at padded positions give identical outputs
    other = context.clone()
    other[0, 4:] = torch.randn(3, 24) * 100
    attention.record = False
    assert torch.allclose(attention(x, other, mask=mask)[0], out[0], atol=1e-6)


def test_a_text_unet_reads_the_text_and_starts_as_identity_blocks():
    torch.manual_seed(0)
    unet = UNet(in_channels=3, base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                attention_levels=(1,), context_dim=16).eval()
    transformers = [m for m in unet.modules() if isinstance(m, SpatialTransformer)]
    assert len(transformers) == 1 + 2 + 1  # level 1 down (1 block), up (2 blocks), middle
    z, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 500])
    context, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    for m in unet.modules():  # give every zero-initialised output layer some weight
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and m.weight.abs().sum() == 0:
            torch.nn.init.normal_(m.weight, std=0.05)
    out = unet(z, t, context, mask)
    assert out.shape == z.shape
    assert not torch.allclose(unet(z, t, context * 2, mask), out, atol=1e-4)  # depends on text
    with pytest.raises(ValueError, match="needs a context"):
        unet(z, t)


# ---- Classifier-free guidance --------------------------------------------------------------

def test_guidance_at_one_is_conditional_and_at_zero_unconditional():
    torch.manual_seed(0)
    unet = UNet(in_channels=3, base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                attention_levels=(1,), context_dim=16).eval()
    for m in unet.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and m.weight.abs().sum() == 0:
            torch.nn.init.normal_(m.weight, std=0.05)
    z, t = torch.randn(3, 3, 8, 8), torch.tensor([5, 50, 500])
    cond = (torch.randn(3, 6, 16), torch.ones(3, 6, dtype=torch.bool))
    uncond = (torch.randn(3, 6, 16), torch.tensor([[True, True] + [False] * 4] * 3))
    with torch.no_grad():
        eps_c, eps_u = unet(z, t, *cond), unet(z, t, *uncond)
        assert torch.allclose(guided_prediction(unet, z, t, cond, uncond, 1.0), eps_c, atol=1e-5)
        assert torch.allclose(guided_prediction(unet, z, t, cond, uncond, 0.0), eps_u, atol=1e-5)
        # and in between / beyond: eps_u + w (eps_c - eps_u)
        assert torch.allclose(guided_prediction(unet, z, t, cond, uncond, 3.0),
                              eps_u + 3.0 * (eps_c - eps_u), atol=1e-4)
        # an unconditional batch only 2 tokens long (a batch is as long as its longest prompt):
        # padded inside to the conditional length, with no weight on the added keys
        short = (uncond[0][:, :2], uncond[1][:, :2])
        assert torch.allclose(guided_prediction(unet, z, t, cond, short, 3.0),
                              eps_u + 3.0 * (eps_c - eps_u), atol=1e-4)


# ---- Frechet distance ----------------------------------------------------------------------

def test_frechet_distance_matches_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    d = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([3.0]),
                         torch.tensor([[9.0]]))
    assert d == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2, abs=1e-9)
    # diagonal covariances: sum over dimensions of the 1-D formula
    s1, s2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    m1, m2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = ((m1 - m2) ** 2).sum() + ((s1.sqrt() - s2.sqrt()) ** 2).sum()
    assert frechet_distance(m1, torch.diag(s1), m2, torch.diag(s2)) == pytest.approx(expected.item())
    # a full covariance against itself, rotated into another basis: zero
    a = torch.randn(5, 5, dtype=torch.float64)
    sigma = a @ a.T + torch.eye(5, dtype=torch.float64)
    assert abs(frechet_distance(torch.zeros(5), sigma, torch.zeros(5), sigma)) < 1e-8


# ---- Scripts end to end --------------------------------------------------------------------

def test_a_self_contained_checkpoint_samples_with_the_other_files_gone(ldm_run, vae_run, clip_run,
                                                                       tmp_path):
    # copy the checkpoint away from the autoencoder and CLIP runs, then hide those
    ckpt = tmp_path / "model.pt"
    shutil.copy(ldm_run / "checkpoint.pt", ckpt)
    hidden = []
    for folder in (vae_run, clip_run):
        hidden.append((folder, folder.with_name(folder.name + "_hidden")))
        folder.rename(hidden[-1][1])
    try:
        args = ["sample.py", "--ckpt", str(ckpt), "--n", "2", "--steps", "3", "--device", "cpu"]
        result = run([*args, "--prompt", "a smiling man with glasses", "--prompt", "a woman",
                      "--out", str(tmp_path / "grid.png"), "--out-dir", str(tmp_path / "each"),
                      "--attention-maps", "--trajectory"])
        index = json.loads((tmp_path / "each" / "index.json").read_text())
        assert [(e["prompt"], e["seed"]) for e in index] == [
            ("a smiling man with glasses", 0), ("a smiling man with glasses", 1),
            ("a woman", 0), ("a woman", 1)]
        assert all((tmp_path / "each" / e["file"]).is_file() for e in index)
        assert index[0]["file"] == "0000_a_smiling_man_with_glasses_seed0.png"
        for name in ("grid.png", "grid_attention.png", "grid_trajectory.png"):
            assert (tmp_path / name).is_file()
        # 2 prompts x 2 seeds of 32 px images shown at 96 px, 2 px apart, below a line of seeds
        # (26 px) and beside a column of prompts (wider than its 12 px of margins)
        height, width, _ = np.asarray(Image.open(tmp_path / "grid.png")).shape
        assert height == 26 + 2 * (96 + 2) and width - 2 * (96 + 2) > 12

        # (prompt, seed) names one image: seed 1 alone equals the second image above
        run([*args, "--n", "1", "--seed", "1", "--prompt", "a smiling man with glasses",
             "--out-dir", str(tmp_path / "again"), "--out", str(tmp_path / "again.png")])
        again = np.asarray(Image.open(tmp_path / "again" /
                                      "0000_a_smiling_man_with_glasses_seed1.png")).astype(int)
        first = np.asarray(Image.open(tmp_path / "each" / index[1]["file"])).astype(int)
        assert np.abs(again - first).max() <= 1

        # unknown words are named; an empty prompt samples unconditionally
        result = run([*args, "--prompt", "a man with purple glasses", "--out",
                      str(tmp_path / "unknown.png")])
        assert "'purple'" in result.stderr and "not in the vocabulary" in result.stderr
        result = run([*args, "--prompt", "", "--out", str(tmp_path / "empty.png")])
        assert "warning" not in result.stderr
        assert (tmp_path / "empty.png").is_file()
    finally:
        for original, moved in hidden:
            moved.rename(original)


def test_the_prompt_reaches_the_prediction_of_a_trained_checkpoint(ldm_run):
    """Through the saved text encoder and UNet: guidance 0 ignores the prompt, guidance 5 not."""
    from diffusion.pipeline import load_pipeline
    pipe = load_pipeline(ldm_run / "checkpoint.pt")
    text, unet = pipe.text, pipe.unet
    z = torch.randn(1, *pipe.sample_shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([300])
    uncond = text([""], "cpu")
    with torch.no_grad():
        predictions = {(w, p): guided_prediction(unet, z, t, text([p], "cpu"), uncond, w)
                       for w in (0.0, 5.0) for p in ("a bald man", "a woman with blond hair")}
    assert torch.equal(predictions[0.0, "a bald man"], predictions[0.0, "a woman with blond hair"])
    difference = (predictions[5.0, "a bald man"] - predictions[5.0, "a woman with blond hair"])
    assert difference.abs().max() > 1e-6


def test_unconditional_latent_diffusion_and_its_errors(vae_run, tmp_path):
    out = tmp_path / "uncond"
    result = run(["train_ldm.py", "--vae", str(vae_run / "checkpoint.pt"), "--clip", "",
                  *TINY_LDM, "--steps", "2", "--out", str(out)])
    assert "unconditional" in result.stdout
    ckpt = str(out / "checkpoint.pt")
    run(["sample.py", "--ckpt", ckpt, "--n", "2", "--steps", "2", "--device", "cpu",
         "--out", str(tmp_path / "u.png")])
    assert (tmp_path / "u.png").is_file()
    result = run(["sample.py", "--ckpt", ckpt, "--prompt", "a man", "--device", "cpu"], check=False)
    assert result.returncode == 2 and "unconditional latent model" in result.stderr
    result = run(["train_ldm.py", "--vae", str(vae_run / "checkpoint.pt"), "--clip",
                  str(tmp_path / "missing.pt"), *TINY_LDM, "--out", str(tmp_path / "x")],
                 check=False)
    assert result.returncode == 2 and "--clip: checkpoint" in result.stderr
    assert "no such file" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_reports_prompt_following_against_the_unconditional_baseline(ldm_run, tmp_path):
    out = tmp_path / "eval"
    result = run(["evaluate.py", "--ckpt", str(ldm_run / "checkpoint.pt"), "--n", "2",
                  "--combinations", "2", "--unconditional", "4", "--steps", "2",
                  "--real-images", "32", "--classifier-steps", "5", "--device", "cpu",
                  "--out", str(out)])
    assert "prompt following at guidance" in result.stdout
    assert "images: 100%" in result.stderr  # its sampling shows a bar (it used to look stuck)
    report = json.loads((out / "eval.json").read_text())
    assert report["summary"]["single"]["prompts"] == 16  # 15 attributes and "a woman"
    assert report["summary"]["pair"]["prompts"] == 2 and report["summary"]["triple"]["prompts"] == 2
    for entry in report["prompts"]["pair"] + report["prompts"]["triple"]:
        assert 0.0 <= entry["accuracy"] <= 1.0 and len(entry["requirement"]) in (2, 3)
        assert entry["data_rate"] > 0  # the combination occurs in real rows
    assert math.isfinite(report["frechet_distance"]["generated_vs_real"])
    assert {"generated", "real_with_own_captions"} <= report["clip_score"].keys()
    for entry in report["prompts"]["single"]:  # 2 images per prompt: one pair each
        assert math.isnan(entry["diversity"]) or entry["diversity"] >= 0
    autoencoder = report["autoencoder"]
    assert autoencoder["images"] == 32 and 0 < autoencoder["psnr"] < 60
    assert len(autoencoder["attribute_preservation"]) == 15
    assert all(0 <= v <= 1 for v in autoencoder["attribute_preservation"].values())
    assert "attribute preservation" in result.stdout and "divers" in result.stdout


def test_frechet_spread_matches_the_spread_over_fresh_draws():
    """The bootstrap standard deviation of one pair of sets estimates how much the distance
    moves between independent draws of the same size."""
    from models.metrics import feature_statistics, frechet_distance_spread
    generator = torch.Generator().manual_seed(0)
    def draw(shift):
        return torch.randn(200, 4, generator=generator) + shift
    fresh = torch.tensor([frechet_distance(*feature_statistics(draw(0.5)),
                                           *feature_statistics(draw(0.0))) for _ in range(200)])
    spreads = [frechet_distance_spread(draw(0.5), draw(0.0), rounds=100, seed=s) for s in range(5)]
    for spread in spreads:
        assert 0.5 * fresh.std() < spread < 2.0 * fresh.std()


def test_validation_grids_take_your_prompts_one_labelled_row_each(vae_run, clip_run, tmp_path):
    """issue 28: --validation-prompts gives the grids' prompts, one row each (as sample.py lays
    its grid out), listed by row in samples/prompts.txt; more than 16 is refused in one line."""
    from PIL import Image
    prompts = tmp_path / "mine.txt"
    prompts.write_text("a man\n\na smiling woman\n")
    out = tmp_path / "ldm"
    common = ["train_ldm.py", "--vae", str(vae_run / "checkpoint.pt"), "--clip",
              str(clip_run / "checkpoint.pt"), *TINY_LDM, "--steps", "1", "--sample-seeds", "3"]
    run([*common, "--validation-prompts", str(prompts), "--out", str(out)])
    assert (out / "samples" / "prompts.txt").read_text() == "row 0: a man\nrow 1: a smiling woman\n"
    grid = Image.open(out / "samples" / "step_000001.png")
    assert grid.width > grid.height  # 3 seeds across, 2 prompts down (with their labels)
    prompts.write_text("a man\n" * 17)
    import train_ldm
    with pytest.raises(ValueError, match="17 prompts; at most 16 rows in a grid"):
        train_ldm.validation_prompts(train_ldm.Config(validation_prompts=str(prompts)), {}, 1.0)


def test_own_captioned_data_validates_on_its_own_held_out_captions(tmp_path):
    """Data with captions but no attributes: the built-in face prompts would be mostly <unk>, so
    the grids show the first 8 distinct held-out captions."""
    import train_ldm
    torch.save({"kind": "latents", "mean": torch.zeros(2, 3, 4, 4), "std": torch.ones(2, 3, 4, 4),
                "scale_factor": 1.0, "data": "mine", "image_size": 8, "attributes": None,
                "attribute_names": None,
                "texts": [f"a {c} circle" for c in ("red", "red", "blue")] + ["a square"] * 9},
               tmp_path / "latents_val.pt")
    cfg = train_ldm.Config(vae=str(tmp_path / "checkpoint.pt"))
    prompts = train_ldm.validation_prompts(cfg, {"attributes": None, "texts": ["x"]}, 1.0)
    assert prompts == ["a red circle", "a blue circle", "a square"]
    faces = train_ldm.validation_prompts(cfg, {"attributes": torch.zeros(1, 3), "texts": None}, 1.0)
    assert faces == list(train_ldm.VALIDATION_PROMPTS)
