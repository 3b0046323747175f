"""Device and precision: cuda > mps > cpu, and fp32 / bf16 / fp16 for the forward pass."""

import contextlib

import torch

from common.errors import ConfigError, require


def pick_device(name: str = "auto") -> torch.device:
    """cuda > mps > cpu unless `name` says otherwise ("cpu", "cuda", "cuda:1", "mps")."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine")
    return device


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_CHOICES = ("auto", *PRECISIONS)  # auto: resolved by auto_precision when a run starts


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs whose flags list AVX512-BF16 or AMX-BF16 (read from /proc/cpuinfo, so
    Linux only): there bf16 matrix products run at about twice the fp32 rate."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_precision(device: torch.device) -> tuple[str, str]:
    """--precision auto -> (precision, a note saying why): bf16 autocast on a CPU with native
    bf16, fp32 everywhere else (give --precision bf16 or fp16 to choose it on a GPU)."""
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16", ("--precision auto: bf16 autocast, this CPU has native bf16 (AVX512-BF16 "
                        "or AMX); --precision fp32 for full precision")
    return "fp32", f"--precision auto: fp32 on {device.type} (--precision bf16 to change)"


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for the forward pass: fp32 (none), bf16, or fp16 (CUDA only)."""
    require(precision in PRECISIONS, f"--precision {precision!r}: expected fp32, bf16 or fp16")
    if precision == "fp32":
        return contextlib.nullcontext()
    require(precision != "fp16" or device.type == "cuda",
            f"--precision fp16 needs a CUDA device (got {device.type}); use bf16 or fp32")
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def make_grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA (fp16 gradients underflow without it); a no-op otherwise:
    scale() returns the loss itself and step() is a plain optimizer.step()."""
    return torch.amp.GradScaler("cuda", enabled=(precision == "fp16" and device.type == "cuda"))


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels, so that a host clock reading includes them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
