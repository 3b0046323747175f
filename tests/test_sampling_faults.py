"""sample.py and evaluate.py given bad outputs and inputs, as a user gives them (issue 14: #3, #9,
#10, #14, #16): one line on stderr naming the path, exit status 2, no traceback, and an output
that cannot be written is refused before any work."""

import hashlib
import json
import os
import time

import pytest
import torch

from tests.conftest import ROOT, run

# evaluate.py at its smallest: 16 single-attribute prompts x 1 seed, a 5-step judge
EVALUATE = ["evaluate.py", "--n", "1", "--unconditional", "8", "--combinations", "0",
            "--steps", "2", "--real-images", "8", "--classifier-steps", "5", "--device", "cpu"]


@pytest.fixture(scope="module")
def text_ckpt(ldm_run):
    """The session's 2-step text-to-image checkpoint (tests/conftest.py)."""
    return ldm_run / "checkpoint.pt"


def assert_one_line_error(result, *named: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for text in named:
        assert text in result.stderr


# ---- #3, #10: outputs that cannot be written, refused before any work -------------------------

@pytest.mark.parametrize("flag, name, expected", [
    ("--out", "grid.xyz", ".png"),               # an extension PIL cannot write
    ("--out", "grid", ".png"),                   # no extension
    ("--out", "folder", ".png"),                 # an existing folder
    ("--out", "notes.txt/grid.png", "notes.txt"),  # under a file
    ("--out-dir", "notes.txt", "folder"),        # a file
])
def test_sample_refuses_an_output_it_cannot_write_before_sampling(flag, name, expected, text_ckpt,
                                                                  tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("not a folder")
    outputs = {"--out": str(tmp_path / "grid.png"), flag: str(tmp_path / name)}
    started = time.time()
    result = run(["sample.py", "--ckpt", str(text_ckpt), "--n", "256", "--prompt", "a woman",
                  "--device", "cpu", *[v for pair in outputs.items() for v in pair]], check=False)
    seconds = time.time() - started
    assert_one_line_error(result, f"{flag} {tmp_path / name}:", expected)
    assert "wrote" not in result.stdout
    assert seconds < 30, "256 images take minutes: the outputs were checked after sampling"


@pytest.mark.parametrize("name", ["notes.txt", "notes.txt/eval"])
def test_evaluate_refuses_an_output_folder_that_is_a_file(name, text_ckpt, tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder")
    result = run([*EVALUATE, "--ckpt", str(text_ckpt), "--out", str(tmp_path / name)], check=False)
    assert_one_line_error(result, f"--out {tmp_path / name}:", "folder")
    assert "data and judge cache" not in result.stdout  # before the checkpoint is even read


# ---- #9, #14: the prompts file and the file names of prompts ----------------------------------

@pytest.mark.parametrize("content", [b"", b"\n   \n\n"])
def test_an_empty_prompts_file_is_an_error(content, text_ckpt, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(content)
    result = run(["sample.py", "--ckpt", str(text_ckpt), "--prompts-file", str(prompts),
                  "--device", "cpu", "--out", str(tmp_path / "grid.png")], check=False)
    assert_one_line_error(result, f"--prompts-file {prompts}:", "no prompt")
    assert not (tmp_path / "grid.png").exists()


def test_a_prompts_file_that_is_not_utf8_names_the_line(text_ckpt, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("a smiling man\na bald man with gl".encode() + b"\xe4sses\n")  # Latin-1 ä
    result = run(["sample.py", "--ckpt", str(text_ckpt), "--prompts-file", str(prompts),
                  "--device", "cpu", "--out", str(tmp_path / "grid.png")], check=False)
    assert_one_line_error(result, f"--prompts-file {prompts}:2:", "byte 32", "UTF-8")


def test_a_prompt_with_no_ascii_is_named_by_a_hash_not_unconditional(text_ckpt, tmp_path):
    emoji = "\N{SLIGHTLY SMILING FACE}\N{SMILING FACE WITH SUNGLASSES}"
    run(["sample.py", "--ckpt", str(text_ckpt), "--prompt", emoji, "--prompt", "", "--n", "1",
         "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "grid.png"),
         "--out-dir", str(tmp_path / "each")])
    index = json.loads((tmp_path / "each" / "index.json").read_text())
    digest = hashlib.sha1(emoji.encode()).hexdigest()[:8]
    assert [e["file"] for e in index] == [f"0000_prompt_{digest}_seed0.png",
                                          "0001_unconditional_seed0.png"]


# ---- #16: where evaluate.py keeps its data and judge, and a judge cache that cannot be read ----

def test_evaluate_says_where_its_cache_is_and_that_it_will_build_it(text_ckpt, tmp_path):
    """A checkpoint whose autoencoder was trained with a relative --cache-dir, and whose data
    folder is not here: the cache folder is named, absolute, before the data is missed."""
    state = torch.load(text_ckpt, weights_only=True)
    state["vae_config"].update(data=str(tmp_path / "faces"),
                               cache_dir=os.path.relpath(tmp_path / "cache", ROOT))
    torch.save(state, tmp_path / "moved.pt")
    result = run([*EVALUATE, "--ckpt", str(tmp_path / "moved.pt"), "--out", str(tmp_path / "eval")],
                 check=False)
    assert (f"data and judge cache: {(tmp_path / 'cache').resolve()} (train_vae.py's --cache-dir, "
            "relative to the current folder); it does not exist yet") in result.stdout
    assert_one_line_error(result, str(tmp_path / "faces"))


@pytest.mark.parametrize("key", ["cache_dir", "data"])
def test_evaluate_names_a_checkpoint_that_does_not_record_its_data(key, text_ckpt, tmp_path):
    """A checkpoint from an older version, whose autoencoder config lacks the data or its cache
    folder: a one-line error naming the file and the missing key, not a KeyError."""
    state = torch.load(text_ckpt, weights_only=True)
    del state["vae_config"][key]
    torch.save(state, tmp_path / "old.pt")
    result = run([*EVALUATE, "--ckpt", str(tmp_path / "old.pt"), "--out", str(tmp_path / "eval")],
                 check=False)
    assert_one_line_error(result, f"checkpoint {tmp_path / 'old.pt'}:", f"({key} missing)")
    assert not (tmp_path / "eval").exists()


def test_a_corrupt_judge_cache_is_a_warning_and_is_trained_again(text_ckpt, vae_run, tmp_path):
    args = [*EVALUATE, "--ckpt", str(text_ckpt), "--out", str(tmp_path / "eval")]
    cache = (vae_run.parent / "cache").resolve()  # train_vae.py's --cache-dir in conftest.py
    first = run([*args, "--retrain-judge"])
    assert f"data and judge cache: {cache} (train_vae.py's --cache-dir)\n" in first.stdout
    assert "trained the judge" in first.stdout
    [judge] = cache.glob("classifier-*.pt")
    judge.write_bytes(b"PK\x03\x04 a torn write")
    second = run(args)
    assert f"judge: training one (the judge cached at {judge} cannot be read" in second.stdout
    assert "Traceback" not in second.stderr
    assert "trained the judge" in second.stdout and "prompt following" in second.stdout
    assert torch.load(judge, weights_only=True)["kind"] == "classifier"  # written over
    # issue 28: the next run says in one line what it loads, and trains nothing
    third = run(args)
    assert f"judge: loaded {judge} (" in third.stdout and "trained the judge" not in third.stdout


def test_the_judge_cache_is_keyed_by_everything_that_defines_the_judge(tmp_path):
    """issue 28: a judge of other steps, learning rate or batch has another file, and a file whose
    settings differ from the ones asked for is not used (with the reason, in one line)."""
    from evaluation.judge import cached_judge, judge_path
    from tests.fixed_checkpoints import JUDGE_BATCH, JUDGE_LR, judge_cache
    data = "synthetic-64-n64-seed0-train"
    path = judge_cache(tmp_path, data, steps=5)
    settings = dict(steps=5, lr=JUDGE_LR, batch_size=JUDGE_BATCH)
    names = torch.load(path, weights_only=True)["attribute_names"]
    assert path == judge_path(tmp_path, data, 16, settings) and cached_judge(path, names,
                                                                             settings)[0]
    others = [dict(settings, steps=6), dict(settings, lr=1e-3), dict(settings, batch_size=32)]
    assert len({judge_path(tmp_path, data, 16, other) for other in others} | {path}) == 4
    for other in others:  # read at this path anyway (a renamed file): refused, with the reason
        state, why = cached_judge(path, names, other)
        assert state is None and "was trained with" in why and str(other) in why
    assert cached_judge(tmp_path / "none.pt", names, settings) == (
        None, f"no judge cached at {tmp_path / 'none.pt'}")
