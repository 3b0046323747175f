"""Networks of the project. [P5] UNet with sinusoidal timestep embeddings."""

from models.embeddings import TimestepEmbedding, timestep_embedding
from models.unet import UNet

__all__ = ["UNet", "TimestepEmbedding", "timestep_embedding"]
