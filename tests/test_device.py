"""common/device.py: what --precision auto picks on each device, what autocast refuses, and the
backend settings (TF32 and cudnn autotuning, or --deterministic), and the host-to-device copy of
the batches. The GPU's capabilities and the
torch version are mocked: torch.device("cuda") and torch.device("mps") need no hardware."""

import os

import pytest
import torch
from torch.torch_version import TorchVersion

from common import device as devices
from common.errors import ConfigError
from tests.conftest import TINY, run

CUDA, MPS, CPU = torch.device("cuda"), torch.device("mps"), torch.device("cpu")


# ---- --precision auto ----------------------------------------------------------------------------

def test_auto_is_bf16_on_a_gpu_with_native_bf16_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert devices.auto_precision(CUDA)[0] == "bf16"
    # a pre-Ampere GPU (T4, V100): bf16 only emulated, so fp16 with loss scaling
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation)
    precision, note = devices.auto_precision(CUDA)
    assert precision == "fp16" and "loss scaling" in note and "--precision fp32" in note


@pytest.mark.parametrize("version, expected", [("2.4.1", "fp32"), ("2.7.1", "fp32"),
                                               ("2.8.0", "fp16"), ("2.14.1", "fp16")])
def test_auto_on_mps_follows_the_torch_version(monkeypatch, version, expected):
    """fp16 needs MPS autocast (torch 2.5) and MPS loss scaling (torch 2.8)."""
    monkeypatch.setattr(torch, "__version__", TorchVersion(version))
    precision, note = devices.auto_precision(MPS)
    assert precision == expected
    assert expected == "fp16" or version in note  # the fp32 note names the torch that lacks it


def test_auto_on_a_cpu_follows_its_native_bf16(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.auto_precision(CPU)[0] == "bf16"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    precision, note = devices.auto_precision(CPU)
    assert precision == "fp32" and "--precision bf16" in note


# ---- autocast and loss scaling ---------------------------------------------------------------------

def test_autocast_refuses_fp16_on_a_cpu_in_one_line():
    with pytest.raises(ConfigError, match="--precision fp16") as error:
        devices.autocast(CPU, "fp16")
    assert "\n" not in str(error.value)


def test_fp16_on_mps_needs_torch_2_5_and_is_scaled_from_2_8(monkeypatch):
    monkeypatch.setattr(torch, "__version__", TorchVersion("2.4.1"))
    with pytest.raises(ConfigError, match="--precision fp16 on mps needs torch 2.5"):
        devices.autocast(MPS, "fp16")
    monkeypatch.setattr(torch, "__version__", TorchVersion("2.5.0"))
    assert devices.autocast(MPS, "fp16").fast_dtype == torch.float16  # built, not entered
    assert not devices.make_grad_scaler(MPS, "fp16").is_enabled()
    monkeypatch.setattr(torch, "__version__", TorchVersion("2.8.0"))
    assert devices.make_grad_scaler(MPS, "fp16").is_enabled()
    assert not devices.make_grad_scaler(MPS, "bf16").is_enabled()
    assert not devices.make_grad_scaler(CPU, "bf16").is_enabled()


# ---- configure_backends ------------------------------------------------------------------------------

@pytest.fixture
def backends():
    """Put back the process-wide settings configure_backends changes."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
         torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved[2:6]
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        if saved[6] is not None:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[6]


def test_deterministic_turns_on_deterministic_algorithms(backends):
    assert "deterministic" in devices.configure_backends(CPU, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32
    devices.configure_backends(CUDA, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not (torch.backends.cudnn.benchmark or torch.backends.cuda.matmul.allow_tf32
                or torch.backends.cudnn.allow_tf32)


def test_a_cuda_run_gets_tf32_and_cudnn_autotuning(backends):
    torch.use_deterministic_algorithms(True)
    note = devices.configure_backends(CUDA, deterministic=False)
    assert "TF32" in note and "--deterministic" in note
    assert torch.backends.cudnn.benchmark
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert not torch.are_deterministic_algorithms_enabled()
    assert devices.configure_backends(CPU, deterministic=False) == ""
    assert not torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32


def test_deterministic_reaches_the_run_and_a_cpu_run_repeats_bit_for_bit(tmp_path):
    """--deterministic is applied by start_run; on a CPU, the weights equal those of a run
    without it (the README's claim)."""
    weights = []
    for name, flags in (("plain", []), ("deterministic", ["--deterministic"])):
        out = tmp_path / name
        result = run(["train_unconditional.py", *TINY, "--steps", "2", "--out", str(out),
                      "--cache-dir", str(tmp_path / "cache"), *flags])
        assert ("--deterministic: deterministic algorithms only on cpu" in result.stdout) == bool(flags)
        weights.append(torch.load(out / "checkpoint.pt", weights_only=True)["model"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_to_device_pins_and_does_not_wait_on_cuda_only():
    """On a CPU the batch is used where it is (no copy); on CUDA it is copied from pinned memory
    with non_blocking=True, so the host does not wait for the copy."""
    t = torch.arange(6.0)
    assert devices.to_device(t, CPU) is t

    calls = []

    class HostTensor:  # stands in for a CPU tensor on a machine without a GPU
        device = CPU

        def pin_memory(self):
            calls.append("pin_memory")
            return self

        def to(self, device, non_blocking=False):
            calls.append(("to", str(device), non_blocking))
            return self

    devices.to_device(HostTensor(), torch.device("cuda:1"))
    assert calls == ["pin_memory", ("to", "cuda:1", True)]
