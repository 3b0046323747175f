"""Trained checkpoints that draw images: a stage-4 text-to-image model, and a stage-1 pixel DDPM.

    pipe = load_text_to_image("runs/ldm/checkpoint.pt", device)      # one object, not a dict
    scheduler = make_sampler(pipe.scheduler, "ddim", 50)
    images = generate(pipe, ["a photo of a smiling woman"], seeds=[0], guidance=3.0,
                      scheduler=scheduler)                            # (1, 3, S, S) on the CPU

[P12] A latent model samples latents z_0, which are divided by the scale factor and decoded by
the autoencoder stored in the same checkpoint. [P16] With text, every UNet call sees the frozen
text encoder's hidden states of the prompt, and classifier-free guidance extrapolates from the
prediction for the empty (or negative) prompt (diffusion/guidance.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from diffusion.ddpm import DDPMScheduler
from diffusion.guidance import guided_prediction
from diffusion.sampling import sample
from models.clip import TextEncoder, build_text_encoder
from models.tokenizer import Tokenizer
from models.unet import UNet, build_unet
from models.vae import AutoencoderKL, vae_from_state
from training.checkpoints import load_checkpoint, load_weights


class TextConditioner:
    """Prompts -> (hidden (B, L, D), mask (B, L)) from the frozen text encoder. [P14]"""

    def __init__(self, text_encoder: TextEncoder, tokenizer: Tokenizer):
        self.text_encoder, self.tokenizer = text_encoder.eval().requires_grad_(False), tokenizer

    @torch.no_grad()
    def __call__(self, prompts: list[str], device, warn_unknown: bool = True):
        ids, mask = self.tokenizer(prompts, warn_unknown=warn_unknown)
        encoding = self.text_encoder(ids.to(device), mask.to(device))
        return encoding.hidden, encoding.mask


@dataclass
class TextToImage:
    """Everything a latent diffusion model needs to turn prompts into images."""
    unet: UNet                              # eps_theta (or v) on latents; EMA weights by default
    vae: AutoencoderKL                      # decodes z_0 / scale_factor into an image
    text: TextConditioner | None            # None: an unconditional latent model
    scale_factor: float                     # z * scale_factor has unit variance [P12]
    latent_shape: tuple                     # (C, h, w) of one latent
    scheduler: DDPMScheduler | None = None  # the training schedule (make_sampler picks a sampler)
    config: dict | None = None              # train_ldm.py's config
    vae_config: dict | None = None          # train_vae.py's config (data, image size, cache)
    attribute_names: list | None = None     # the dataset's attribute names, if it has them
    step: int = 0                           # optimizer steps of training


def text_to_image_from_state(state: dict, device="cpu", use_ema: bool = True) -> TextToImage:
    """A train_ldm.py checkpoint already read by load_checkpoint -> TextToImage on `device`."""
    cfg = state["config"]
    text = None
    if state["text_encoder"] is not None:
        tokenizer = Tokenizer.from_state_dict(state["tokenizer"])
        encoder = build_text_encoder(state["text_config"], tokenizer)
        load_weights(encoder, state["text_encoder"], "the text encoder")
        text = TextConditioner(encoder.to(device), tokenizer)
    latent_shape = tuple(state["latent_shape"])
    unet = build_unet(cfg, latent_shape[0], None if text is None else text.text_encoder.width)
    load_weights(unet, state["ema"]["model"] if use_ema else state["model"], "the UNet")
    return TextToImage(
        unet=unet.to(device).eval().requires_grad_(False),
        vae=vae_from_state(state["vae"], state["vae_config"], device), text=text,
        scale_factor=state["scale_factor"], latent_shape=latent_shape,
        scheduler=DDPMScheduler.from_config(cfg, clip_sample=False).to(device),  # latents: no clip
        config=cfg, vae_config=state["vae_config"], attribute_names=state.get("attribute_names"),
        step=state["step"])


def load_text_to_image(path: str | Path, device="cpu", use_ema: bool = True) -> TextToImage:
    """A train_ldm.py checkpoint -> TextToImage (EMA weights unless use_ema=False)."""
    return text_to_image_from_state(load_checkpoint(path, kind="ldm"), device, use_ema)


def pixel_model_from_state(state: dict, device="cpu", use_ema: bool = True
                           ) -> tuple[UNet, DDPMScheduler]:
    """A train_unconditional.py checkpoint already read -> (UNet in eval mode, its schedule)."""
    unet = build_unet(state["config"], in_channels=3)
    load_weights(unet, state["ema"]["model"] if use_ema else state["model"], "the UNet")
    scheduler = DDPMScheduler.from_config(state["config"], clip_sample=True)  # pixels: clip x0
    return unet.to(device).eval().requires_grad_(False), scheduler.to(device)


@torch.no_grad()
def generate(pipe: TextToImage, prompts: list[str], seeds: list[int], guidance: float, scheduler,
             negative_prompt: str = "", eta: float = 0.0, generator: torch.Generator | None = None,
             x_init: torch.Tensor | None = None, strength: float = 1.0, trajectory_steps=None,
             recorder=None, on_step=None, decode_trajectory: bool = True):
    """[P12] [P16] One batch of images, image i for (prompts[i], seeds[i]): the way every program
    of the project samples a latent model (sample.py, evaluate.py, the validation grids, figures).

    z_T of image i comes from torch.Generator().manual_seed(seeds[i]) on the CPU, so a (prompt,
    seed) pair names one image whatever the batch (exactly so for DDIM at eta 0; the noise of
    stochastic steps comes from `generator`). With text, eps = eps_uncond + guidance * (eps_cond -
    eps_uncond), eps_uncond from negative_prompt ("" = unconditional). x_init, strength and
    trajectory_steps as in diffusion.sample, in latent space. recorder: a
    models.attention.AttentionRecorder, collected after every step. on_step: called with no
    argument after every step (a progress counter). Returns images (B, 3, S, S) on the CPU (not
    clamped), and the trajectory [(t, x_t, x0_pred)] when trajectory_steps is given: decoded
    images, or the latents themselves with decode_trajectory=False.
    """
    unet, text = pipe.unet, pipe.text
    device = next(unet.parameters()).device
    z_T = torch.stack([torch.randn(*pipe.latent_shape, generator=torch.Generator().manual_seed(s))
                       for s in seeds]).to(device)                          # (B, C, h, w)
    if text is not None:
        cond = text(prompts, device, warn_unknown=False)                    # (B, L, D), (B, L)
        uncond = text([negative_prompt] * len(prompts), device, warn_unknown=False)

    def model_fn(z, t):
        if text is None:
            eps = unet(z, t)
        else:
            eps = guided_prediction(unet, z, t, cond, uncond, guidance)
            if recorder is not None:
                recorder.collect()
        if on_step is not None:
            on_step()
        return eps
    result = sample(model_fn, scheduler, z_T, eta=eta, generator=generator,
                    x_init=None if x_init is None else x_init.expand(len(seeds), -1, -1, -1),
                    strength=strength, trajectory_steps=trajectory_steps, progress=False)
    decode = lambda z: pipe.vae.decode(z / pipe.scale_factor).float().cpu()  # noqa: E731  [P12]
    if trajectory_steps is None:
        return decode(result)
    z0, trajectory = result
    if not decode_trajectory:
        return decode(z0), trajectory
    return decode(z0), [(t, decode(z_t), decode(x0)) for t, z_t, x0 in trajectory]


@torch.no_grad()
def generate_pixels(unet: UNet, scheduler, count: int, image_size: int,
                    generator: torch.Generator, eta: float = 0.0,
                    x_init: torch.Tensor | None = None, strength: float = 1.0,
                    trajectory_steps=None, on_step=None):
    """[P7] `count` images of a stage-1 pixel DDPM: x_T (count, 3, S, S) drawn from `generator`
    on the CPU, which then draws the noise of stochastic steps too, so one seeded generator names
    a whole batch (sample.py's batches and the explorer's are the same images). x_init,
    strength, trajectory_steps as in diffusion.sample; on_step as in generate. Returns the
    images (count, 3, S, S) on the CPU (not clamped), with the trajectory when asked."""
    device = next(unet.parameters()).device
    x_T = torch.randn(count, 3, image_size, image_size, generator=generator).to(device)

    def model_fn(x, t):
        eps = unet(x, t)
        if on_step is not None:
            on_step()
        return eps
    result = sample(model_fn, scheduler, x_T, eta=eta, generator=generator,
                    x_init=None if x_init is None else x_init.expand(count, -1, -1, -1),
                    strength=strength, trajectory_steps=trajectory_steps, progress=False)
    if trajectory_steps is None:
        return result.cpu()
    x0, trajectory = result
    return x0.cpu(), [(t, x_t.cpu(), pred.cpu()) for t, x_t, pred in trajectory]
