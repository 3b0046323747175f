"""Networks of the project, and how each is built from a stage's config and checked.

[P5] the UNet with sinusoidal timestep embeddings; [P10] [P11] the KL autoencoder and the
PatchGAN discriminator (its losses: models/losses.py, models/perceptual.py); [P14] [P15] the
tokenizer and the small CLIP; [P16] cross-attention and where each word looks.
"""

from models.attention import AttentionRecorder
from models.clip import (CLIP, TextConditioner, build_clip, clip_checkpoint_problem, clip_loss,
                         load_clip, text_state)
from models.discriminator import PatchDiscriminator, discriminator_problems
from models.embeddings import TimestepEmbedding, timestep_embedding
from models.tokenizer import Tokenizer
from models.unet import UNet, build_unet, unet_problems, widths_problems
from models.vae import (AutoencoderKL, DiagonalGaussian, build_vae, latent_std, load_vae,
                        vae_checkpoint_problem)

__all__ = ["AttentionRecorder", "CLIP", "TextConditioner", "build_clip", "clip_checkpoint_problem",
           "clip_loss", "load_clip", "text_state", "PatchDiscriminator", "discriminator_problems",
           "TimestepEmbedding", "timestep_embedding", "Tokenizer", "UNet", "build_unet",
           "unet_problems", "widths_problems", "AutoencoderKL", "DiagonalGaussian", "build_vae",
           "latent_std", "load_vae", "vae_checkpoint_problem"]
