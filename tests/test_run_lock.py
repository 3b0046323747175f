"""One run per --out at a time (issue 27 #2): two runs into the same folder interleaved their
metrics.jsonl, and the checkpoint was whichever wrote last. A run holds OUT/run.lock naming its
process; a second run is refused in one line naming the folder and the holder, and loses nothing;
the lock of a run that was killed is taken over with a note; a run releases it when it ends, after
an error too."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import TINY, run
from tests.test_run_faults import one_line_error, run_main
from training import start_run


@pytest.fixture
def tiny(tmp_path):
    """A one-step stage-1 command line, without --out."""
    return [*TINY, "--cache-dir", str(tmp_path / "cache"), "--steps", "1"]


def write_lock(out, pid: int, host: str | None = None) -> str:
    """OUT/run.lock as a run on `host` (this one by default) with process `pid` writes it."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"pid": pid, "host": host or socket.gethostname(),
                       "started": "2025-01-01 12:00:00"})
    (out / "run.lock").write_text(text)
    return text


def gone_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("holder", ["this host", "another host"])
def test_a_second_run_into_a_folder_in_use_is_refused_and_loses_nothing(holder, capsys, tiny,
                                                                        tmp_path):
    """The live run is this test's own process (or one on another host, which cannot be
    checked); even --overwrite does not touch its files."""
    out = tmp_path / "a"
    pid, host = (os.getpid(), None) if holder == "this host" else (gone_pid(), "elsewhere")
    lock = write_lock(out, pid, host)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')  # the live run's
    code, err = run_main("train_unconditional", [*tiny, "--out", str(out), "--overwrite"], capsys)
    line = one_line_error(code, err, f"--out {out}: in use by another run",
                          f"pid {pid} on {host or socket.gethostname()}", "2025-01-01 12:00:00",
                          str(out / "run.lock"))
    assert ("if that run is over" in line) == (host is not None)
    assert (out / "run.lock").read_text() == lock
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 0.5}\n'
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "run.lock"]


def test_the_lock_of_a_killed_run_is_taken_over_with_a_note(capsys, tiny, tmp_path):
    """(The run then stops at its --data, which does not exist: the lock is what is checked.)"""
    out, pid = tmp_path / "a", gone_pid()
    write_lock(out, pid)
    code, err = run_main("train_unconditional", [*tiny, "--out", str(out), "--data",
                                                 str(tmp_path / "none")], capsys)
    note, error = [line for line in err.splitlines() if line.strip()]
    assert note == (f"warning: --out {out}: taking over the lock of a run that is gone (pid {pid}, "
                    "started 2025-01-01 12:00:00: no such process; killed?)")
    one_line_error(code, error, f"--data {tmp_path / 'none'}: no such folder")
    assert json.loads((out / "run.lock").read_text())["pid"] == os.getpid()


def test_a_run_holds_its_lock_from_start_run_until_finish(tmp_path, capsys):
    from train_unconditional import Config

    out = tmp_path / "a"
    started = start_run(Config(out=str(out), device="cpu"))
    holder = json.loads((out / "run.lock").read_text())
    assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
    started.finish()
    assert not (out / "run.lock").exists()


def test_a_run_that_stops_with_an_error_releases_its_lock(tmp_path):
    out = tmp_path / "a"
    result = run(["train_unconditional.py", *TINY, "--data", str(tmp_path / "none"), "--steps",
                  "1", "--out", str(out)], check=False, subprocess_only=True)  # a real exit
    one_line_error(result.returncode, result.stderr, f"--data {tmp_path / 'none'}")
    assert out.is_dir() and not (out / "run.lock").exists()  # released when the process exits
