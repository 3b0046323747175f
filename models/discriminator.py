"""PatchGAN discriminator: is each patch of the image real or a reconstruction? [P11]

The N-layer discriminator of pix2pix (Isola et al. 2017, section 3.2.2), as used by taming
transformers and latent diffusion (`NLayerDiscriminator`). It is fully convolutional and returns
one logit per overlapping patch rather than one per image, so it judges local texture and
sharpness, which is exactly what L1 and perceptual losses leave blurry:

    x (B, 3, H, W)
      conv 4x4 stride 2, LeakyReLU(0.2)                                     -> (B, D,    H/2,  W/2)
      (num_layers - 1) x [conv 4x4 stride 2, norm, LeakyReLU(0.2)], D doubles (at most 8 D)
      conv 4x4 stride 1, norm, LeakyReLU(0.2)
      conv 4x4 stride 1 -> 1 channel                                        -> (B, 1, H', W') logits

Every conv has padding 1, so a stride-2 conv maps n -> n/2 (n even) and a stride-1 conv n -> n-1:
128x128 with num_layers=3 gives 64, 32, 16, then 15, 14: a 14x14 map of logits, each seeing a
70x70 receptive field of the input (the "70x70 PatchGAN").

Normalisation: pix2pix and LDM use BatchNorm2d. Here the discriminator is called once on a batch
of real images and once on a batch of reconstructions, so BatchNorm's statistics differ between
the two calls (it can tell them apart by batch statistics alone), they depend on the batch size
(noisy at the small batches of a laptop), and they change between train and eval mode.
GroupNorm (Wu & He 2018, 32 groups) normalises each image on its own: none of these problems, and
the same norm as the rest of this project. Convs followed by a norm have no bias (the norm's own
bias replaces it).
"""

from collections.abc import Mapping

import torch
from torch import nn

from models.unet import NUM_GROUPS  # GroupNorm groups; 2 * base_channels must divide by it


def discriminator_problems(c: Mapping) -> list[tuple[str, str]]:
    """[P11] The PatchGAN: a positive width that GroupNorm divides twice over, and few enough
    stride-2 layers that the image still gives a map of patches (image_size / 2^layers >= 3)."""
    if c["disc_channels"] < 1 or (2 * c["disc_channels"]) % NUM_GROUPS:
        return [("disc_channels", f"{c['disc_channels']}: expected a positive multiple of "
                                  f"{NUM_GROUPS // 2} (GroupNorm's {NUM_GROUPS} groups divide "
                                  "twice that)")]
    if c["disc_layers"] < 1 or c["image_size"] // 2 ** c["disc_layers"] < 3:
        return [("disc_layers", f"{c['disc_layers']}: expected 1 or more, and at most "
                                f"log2(image_size / 3) for {c['image_size']}x{c['image_size']}")]
    return []


class PatchDiscriminator(nn.Module):
    """Images (B, in_channels, H, W) -> patch logits (B, 1, H', W'); > 0 means "looks real"."""

    def __init__(self,
        in_channels: int = 3,               # image channels
        base_channels: int = 64,            # D, width of the first conv; doubles per layer, at most 8 D
        num_layers: int = 3,                # stride-2 convs: 3 gives 70x70 patches (pix2pix default)
    ):
        super().__init__()
        if (2 * base_channels) % NUM_GROUPS != 0:
            raise ValueError(f"GroupNorm's {NUM_GROUPS} groups must divide 2 * base_channels = "
                             f"{2 * base_channels}")
        layers = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1),
                  nn.LeakyReLU(0.2)]
        channels = base_channels
        for n in range(1, num_layers + 1):
            out_channels = base_channels * min(2 ** n, 8)
            stride = 2 if n < num_layers else 1             # the last of these keeps the size - 1
            layers += [nn.Conv2d(channels, out_channels, 4, stride=stride, padding=1, bias=False),
                       nn.GroupNorm(NUM_GROUPS, out_channels),
                       nn.LeakyReLU(0.2)]
            channels = out_channels
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))  # one logit per patch
        self.layers = nn.Sequential(*layers)

        # pix2pix's init: conv weights N(0, 0.02); norms start as the identity (weight 1, bias 0).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)                                      # (B, 1, H', W')
