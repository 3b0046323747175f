"""Sinusoidal timestep embeddings: how the UNet is told which noise level t it is looking at. [P5]

The same network denoises every step t = 0 .. T-1, so t goes in as an input. A bare integer is a
poor input for a network; instead t becomes a vector of sines and cosines at geometrically spaced
frequencies, the positional encoding of the Transformer (Vaswani et al. 2017, section 3.5) that
DDPM (Ho et al. 2020, appendix B) uses for its timesteps. A small MLP then turns that fixed code
into a learned embedding that every ResBlock of the UNet adds to its features.
"""

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps t (B,), integer or float -> float32 (B, dim). [P5]

        frequency_i = exp(-log(max_period) * i / half)       i = 0 .. half-1,  half = dim / 2
        embedding   = [sin(t * frequency_0), ..., sin(t * frequency_{half-1}),
                       cos(t * frequency_0), ..., cos(t * frequency_{half-1})]

    The first half holds sines, the second cosines; frequencies run from 1 (one radian per step)
    down to nearly 1 / max_period, so neighbouring t differ in the fast channels and distant t in the
    slow ones. Every value lies in [-1, 1]; t = 0 gives sines 0 and cosines 1. (Dividing by
    half follows ADM and diffusers; DDPM's original code divides by half - 1, a negligible change.)
    """
    if dim % 2 != 0:
        raise ValueError(f"timestep embedding dim must be even (half sines, half cosines), "
                         f"got {dim}")
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=t.device) / half  # (half,) i / half
    frequencies = torch.exp(-math.log(max_period) * exponents)                  # (half,)
    angles = t.float()[:, None] * frequencies[None, :]                          # (B, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)             # (B, dim)


class TimestepEmbedding(nn.Module):
    """t (B,) -> sinusoidal code (B, frequency_dim) -> Linear, SiLU, Linear -> (B, time_dim). [P5]

    DDPM uses frequency_dim = the UNet's base channels and time_dim = 4 x base channels.
    """

    def __init__(self,
        frequency_dim: int,                 # width of the sinusoidal code (even)
        time_dim: int,                      # width of the learned embedding given to every ResBlock
    ):
        super().__init__()
        if frequency_dim % 2 != 0:
            raise ValueError(f"frequency_dim must be even (half sines, half cosines), "
                             f"got {frequency_dim}")
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, time_dim),
            nn.SiLU(),
            nn.Linear(time_dim, time_dim),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_dim))  # (B, time_dim)
