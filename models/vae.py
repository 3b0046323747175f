"""The KL autoencoder of latent diffusion: images <-> small latents. [P10]

Point 9 says why: a diffusion model on 128x128x3 pixels is slow to train. Latent diffusion
(Rombach et al. 2022, section 3.1) first trains an autoencoder, then runs the diffusion model on
its latents. With the default channel_mult=(1, 2, 4) the encoder halves H and W twice:

    x (B, 3, 128, 128) -> Encoder -> moments (B, 2*3, 32, 32) = mean, log-variance
                       -> DiagonalGaussian q(z | x) -> z (B, 3, 32, 32) -> Decoder -> (B, 3, 128, 128)

Encoder, per level: num_res_blocks x ResnetBlock, then a 2x downsample (not after the last level);
middle: ResnetBlock, self-attention, ResnetBlock; then GroupNorm, SiLU, conv to 2*latent_channels.
The Decoder mirrors it (num_res_blocks + 1 blocks per level, 2x upsamples) and ends with GroupNorm,
SiLU and a conv to 3 channels. This is the Encoder/Decoder of CompVis latent-diffusion
(`ldm/modules/diffusionmodules/model.py`) without its 1x1 quant_conv/post_quant_conv, which with
equal channel counts are linear maps the neighbouring convs already provide.

The posterior is a Gaussian with a diagonal covariance; a small KL term to N(0, I) keeps the
latents bounded (models/losses.py, kl_loss) [P11]. Training losses: models/losses.py,
models/perceptual.py, models/discriminator.py.
"""

import math

import torch
from torch import nn

from common.checkpoints import (entries_problem, load_checkpoint, load_weights, weights_problem,
                                widths_bound_problem)
from common.config import stored_problem
from common.errors import CheckpointError
from common.randomness import gaussian_noise_like
from models.attention import SpatialSelfAttention
from models.unet import NUM_GROUPS, Downsample, Upsample, widths_problems

# The settings of train_vae.py's config that build_vae reads: the autoencoder's arguments, with
# their types (a checkpoint's stored config is checked against them), and the image size.
VAE_SETTINGS = {"base_channels": int, "channel_mult": list, "num_res_blocks": int,
                "latent_channels": int, "attention": bool}


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-Conv, GroupNorm-SiLU-Dropout-Conv, + skip path. The UNet's ResBlock without
    the time embedding (an autoencoder has no timestep)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.Sequential(
            nn.GroupNorm(NUM_GROUPS, in_channels), nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.GroupNorm(NUM_GROUPS, out_channels), nn.SiLU(), nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1))
        # 1x1 conv on the skip path when the channel count changes
        self.skip = (nn.Identity() if in_channels == out_channels
                     else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.layers(x)                      # (B, C_out, H, W)


def middle_block(channels: int, dropout: float, attention: bool) -> nn.Sequential:
    """ResnetBlock, single-head self-attention (LDM's AttnBlock), ResnetBlock, at the lowest resolution."""
    return nn.Sequential(
        ResnetBlock(channels, channels, dropout),
        SpatialSelfAttention(channels, num_heads=1, num_groups=NUM_GROUPS) if attention else nn.Identity(),
        ResnetBlock(channels, channels, dropout))


class Encoder(nn.Module):
    """x (B, in_channels, H, W) -> moments (B, 2*latent_channels, H/f, W/f), f = 2^(levels-1)."""

    def __init__(self, in_channels: int, base_channels: int, channel_mult: tuple, num_res_blocks: int,
                 latent_channels: int, attention: bool, dropout: float):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        layers, channels = [], base_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers.append(ResnetBlock(channels, base_channels * mult, dropout))
                channels = base_channels * mult
            if level < len(channel_mult) - 1:
                layers.append(Downsample(channels))
        self.down = nn.Sequential(*layers)
        self.middle = middle_block(channels, dropout, attention)
        self.out = nn.Sequential(nn.GroupNorm(NUM_GROUPS, channels), nn.SiLU(),
                                 nn.Conv2d(channels, 2 * latent_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)                                       # (B, base, H, W)
        h = self.down(h)                                          # (B, C_last, H/f, W/f)
        h = self.middle(h)                                        # (B, C_last, H/f, W/f)
        return self.out(h)                                        # (B, 2*latent, H/f, W/f)


class Decoder(nn.Module):
    """z (B, latent_channels, h, w) -> image (B, out_channels, h*f, w*f); mirrors the Encoder."""

    def __init__(self, out_channels: int, base_channels: int, channel_mult: tuple, num_res_blocks: int,
                 latent_channels: int, attention: bool, dropout: float):
        super().__init__()
        channels = base_channels * channel_mult[-1]
        self.conv_in = nn.Conv2d(latent_channels, channels, 3, padding=1)
        self.middle = middle_block(channels, dropout, attention)
        layers = []
        for level in reversed(range(len(channel_mult))):           # lowest resolution first
            for _ in range(num_res_blocks + 1):
                layers.append(ResnetBlock(channels, base_channels * channel_mult[level], dropout))
                channels = base_channels * channel_mult[level]
            if level > 0:
                layers.append(Upsample(channels))
        self.up = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.GroupNorm(NUM_GROUPS, channels), nn.SiLU(),
                                 nn.Conv2d(channels, out_channels, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)                                       # (B, C_last, h, w)
        h = self.middle(h)                                        # (B, C_last, h, w)
        h = self.up(h)                                            # (B, base, h*f, w*f)
        return self.out(h)                                        # (B, 3, h*f, w*f), no squashing


class DiagonalGaussian:
    """q(z | x) = N(mean, diag(var)) from the encoder's moments (B, 2C, h, w): the first C channels
    are the mean, the last C the log-variance. As DiagonalGaussianDistribution in latent-diffusion."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = torch.chunk(moments, 2, dim=1)        # (B, C, h, w) each
        # Clamped so that exp() neither overflows nor reaches 0 (LDM's bounds).
        self.logvar = torch.clamp(logvar, -30.0, 20.0)            # log sigma^2
        self.std = torch.exp(0.5 * self.logvar)                   # sigma
        self.var = torch.exp(self.logvar)                         # sigma^2

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + sigma * eps, eps ~ N(0, I): the reparameterisation trick (Kingma & Welling
        2014, section 2.4), so gradients flow into mean and sigma."""
        return self.mean + self.std * gaussian_noise_like(self.mean, generator)  # (B, C, h, w)

    def mode(self) -> torch.Tensor:
        """The most likely latent, the mean (deterministic encoding)."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q(z | x) || N(0, I)) in closed form, summed over (C, h, w): (B,).
        Per element (Kingma & Welling 2014, appendix B):
            KL = 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2)"""
        return 0.5 * torch.sum(self.mean ** 2 + self.var - 1.0 - self.logvar, dim=(1, 2, 3))


class AutoencoderKL(nn.Module):
    """The KL-regularised autoencoder: encode(x) -> DiagonalGaussian, decode(z) -> image. [P10]"""

    def __init__(self,
        in_channels: int = 3,               # image channels (decoded images have as many)
        base_channels: int = 64,            # level i has base_channels * channel_mult[i] channels
        channel_mult: tuple = (1, 2, 4),    # one multiplier per level; f = 2^(len - 1) (4: 128 -> 32)
        num_res_blocks: int = 2,            # ResnetBlocks per level in the encoder (decoder: one more)
        latent_channels: int = 3,           # C of the latent z (B, C, H/f, W/f); 3 as in the video
        attention: bool = True,             # self-attention in the middle blocks (lowest resolution)
        dropout: float = 0.0,               # dropout inside the ResnetBlocks
    ):
        super().__init__()
        problems = widths_problems(dict(base_channels=base_channels, channel_mult=channel_mult),
                                   resolution=None, what="autoencoder")
        if problems:
            name, message = problems[0]
            raise ValueError(f"{name} {message}")
        self.latent_channels = latent_channels
        self.downsampling_factor = 2 ** (len(channel_mult) - 1)  # f: H, W of z = H, W of x / f
        parts = dict(base_channels=base_channels, channel_mult=tuple(channel_mult),
                     num_res_blocks=num_res_blocks, latent_channels=latent_channels,
                     attention=attention, dropout=dropout)
        self.encoder = Encoder(in_channels, **parts)
        self.decoder = Decoder(in_channels, **parts)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Images (B, 3, H, W) in [-1, 1] -> q(z | x) over latents (B, C, H/f, W/f). [P10]"""
        H, W = x.shape[-2:]
        factor = self.downsampling_factor
        if H % factor != 0 or W % factor != 0:
            raise ValueError(f"image size {H}x{W} is not divisible by {factor}, the autoencoder's "
                             f"downsampling factor (2^(len(channel_mult)-1))")
        return DiagonalGaussian(self.encoder(x))                  # moments (B, 2C, H/f, W/f)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) -> images (B, 3, h*f, w*f), about [-1, 1] (not clamped). [P10]"""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample_posterior: bool = True
                ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """(reconstruction (B, 3, H, W), posterior). Decodes a sample of q(z | x) when
        sample_posterior (training), else its mean (evaluation)."""
        posterior = self.encode(x)
        z = posterior.sample() if sample_posterior else posterior.mode()
        return self.decode(z), posterior

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight of the decoder's final conv: the adaptive GAN weight compares the gradients
        of the reconstruction and GAN losses at this tensor (models/losses.py)."""
        return self.decoder.out[-1].weight


@torch.no_grad()
def latent_std(vae: AutoencoderKL, dataset, count: int, batch_size: int, device) -> float:
    """[P12] Standard deviation of z ~ q(z | x) over the first `count` images of `dataset` (a
    data.ImageDataset), `batch_size` at a time: LDM's scale_factor is 1 / this. Nothing in float64 on the device (MPS has none): each batch is summed in float32
    there, and the sums of all batches are added up in Python floats (double precision)."""
    vae.eval()
    total, total_sq, n = 0.0, 0.0, 0
    for start in range(0, min(count, len(dataset)), batch_size):
        stop = min(start + batch_size, count, len(dataset))
        x = dataset.batch(torch.arange(start, stop), device)["image"]
        z = vae.encode(x).sample().float()                          # (B, C, h, w) on the device
        # float32 sums per batch on the device, accumulated across batches in Python floats
        total, total_sq, n = total + z.sum().item(), total_sq + (z * z).sum().item(), n + z.numel()
    vae.train()
    mean = total / n
    return math.sqrt(total_sq / n - mean**2)


def build_vae(cfg: dict) -> AutoencoderKL:
    """The autoencoder a train_vae.py config describes (later stages rebuild it from a checkpoint)."""
    return AutoencoderKL(**{name: tuple(cfg[name]) if kind is list else cfg[name]
                            for name, kind in VAE_SETTINGS.items()})


def vae_from_state(weights: dict, cfg: dict, device="cpu") -> AutoencoderKL:
    """A frozen autoencoder in eval mode from its weights and config (as checkpoints store them)."""
    vae = build_vae(cfg)
    load_weights(vae, weights, "the autoencoder")
    return vae.to(device).eval().requires_grad_(False)


def vae_config_problem(config: dict, where: str = "its config") -> str | None:
    """What keeps a stored train_vae.py config from rebuilding its autoencoder, or None."""
    problem = entries_problem(config, {**VAE_SETTINGS, "image_size": int}, where)
    if problem is None:
        problem = (widths_bound_problem(config, "base_channels", "channel_mult", where)
                   or stored_problem(widths_problems(config, config["image_size"], "autoencoder"),
                                     where))
    return problem


def vae_weights_problem(weights: dict, config: dict, entry: str) -> str | None:
    """Stored autoencoder weights (`entry` of a checkpoint) that do not fit the autoencoder that
    its checked `config` describes, or are not finite floating-point numbers; None if they are."""
    return weights_problem({entry: weights}, lambda: build_vae(config), "autoencoder")


def scale_factor_problem(scale_factor) -> str | None:
    """A scale factor that is not a finite positive number (entries_problem checked its type)."""
    if not scale_factor > 0:
        return f"it has scale_factor {scale_factor}: expected a positive number"
    return None


def vae_checkpoint_problem(state: dict) -> str | None:
    """What a "vae" checkpoint lacks to be rebuilt (load_checkpoint's check), or None. Its scale
    factor is None until the training has finished."""
    finished = state.get("scale_factor") is not None
    return (entries_problem(state, {"config": dict, "step": int, "model": dict,
                                    **({"scale_factor": float} if finished else {})}, "it")
            or (scale_factor_problem(state["scale_factor"]) if finished else None)
            or vae_config_problem(state["config"])
            or vae_weights_problem(state["model"], state["config"], "model"))


def load_vae(path, device="cpu") -> tuple[AutoencoderKL, float, dict]:
    """A finished train_vae.py checkpoint -> (frozen autoencoder, scale_factor, config)."""
    state = load_checkpoint(path, kind="vae", check=vae_checkpoint_problem)
    if state.get("scale_factor") is None:
        raise CheckpointError(f"checkpoint {path}: the autoencoder's training has not finished "
                              "(no scale factor yet); finish it with train_vae.py --resume")
    return vae_from_state(state["model"], state["config"], device), state["scale_factor"], \
        state["config"]
