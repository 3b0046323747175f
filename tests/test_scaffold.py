"""The scaffold the four stages share (training/), checked on the stages themselves.

- float64: nothing produces a float64 tensor while sampling (DDPM, DDIM, DPM-Solver++ with
  guidance and a negative prompt) or in one training step of each stage, latent std included:
  MPS has no float64. The noise schedules are the one exception: they are derived in float64 on
  the CPU once, when a scheduler is built, and stored as float32 (diffusion/schedule.py).
- one optimizer step: every stage's loop goes through training.optim.optimizer_step, which
  skips the step when fp16 loss scaling finds an inf gradient.
- one rule of resuming: a changed architecture flag on --resume is one line naming the flag.
- no program outside tests/ imports a stage script.
"""

import ast
import importlib
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from diffusion import DDPMScheduler, make_sampler
from diffusion.pipeline import Pipeline, generate
from models.clip import TextConditioner, TextEncoder
from models.tokenizer import Tokenizer
from models.unet import UNet
from models.vae import AutoencoderKL
from tests.conftest import ROOT, TINY, run
from training import optim

STAGE_SCRIPTS = ["train_unconditional", "train_vae", "train_clip", "train_ldm"]
SCRIPTS = {f"{name}.py" for name in STAGE_SCRIPTS} | {"sample.py", "evaluate.py"}


class NoFloat64(TorchDispatchMode):
    """Raises on any operation whose result is a float64 tensor, except while `exempt` > 0."""

    def __init__(self):
        super().__init__()
        self.exempt = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.exempt:
            for value in tree_flatten(out)[0]:
                if isinstance(value, torch.Tensor) and value.dtype == torch.float64:
                    raise AssertionError(f"{func} produced a float64 tensor")
        return out


def exempt_schedules(patch: pytest.MonkeyPatch, mode: NoFloat64) -> None:
    """Let the schedule's one-off float64 derivation in DDPMScheduler.__init__ through `mode`."""
    build = DDPMScheduler.__init__

    def exempt_build(self, *args, **kwargs):
        mode.exempt += 1
        try:
            build(self, *args, **kwargs)
        finally:
            mode.exempt -= 1

    patch.setattr(DDPMScheduler, "__init__", exempt_build)


@pytest.fixture
def no_float64(monkeypatch):
    mode = NoFloat64()
    exempt_schedules(monkeypatch, mode)
    with mode:
        yield mode


def test_the_float64_check_catches_float64():
    with pytest.raises(AssertionError, match="float64"), NoFloat64():
        torch.ones(3).double()


# ---- Sampling: DDPM, DDIM and DPM-Solver++ with guidance and a negative prompt -----------------

def tiny_text_to_image() -> Pipeline:
    torch.manual_seed(0)
    tokenizer = Tokenizer.build(["a photo of a smiling woman", "a man with glasses"])
    encoder = TextEncoder(len(tokenizer), tokenizer.max_length, width=32, num_layers=1,
                          num_heads=2)
    unet = UNet(in_channels=3, base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                attention_levels=(1,), num_heads=2, context_dim=32)
    vae = AutoencoderKL(base_channels=32, channel_mult=(1, 2), num_res_blocks=1)
    return Pipeline(unet.eval(), (3, 8, 8), vae=vae.eval(),
                    text=TextConditioner(encoder, tokenizer), scale_factor=0.8)


@pytest.mark.parametrize("sampler, steps", [("ddpm", 1000), ("ddim", 4), ("dpm++", 4)])
def test_sampling_makes_no_float64(sampler, steps):
    pipe = tiny_text_to_image()
    ddpm = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)  # built before the check
    scheduler, eta = make_sampler(ddpm, sampler, steps, eta=1.0 if sampler == "ddim" else 0.0)
    if sampler == "ddpm":  # all T steps: a short run keeps the test fast; the step is the same
        scheduler.timesteps = scheduler.timesteps[-4:]
    generator = torch.Generator().manual_seed(0)
    with NoFloat64():
        images = generate(pipe, ["a photo of a smiling woman", "a man with glasses"], [0, 1],
                          guidance=3.0, scheduler=scheduler, negative_prompt="glasses",
                          eta=eta, generator=generator).images
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


# ---- One training step of each stage, in this process ------------------------------------------

def stage_argv(name: str, root: Path, cache: Path) -> list[str]:
    """Arguments for a 1-step run of each stage, small enough for a second or two."""
    common = ["--device", "cpu", "--steps", "1", "--log-every", "1", "--ckpt-every", "1"]
    vae, clip = root / "train_vae" / "checkpoint.pt", root / "train_clip" / "checkpoint.pt"
    return {
        "train_unconditional": [*TINY, "--cache-dir", str(cache)],
        "train_vae": ["--preset", "cpu", "--data", "synthetic:64", "--image-size", "16",
                      "--cache-dir", str(cache), "--base-channels", "32", "--channel-mult", "1",
                      "2", "--disc-start", "0", "--disc-channels", "32", "--perceptual", "none",
                      "--batch-size", "4", "--eval-images", "4", "--scale-images", "8"],
        "train_clip": ["--preset", "cpu", "--vae", str(vae), "--batch-size", "8",
                       "--text-width", "32", "--text-layers", "1", "--embed-dim", "32",
                       "--eval-images", "8", "--retrieval-batch", "4"],
        "train_ldm": ["--vae", str(vae), "--clip", str(clip), "--base-channels", "32",
                      "--channel-mult", "1", "2", "--num-res-blocks", "1", "--attention-levels",
                      "1", "--batch-size", "4", "--sample-seeds", "1", "--sample-steps", "2",
                      "--guidance", "3", "--warmup-steps", "1"],
    }[name] + common + ["--out", str(root / name)]


@pytest.fixture(scope="module")
def stage_runs(tmp_path_factory):
    """Run one step of each stage's main() in this process, in order (stage 3 and 4 read the
    checkpoints of the stages before), under NoFloat64 and with a spy on optimizer_step.
    Returns {stage: {"argv", "out", "steps" (optimizer_step calls), "error"}}."""
    root, cache = tmp_path_factory.mktemp("stages"), tmp_path_factory.mktemp("cache")
    results = {}
    for name in STAGE_SCRIPTS:
        module = importlib.import_module(name)
        calls = []

        def spy(optimizer, scaler, *args, **kwargs):
            calls.append(type(optimizer).__name__)
            return optim.optimizer_step(optimizer, scaler, *args, **kwargs)

        argv = stage_argv(name, root, cache)
        error = None
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(module, "optimizer_step", spy)
            patch.setattr(sys, "argv", [f"{name}.py", *argv])
            mode = NoFloat64()
            exempt_schedules(patch, mode)
            try:
                with mode:
                    module.main()
            except AssertionError as failure:  # a float64 tensor: reported by the test below
                error = str(failure)
        results[name] = {"argv": argv, "out": root / name, "steps": calls, "error": error}
    return results


@pytest.mark.parametrize("stage", STAGE_SCRIPTS)
def test_one_training_step_of_each_stage_makes_no_float64(stage_runs, stage):
    assert stage_runs[stage]["error"] is None, stage_runs[stage]["error"]
    assert (stage_runs[stage]["out"] / "checkpoint.pt").is_file()


@pytest.mark.parametrize("stage, expected", [
    ("train_unconditional", ["Adam"]), ("train_vae", ["Adam", "Adam"]),  # autoencoder, then D
    ("train_clip", ["AdamW"]), ("train_ldm", ["AdamW"])])
def test_every_stage_steps_through_the_shared_optimizer_step(stage_runs, stage, expected):
    assert stage_runs[stage]["steps"] == expected


def test_the_latent_std_measurement_makes_no_float64(no_float64):
    from models.vae import latent_std

    class Ones:  # a dataset of constant images: the std of z ~ q(z | x) is known
        def __len__(self):
            return 10

        def batch(self, indices, device):
            return {"image": torch.zeros(len(indices), 3, 8, 8, device=device)}

    torch.manual_seed(0)
    vae = AutoencoderKL(base_channels=32, channel_mult=(1, 2), num_res_blocks=1)
    std = latent_std(vae, Ones(), count=10, batch_size=4, device="cpu")
    with torch.no_grad():
        z = torch.stack([vae.encode(torch.zeros(1, 3, 8, 8)).mean[0]] * 10)
        posterior = vae.encode(torch.zeros(1, 3, 8, 8))
    # every image is the same: Var z = Var(mean over positions) + E[std^2], up to sampling noise
    expected = (z.var(unbiased=False) + posterior.std.pow(2).mean()).sqrt().item()
    assert std == pytest.approx(expected, rel=0.1)


# ---- fp16 loss scaling: skip the step on inf, take it otherwise -------------------------------

def make_scaler():
    """A real CPU GradScaler where this torch has one (2.3+), else a stand-in with its interface."""
    try:
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4)
        assert scaler.is_enabled()
        return scaler
    except (AssertionError, RuntimeError, TypeError):
        pytest.skip("this torch has no CPU GradScaler")


@pytest.mark.parametrize("gradient, moves", [(1.0, True), (float("inf"), False),
                                             (float("nan"), False)])
def test_optimizer_step_skips_a_step_with_an_inf_gradient(gradient, moves):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    scaler = make_scaler()
    loss = (weight * gradient).sum()                     # d loss / d weight = gradient
    scaler.scale(loss).backward()
    assert weight.grad[0].item() != 1.0 or gradient != 1.0  # the gradient is scaled (x16)
    norm = optimizer_step_and_norm(optimizer, scaler, weight)
    if moves:
        # unscaled before the step: weight <- 1 - 0.5 * 1
        assert torch.allclose(weight.detach(), torch.full((3,), 0.5))
        assert norm == pytest.approx(3 ** 0.5)
        assert scaler.get_scale() == 2.0 ** 4           # no overflow: the scale stays
    else:
        assert torch.equal(weight.detach(), torch.ones(3))  # skipped
        assert scaler.get_scale() == 2.0 ** 3           # and the scale halves
    assert weight.grad is None                          # zeroed for the next step


def optimizer_step_and_norm(optimizer, scaler, weight) -> float:
    norm = optim.optimizer_step(optimizer, scaler, [weight], grad_clip=0.0)
    return norm.item()


def test_warmup_and_cosine_learning_rates_follow_their_formulas():
    assert optim.warmup_lr(0, 1e-3, 100) == pytest.approx(1e-5)     # (0 + 1) / 100
    assert optim.warmup_lr(49, 1e-3, 100) == pytest.approx(5e-4)
    assert optim.warmup_lr(500, 1e-3, 100) == 1e-3
    assert optim.warmup_lr(0, 1e-3, 0) == 1e-3                       # no warm-up
    assert optim.warmup_cosine_lr(99, 1.0, 100, 1100) == pytest.approx(1.0)
    assert optim.warmup_cosine_lr(600, 1.0, 100, 1100) == pytest.approx(0.5)  # halfway: cos = 0
    assert optim.warmup_cosine_lr(1100, 1.0, 100, 1100) == pytest.approx(0.0, abs=1e-12)


# ---- The rule of resuming ---------------------------------------------------------------------

@pytest.mark.parametrize("stage, flag, value, saved", [
    ("train_unconditional", "--base-channels", "64", "32"),
    ("train_vae", "--latent-channels", "4", "3"),
    ("train_clip", "--text-layers", "2", "1"),
    ("train_ldm", "--num-res-blocks", "2", "1")])
def test_a_changed_architecture_flag_on_resume_is_one_line(stage_runs, stage, flag, value, saved):
    result = run([f"{stage}.py", *stage_runs[stage]["argv"], "--resume", "--steps", "2",
                  flag, value], check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {flag} {value}:") and f"{flag} {saved}" in lines[0]


def test_other_settings_may_change_on_resume(stage_runs):
    result = run(["train_unconditional.py", *stage_runs["train_unconditional"]["argv"],
                  "--resume", "--steps", "2", "--lr", "5e-4", "--log-every", "2"])
    assert "settings differ from the checkpoint's: log_every, lr, steps" in result.stdout
    assert "resumed from" in result.stdout and "at step 1" in result.stdout


# ---- Nothing outside tests/ imports a stage script ---------------------------------------------

def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                in ("import_module", "run_path", "__import__") and node.args \
                and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value).removesuffix(".py"))
    return names


def test_no_program_outside_tests_imports_a_stage_script():
    stage_modules = {name.removesuffix(".py") for name in SCRIPTS}
    files = [p for p in ROOT.rglob("*.py")
             if not {".venv", "tests", "runs", "cache"} & set(p.relative_to(ROOT).parts)]
    assert len(files) > 40  # the walk sees the packages, the scripts and docs/figures
    offenders = [f"{path.relative_to(ROOT)} imports {sorted(imported_modules(path) & stage_modules)}"
                 for path in files if imported_modules(path) & stage_modules]
    assert offenders == []


def test_the_import_walk_sees_every_form_of_import(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("import train_vae\nfrom train_ldm import generate\n"
                      "import importlib\nimportlib.import_module('sample')\n")
    assert {"train_vae", "train_ldm", "sample"} <= imported_modules(source)


# ---- sample.py and evaluate.py parse flags as the trainers do ----------------------------------

@pytest.mark.parametrize("script", ["sample", "evaluate"])
def test_sample_and_evaluate_use_the_typed_config(script, capsys):
    from common.config import parse_config

    module = importlib.import_module(script)
    cfg = parse_config(module.Config, ["--ckpt", "model.pt", "--n", "3", "--sampler", "dpm++"])
    assert (cfg.ckpt, cfg.n, cfg.sampler, cfg.steps, cfg.spacing) == ("model.pt", 3, "dpm++", 50,
                                                                        None)
    for argv in (["--ckpt", "m.pt", "--bogus", "1"], ["--ckpt", "m.pt", "--n", "three"],
                 ["--ckpt", "m.pt", "--sampler", "lms"], ["--n", "3"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_config(module.Config, argv)
        assert exit_info.value.code == 2
    errors = capsys.readouterr().err
    assert "--bogus" in errors and "three" in errors and "lms" in errors and "--ckpt" in errors


def test_a_repeated_prompt_flag_collects_every_prompt():
    from common.config import parse_config
    from sample import Config

    cfg = parse_config(Config, ["--ckpt", "m.pt", "--prompt", "a bald man", "--prompt", ""])
    assert cfg.prompt == ("a bald man", "") and cfg.ema is True
    assert parse_config(Config, ["--ckpt", "m.pt", "--no-ema"]).prompt == ()
    assert parse_config(Config, ["--ckpt", "m.pt", "--no-ema"]).ema is False


def test_sample_prints_its_config_and_names_a_missing_checkpoint(tmp_path):
    result = run(["sample.py", "--ckpt", str(tmp_path / "none.pt"), "--n", "2"], check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "  n = 2" in result.stdout and "no such file" in result.stderr
