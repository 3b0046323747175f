"""Checkpoints are checked before anything is allocated (issue 27): a checkpoint from elsewhere
whose stored config asks for a model no laptop holds, lacks an entry, holds a NaN, or cannot
resume training is refused with one line naming the entry, its value and the file (exit status
2, no traceback), before a module is built or a tensor allocated, and loses nothing written.

The checkpoints are the seeded tiny ones of tests/fixed_checkpoints.py, each damaged in one entry
and given to sample.py's main() in this process; the resume cases damage a one-step stage-1 run.
"""

import copy
import hashlib
import math
import shutil

import pytest
import torch

from common.errors import CheckpointError
from models.clip import CLIP, ImageHead, TextEncoder, load_clip
from models.tokenizer import SPECIAL_TOKENS, Tokenizer
from models.vae import AutoencoderKL, load_vae
from tests import fixed_checkpoints
from tests.conftest import TINY, run
from tests.test_run_faults import one_line_error, run_main


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    """The states of a pixel ("ddpm") and a text-to-image ("ldm") checkpoint, as loaded."""
    folder = tmp_path_factory.mktemp("fixed")
    paths = {"pixel": fixed_checkpoints.pixel_checkpoint(folder / "pixel.pt", folder / "cache"),
             "text": fixed_checkpoints.text_checkpoint(folder / "text.pt", folder / "cache")}
    return {name: torch.load(path, weights_only=True) for name, path in paths.items()}


def damaged(state: dict, change, path):
    """A deep copy of `state` with `change` applied, saved at `path`."""
    state = copy.deepcopy(state)
    change(state)
    torch.save(state, path)
    return path


def sample(path, capsys, *argv) -> tuple[int, str]:
    return run_main("sample", ["--ckpt", str(path), "--n", "1", "--steps", "1", "--device", "cpu",
                               "--out", str(path.parent / "grid.png"), *argv], capsys)


def config(**values):
    return lambda state: state["config"].update(values)


def entry(name, value):
    return lambda state: state.update({name: value})


def first_weight(value, *entries):
    """The first tensor of the weights `entries` (default: the raw and the EMA UNet) -> value(it)."""
    def change(state):
        for weights in [state[e] for e in entries] or [state["model"], state["ema"]["model"]]:
            first = next(iter(weights))
            weights[first] = value(weights[first])
    return change


# ---- 1. sizes a laptop cannot hold, refused before a module is built ------------------------------

@pytest.mark.parametrize("model, change, named", [
    ("pixel", config(num_train_timesteps=10**10), "num_train_timesteps 10000000000: expected at "
                                                  "most 10000 (a bound for a laptop-sized model)"),
    ("pixel", config(base_channels=65536), "base_channels 65536: expected at most 4096"),
    ("pixel", config(base_channels=-32), "base_channels -32: expected 1 or more"),
    ("pixel", config(num_res_blocks=10**7), "num_res_blocks 10000000: expected at most 16"),
    ("pixel", config(channel_mult=[1, 2048]), "channel_mult [1, 2048]: expected entries of at "
                                              "most 16"),
    ("pixel", config(base_channels=512, channel_mult=[1, 16]), "channel_mult [1, 16]: "
                                                               "base_channels x channel_mult = 8192"),
    ("pixel", config(image_size=2**20), "image_size 1048576: expected at most 1024"),
    ("pixel", config(num_heads=0), "num_heads 0: expected 1 or more"),
    ("text", lambda s: s["text_config"].update(text_width=2**22), "its text_config has text_width "
                                                                  "4194304: expected at most 4096"),
    ("text", lambda s: s["text_config"].update(text_layers=-1), "text_layers -1"),
    ("text", entry("latent_shape", [3, 2**20, 2**20]), "latent_shape [3, 1048576, 1048576]"),
    ("text", lambda s: s["vae_config"].update(base_channels=8192), "its vae_config has "
                                                                   "base_channels 8192"),
    ("text", lambda s: s["tokenizer"].update(max_length=10**6), "its tokenizer has max_length "
                                                                "1000000: expected at most 1024"),
    # within every bound, but 19e9 parameters where the file holds 0.3e6: compared on the meta
    # device, so nothing is allocated
    ("pixel", config(base_channels=4096, channel_mult=[1], num_res_blocks=16, attention_levels=[0]),
     "the weights in its model do not fit the UNet its config describes (size mismatch"),
    # of the wrong type
    ("pixel", config(base_channels="64"), "base_channels = '64', expected int"),
    ("pixel", config(base_channels=True), "base_channels = 'True', expected int"),
    ("pixel", config(num_res_blocks=1.0), "num_res_blocks = '1.0', expected int"),
    ("pixel", config(channel_mult=[1, True]), "channel_mult = '[1, True]', expected a list"),
])
def test_a_stored_size_beyond_a_laptop_model_is_one_line(fixed, model, change, named, capsys,
                                                          tmp_path):
    path = damaged(fixed[model], change, tmp_path / "checkpoint.pt")
    code, err = sample(path, capsys)
    one_line_error(code, err, f"checkpoint {path}: ", named)
    assert not (tmp_path / "grid.png").exists()


# ---- 2. entries the format check did not cover: one line, not a traceback ----------------------

@pytest.mark.parametrize("model, change, named", [
    ("text", lambda s: s.pop("text_encoder"), "it has no 'text_encoder'"),
    ("text", lambda s: s.pop("text_config"), "it has no 'text_config'"),
    ("text", entry("tokenizer", {}), "its tokenizer has no 'max_length'"),
    ("text", lambda s: s["tokenizer"].update(vocabulary=["a", "b"]), "its tokenizer has "
                                                                     "vocabulary = \"['a', 'b']\""),
    ("pixel", entry("ema", {}), "its ema has no 'model'"),
    ("text", entry("ema", {}), "its ema has no 'model'"),
    ("text", lambda s: s["text_config"].update(text_width="32"), "its text_config has "
                                                                 "text_width = '32', expected int"),
    ("text", lambda s: s["text_config"].update(text_heads=3), "text_heads 3: must divide "
                                                              "text_width 32"),
    ("text", entry("latent_shape", [3, 8]), "it has latent_shape [3, 8]: expected [3, 8, 8]"),
    ("text", lambda s: s["text_encoder"].pop("final_norm.weight"), "the weights in its "
     "text_encoder do not fit the text encoder its config describes (no final_norm.weight)"),
])
def test_an_entry_the_format_check_missed_is_one_line(fixed, model, change, named, capsys,
                                                      tmp_path):
    path = damaged(fixed[model], change, tmp_path / "checkpoint.pt")
    code, err = sample(path, capsys)
    one_line_error(code, err, f"checkpoint {path}: ", named)


@pytest.mark.parametrize("seed", [2**64, -1])
def test_a_seed_beyond_64_bits_or_negative_is_one_line_on_every_script(seed, fixed, capsys,
                                                                       tmp_path):
    path = damaged(fixed["pixel"], lambda state: None, tmp_path / "checkpoint.pt")
    named = f"--seed {seed}: expected 0 to 4294967295"
    one_line_error(*sample(path, capsys, "--seed", str(seed)), named)
    one_line_error(*run_main("evaluate", ["--ckpt", str(path), "--seed", str(seed)], capsys),
                   named)
    one_line_error(*run_main("train_unconditional", [*TINY, "--out", str(tmp_path / "run"),
                                                     "--seed", str(seed)], capsys), named)
    assert not (tmp_path / "run").exists()  # refused before anything was written


# ---- 3. values that sampled bad images with exit status 0 ---------------------------------------

@pytest.mark.parametrize("model, change, named", [
    ("text", entry("scale_factor", 0.0), "it has scale_factor 0.0: expected a positive number"),
    ("text", entry("scale_factor", -1.0), "scale_factor -1.0"),
    ("text", entry("scale_factor", math.nan), "it has scale_factor nan: expected a finite number"),
    ("pixel", first_weight(lambda w: torch.full_like(w, math.nan)), "= nan: expected finite "
                                                                       "floating-point weights"),
    ("pixel", first_weight(lambda w: torch.full_like(w, math.inf)), "= inf"),
    ("pixel", first_weight(lambda w: w.to(torch.int8)), "of type int8: expected "
                                                           "floating-point weights"),
    ("pixel", first_weight(lambda w: w > 0), "of type bool"),
    ("pixel", first_weight(lambda w: w.to(torch.complex64)), "of type complex64"),
    ("text", lambda s: s["vae"].update({k: v * math.nan for k, v in s["vae"].items()}),
     "its vae has "),
    ("pixel", entry("step", -5), "it has step -5: expected 0 or more"),
    ("pixel", entry("step", 10**18), "it has step 1000000000000000000: expected at most "
                                     "1000000000"),
])
def test_a_value_that_gives_bad_images_is_refused(fixed, model, change, named, capsys, tmp_path):
    path = damaged(fixed[model], change, tmp_path / "checkpoint.pt")
    code, err = sample(path, capsys)
    one_line_error(code, err, f"checkpoint {path}: ", named)


# ---- 4. a stored guidance is blamed on the checkpoint, not on a flag never given ----------------

@pytest.mark.parametrize("guidance, expected", [(math.nan, "a finite number"),
                                                (-2.0, "0 or more")])
def test_a_bad_stored_guidance_names_the_checkpoint_not_the_flag(fixed, guidance, expected, capsys,
                                                                 tmp_path):
    path = damaged(fixed["text"], config(guidance=guidance), tmp_path / "checkpoint.pt")
    line = one_line_error(*sample(path, capsys), f"checkpoint {path}: its config has guidance "
                                                 f"{guidance}: expected {expected}")
    assert "--guidance" not in line


# ---- the autoencoder's and the CLIP's checkpoints, through their loaders ------------------------

@pytest.fixture(scope="module")
def vae_and_clip(tmp_path_factory):
    """A "vae" and a "clip" checkpoint state (tiny, seeded weights)."""
    torch.manual_seed(0)
    vae_config = {**fixed_checkpoints.VAE, "image_size": 16}
    vae = AutoencoderKL(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, latent_channels=3,
                        attention=False).state_dict()
    tokenizer = Tokenizer(SPECIAL_TOKENS + ["a", "man"], max_length=8)
    clip_config = {**fixed_checkpoints.TEXT, "head_channels": 32, "head_mult": [1, 2],
                   "embed_dim": 32}
    clip = CLIP(TextEncoder(len(tokenizer), 8, width=32, num_layers=1, num_heads=4),
                ImageHead(3, 32, (1, 2), width=32), embed_dim=32).state_dict()
    return ({"kind": "vae", "config": vae_config, "step": 1, "model": vae, "scale_factor": 0.8},
            {"kind": "clip", "config": clip_config, "step": 1, "model": clip,
             "tokenizer": tokenizer.state_dict(), "vae": vae, "vae_config": vae_config,
             "scale_factor": 0.8})


@pytest.mark.parametrize("kind, change, named", [
    ("vae", entry("scale_factor", 0.0), "scale_factor 0.0: expected a positive number"),
    ("vae", config(latent_channels=2**20), "latent_channels 1048576: expected at most 64"),
    ("vae", config(base_channels=-32), "base_channels -32: expected 1 or more"),
    ("vae", first_weight(lambda w: torch.zeros(3, dtype=torch.bool), "model"), "the weights in its "
     "model do not fit the autoencoder its config describes (size mismatch for"),
    ("vae", first_weight(lambda w: w.to(torch.int8), "model"), "of type int8"),
    ("clip", config(text_width=2**22), "its config has text_width 4194304: expected at most 4096"),
    ("clip", config(head_channels=512, head_mult=[1, 16]), "head_mult [1, 16]: head_channels x "
                                                           "head_mult = 8192 channels"),
    ("clip", config(head_channels=48), "head_channels 48: expected a multiple of 32"),
    ("clip", entry("tokenizer", {"vocabulary": SPECIAL_TOKENS, "max_length": "8"}),
     "its tokenizer has max_length = '8', expected int"),
    ("clip", entry("scale_factor", math.inf), "scale_factor inf: expected a finite number"),
    ("clip", lambda s: s["model"].update(logit_scale=torch.tensor(math.nan)), "its model has "
                                                                              "logit_scale = nan"),
])
def test_the_autoencoder_and_clip_loaders_check_the_same_way(vae_and_clip, kind, change, named,
                                                             tmp_path):
    state = vae_and_clip[0] if kind == "vae" else vae_and_clip[1]
    path = damaged(state, change, tmp_path / "checkpoint.pt")
    load = load_vae if kind == "vae" else load_clip
    with pytest.raises(CheckpointError) as error:
        load(path)
    assert str(error.value).startswith(f"checkpoint {path}: ") and named in str(error.value)
    assert "\n" not in str(error.value)


def test_the_undamaged_autoencoder_and_clip_load(vae_and_clip, tmp_path):
    vae, clip = vae_and_clip
    torch.save(vae, tmp_path / "vae.pt")
    torch.save(clip, tmp_path / "clip.pt")
    assert load_vae(tmp_path / "vae.pt")[1] == 0.8
    assert load_clip(tmp_path / "clip.pt").tokenizer.max_length == 8


# ---- --resume: what training needs besides, checked before the first step; nothing lost ---------

@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
    """A one-step stage-1 run: its folder, its checkpoint's state, its --cache-dir."""
    root = tmp_path_factory.mktemp("resume")
    out, cache = root / "run", root / "cache"
    run(["train_unconditional.py", *TINY, "--cache-dir", str(cache), "--steps", "1",
         "--out", str(out)])
    return out, torch.load(out / "checkpoint.pt", weights_only=True), cache


def optimizer_moment(value):
    def change(state):
        moments = state["optimizer"]["state"][0]
        moments["exp_avg"] = value(moments["exp_avg"])
    return change


@pytest.mark.parametrize("change, named", [
    (lambda s: s.pop("optimizer"), "it has no 'optimizer' (it cannot resume training)"),
    (lambda s: s.pop("rng"), "it has no 'rng'"),
    (entry("optimizer", {"state": "garbage"}), "it has optimizer = \"{'state': 'garbage'}\": "
                                               "expected an optimizer's state"),
    (entry("rng", "garbage"), "it has rng = 'garbage'"),
    (lambda s: s["rng"][0].update(torch=torch.zeros(3)), "its rng of process 0 has torch = "),
    (lambda s: s["rng"][0].update(python=[3, [0] * 5, None]), "its rng of process 0 has python"),
    (entry("scaler", "garbage"), "it has scaler = 'garbage', expected dict"),
    (entry("scaler", {"scale": 0.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                      "growth_interval": 2000, "_growth_tracker": 0}), "its scaler has scale 0.0"),
    (optimizer_moment(lambda m: m * math.nan), "its optimizer has exp_avg of parameter 0 = "),
    (optimizer_moment(lambda m: m[:1]), "does not fit this run's optimizer (exp_avg of shape"),
    (entry("ema", {}), "its ema has no 'model'"),
    (entry("step", -5), "it has step -5: expected 0 or more"),
    (entry("step", 10**18), "it has step 1000000000000000000: expected at most 1000000000"),
])
def test_resuming_a_checkpoint_that_cannot_resume_is_one_line_and_loses_nothing(
        stage1_run, change, named, capsys, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(stage1_run[0], out)
    damaged(stage1_run[1], change, out / "checkpoint.pt")
    written = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
               for path in out.iterdir() if path.is_file()}
    code, err = run_main("train_unconditional", [*TINY, "--cache-dir", str(stage1_run[2]),
                                                 "--steps", "2", "--out", str(out), "--resume"],
                         capsys)
    one_line_error(code, err, "--resume", named)
    assert {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in out.iterdir() if path.is_file() and path.name != "run.lock"} == written
