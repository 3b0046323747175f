"""The optimizer: Adam(W) with the fused kernel, the learning-rate schedules, and one step.

Every stage's loop goes through `optimizer_step` after its backward pass, so that fp16 loss
scaling, gradient clipping and zeroing happen the same way in all four stages:

    scaler.scale(loss).backward()                                   # in the stage's loop
    grad_norm = optimizer_step(optimizer, scaler, model.parameters(), cfg.grad_clip)
"""

import math

import torch

from common.errors import CheckpointError


def make_adam(optimizer_class, params, **kwargs) -> torch.optim.Optimizer:
    """Adam or AdamW with PyTorch's fused kernel where this torch has one for the device (CUDA,
    MPS and, from torch 2.4, CPU): one kernel over all parameters instead of a Python loop of
    small ops per parameter, the same update rule. On the CPU preset of stage 4 it takes the
    optimizer step from about 20 ms to 7 ms. Falls back to the default implementation."""
    params = list(params)
    try:
        return optimizer_class(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or torch
        return optimizer_class(params, **kwargs)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """optimizer.load_state_dict, keeping this run's kernel choice: the checkpoint may come from a
    machine or torch version that used the other one (fused is a setting, not part of the state).
    A state that does not fit this optimizer (other parameter groups, moments of other shapes)
    is one line (CheckpointError), not a traceback at the first step."""
    kernels = [(group.get("fused"), group.get("foreach")) for group in optimizer.param_groups]
    misfit = "--resume: the checkpoint's optimizer state does not fit this run's optimizer"
    try:
        optimizer.load_state_dict(state)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{misfit} ({error})") from None
    for group, (fused, foreach) in zip(optimizer.param_groups, kernels):
        group["fused"], group["foreach"] = fused, foreach
    for param, values in optimizer.state.items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise CheckpointError(f"{misfit} ({name} of shape {tuple(value.shape)} for a "
                                      f"parameter of shape {tuple(param.shape)})")


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict) -> None:
    """scaler.load_state_dict, also for a run that moves to fp16 loss scaling: a checkpoint
    written without it (on a CPU, or in bf16) holds an empty scaler state, which an enabled
    GradScaler refuses. It then starts from its initial scale and finds the right one by itself
    in its first steps (a step whose gradients overflow is skipped and the scale halved)."""
    if state or not scaler.is_enabled():
        scaler.load_state_dict(state)
    else:
        print("--resume: the checkpoint was written without fp16 loss scaling; the loss scale "
              f"starts at {scaler.get_scale():g} and adjusts itself in the first steps")


def warmup_lr(step: int, peak_lr: float, warmup_steps: int) -> float:
    """Linear warm-up, then constant: lr = peak_lr * min(1, (step + 1) / warmup_steps)."""
    return peak_lr * min(1.0, (step + 1) / max(1, warmup_steps))


def warmup_cosine_lr(step: int, peak_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up, then cosine decay to 0 at total_steps (as CLIP is trained):
    lr = warmup_lr(step) * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))."""
    progress = max(0, step - warmup_steps) / max(1, total_steps - warmup_steps)
    return warmup_lr(step, peak_lr, warmup_steps) * 0.5 * (1 + math.cos(math.pi * progress))


LR_SCHEDULES = ("constant", "cosine")


def scheduled_lr(schedule: str, step: int, peak_lr: float, warmup_steps: int,
                 total_steps: int) -> float:
    """The learning rate of a stage's --lr-schedule: constant after the warm-up, or cosine decay
    to 0 at the last step (a short run then ends on small steps, which lowers its final loss)."""
    if schedule == "cosine":
        return warmup_cosine_lr(step, peak_lr, warmup_steps, total_steps)
    return warmup_lr(step, peak_lr, warmup_steps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   parameters=None, grad_clip: float = 0.0) -> torch.Tensor | None:
    """One optimizer step after `scaler.scale(loss).backward()`.

    1. unscale the gradients (the loss was multiplied by the fp16 loss scale; a no-op otherwise);
    2. with `parameters`, clip their total norm to grad_clip (0 = no clipping, norm still measured);
    3. step: the scaler skips it when a gradient is inf or NaN (an fp16 overflow) and lowers the
       scale, so one overflow never reaches the weights; without fp16 it is optimizer.step();
    4. update the loss scale, and zero the gradients for the next backward pass.
    Returns the gradient norm before clipping, or None without `parameters`.
    """
    scaler.unscale_(optimizer)
    grad_norm = None
    if parameters is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters,
                                                   grad_clip if grad_clip > 0 else float("inf"))
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm
