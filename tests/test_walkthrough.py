"""docs/walkthrough.py: a valid percent-format notebook that runs as a plain script at its small
size, whose two hand computations (the closed-form jump and one reverse step) agree with
DDPMScheduler, and which writes the figure of every part."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "docs" / "walkthrough.py"
FIGURES = {"1_closed_form.png", "2_stage1_loss.png", "3_latent_noising.png", "4_attention.png",
           "5_guidance_sweep.png"}


def test_the_walkthrough_is_a_percent_format_notebook():
    text = WALKTHROUGH.read_text()
    assert text.startswith("# %%"), "the file must open with a cell marker"
    markers = re.findall(r"^# %%(.*)$", text, flags=re.M)
    assert sum(m.strip() == "[markdown]" for m in markers) >= 5   # text for every part
    assert sum(m.strip() == "" for m in markers) >= 5             # and code for every part
    for cell in re.split(r"^# %% \[markdown\]$", text, flags=re.M)[1:]:  # markdown: comments only
        lines = cell.split("# %%\n")[0].strip().splitlines()
        assert all(line.startswith("#") for line in lines), lines
    compile(text, str(WALKTHROUGH), "exec")


def printed_number(pattern: str, stdout: str) -> float:
    match = re.search(pattern + r" = ([-+0-9.e]+)", stdout)
    assert match, f"no line matching {pattern!r} in:\n{stdout}"
    return float(match.group(1))


def test_the_walkthrough_runs_and_its_hand_computations_agree(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, WALKTHROUGH_SIZE="small", WALKTHROUGH_OUT=str(out),
               WALKTHROUGH_VAE=str(tmp_path / "no_vae.pt"),   # no checkpoints: the tiny models
               WALKTHROUGH_LDM=str(tmp_path / "no_ldm.pt"), OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, "docs/walkthrough.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    stdout = result.stdout
    assert printed_number(r"closed form: max \|add_noise - by hand\|", stdout) < 1e-5
    assert printed_number(r"reverse step: max \|step - by hand\|", stdout) < 1e-5
    assert printed_number(r"max \|eq. 7 mean - Algorithm 2 mean\|", stdout) < 1e-5
    written = {path.name for path in out.glob("*.png")}
    assert FIGURES <= written, f"missing: {sorted(FIGURES - written)}"
    assert len([name for name in written if name.startswith("2_stage1_step_")]) == 2
    assert "a tiny model" in stdout and "training a tiny one" in stdout
