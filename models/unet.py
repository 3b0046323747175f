"""The UNet that predicts the noise eps_theta(x_t, t), for pixel and latent diffusion alike. [P5]

Architecture of DDPM (Ho et al. 2020, appendix B) as refined in ADM (Dhariwal & Nichol 2021):

    x (B, C_in, H, W) -> conv_in
      down path   per level: num_res_blocks x ResBlock [+ self-attention], then a 2x downsample
                  (not after the last level); every output is kept as a skip connection
      middle      ResBlock, self-attention, ResBlock at the lowest resolution
      up path     per level: num_res_blocks + 1 x ResBlock on [features, skip] concatenated
                  [+ self-attention], then a 2x upsample (not at the top level)
    -> GroupNorm, SiLU, conv_out -> eps_pred (B, C_out, H, W)

The timestep t enters through a sinusoidal embedding and an MLP; every ResBlock adds it to its
features. With context_dim set, the same UNet is text-conditioned [P16]: every attention block
(at attention_levels and in the middle) becomes a SpatialTransformer whose cross-attention reads
the text encoder's hidden states (B, L, context_dim) through forward(x, t, context, context_mask). Levels are counted from 0 = full input resolution; level i works at H / 2^i, so
attention_levels=(1, 2) puts self-attention at 16x16 and 8x8 for a 32x32 input, pixels or latents.
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from models.attention import SpatialSelfAttention, SpatialTransformer
from models.embeddings import TimestepEmbedding

NUM_GROUPS = 32  # GroupNorm groups in the UNet, the autoencoder and the discriminator
NUM_HEADS = 4    # attention heads, when a config does not say (stage-1 configs before num_heads)
# The settings of a stage's config that build_unet reads: the UNet's arguments, with their types
# (a checkpoint's stored config is checked against them when it is loaded).
UNET_SETTINGS = {"base_channels": int, "channel_mult": list, "num_res_blocks": int,
                 "attention_levels": list, "dropout": float}


def widths_problems(c: Mapping, resolution: int | None, what: str) -> list[tuple[str, str]]:
    """base_channels, channel_mult and the resolution they work at: at least one level, widths
    that GroupNorm's groups divide, and a resolution that halves evenly down to the last level.
    Problems as (setting, "value: what was expected") (common/config.py: require_valid)."""
    mult = list(c["channel_mult"])
    if not mult or not all(isinstance(m, int) and m > 0 for m in mult):
        return [("channel_mult", f"{' '.join(map(str, mult)) or '(empty)'}: expected one "
                                 "positive multiplier per level, at least one level")]
    problems = []
    widths = [c["base_channels"]] + [c["base_channels"] * m for m in mult]
    if any(width % NUM_GROUPS for width in widths):
        problems.append(("base_channels", f"{c['base_channels']}: GroupNorm's {NUM_GROUPS} groups "
                         f"must divide every width of the {what} (base_channels x channel_mult "
                         f"= {widths[1:]}); expected a multiple of {NUM_GROUPS}"))
    factor = 2 ** (len(mult) - 1)
    if resolution is not None and resolution % factor:
        problems.append(("channel_mult", f"{' '.join(map(str, mult))}: {len(mult)} levels halve "
                         f"the size {len(mult) - 1} times, which {resolution}x{resolution} "
                         f"does not allow (it must be divisible by {factor})"))
    return problems


def unet_problems(c: Mapping, resolution: int | None) -> list[tuple[str, str]]:
    """[P5] The UNet's settings: widths, levels with attention, heads that divide their widths,
    dropout a probability. The one set of checks: the UNet's constructor raises the first."""
    problems = widths_problems(c, resolution, "UNet")
    if problems:
        return problems
    levels = len(c["channel_mult"])
    if not all(0 <= level < levels for level in c["attention_levels"]):
        return [("attention_levels", f"{' '.join(map(str, c['attention_levels']))}: levels run "
                                     f"from 0 to {levels - 1}")]
    heads = c.get("num_heads", NUM_HEADS)
    attended = {c["base_channels"] * c["channel_mult"][level]
                for level in [*c["attention_levels"], levels - 1]}  # the middle block attends too
    if heads < 1 or any(width % heads for width in attended):
        problems.append(("num_heads", f"{heads}: must divide the width of every level with "
                                      f"attention ({sorted(attended)})"))
    if not 0 <= c["dropout"] < 1:
        problems.append(("dropout", f"{c['dropout']}: expected a probability, 0 <= p < 1"))
    return problems


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv, + time embedding, GroupNorm-SiLU-Dropout-Conv, + skip path. [P5]"""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, dropout: float = 0.0,
                 num_groups: int = NUM_GROUPS):
        super().__init__()
        self.in_layers = nn.Sequential(
            nn.GroupNorm(num_groups, in_channels), nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, out_channels))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(num_groups, out_channels), nn.SiLU(), nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1))
        # Last conv starts at zero: the block begins as its skip path (ADM's zero_module).
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        # 1x1 conv on the skip path when the channel count changes
        self.skip = (nn.Identity() if in_channels == out_channels
                     else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)                                     # (B, C_out, H, W)
        # [P5] the time embedding is added inside the block, the same value at every pixel
        h = h + self.time_projection(time_emb)[:, :, None, None]  # (B, C_out, 1, 1) broadcast over H, W
        h = self.out_layers(h)                                    # (B, C_out, H, W)
        return self.skip(x) + h


def attention_block(channels: int, num_heads: int, num_groups: int,
                    context_dim: int | None) -> nn.Module:
    """Self-attention, or with a context the transformer with cross-attention to the text. [P16]"""
    if context_dim is None:
        return SpatialSelfAttention(channels, num_heads, num_groups)
    return SpatialTransformer(channels, context_dim, num_heads, num_groups)


class UNetBlock(nn.Module):
    """One step of a level: a ResBlock, then (self- or cross-) attention where the level asks."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, dropout: float,
                 num_groups: int, attention: bool, num_heads: int, context_dim: int | None):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, time_dim, dropout, num_groups)
        self.attention = (attention_block(out_channels, num_heads, num_groups, context_dim)
                          if attention else None)

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.res(x, time_emb)
        if isinstance(self.attention, SpatialTransformer):
            return self.attention(h, context, context_mask)
        return h if self.attention is None else self.attention(h)


class Downsample(nn.Module):
    """Halve H and W with a strided 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)                                       # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


class UNet(nn.Module):
    """eps_theta(x_t, t): noisy images or latents (B, C_in, H, W), timesteps (B,) -> (B, C_out, H, W)."""

    def __init__(self,
        in_channels: int = 3,               # C_in: 3 for RGB pixels, the latent channels for latents
        out_channels: int | None = None,    # C_out; None = in_channels (the predicted noise)
        base_channels: int = 64,            # level i has base_channels * channel_mult[i] channels
        channel_mult: tuple = (1, 2, 2, 2), # one multiplier per level; H, W must divide by 2^(levels-1)
        num_res_blocks: int = 2,            # ResBlocks per level going down (one more going up)
        attention_levels: tuple = (1,),     # level indices with self-attention (0 = full resolution)
        dropout: float = 0.0,               # dropout inside the ResBlocks (DDPM: 0.1 on CIFAR-10)
        num_heads: int = NUM_HEADS,         # attention heads; must divide the width of attended levels
        context_dim: int | None = None,     # width of the text tokens; None = unconditional [P16]
    ):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        num_levels = len(channel_mult)
        level_channels = [base_channels * mult for mult in channel_mult]
        problems = unet_problems(dict(base_channels=base_channels, channel_mult=channel_mult,
                                      attention_levels=attention_levels, num_heads=num_heads,
                                      dropout=dropout), resolution=None)
        if problems:
            name, message = problems[0]
            raise ValueError(f"{name} {message}")
        num_groups = NUM_GROUPS
        self.downsampling_factor = 2 ** (num_levels - 1)
        time_dim = 4 * base_channels  # DDPM: the time embedding is 4x the base width
        self.context_dim = context_dim
        block = dict(time_dim=time_dim, dropout=dropout, num_groups=num_groups, num_heads=num_heads,
                     context_dim=context_dim)

        self.time_embedding = TimestepEmbedding(base_channels, time_dim)  # [P5] sinusoidal + MLP
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        # Down path: remember the channels of every output, each becomes a skip connection.
        channels, skip_channels = base_channels, [base_channels]
        self.down = nn.ModuleList()         # per level, its UNetBlocks
        self.downsamples = nn.ModuleList()  # one per level except the last
        for level, out_ch in enumerate(level_channels):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(UNetBlock(channels, out_ch, attention=level in attention_levels,
                                        **block))
                channels = out_ch
                skip_channels.append(channels)
            self.down.append(blocks)
            if level < num_levels - 1:
                self.downsamples.append(Downsample(channels))
                skip_channels.append(channels)

        # Middle, at the lowest resolution.
        self.middle_res1 = ResBlock(channels, channels, time_dim, dropout, num_groups)
        self.middle_attention = attention_block(channels, num_heads, num_groups, context_dim)
        self.middle_res2 = ResBlock(channels, channels, time_dim, dropout, num_groups)

        # Up path, from the lowest resolution to the highest; each block eats one skip.
        self.up = nn.ModuleList()           # per level, lowest resolution first, its UNetBlocks
        self.upsamples = nn.ModuleList()    # one per level except the top
        for level in reversed(range(num_levels)):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(UNetBlock(channels + skip_channels.pop(), level_channels[level],
                                        attention=level in attention_levels, **block))
                channels = level_channels[level]
            self.up.append(blocks)
            if level > 0:
                self.upsamples.append(Upsample(channels))

        self.out = nn.Sequential(nn.GroupNorm(num_groups, channels), nn.SiLU(),
                                 nn.Conv2d(channels, out_channels, 3, padding=1))
        # Output conv starts at zero, so the untrained model predicts eps_pred = 0.
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, C_in, H, W); t (B,) timesteps, int or float (a 0-d t is shared by the batch);
        for a text-conditioned UNet, context (B, L, context_dim) the text encoder's hidden states
        and context_mask (B, L) bool, True = real token."""
        B, _, H, W = x.shape
        if (context is None) != (self.context_dim is None):
            raise ValueError("a UNet built with context_dim needs a context (the text's hidden "
                             "states), and one built without takes none" if context is None else
                             "this UNet was built without context_dim: it takes no context")
        factor = self.downsampling_factor
        if H % factor != 0 or W % factor != 0:
            raise ValueError(f"input size {H}x{W} is not divisible by {factor}, the UNet's "
                             f"downsampling factor (2^(levels-1))")
        t = torch.as_tensor(t, device=x.device).expand(B)          # (B,)
        time_emb = self.time_embedding(t)                          # (B, 4*base)

        # Down path; level i works at (H_i, W_i) = (H, W) / 2^i with C_i channels.
        h = self.conv_in(x)                                        # (B, base, H, W)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, time_emb, context, context_mask)      # (B, C_i, H_i, W_i)
                skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)                     # (B, C_i, H_i / 2, W_i / 2)
                skips.append(h)

        # Middle, at the lowest resolution (H / factor, W / factor).
        h = self.middle_res1(h, time_emb)
        h = (self.middle_attention(h, context, context_mask) if context is not None
             else self.middle_attention(h))
        h = self.middle_res2(h, time_emb)

        # Up path, lowest resolution first; the skips come back in reverse order.
        for i, blocks in enumerate(self.up):
            for block in blocks:
                # [P5] skip connection: concatenate the down path's features of the same size
                h = torch.cat([h, skips.pop()], dim=1)             # (B, C + C_skip, H_i, W_i)
                h = block(h, time_emb, context, context_mask)      # (B, C_i, H_i, W_i)
            if i < len(self.upsamples):
                h = self.upsamples[i](h)                           # (B, C_i, 2 H_i, 2 W_i)

        return self.out(h)                                         # (B, C_out, H, W)


def build_unet(cfg: dict, in_channels: int, context_dim: int | None = None) -> UNet:
    """The UNet a stage's config describes (train_unconditional.py: pixels, in_channels 3;
    train_ldm.py: latents, with context_dim for text). Rebuilt from a checkpoint's "config"."""
    settings = {name: tuple(cfg[name]) if kind is list else cfg[name]
                for name, kind in UNET_SETTINGS.items()}
    return UNet(in_channels=in_channels, num_heads=cfg.get("num_heads", NUM_HEADS),
                context_dim=context_dim, **settings)
