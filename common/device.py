"""Device and precision: cuda > mps > cpu, fp32 / bf16 / fp16 for the forward pass, and the
backends' speed-or-repeatability settings."""

import contextlib
import os

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
PRECISION_HELP = ("auto (CUDA: bf16 where the GPU has it, else fp16; MPS: fp16 with torch 2.8 or "
                  "newer, else fp32; CPU: bf16 where it is native, else fp32), fp32, bf16, or fp16 "
                  "(CUDA or MPS, with loss scaling)")

# The torch releases that brought fp16 mixed precision to Apple's MPS backend:
MPS_FP16_AUTOCAST = (2, 5)  # torch.autocast(device_type="mps", dtype=float16) (pytorch PR #99272)
MPS_GRAD_SCALER = (2, 8)    # GradScaler("mps"): before it, unscale_ cast the scale to float64,
                            # which MPS lacks (pytorch issue #142397, fixed by PR #150255)


def torch_at_least(version: tuple[int, int]) -> bool:
    """True when the installed torch is `version` (major, minor) or newer (a nightly of that
    version counts as older)."""
    return torch.__version__ >= version


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs whose flags list AVX512-BF16 or AMX-BF16 (read from /proc/cpuinfo, so
    Linux only): there bf16 matrix products run at about twice the fp32 rate."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_has_native_bf16() -> bool:
    """True on CUDA GPUs with bf16 in hardware (Ampere and newer). torch before 2.4 has no
    `including_emulation` argument and then reports native support only."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        return torch.cuda.is_bf16_supported()


def auto_precision(device: torch.device) -> tuple[str, str]:
    """--precision auto -> (precision, a note saying why):
    CUDA: bf16 autocast on GPUs that support it (Ampere and newer), else fp16 with loss scaling;
    MPS:  fp16 with loss scaling where this torch has both MPS autocast and GradScaler, else fp32;
    CPU:  bf16 autocast where the CPU has native bf16, else fp32."""
    fp32 = "--precision fp32 for full precision"
    if device.type == "cuda":
        # native bf16 only: older GPUs emulate it slowly, and cuDNN has no bf16 convolutions there
        if cuda_has_native_bf16():
            return "bf16", f"--precision auto: bf16 autocast, this GPU supports bf16; {fp32}"
        return "fp16", ("--precision auto: fp16 autocast with loss scaling, this GPU has no bf16 "
                        f"(older than Ampere); {fp32}")
    if device.type == "mps":
        if torch_at_least(MPS_GRAD_SCALER):
            return "fp16", ("--precision auto: fp16 autocast with loss scaling on mps (torch "
                            f"{torch.__version__} has both on MPS); {fp32}")
        return "fp32", (f"--precision auto: fp32 on mps, torch {torch.__version__} has no fp16 "
                        "loss scaling there (torch 2.8 has)")
    if cpu_has_native_bf16():
        return "bf16", ("--precision auto: bf16 autocast, this CPU has native bf16 (AVX512-BF16 "
                        f"or AMX); {fp32}")
    return "fp32", f"--precision auto: fp32 on {device.type} (--precision bf16 to change)"


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for the forward pass: fp32 (none), bf16, or fp16 (CUDA or MPS)."""
    require(precision in PRECISIONS, f"--precision {precision!r}: expected fp32, bf16 or fp16")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16":
        require(device.type in ("cuda", "mps"),
                f"--precision fp16 needs a CUDA or MPS device (got {device.type}); use bf16 or fp32")
        require(device.type != "mps" or torch_at_least(MPS_FP16_AUTOCAST),
                f"--precision fp16 on mps needs torch 2.5 or newer (this is {torch.__version__}); "
                "use fp32")
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def make_grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA, and on MPS from torch 2.8 (fp16 gradients underflow without
    it; older torch cannot scale on MPS, so fp16 runs unscaled there); a no-op otherwise: scale()
    returns the loss itself and step() is a plain optimizer.step()."""
    scaled = precision == "fp16" and (
        device.type == "cuda" or (device.type == "mps" and torch_at_least(MPS_GRAD_SCALER)))
    return torch.amp.GradScaler(device.type, enabled=scaled)


def configure_backends(device: torch.device, deterministic: bool) -> str:
    """Set the process-wide kernel choices once, before the first CUDA work; returns a note
    (empty when there is nothing to say).

    deterministic=False, on CUDA: TF32 for fp32 matrix products and convolutions (10 mantissa
        bits, several times faster on Ampere and newer) and cudnn autotuning (it times several
        convolution algorithms and keeps the fastest, which may differ from run to run).
    deterministic=True: deterministic algorithms only (an operation that has none raises), no
        TF32, no autotuning, and the cuBLAS workspace setting that deterministic cuBLAS needs.
    A CPU run repeats bit for bit on one machine either way."""
    fast = device.type == "cuda" and not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = fast
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast
    if fast:
        return ("cuda: TF32 matrix products and convolutions, cudnn autotuning "
                "(--deterministic for repeatable runs, at some cost in speed)")
    if deterministic:
        return (f"--deterministic: deterministic algorithms only on {device.type}"
                + (" (a CPU run repeats bit for bit without it too)" if device.type == "cpu" else ""))
    return ""


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A CPU tensor on `device` without making the host wait for the copy. On CUDA it goes from
    pinned (page-locked) memory with non_blocking=True: the copy is queued on the GPU's stream
    behind the work already there, so the host goes on preparing the next batch. A copy from
    ordinary memory makes the host wait until the GPU has taken it. Elsewhere a plain .to(device)
    (a tensor already on `device` is returned as it is)."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels, so that a host clock reading includes them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
