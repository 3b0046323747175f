"""sample.py given work it cannot finish (issue 27 #3): hours of images before anything is
written, 10^5 prompts encoded in one batch, an --out that only fails after sampling, --guidance
inf. Each is refused in one line naming the value and the limit (exit status 2, no traceback)
before any sampling, and writes nothing; the prompts are encoded in bounded batches."""

import importlib
from pathlib import Path

import pytest

from models.clip import TextConditioner
from tests.test_run_faults import one_line_error, run_main


@pytest.fixture(scope="module")
def text_ckpt(ldm_run):
    """The session's 2-step text-to-image checkpoint (tests/conftest.py)."""
    return str(ldm_run / "checkpoint.pt")


@pytest.fixture
def no_sampling(monkeypatch):
    """sample.py's generate, replaced: a refused command must not get there."""
    def generate(*args, **kwargs):
        raise AssertionError("sampling started: the command should have been refused before")

    monkeypatch.setattr(importlib.import_module("sample"), "generate", generate)


def refused(argv: list[str], capsys, *named: str) -> str:
    code, err = run_main("sample", ["--device", "cpu", *argv], capsys)
    return one_line_error(code, err, *named)


def test_too_many_images_are_refused_with_the_cap_and_why(text_ckpt, no_sampling, capsys,
                                                          tmp_path):
    """Before the checkpoint is read, too."""
    grid = tmp_path / "grid.png"
    line = refused(["--ckpt", text_ckpt, "--n", "100000", "--out", str(grid)], capsys,
                   "--n 100000: at most 4096 images in one run", "kept in memory",
                   "run again from --seed 4096")
    assert "hours" in line
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a smiling woman\n" * 1000)
    refused(["--ckpt", text_ckpt, "--prompts-file", str(prompts), "--out", str(grid)], capsys,
            "--n 8 x 1000 prompts = 8000 images: at most 4096 in one run")
    assert not grid.exists()


def test_a_prompts_file_of_100000_lines_is_refused_before_the_checkpoint_is_read(
        no_sampling, capsys, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a bald man with glasses\n" * 100_000)
    refused(["--ckpt", str(tmp_path / "unread.pt"), "--prompts-file", str(prompts), "--out",
             str(tmp_path / "grid.png")], capsys,
            f"--prompts-file {prompts}: 100000 prompts; at most 1024 in one run", "split them")


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_a_guidance_that_is_not_a_finite_number_is_refused(value, text_ckpt, no_sampling, capsys,
                                                           tmp_path):
    refused(["--ckpt", text_ckpt, "--prompt", "a woman", "--n", "1", f"--guidance={value}",
             "--out", str(tmp_path / "grid.png")], capsys,
            f"--guidance {float(value)}: expected a finite number, 0 or more")
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("flag", ["--out", "--out-dir"])
def test_an_output_the_file_system_refuses_is_refused_before_sampling(flag, text_ckpt,
                                                                      no_sampling, capsys,
                                                                      tmp_path):
    """/proc is a folder that looks writable to root (os.access says yes) but takes no file."""
    outputs = {"--out": str(tmp_path / "grid.png"), flag: "/proc/x.png" if flag == "--out" else
               "/proc/samples"}
    refused(["--ckpt", text_ckpt, "--prompt", "a woman", "--n", "1",
             *[v for pair in outputs.items() for v in pair]], capsys,
            f"{flag} {outputs[flag]}: cannot create a file in /proc", "expected a writable folder")
    assert list(tmp_path.iterdir()) == []


def test_prompts_are_encoded_in_batches_of_at_most_batch_size(text_ckpt, monkeypatch, capsys,
                                                               tmp_path):
    encoded = []
    real_call = TextConditioner.__call__

    def spy(self, prompts, device, warn_unknown=True):
        encoded.append(len(prompts))
        return real_call(self, prompts, device, warn_unknown)

    monkeypatch.setattr(TextConditioner, "__call__", spy)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a woman\na man\na smiling man\n")
    code, err = run_main("sample", ["--ckpt", text_ckpt, "--prompts-file", str(prompts), "--n",
                                    "1", "--steps", "1", "--batch-size", "2", "--device", "cpu",
                                    "--out", str(tmp_path / "grid.png")], capsys)
    assert code == 0, err
    assert encoded and max(encoded) <= 2, encoded  # the prompts, and the negative prompt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "prompts.txt"]  # no probe


def test_words_lists_the_vocabulary_and_samples_nothing(text_ckpt, no_sampling, capsys,
                                                        monkeypatch, tmp_path):
    """sample.py --words (issue 28): every word the checkpoint's tokenizer knows, alphabetical,
    none of the special tokens, and the note on what no check can see; no image is made."""
    import sys

    import torch
    state = torch.load(text_ckpt, weights_only=True)
    known = state["tokenizer"]["vocabulary"][4:]
    monkeypatch.setattr(sys, "argv", ["sample.py", "--ckpt", text_ckpt, "--words", "--device",
                                      "cpu", "--out", str(tmp_path / "grid.png")])
    importlib.import_module("sample").main()
    out = capsys.readouterr().out
    listed = out.split("each known from the training captions:\n")[1].split("\nAny other")[0]
    assert listed.replace("\n", " ").split(", ") == sorted(known) and "<unk>" not in listed
    assert f"{len(known)} words" in out and "passes unnoticed" in out
    assert not (tmp_path / "grid.png").exists()


def test_words_on_a_model_without_text_is_one_line(capsys, tmp_path):
    from tests.fixed_checkpoints import pixel_checkpoint
    ckpt = pixel_checkpoint(tmp_path / "pixel.pt", tmp_path / "cache")
    refused(["--ckpt", str(ckpt), "--words"], capsys, "--words:", "has no text encoder")


def test_sampling_shows_a_progress_bar_that_ends_at_its_total(text_ckpt, capsys, monkeypatch,
                                                              tmp_path):
    """sample.py said nothing while it sampled (issue 28): a bar counts the UNet calls, 2 batches
    of 3 DDIM steps here, and ends full."""
    import sys
    monkeypatch.setattr(sys, "argv", ["sample.py", "--ckpt", text_ckpt, "--prompt", "a man",
                                      "--n", "3", "--batch-size", "2", "--steps", "3",
                                      "--device", "cpu", "--out", str(tmp_path / "grid.png")])
    importlib.import_module("sample").main()
    err = capsys.readouterr().err
    assert "sampling 3 image(s) in 2 batch(es)" in err and "6/6" in err
    assert (tmp_path / "grid.png").exists()
