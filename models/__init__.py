"""Networks of the project. [P5] UNet with sinusoidal timestep embeddings."""

from models.embeddings import TimestepEmbedding, timestep_embedding
from models.unet import UNet

__all__ = ["UNet", "TimestepEmbedding", "timestep_embedding"]

# [P10] [P11] The KL autoencoder and what trains it.
from models.discriminator import PatchDiscriminator  # noqa: E402
from models.perceptual import PerceptualLoss, build_perceptual_loss  # noqa: E402
from models.vae import AutoencoderKL, DiagonalGaussian  # noqa: E402

__all__ += ["AutoencoderKL", "DiagonalGaussian", "PerceptualLoss", "build_perceptual_loss",
            "PatchDiscriminator"]
