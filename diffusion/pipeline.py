"""Trained checkpoints that draw images, and the one function that draws them.

    pipe = load_pipeline("runs/ldm/checkpoint.pt", device)      # stage 4, or a stage-1 pixel DDPM
    scheduler, eta = make_sampler(pipe.scheduler, "ddim", 50)   # the sampler flags, one rule
    images = generate(pipe, ["a photo of a smiling woman"], seeds=[0], guidance=3.0,
                      scheduler=scheduler, eta=eta).images       # (1, 3, S, S) on the CPU

Every program samples through `generate`: sample.py, evaluate.py, the explorer, train_ldm.py's
validation grids and the figures. A pixel model is a Pipeline with no autoencoder, no text and a
scale factor of 1; image i starts from the noise of seeds[i] whatever the model, so an image is
named by (prompt, seed) everywhere.

[P12] A latent model samples latents z_0, which are divided by the scale factor and decoded by
the autoencoder stored in the same checkpoint. [P16] With text, every UNet call sees the frozen
text encoder's hidden states of the prompt, and classifier-free guidance extrapolates from the
prediction for the empty (or negative) prompt (diffusion/guidance.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from common.checkpoints import (entries_problem, load_checkpoint, load_weights, weights_problem,
                                widths_bound_problem)
from common.errors import CheckpointError
from common.config import stored_problem
from diffusion.ddpm import DDPMScheduler
from diffusion.flow import FLOW_TIME_SCALE, FlowMatching, FlowSampler, sample_flow
from diffusion.guidance import conditional_rows, guidance_at, guided_prediction
from diffusion.sampling import sample
from diffusion.schedule import SCHEDULE_SETTINGS, schedule_problems
from models.clip import TextConditioner, text_conditioner_from_state, text_problem
from models.unet import UNET_SETTINGS, UNet, build_unet, unet_problems
from models.vae import (AutoencoderKL, scale_factor_problem, vae_config_problem, vae_from_state,
                        vae_weights_problem)


@dataclass
class Pipeline:
    """Everything a trained diffusion model needs to turn prompts and seeds into images."""
    unet: UNet                              # eps_theta (or v); EMA weights by default
    sample_shape: tuple                     # (C, h, w) that the UNet denoises: latents or pixels
    vae: AutoencoderKL | None = None        # decodes z_0 / scale_factor; None: a pixel model
    text: TextConditioner | None = None     # None: an unconditional model
    scale_factor: float = 1.0               # z * scale_factor has unit variance [P12]; pixels: 1
    scheduler: DDPMScheduler | FlowMatching | None = None  # the training objective: DDPM's
                                            # schedule, or flow matching (make_sampler picks a sampler)
    config: dict | None = None              # the stage's config (train_ldm.py, train_unconditional.py)
    vae_config: dict | None = None          # train_vae.py's config (data, image size, cache)
    attribute_names: list | None = None     # the dataset's attribute names, if it has them
    step: int = 0                           # optimizer steps of training

    @property
    def image_size(self) -> int:
        """S of the (3, S, S) images it draws."""
        return self.sample_shape[-1] * (self.vae.downsampling_factor if self.vae else 1)

    @property
    def data_config(self) -> dict:
        """The config that names the training data (data, image_size, cache_dir)."""
        return self.vae_config if self.vae is not None else self.config

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """[P12] Samples (B, C, h, w) -> images (B, 3, S, S) on the CPU: the decoder on z / scale
        factor for a latent model; the samples themselves for a pixel model."""
        if self.vae is None:
            return z.cpu()
        return self.vae.decode(z / self.scale_factor).float().cpu()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """[P8] Images (B, 3, S, S) in [-1, 1] -> the space the UNet denoises: the posterior mean
        times the scale factor for a latent model (where sampling from an image starts)."""
        if self.vae is None:
            return images
        return self.vae.encode(images).mean * self.scale_factor


# ---- Checkpoints -> Pipeline -------------------------------------------------------------------

CHECKPOINT_ENTRIES = {
    "ddpm": {"config": dict, "step": int, "model": dict, "ema": dict},
    "ldm": {"config": dict, "step": int, "model": dict, "ema": dict, "vae": dict,
            "vae_config": dict, "scale_factor": float, "latent_shape": list},
}


def checkpoint_problem(state: dict) -> str | None:
    """What a "ddpm" or "ldm" checkpoint lacks to be rebuilt (load_checkpoint's check), or None:
    every entry and setting there, of its type and within SIZE_BOUNDS, possible for the model,
    and weights that fit the model its config describes (compared before anything is built)."""
    kind = state["kind"]
    settings = {**UNET_SETTINGS, **SCHEDULE_SETTINGS}
    settings.update({"image_size": int} if kind == "ddpm" else
                    {"num_heads": int, "guidance": float, "clip": str})
    if isinstance(state.get("config"), dict) and "num_heads" in state["config"]:
        settings["num_heads"] = int   # (stage-1 checkpoints from before num_heads have none)
    problem = (entries_problem(state, CHECKPOINT_ENTRIES[kind], "it")
               or entries_problem(state["config"], settings, "its config")
               or entries_problem(state["ema"], {"model": dict, "num_updates": int}, "its ema")
               or (latent_problem(state) if kind == "ldm" else None))
    if problem:
        return problem
    config = state["config"]
    if config.get("objective", "ddpm") not in ("ddpm", "flow"):
        return f"its config has objective {config['objective']!r}: expected ddpm or flow"
    resolution = config["image_size"] if kind == "ddpm" else state["latent_shape"][-1]
    problem = (widths_bound_problem(config, "base_channels", "channel_mult", "its config")
               or stored_problem(schedule_problems(config) + unet_problems(config, resolution)))
    if problem:
        return problem
    lengths = state["ema"].get("lengths", {})
    if not isinstance(lengths, dict):
        return f"its ema has lengths = {str(lengths)[:40]!r}: expected a dictionary"
    in_channels = 3 if kind == "ddpm" else state["latent_shape"][0]
    text_width = (state["text_config"]["text_width"] if kind == "ldm"
                  and state.get("text_encoder") is not None else None)
    return weights_problem({"model": state["model"], "ema": state["ema"]["model"],
                            **{f"ema length {name}": weights for name, weights in lengths.items()}},
                           lambda: build_unet(config, in_channels, text_width), "UNet")


def latent_problem(state: dict) -> str | None:
    """What keeps an "ldm" checkpoint's autoencoder, latents, guidance and text from being
    rebuilt, or None: the latents are those of its autoencoder."""
    problem = (vae_config_problem(state["vae_config"], "its vae_config")
               or scale_factor_problem(state["scale_factor"])
               or text_problem(state))
    if problem:
        return problem
    guidance, vae_config = state["config"]["guidance"], state["vae_config"]
    if guidance < 0:
        return f"its config has guidance {guidance}: expected 0 or more"
    side = vae_config["image_size"] // 2 ** (len(vae_config["channel_mult"]) - 1)
    latents = [vae_config["latent_channels"], side, side]
    if list(state["latent_shape"]) != latents:
        return (f"it has latent_shape {list(state['latent_shape'])}: expected {latents}, the "
                "latents of its autoencoder (latent_channels, and image_size halved per level)")
    return vae_weights_problem(state["vae"], vae_config, "vae")


def stored_weights(state: dict, use_ema: bool = True, ema_length: str | None = None) -> dict:
    """The UNet weights a checkpoint offers: the raw ones, its EMA ("model": the first average),
    or with ema_length one of the power-function EMAs kept beside it (training/ema.py)."""
    if not use_ema:
        return state["model"]
    if ema_length is None:
        return state["ema"]["model"]
    lengths = state["ema"].get("lengths", {})
    if not isinstance(lengths, dict) or ema_length not in lengths:
        kept = " ".join(map(str, lengths)) if isinstance(lengths, dict) and lengths else "none"
        raise CheckpointError(f"--ema-length {ema_length}: the checkpoint keeps the EMA lengths "
                              f"{kept} (train with --ema-lengths to keep some)")
    return lengths[ema_length]


def stored_scheduler(cfg: dict, clip_sample: bool, device="cpu") -> DDPMScheduler | FlowMatching:
    """What a checkpoint's model is sampled through: FlowMatching for objective flow, else its
    DDPM schedule (clip_sample: pixels clip x0 to [-1, 1], latents do not). Checkpoints from
    before flow matching have no objective: DDPM."""
    if cfg.get("objective", "ddpm") == "flow":
        return FlowMatching.from_config(cfg)
    return DDPMScheduler.from_config(cfg, clip_sample=clip_sample).to(device)


def pipeline_from_state(state: dict, device="cpu", use_ema: bool = True,
                        ema_length: str | None = None) -> Pipeline:
    """A train_ldm.py or train_unconditional.py checkpoint, already read by load_checkpoint ->
    Pipeline on `device`, its networks in eval mode and frozen."""
    cfg = state["config"]
    weights = stored_weights(state, use_ema, ema_length)
    if state["kind"] == "ddpm":      # stage 1: pixels, no autoencoder, no text
        unet = build_unet(cfg, in_channels=3)
        load_weights(unet, weights, "the UNet")
        return Pipeline(unet.to(device).eval().requires_grad_(False),
                        sample_shape=(3, cfg["image_size"], cfg["image_size"]),
                        scheduler=stored_scheduler(cfg, clip_sample=True, device=device),
                        config=cfg, step=state["step"])
    text = None
    if state.get("text_encoder") is not None:
        text = text_conditioner_from_state(state, device)
    sample_shape = tuple(state["latent_shape"])
    unet = build_unet(cfg, sample_shape[0], None if text is None else text.text_encoder.width)
    load_weights(unet, weights, "the UNet")
    return Pipeline(
        unet.to(device).eval().requires_grad_(False), sample_shape,
        vae=vae_from_state(state["vae"], state["vae_config"], device), text=text,
        scale_factor=state["scale_factor"],
        scheduler=stored_scheduler(cfg, clip_sample=False, device=device),
        config=cfg, vae_config=state["vae_config"], attribute_names=state.get("attribute_names"),
        step=state["step"])


def load_pipeline(path: str | Path, device="cpu", use_ema: bool = True,
                  ema_length: str | None = None) -> Pipeline:
    """A train_ldm.py or train_unconditional.py checkpoint -> Pipeline (EMA weights unless
    use_ema=False; ema_length: one of the power-function EMAs the checkpoint keeps)."""
    state = load_checkpoint(path, kind=("ddpm", "ldm"), check=checkpoint_problem)
    return pipeline_from_state(state, device, use_ema, ema_length)


# ---- Generation --------------------------------------------------------------------------------

class Generation(NamedTuple):
    images: torch.Tensor   # (B, 3, S, S) on the CPU, not clamped
    trajectory: list       # [(t, x_t, x0_pred)] at the steps asked for, in the UNet's space (the
                           # latents of a latent model: pipe.decode turns them into images); [] if none


def initial_noise(shape: tuple, seeds: list[int]) -> torch.Tensor:
    """x_T (B, *shape): sample i is standard normal noise from torch.Generator().manual_seed(
    seeds[i]) on the CPU, so a seed names one starting point on every device and in every batch."""
    return torch.stack([torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
                        for seed in seeds])


@torch.no_grad()
def generate(pipe: Pipeline, prompts: list[str], seeds: list[int], guidance: float, scheduler,
             negative_prompt: str = "", eta: float = 0.0, generator: torch.Generator | None = None,
             x_init: torch.Tensor | None = None, strength: float = 1.0, trajectory_steps=None,
             recorder=None, on_step=None, guidance_interval: tuple = (0.0, 1.0)) -> Generation:
    """[P7] [P12] [P16] One batch of images, image i for (prompts[i], seeds[i]).

    prompts:          one per image; a model without text takes none ("" for every image)
    seeds:            one per image: its x_T (initial_noise). The noise of stochastic steps
                      (DDPM, DDIM at eta > 0) comes from `generator`
    guidance:         with text, eps = eps_uncond + guidance * (eps_cond - eps_uncond), eps_uncond
                      from negative_prompt ("" = unconditional) (diffusion/guidance.py); with
                      guidance_interval (lo, hi), only at noise levels lo..hi (guidance_at)
    scheduler, eta:   as make_sampler returns them: a DDPM scheduler, or a FlowSampler (then
                      the UNet sees the time t in [0, 1] as FLOW_TIME_SCALE * t)
    x_init, strength: [P8] start from x_init (1, C, h, w) in the UNet's space (pipe.encode of an
                      image), noised to step round(strength * T), as in diffusion.sample
    trajectory_steps: timesteps at which to keep (t, x_t, x0_pred)
    recorder:         a models.attention.AttentionRecorder, collected after every model call
    on_step:          called with no argument after every model call (a progress counter)
    """
    if pipe.text is None and any(prompts):
        raise ValueError("this model has no text encoder: its prompts must be empty")
    unet, text = pipe.unet, pipe.text
    device = next(unet.parameters()).device
    x_T = initial_noise(pipe.sample_shape, seeds).to(device)              # (B, C, h, w)
    if text is not None:
        cond = text(prompts, device, warn_unknown=False)                    # (B, L, D), (B, L)
        uncond = text([negative_prompt] * len(prompts), device, warn_unknown=False)

    flow = isinstance(scheduler, FlowSampler)

    def model_fn(x_t, t):
        scale = guidance
        if tuple(guidance_interval) != (0.0, 1.0):   # (reads t on the host: only when asked)
            level = float(t[0]) if flow else (int(t[0]) + 1) / scheduler.num_train_timesteps
            scale = guidance_at(guidance, level, guidance_interval)
        if flow:
            t = FLOW_TIME_SCALE * t                                         # (B,) in [0, 1000]
        if text is None:
            prediction = unet(x_t, t)
        else:
            prediction = guided_prediction(unet, x_t, t, cond, uncond, scale)
            if recorder is not None:
                recorder.collect(conditional_rows(len(seeds)))
        if on_step is not None:
            on_step()
        return prediction

    trajectory = []
    x_init = None if x_init is None else x_init.expand(len(seeds), -1, -1, -1)
    if flow:   # beyond the video: integrate the velocity field (diffusion/flow.py)
        x0 = sample_flow(model_fn, x_T, scheduler.num_steps, scheduler.solver, x_init, strength,
                         trajectory_steps, trajectory)
    else:
        x0 = sample(model_fn, scheduler, x_T, eta=eta, generator=generator, x_init=x_init,
                    strength=strength, trajectory_steps=trajectory_steps, trajectory=trajectory,
                    progress=False)
    return Generation(pipe.decode(x0), trajectory)
