"""The attribute classifier evaluate.py uses as its judge: does an image show what was asked?

A small CNN trained on real images of the dataset with one sigmoid per attribute (binary
cross-entropy). Its penultimate features (one vector per image) also give the feature space of
the Frechet distance between real and generated images (models/metrics.py).

    (B, 3, S, S) -> stride-2 conv 3x3 -> per level [stride-2 conv, ResnetBlock] -> GroupNorm, SiLU
                 -> mean over positions -> features (B, F) -> linear -> logits (B, A)
"""

import torch
from torch import nn

from models.vae import ResnetBlock


class AttributeClassifier(nn.Module):
    def __init__(self, num_attributes: int, base_channels: int = 32,
                 channel_mult: tuple = (1, 2, 4)):
        super().__init__()
        channels = [base_channels * m for m in channel_mult]
        layers = [nn.Conv2d(3, channels[0], 3, stride=2, padding=1)]  # S/2: cheap on a CPU
        for level, ch in enumerate(channels):
            if level > 0:
                layers.append(nn.Conv2d(channels[level - 1], ch, 3, stride=2, padding=1))
            layers.append(ResnetBlock(ch, ch))
        layers += [nn.GroupNorm(32, channels[-1]), nn.SiLU()]
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1], num_attributes)
        self.feature_dim = channels[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) in [-1, 1] -> features (B, F), the mean over positions."""
        return self.layers(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))                     # (B, A) logits, > 0 = present
