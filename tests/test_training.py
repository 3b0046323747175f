"""The shared training plumbing (training/): config parsing, data order, EMA, atomic checkpoints, safe loads."""

import argparse
import json
from dataclasses import dataclass

import pytest
import torch

from common import device as devices
from common import randomness
from common.checkpoints import load_checkpoint, save_checkpoint
from common.config import option, parse_config
from common.errors import CheckpointError, ConfigError
from training import optim, speed
from training.batches import BatchOrder
from training.ema import EMA
from training.logger import MetricLogger


@dataclass
class TinyConfig:
    steps: int = option(10, "steps")
    lr: float = option(1e-3, "learning rate")
    name: str = option("run", "a name")
    augment: bool = option(True, "augment")
    channel_mult: tuple = option((1, 2), "multipliers")


def test_parse_config_types_presets_and_overrides():
    cfg = parse_config(TinyConfig, ["--steps", "5", "--no-augment", "--channel-mult", "1", "2", "4"])
    assert cfg == TinyConfig(steps=5, augment=False, channel_mult=(1, 2, 4))
    presets = {"small": {"_doc": "small", "steps": 3, "lr": 0.5}}
    cfg = parse_config(TinyConfig, ["--preset", "small", "--lr", "0.25"], presets=presets)
    assert (cfg.steps, cfg.lr) == (3, 0.25)  # the preset's steps, the flag's lr


@pytest.mark.parametrize("argv", [["--steps", "ten"], ["--unknown-flag", "1"], ["--lr", "x"]])
def test_parse_config_rejects_bad_flags(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(TinyConfig, argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_the_batch_order_is_a_function_of_the_step_and_shards_ranks():
    batch_order = BatchOrder(n=103, batch_size=10, seed=7)
    assert batch_order.steps_per_epoch == 10
    epoch = torch.cat([batch_order(s) for s in range(10)])
    assert len(set(epoch.tolist())) == 100  # one epoch: no repeats, the last 3 dropped
    again = BatchOrder(n=103, batch_size=10, seed=7)
    assert torch.equal(again(23), batch_order(23))  # no hidden state: resume-safe
    assert not torch.equal(batch_order(3), batch_order(13))  # a fresh permutation each epoch
    ranks = [BatchOrder(103, 10, 7, rank=r, world_size=2)(4) for r in range(2)]
    assert sorted(torch.cat(ranks).tolist()) == sorted(batch_order(4).tolist())
    assert not set(ranks[0].tolist()) & set(ranks[1].tolist())
    with pytest.raises(ConfigError, match="--batch-size 0"):
        BatchOrder(103, 0, 7)
    with pytest.raises(ConfigError, match="divisible"):
        BatchOrder(103, 9, 7, rank=0, world_size=2)


def test_ema_follows_the_closed_form():
    model = torch.nn.Linear(3, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.9)
    theta0 = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d = min(0.9, 2 / 11)  # warm-up decay at the first update
    assert torch.allclose(ema.model.weight, d * theta0 + (1 - d) * torch.ones(1, 3))
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.model.weight, torch.ones(1, 3), atol=1e-6)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_checkpoint_roundtrip_and_kind(tmp_path):
    path = tmp_path / "ckpt.pt"
    state = {"kind": "toy", "step": 3, "config": {"a": (1, 2)}, "w": torch.arange(4.0),
             "rng": [randomness.rng_state(torch.device("cpu"))]}
    save_checkpoint(path, state)
    loaded = load_checkpoint(path, kind="toy")
    assert loaded["step"] == 3 and torch.equal(loaded["w"], torch.arange(4.0))
    randomness.set_rng_state(loaded["rng"][0], torch.device("cpu"))  # survives weights_only
    with pytest.raises(CheckpointError, match="is a 'toy' checkpoint, expected 'vae'"):
        load_checkpoint(path, kind="vae")
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_truncated_and_foreign_checkpoints_are_rejected(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"kind": "ddpm", "w": torch.randn(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)
    # A pickle that would run code is refused by weights_only=True.
    torch.save({"kind": "ddpm", "evil": argparse.Namespace(x=1)}, path)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="no 'kind'"):
        load_checkpoint(path)


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"kind": "ddpm", "step": 1})
    real_save = torch.save

    def dies_midway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:  # half a file on disk, then the process "dies"
            handle.truncate(handle.seek(0, 2) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"kind": "ddpm", "step": 2, "w": torch.randn(10_000)})
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary left behind


def test_metric_logger_drops_lines_after_the_resumed_step(tmp_path):
    logger = MetricLogger(tmp_path)
    for step in (10, 20, 30):
        logger.log(step, loss=1.0 / step)
    logger.plot()
    assert (tmp_path / "loss.png").stat().st_size > 1000
    MetricLogger(tmp_path, resume_step=20)
    steps = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20]


def test_precision_and_device_errors():
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA or MPS device"):
        devices.autocast(cpu, "fp16")
    with pytest.raises(ConfigError, match="--precision 'fp8'"):
        devices.autocast(cpu, "fp8")
    with pytest.raises(ConfigError, match="--device 'gpu0'"):
        devices.pick_device("gpu0")
    with devices.autocast(cpu, "bf16"):
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16


def _adam_run(optimizer, model, steps=3):
    torch.manual_seed(1)
    for _ in range(steps):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("optimizer_class", [torch.optim.Adam, torch.optim.AdamW])
def test_fused_adam_takes_the_same_steps_as_the_loop(optimizer_class):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    fused = optim.make_adam(optimizer_class, model.parameters(), lr=1e-2, weight_decay=0.1)
    plain = optimizer_class(twin.parameters(), lr=1e-2, weight_decay=0.1)
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if version >= (2, 4):
        assert fused.param_groups[0]["fused"]  # torch 2.4 added the CPU kernel
    after_fused, after_plain = _adam_run(fused, model), _adam_run(plain, twin)
    assert (after_fused - start).abs().max() > 1e-2  # three steps of lr 1e-2 moved the weights
    assert (after_fused - after_plain).abs().max() < 1e-6


def test_loading_optimizer_state_keeps_this_runs_kernel():
    model = torch.nn.Linear(4, 3)
    saved = torch.optim.Adam(model.parameters(), lr=1e-2)  # the unfused loop wrote this state
    _adam_run(saved, model)
    current = optim.make_adam(torch.optim.Adam, model.parameters(), lr=1e-2)
    kernel = current.param_groups[0]["fused"]
    optim.load_optimizer_state(current, saved.state_dict())
    assert current.param_groups[0]["fused"] == kernel
    for p in model.parameters():
        assert torch.equal(current.state[p]["exp_avg"], saved.state[p]["exp_avg"])


def test_compile_clock_reports_the_first_step_beyond_the_later_ones(monkeypatch):
    # steps of 5.0 s (compiling), then 0.1 s each
    clock_times = iter([100.0, 105.0] + [105.0 + 0.1 * k for k in range(1, 20)])
    monkeypatch.setattr(speed.time, "perf_counter", lambda: next(clock_times))
    clock = speed.CompileClock(torch.device("cpu"), window=3)
    lines = [clock.tick() for _ in range(6)]
    assert lines[:3] == [None] * 3 and lines[4:] == [None, None]
    assert clock.compile_seconds == pytest.approx(4.9)
    assert "5.0 s" in lines[3] and "100 ms" in lines[3] and "4.9 s" in lines[3]


def test_input_clock_reports_the_share_of_each_window(monkeypatch):
    # two batches prepared in 0.5 s each, inside a 4 s window; then a fresh window
    readings = iter([10.0, 10.5, 12.0, 12.5, 20.0, 20.25])
    monkeypatch.setattr(speed.time, "perf_counter", lambda: next(readings))
    clock = speed.InputClock()
    for _ in range(2):
        clock.start()
        clock.stop()
    assert clock.fraction(4.0) == pytest.approx(0.25)
    clock.start()
    clock.stop()
    assert clock.fraction(1.0) == pytest.approx(0.25)


def test_a_run_without_loss_scaling_resumes_with_it(capsys):
    """--resume of a checkpoint written without fp16 loss scaling (on a CPU, or in bf16: an empty
    scaler state) where the scaler is on: it starts from its initial scale and says so, where
    GradScaler.load_state_dict alone refuses the empty state. A real state is loaded as it is."""
    from training import load_scaler_state

    written_off = torch.amp.GradScaler("cpu", enabled=False).state_dict()
    assert written_off == {}
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    with pytest.raises(RuntimeError, match="empty"):
        torch.amp.GradScaler("cpu", enabled=True).load_state_dict(written_off)
    load_scaler_state(scaler, written_off)
    assert scaler.get_scale() == 65536.0
    assert "without fp16 loss scaling; the loss scale starts at 65536" in capsys.readouterr().out

    found = scaler.state_dict() | {"scale": 1024.0}          # a state that has found its scale
    resumed = torch.amp.GradScaler("cpu", enabled=True)
    load_scaler_state(resumed, found)
    assert resumed.get_scale() == 1024.0 and capsys.readouterr().out == ""
    load_scaler_state(torch.amp.GradScaler("cpu", enabled=False), found)
