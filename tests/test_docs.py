"""The docs name only what exists: every relative link resolves, every function a doc links to is
defined in the linked file, every .py file named exists, and every command in a code block uses
flags (and presets) its script accepts. Scripts are asked for `--help` in this process, so the
check costs one import of torch, not one interpreter per command."""

import contextlib
import io
import re
import runpy
import shlex
import sys
import warnings
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
IDENTIFIER = re.compile(r"^`([A-Za-z_][\w.]*)(\(\))?`$")


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def commands(text: str) -> list[list[str]]:
    """Shell commands of the code blocks that run a project script: tokens from the script on."""
    found = []
    for block in code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;|\|", line):
                try:
                    tokens = shlex.split(part, comments=True)
                except ValueError:
                    continue
                for i, token in enumerate(tokens):
                    if token.endswith("python") or token.endswith("python3"):
                        rest = tokens[i + 1:]
                        if rest[:1] == ["-m"] and len(rest) > 1 and (
                                rest[1].startswith("docs.") or rest[1].startswith("data.")):
                            found.append(rest[1:])
                        elif rest and rest[0].endswith(".py"):
                            found.append(rest)
                        break
    return found


@cache
def help_text(target: str) -> str:
    """`target --help` run in this process: a script path or a module name."""
    argv, out = sys.argv, io.StringIO()
    sys.argv = [target, "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            if target.endswith(".py"):
                runpy.run_path(str(ROOT / target), run_name="__main__")
            else:  # a module its package has imported already: runpy's warning says so, harmlessly
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    runpy.run_module(target, run_name="__main__", alter_sys=False)
    finally:
        sys.argv = argv
    assert exit_info.value.code in (0, None), f"{target} --help failed"
    return out.getvalue()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    for label, target in LINK.findall(doc.read_text()):
        if re.match(r"^(https?:|mailto:|#)", target):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{doc.name}: [{label}]({target}) points at nothing"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_linked_function_is_defined_in_its_file(doc):
    for label, target in LINK.findall(doc.read_text()):
        match = IDENTIFIER.match(label)
        path = (doc.parent / target.split("#")[0])
        if not match or match.group(1).endswith(".py") or path.suffix != ".py" or not path.is_file():
            continue  # not a name, or a link to the file itself
        name = match.group(1).split(".")[-1]
        source = path.read_text()
        definition = (rf"^\s*(def|class)\s+{re.escape(name)}\b|^\s*{re.escape(name)}\s*[:=]"
                      rf"|\bself\.{re.escape(name)}\s*[:=]")
        assert re.search(definition, source, flags=re.M), \
            f"{doc.name}: [{label}]({target}): no {name} defined in {path.name}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_python_file_named_exists(doc):
    names = set(re.findall(r"`([\w./-]+\.py)`", doc.read_text()))
    files = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py") if ".venv" not in p.parts}
    basenames = {Path(f).name for f in files}
    for name in names:
        clean = name.lstrip("./")
        assert clean in files or (ROOT / "docs" / clean).exists() or \
            ("/" not in clean and clean in basenames), f"{doc.name}: `{name}` does not exist"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_uses_flags_its_script_accepts(doc):
    for command in commands(doc.read_text()):
        target = command[0]
        if target.endswith(".py") and not (ROOT / target).is_file():
            pytest.fail(f"{doc.name}: {' '.join(command)}: no script {target}")
        text = help_text(target)
        for i, token in enumerate(command[1:], start=1):
            if not token.startswith("--"):
                continue
            flag = token.split("=")[0]
            assert re.search(rf"{re.escape(flag)}\b", text), \
                f"{doc.name}: `{' '.join(command)}`: {target} has no {flag}"
            if flag == "--preset" and i + 1 < len(command):
                assert re.search(rf"\b{re.escape(command[i + 1])}\b", text), \
                    f"{doc.name}: `{' '.join(command)}`: no preset {command[i + 1]}"


def test_the_commands_checked_cover_every_stage_script():
    """The command extraction finds what the README shows, so the check above is not empty."""
    scripts = {c[0] for c in commands((ROOT / "README.md").read_text())}
    assert {"train_unconditional.py", "train_vae.py", "sample.py"} <= scripts


def test_make_targets_named_in_the_readme_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"`make (\w[\w-]*)`", (ROOT / "README.md").read_text())):
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"no make target {target}"


def test_the_demo_page_shows_the_scores_the_stages_wrote(tmp_path):
    import json

    from docs.demo_page import main as demo_page

    (tmp_path / "timings.txt").write_text("1 pixel DDPM 120\n4 latent diffusion 300\n")
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "metrics.jsonl").write_text('{"step": 600, "val_psnr": 19.25, "val_ssim": 0.61}\n')
    (tmp_path / "ldm" / "eval").mkdir(parents=True)
    summary = {"single": {"accuracy": 0.875, "unconditional": 0.25, "diversity": 0.7,
                          "prompts": 16}}
    (tmp_path / "ldm" / "eval" / "eval.json").write_text(json.dumps({
        "guidance": 3.0, "images_per_prompt": 4, "summary": summary,
        "prompts": {"single": [{"prompt": "a photo of a man", "accuracy": 0.75,
                                "unconditional": 0.5, "diversity": 0.81,
                                "requirement": {"Male": True}}]},
        "frechet_distance": {"generated_vs_real": 1.5, "unconditional_vs_real": 2.5,
                             "real_train_vs_real_val": 0.1}, "clip_score": {},
        "judge_val_accuracy": {"Male": 0.995, "Smiling": 0.96},
        "autoencoder": {"images": 1000, "psnr": 28.5,
                        "attribute_preservation": {"Male": 0.994, "Smiling": 0.892}}}))
    (tmp_path / "unconditional" / "eval").mkdir(parents=True)
    (tmp_path / "unconditional" / "eval" / "eval.json").write_text(json.dumps({
        "frechet_distance": {"images_per_set": 256, "generated_vs_real": 30.0,
                             "generated_vs_real_spread": 2.0, "real_train_vs_real_val": 6.0,
                             "ratio_to_floor": 5.0}}))
    demo_page(["--run", str(tmp_path)])
    page = (tmp_path / "README.md").read_text()
    assert "| **total** | **7.0 min** |" in page
    assert "19.25 dB" in page and "| single (16) | 0.88 | 0.25 | 0.70 |" in page
    assert "| a photo of a man | 0.75 | 0.50 | 0.81 | 0.995 |" in page
    assert "| Smiling | 0.892 | 0.960 |" in page                 # attribute preservation
    assert "30.000 (bootstrap sd 2.000), against 6.000" in page and "5.0x the floor" in page


def test_video_point_tags_name_one_point_each():
    """`grep -rn "\\[P4\\]"` finds every place of point 4: no tag names a range or a list."""
    files = [p for p in ROOT.rglob("*") if p.suffix in (".py", ".md") and p.is_file()
             and not {".venv", "runs", "cache"} & set(p.relative_to(ROOT).parts)]
    mixed = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files
             for m in re.finditer(r"\[P\d+\s*[-,–][^\]]*\]", p.read_text())]
    assert mixed == []


# ---- Stated defaults: the values the docs give for a flag are the code's -----------------------

STAGE_SCRIPTS = ("train_unconditional", "train_vae", "train_clip", "train_ldm", "sample", "evaluate",
                 "explore")


@cache
def flag_values() -> dict[str, dict[str, dict]]:
    """{"--flag": {script: {"default": value, preset name: value, ...}}} from every Config."""
    import dataclasses
    import importlib
    values: dict[str, dict[str, dict]] = {}
    for name in STAGE_SCRIPTS:
        module = importlib.import_module(name)
        for field in dataclasses.fields(module.Config):
            known = {"default": field.default}
            known |= {preset: settings[field.name]
                      for preset, settings in getattr(module, "PRESETS", {}).items()
                      if field.name in settings}
            values.setdefault("--" + field.name.replace("_", "-"), {})[name] = known
    return values


def same(text: str, value) -> bool:
    """Does "5000", "1e-3", "1 2 4" or "1,2,4" (as the docs write it) equal the Config value?"""
    numbers = [float(n.replace("_", "")) for n in text.replace(",", " ").split()]
    value = list(value) if isinstance(value, (tuple, list)) else [value]
    if not all(isinstance(v, (int, float)) for v in value):   # a string, None, a dataclass field
        return False
    return numbers == [float(v) for v in value]


NUMBER = r"-?\d[\d_.]*(?:e-?\d+)?"
STATED = re.compile(rf"`(--[a-z0-9-]+)` ({NUMBER}(?:(?: |,)(?={NUMBER}){NUMBER})*)(?![\w.-])")  # `--x` 64
DEFAULT = re.compile(rf"`(--[a-z0-9-]+)`[^.;`]*?\(({NUMBER}) by default(?:, ({NUMBER}) in "
                     r"`--preset (\w+)`)?")                                     # (5000 by default, 500 in `--preset cpu`
PRESET_STEPS = re.compile(rf"python (\w+)\.py (?!.*--steps).*--preset (\w+)\s.*#.*?\b({NUMBER}) steps")


def stated_value_problems(text: str, where: str) -> list[str]:
    """Every value the text states for a flag, checked against the stage scripts' Config:
    `--flag` N must be the default or a preset's value of that flag in a script that has it;
    "(D by default, P in `--preset NAME`)" both; a `--preset NAME` command's comment "N steps"
    that preset's steps."""
    values, problems = flag_values(), []
    for flag, number in STATED.findall(text):
        known = [v for per_script in values.get(flag, {}).values() for v in per_script.values()]
        if known and not any(same(number, v) for v in known):
            problems.append(f"{where}: `{flag}` {number}, but the code has {known}")
    for flag, default, preset_value, preset in DEFAULT.findall(text):
        for script, known in values.get(flag, {}).items():
            if not same(default, known["default"]):
                problems.append(f"{where}: {flag} {default} by default, {script} has "
                                f"{known['default']}")
            if preset and preset in known and not same(preset_value, known[preset]):
                problems.append(f"{where}: {flag} {preset_value} in --preset {preset}, "
                                f"{script} has {known[preset]}")
    for script, preset, steps in PRESET_STEPS.findall(text):
        known = values["--steps"].get(script, {})
        if preset in known and not same(steps, known[preset]):
            problems.append(f"{where}: {script}.py --preset {preset} runs {known[preset]} steps, "
                            f"not {steps}")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_stated_defaults_match_the_code(doc):
    assert stated_value_problems(doc.read_text(), doc.name) == []


def test_the_stated_defaults_check_catches_the_old_page_11_and_16_values():
    """The values pages 11 and 16 gave before they were fixed (git d1b53fc~1)."""
    old = {
        "page 11 disc-start": "For the first `--disc-start` steps (5000 by default, 1000 in "
                              "`--preset cpu`; latent diffusion",
        "page 11 steps": "python train_vae.py --preset cpu                  # 64x64 -> "
                         "16x16x3, 1500 steps, runs/vae_cpu",
        "page 16 judge": "size (`--classifier-steps` 600, batch 64, binary cross-entropy",
    }
    for where, text in old.items():
        assert stated_value_problems(text, where), where
    fixed = ("For the first `--disc-start` steps (2000 by default, 2400 in `--preset cpu`; and "
             "(`--classifier-steps` 2000 by default, batch 64; `--head-mult` 1 2 4")
    assert stated_value_problems(fixed, "fixed") == []


def test_what_to_try_after_the_demo_is_in_the_readme_and_every_command_parses():
    """issue 28: `make demo` prints docs/demo_next.txt and the README holds the same block; each
    line is a script of this project with flags its Config knows, on runs/demo's checkpoints."""
    import importlib

    from common.config import parse_config
    block = (ROOT / "docs" / "demo_next.txt").read_text()
    assert "```bash\n" + block + "```" in (ROOT / "README.md").read_text()
    assert "docs/demo_next.txt" in (ROOT / "Makefile").read_text()
    for line in block.splitlines():
        words = shlex.split(line.split("  #")[0], comments=False)
        assert words[0] == "python" and (ROOT / words[1]).is_file(), line
        assert "runs/demo/" in line and all("runs/" not in w or w.startswith("runs/demo/")
                                            for w in words), line
        module = importlib.import_module(words[1].removesuffix(".py"))
        parse_config(module.Config, words[2:])  # an unknown flag exits: SystemExit fails the test


# Figures the pages show that are not made by docs/figures/<name>.py: the file that makes them
# (or, for a sample.py output and a screenshot, the page that gives the command), which names them.
MADE_ELSEWHERE = {"clip_similarity": "docs/figures/clip_results.py",
                  "clip_zero_shot": "docs/figures/clip_results.py",
                  "synthetic_faces": "docs/figures/make_synthetic_grid.py",
                  "demo_prompts": "docs/README.md",
                  "unconditional_cpu_samples": "docs/README.md",
                  "explorer": "tests/test_explorer.py"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_figure_a_page_shows_has_its_script(doc):
    """issue 29: each figure is made by a script of its name in docs/figures/, or by a file that
    names it (MADE_ELSEWHERE)."""
    for name in re.findall(r"figures/([\w-]+)\.png\)", doc.read_text()):
        if name in MADE_ELSEWHERE:
            assert f"{name}.png" in (ROOT / MADE_ELSEWHERE[name]).read_text(), name
        else:
            assert (ROOT / "docs" / "figures" / f"{name}.py").is_file(), (
                f"{doc.name}: figures/{name}.png has no docs/figures/{name}.py")


def test_every_point_page_has_a_figure():
    """issue 29: each of the sixteen point pages (and the overview) shows at least one figure."""
    pages = sorted((ROOT / "docs").glob("[01][0-9]-*.md"))
    assert len(pages) == 17
    for page in pages:
        assert re.search(r"!\[[^\]]*\]\(figures/[\w-]+\.png\)", page.read_text()), page.name


def test_the_readme_stays_a_first_page():
    """issue 29: the README is a page a newcomer reads in five minutes: at most 250 lines, and no
    commit hashes or dates (they belong to the lab notebook, docs/lab/)."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert not re.findall(r"\b20\d\d-\d\d-\d\d\b", text), "a date in the README"
    assert not re.findall(r"\bcommits? `?[0-9a-f]{7,40}\b", text), "a commit in the README"


def test_the_readme_check_catches_the_old_readme():
    """The check above fails on what the README was before issue 29 (a date and a commit)."""
    old = "Full runs on a fresh clone of commit 0a69fdd (2026-12-02)"
    assert re.findall(r"\b20\d\d-\d\d-\d\d\b", old) and re.findall(
        r"\bcommits? `?[0-9a-f]{7,40}\b", old)


@pytest.mark.parametrize("script", ["train_unconditional", "train_vae", "train_clip", "train_ldm",
                                    "sample"])
def test_figures_read_the_scripts_defaults_without_importing_them(script):
    """docs/figures/common.script_defaults (ast, no import) gives each Config default the code
    has, for every field with a literal default, and finds most fields."""
    import importlib

    from docs.figures.common import script_defaults

    parsed, real = vars(script_defaults(script)), importlib.import_module(script).Config()
    assert len(parsed) >= 0.8 * len(vars(real))
    for name, value in parsed.items():
        assert getattr(real, name) == value, (script, name)
