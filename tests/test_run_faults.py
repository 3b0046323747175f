"""Bad inputs and faults around a training run, as a new user meets them: each gives one line
(`error: ...`, exit status 2, no traceback) naming the value or path, and loses nothing already
written. Most run a stage's main() in this process through main_guard (what `python script.py`
does, without starting an interpreter per case); the ones about files and signals run the script."""

import errno
import importlib
import json
import re
import subprocess
import sys
import uuid

import pytest
import torch

from common import checkpoints
from common.checkpoints import load_checkpoint, save_checkpoint
from common.errors import CheckpointError, main_guard
from tests.conftest import TINY, run
from training.run import StopFlag


def run_main(script: str, argv: list[str], capsys) -> tuple[int, str]:
    """`python script.py argv` in this process: (exit status, stderr)."""
    module = importlib.import_module(script)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [f"{script}.py", *argv])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main_guard(module.main)
            raise SystemExit(0)
    return exit_info.value.code, capsys.readouterr().err


def one_line_error(code: int, err: str, *named: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines()
             if line.strip() and not re.match(r"^[\w ]+:\s*\d+%\|", line)]  # not progress bars
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def tiny(cache_dir):
    """A tiny stage-1 command line: `[*tiny, "--steps", "2", "--out", OUT]`."""
    return ["train_unconditional.py", *TINY, "--cache-dir", cache_dir]


# ---- 1. a second run in the same --out never destroys the first ---------------------------------

def test_a_new_run_in_a_used_out_folder_is_refused_and_overwrite_starts_over(tiny, tmp_path):
    out = tmp_path / "a"
    run([*tiny, "--steps", "6", "--ckpt-every", "3", "--sample-every", "6", "--out", str(out)])
    metrics = (out / "metrics.jsonl").read_text()
    result = run([*tiny, "--steps", "2", "--ckpt-every", "2", "--out", str(out)], check=False)
    line = one_line_error(result.returncode, result.stderr, f"--out {out}", "--resume",
                          "--overwrite")
    assert "holds a run already" in line
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 6  # nothing lost
    assert (out / "metrics.jsonl").read_text() == metrics
    # --overwrite deletes the old run's files, the stale sample grid too
    run([*tiny, "--steps", "2", "--ckpt-every", "2", "--out", str(out), "--overwrite"])
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert not (out / "samples" / "step_000006.png").exists()


def test_resume_and_overwrite_together_are_refused(capsys, cache_dir, tmp_path):
    code, err = run_main("train_unconditional", [*TINY, "--cache-dir", cache_dir, "--out",
                                                 str(tmp_path), "--resume", "--overwrite"], capsys)
    one_line_error(code, err, "--resume and --overwrite")


# ---- 4. a torn last line of metrics.jsonl ----------------------------------------------------

def test_a_torn_metrics_line_is_dropped_with_one_warning(tiny, tmp_path):
    out = tmp_path / "a"
    run([*tiny, "--steps", "3", "--out", str(out)])
    with open(out / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 41, "loss": 0.3')                 # a crash mid-line
    result = run([*tiny, "--steps", "4", "--out", str(out), "--resume"])
    assert result.stderr.count("torn line") == 1 and "Traceback" not in result.stderr
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]          # the good lines are kept
    with open(out / "metrics.jsonl", "ab") as f:
        f.write(b"\x00" * 64 + b"\n")                         # a full disk leaves NUL bytes
    result = run([*tiny, "--steps", "5", "--out", str(out), "--resume"])
    assert "torn line" in result.stderr
    assert [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()] == \
        [1, 2, 3, 4, 5]


# ---- 5 and 12. checkpoints whose config is wrong, or does not fit its weights ------------------

@pytest.fixture(scope="module")
def pixel_checkpoint(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pixel")
    run(["train_unconditional.py", *TINY, "--cache-dir", cache_dir, "--steps", "1",
         "--out", str(out)])
    return torch.load(out / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("change, named", [
    (lambda c: c["config"].update(base_channels=64), "do not fit"),       # config vs weights
    (lambda c: c.update(config="base_channels=32"), "config = 'base_channels=32'"),
    (lambda c: c["config"].pop("beta_end"), "no 'beta_end'"),
    (lambda c: c["config"].update(num_train_timesteps=-5), "num_train_timesteps -5"),
    (lambda c: c["config"].update(beta_end=2.0), "beta_end 2.0"),
    (lambda c: c.pop("ema"), "no 'ema'"),
])
def test_a_damaged_checkpoint_is_one_line_in_sample(pixel_checkpoint, change, named, tmp_path,
                                                    capsys):
    state = {k: (dict(v) if isinstance(v, dict) else v) for k, v in pixel_checkpoint.items()}
    change(state)
    path = tmp_path / "damaged.pt"
    torch.save(state, path)
    code, err = run_main("sample", ["--ckpt", str(path), "--n", "1", "--steps", "1",
                                    "--device", "cpu", "--out", str(tmp_path / "x.png")], capsys)
    one_line_error(code, err, str(path) if named != "do not fit" else "UNet", named)


def test_resuming_a_checkpoint_whose_weights_do_not_fit_its_config_is_one_line(tiny, tmp_path):
    out = tmp_path / "a"
    run([*tiny, "--steps", "1", "--out", str(out)])
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["config"]["base_channels"] = 64                     # edited by hand, weights unchanged
    torch.save(state, out / "checkpoint.pt")
    result = run([*tiny, "--steps", "2", "--out", str(out), "--resume", "--base-channels", "64"],
                 check=False)
    one_line_error(result.returncode, result.stderr, "--resume", "do not fit", "size mismatch")


# ---- 6. a full disk while saving a checkpoint --------------------------------------------------

@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:672] . "
                                                  "unexpected pos 4194432 vs 4194320")])
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(failure, tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"kind": "toy", "step": 1})

    def full_disk(obj, f, *args, **kwargs):
        open(f, "wb").write(b"PK\x03\x04 half a zip")
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"no space left on device writing .*checkpoint.pt: "
                                              r"about 0.4 MB needed, .* MB free; the previous "
                                              r"checkpoint is kept"):
        save_checkpoint(path, {"kind": "toy", "step": 2, "w": torch.zeros(100_000)})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_full_disk_during_a_real_run_is_one_line_and_keeps_the_checkpoint(tiny, tmp_path):
    """On a small tmpfs that holds one checkpoint but not a second beside it (needs root)."""
    probe = tmp_path / "probe"
    run([*tiny, "--steps", "1", "--out", str(probe)])
    size = (probe / "checkpoint.pt").stat().st_size
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size * 1.6)}", "tmpfs",
                            str(disk)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (not root?); the monkeypatched test covers it")
    try:
        result = run([*tiny, "--steps", "3", "--ckpt-every", "1", "--out", str(disk / "a")],
                     check=False)
        one_line_error(result.returncode, result.stderr, "no space left on device",
                       str(disk / "a" / "checkpoint.pt"), "MB needed", "the previous checkpoint "
                                                                       "is kept")
        assert load_checkpoint(disk / "a" / "checkpoint.pt")["step"] == 1
        assert not (disk / "a" / "checkpoint.pt.tmp").exists()
    finally:
        subprocess.run(["umount", str(disk)])


# ---- 7, 8, 11, 13. settings that cannot work, refused before any work --------------------------

STAGE1 = [*TINY, "--steps", "1"]


@pytest.mark.parametrize("argv, named", [
    (["--beta-end", "2"], "--beta-end 2.0: expected beta_start (0.0001) <= beta_end < 1"),
    (["--beta-start", "0.5", "--beta-end", "0.1"], "--beta-end 0.1"),
    (["--beta-start", "0"], "--beta-start 0.0"),
    (["--num-train-timesteps", "0"], "--num-train-timesteps 0"),
    (["--beta-schedule", "foo"], "--beta-schedule 'foo': expected linear or cosine"),
    (["--prediction-type", "foo"], "--prediction-type 'foo': expected epsilon or v"),
    (["--dropout", "-1"], "--dropout -1.0"),
    (["--dropout", "2"], "--dropout 2.0"),
    (["--base-channels", "7"], "--base-channels 7: GroupNorm's 32 groups"),
    (["--channel-mult"], "--channel-mult (empty)"),
    (["--ema-decay", "-1"], "--ema-decay -1.0: expected 0 <= value < 1"),
    (["--ema-decay", "2"], "--ema-decay 2.0"),
])
def test_stage1_refuses_impossible_settings(argv, named, capsys, cache_dir, tmp_path):
    code, err = run_main("train_unconditional", [*STAGE1, "--cache-dir", cache_dir, "--out",
                                                 str(tmp_path / "a"), *argv], capsys)
    one_line_error(code, err, named)
    assert not (tmp_path / "a").exists()  # refused before anything was written


VAE1 = ["--preset", "cpu", "--data", "synthetic:64", "--image-size", "16", "--steps", "1",
        "--perceptual", "none", "--device", "cpu"]


@pytest.mark.parametrize("argv, named", [
    (["--base-channels", "16"], "--base-channels 16: GroupNorm's 32 groups"),
    (["--disc-channels", "0"], "--disc-channels 0"),
    (["--disc-layers", "4"], "--disc-layers 4"),
    (["--kl-weight", "-1"], "--kl-weight -1.0: expected 0 or more"),
    (["--channel-mult"], "--channel-mult (empty)"),
    (["--val-percent", "60"], "--val-percent 60: expected 1 to 50"),
    (["--val-percent", "10"], "--val-percent 10: synthetic:64 is in CelebA's layout"),
])
def test_stage2_refuses_impossible_settings(argv, named, capsys, cache_dir, tmp_path):
    code, err = run_main("train_vae", [*VAE1, "--cache-dir", cache_dir, "--out",
                                       str(tmp_path / "a"), *argv], capsys)
    one_line_error(code, err, named)


def test_stage3_refuses_a_negative_weight_decay(capsys, tmp_path):
    code, err = run_main("train_clip", ["--preset", "cpu", "--weight-decay", "-1", "--out",
                                        str(tmp_path / "a")], capsys)
    one_line_error(code, err, "--weight-decay -1.0")


@pytest.mark.parametrize("argv, named", [
    (["--guidance", "-5"], "--guidance -5.0: expected a finite number, 0 or more"),
    (["--guidance", "inf"], "--guidance inf: expected a finite number, 0 or more"),
    (["--num-heads", "3"], "--num-heads 3: must divide the width"),
    (["--base-channels", "16"], "--base-channels 16"),
    (["--beta-schedule", "foo"], "--beta-schedule 'foo'"),
    (["--channel-mult", "1", "2", "2", "2", "2"], "--channel-mult 1 2 2 2 2: 5 levels halve the "
                                                  "size 4 times, which 8x8"),
])
def test_stage4_refuses_impossible_settings(argv, named, capsys, vae_run, tmp_path):
    code, err = run_main("train_ldm", ["--vae", str(vae_run / "checkpoint.pt"), "--clip", "",
                                       "--device", "cpu", "--steps", "1", "--out",
                                       str(tmp_path / "a"), *argv], capsys)
    one_line_error(code, err, named)


# ---- 10. an output folder that is a file -------------------------------------------------------

@pytest.mark.parametrize("where", ["file", "file/sub"])
def test_an_out_folder_that_is_a_file_is_one_line(where, capsys, cache_dir, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    code, err = run_main("train_unconditional", [*STAGE1, "--cache-dir", cache_dir, "--out",
                                                 str(tmp_path / where)], capsys)
    one_line_error(code, err, f"--out {tmp_path / where}", "is a file; expected a folder")
    # (--out FILE/sub names FILE: "FILE is a file; expected a folder there")
    assert (tmp_path / "file").read_text() == "not a folder"


# ---- 17, 18. signals ---------------------------------------------------------------------------

def test_an_impatient_second_ctrl_c_exits_quietly_with_130(capsys):
    def main():
        raise KeyboardInterrupt  # what StopFlag raises on the second Ctrl-C

    with pytest.raises(SystemExit) as exit_info:
        main_guard(main)
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and "Traceback" not in err
    assert "the last checkpoint written is intact" in err


def test_the_stop_flag_remembers_the_signal_and_a_second_one_interrupts():
    import signal

    flag = StopFlag()
    flag._handle(signal.SIGTERM, None)
    assert flag.requested and flag.signal == signal.SIGTERM  # finish_run exits 128 + 15 = 143
    with pytest.raises(KeyboardInterrupt):
        flag._handle(signal.SIGINT, None)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# ---- 19. a checkpoint's reason is cut between words --------------------------------------------

def test_an_unreadable_checkpoint_names_its_reason_in_whole_words(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"kind": "ddpm", "evil": uuid.UUID(int=1)}, path)  # refused by weights_only
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    reason = str(error.value).split(": unreadable (truncated or not a checkpoint of this "
                                    "project): ")[1]
    full = ("Weights only load failed. This file can still be loaded, to do so you have two "
            "options, do those steps only if you trust the source of the checkpoint.")
    words = reason.removesuffix(" ...").split()
    assert words == full.split()[:len(words)] and len(words) > 5  # whole words, in order


# ---- 20. the VGG download is hash-checked and loaded without code ------------------------------

def test_the_vgg_download_checks_the_hash_and_loads_weights_only(monkeypatch, tmp_path):
    from models import perceptual

    calls = []
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no cached file
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda url, **kwargs: calls.append(kwargs) or {})
    perceptual.load_vgg16_weights(allow_download=True)
    assert calls and calls[0]["weights_only"] is True and calls[0]["check_hash"] is True


def test_tensor_bytes_counts_every_tensor():
    state = {"a": torch.zeros(10), "b": [torch.zeros(2, 3, dtype=torch.float16)], "c": 3}
    assert checkpoints.tensor_bytes(state) == 10 * 4 + 6 * 2

