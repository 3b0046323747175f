"""A small CLIP: a transformer text encoder and an image encoder on the autoencoder's latents,
pulled together by a contrastive loss. [P14] [P15]

Text encoder [P14]: token ids (B, L) -> token embedding + learned position embedding -> pre-norm
transformer blocks (GPT-2 / CLIP style: x + Attn(LN(x)), x + MLP(LN(x))) -> final LayerNorm ->
hidden states (B, L, D). The padding mask keeps padding out of every softmax, so a real token
never reads a padding token. Cross-attention in the latent diffusion UNet reads the hidden
states and the mask; the contrastive loss reads one pooled vector per text, the mean of the
hidden states over the real tokens.

Image encoder [P15]: as in the video, images go through the frozen pretrained autoencoder's
encoder; a small convolutional head turns the latent (B, C, h, w) into one vector. Training reads
the latents from the autoencoder's cache, so the frozen encoder runs once per image, not once
per step; encode_images() runs it for new images.

CLIP (Radford et al. 2021, fig. 3): both vectors are projected into one shared space of width E
and L2-normalised; logits = exp(t) * I T^T with a learnable temperature t, exp(t) initialised at
1/0.07 and kept at most 100 by clamping t after every optimizer step (CLIP section 2.5; open_clip
does the same), so t can come back down after touching the bound. The loss is the symmetric cross-entropy
over the N x N similarity matrix, whose diagonal holds the matching pairs:

    loss = ( CE(logits, labels=[0..N-1]) + CE(logits^T, labels=[0..N-1]) ) / 2
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.checkpoints import (entries_problem, load_checkpoint, load_weights, weights_problem,
                                widths_bound_problem)
from models.attention import Attention
from models.tokenizer import Tokenizer, tokenizer_problem
from models.unet import NUM_GROUPS
from models.vae import (AutoencoderKL, ResnetBlock, scale_factor_problem, vae_config_problem,
                        vae_from_state, vae_weights_problem)

# The settings of train_clip.py's config that build the text encoder (stored again by train_ldm.py
# as "text_config", the text encoder stage 4 reads) and the rest of the CLIP, with their types.
TEXT_SETTINGS = {"text_width": int, "text_layers": int, "text_heads": int}
IMAGE_SETTINGS = {"head_channels": int, "head_mult": list, "embed_dim": int}
MAX_LOGIT_SCALE = 100.0
INIT_LOGIT_SCALE = 1 / 0.07


@dataclass
class TextEncoding:
    hidden: torch.Tensor   # (B, L, D) one vector per token, for cross-attention
    mask: torch.Tensor     # (B, L) bool, True = real token (<bos>, words, <eos>), False = padding
    pooled: torch.Tensor   # (B, D) mean of hidden over the real tokens, for the contrastive loss


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + SelfAttention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = Attention(width, num_heads=num_heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(),
                                 nn.Linear(mlp_ratio * width, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), mask=mask)          # (B, L, D) tokens read tokens
        return x + self.mlp(self.norm2(x))                        # (B, L, D) per-token MLP


class TextEncoder(nn.Module):
    """Token ids (B, L) and their mask -> TextEncoding (hidden states, mask, pooled). [P14]"""

    def __init__(self,
        vocab_size: int,                    # tokens in the tokenizer's vocabulary
        max_length: int,                    # L, positions with a learned embedding
        width: int = 256,                   # D, the width of every token vector
        num_layers: int = 4,                # transformer blocks
        num_heads: int = 4,                 # attention heads per block; must divide width
        dropout: float = 0.0,
    ):
        super().__init__()
        self.width, self.max_length = width, max_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.zeros(max_length, width))
        nn.init.normal_(self.token_embedding.weight, std=0.02)    # CLIP's initialisation
        nn.init.normal_(self.position_embedding, std=0.01)
        self.blocks = nn.ModuleList(TransformerBlock(width, num_heads, dropout=dropout)
                                    for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> TextEncoding:
        B, L = ids.shape
        if L > self.max_length:
            raise ValueError(f"{L} tokens, but the text encoder has {self.max_length} positions")
        x = self.token_embedding(ids) + self.position_embedding[:L]  # (B, L, D)
        for block in self.blocks:
            x = block(x, mask)                                        # (B, L, D)
        hidden = self.final_norm(x)                                   # (B, L, D)
        # masked mean over the real tokens: sum_i m_i h_i / sum_i m_i
        weights = mask.unsqueeze(-1).to(hidden.dtype)                # (B, L, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, D)
        return TextEncoding(hidden, mask, pooled)


class ImageHead(nn.Module):
    """Latents (B, C, h, w) -> one vector (B, width): conv, then per level [a stride-2 conv
    (not on the first level), ResnetBlock], then the mean over positions. The trainable part of
    the image encoder. [P15]"""

    def __init__(self,
        latent_channels: int = 3,           # C of the autoencoder's latents
        base_channels: int = 64,            # channels at the latent resolution (multiple of 32)
        channel_mult: tuple = (1, 2, 4),    # per level; each level after the first halves h, w
        width: int = 256,                   # output width
    ):
        super().__init__()
        channels = [base_channels * m for m in channel_mult]
        layers = [nn.Conv2d(latent_channels, channels[0], 3, padding=1)]
        for level, ch in enumerate(channels):
            if level > 0:  # halve h, w and change the width
                layers.append(nn.Conv2d(channels[level - 1], ch, 3, stride=2, padding=1))
            layers.append(ResnetBlock(ch, ch))
        layers += [nn.GroupNorm(32, channels[-1]), nn.SiLU()]
        self.layers = nn.Sequential(*layers)
        self.out = nn.Linear(channels[-1], width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        features = self.layers(z)                                 # (B, C_last, h', w')
        return self.out(features.mean(dim=(2, 3)))                # (B, width) global average pool


class CLIP(nn.Module):
    """Text and latent-image encoders with projections into one space and a temperature. [P15]"""

    def __init__(self, text_encoder: TextEncoder, image_head: ImageHead, embed_dim: int = 256):
        super().__init__()
        self.text_encoder = text_encoder
        self.image_head = image_head
        self.text_projection = nn.Linear(text_encoder.width, embed_dim, bias=False)
        self.image_projection = nn.Linear(image_head.out.out_features, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(INIT_LOGIT_SCALE)))  # t, exp(t) = 1/0.07

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L), mask (B, L) -> unit vectors (B, E) in the shared space."""
        return F.normalize(self.text_projection(self.text_encoder(ids, mask).pooled), dim=-1)

    def encode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents z * scale_factor (B, C, h, w) -> unit vectors (B, E)."""
        return F.normalize(self.image_projection(self.image_head(z)), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(t), the inverse temperature of the logits."""
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Keep 0 <= t <= log 100 (exp(t) in [1, 100]); call after every optimizer step."""
        self.logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))

    def forward(self, z: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """N images and their N captions -> logits (N, N): row i = image i against every text."""
        return self.scale() * self.encode_latents(z) @ self.encode_text(ids, mask).T


def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy over the N x N similarity matrix; pair i sits at (i, i). [P15]"""
    labels = torch.arange(logits.shape[0], device=logits.device)       # (N,) the diagonal
    image_to_text = F.cross_entropy(logits, labels)                   # each image picks its caption
    text_to_image = F.cross_entropy(logits.T, labels)                 # each caption picks its image
    return (image_to_text + text_to_image) / 2


@torch.no_grad()
def encode_images(clip: CLIP, vae: AutoencoderKL, images: torch.Tensor,
                  scale_factor: float) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> unit vectors (B, E): the frozen autoencoder's encoder
    (posterior mean), the scale factor, then the image head and projection."""
    return clip.encode_latents(vae.encode(images).mean * scale_factor)


# ---- Building a CLIP from a train_clip.py config, and loading its checkpoint --------------------

def build_text_encoder(cfg: dict, tokenizer: Tokenizer) -> TextEncoder:
    """The text encoder a train_clip.py config describes (text_width, text_layers, text_heads)."""
    return TextEncoder(len(tokenizer), tokenizer.max_length, width=cfg["text_width"],
                       num_layers=cfg["text_layers"], num_heads=cfg["text_heads"])


def build_clip(cfg: dict, tokenizer: Tokenizer, latent_channels: int) -> CLIP:
    """The CLIP a train_clip.py config describes, for latents with `latent_channels` channels."""
    text = build_text_encoder(cfg, tokenizer)  # first: the order of the random initial weights
    head = ImageHead(latent_channels, cfg["head_channels"], tuple(cfg["head_mult"]),
                     width=cfg["text_width"])
    return CLIP(text, head, embed_dim=cfg["embed_dim"])


class TextConditioner:
    """Prompts -> (hidden (B, L, D), mask (B, L)) from the frozen text encoder: what the latent
    diffusion UNet's cross-attention reads, in training and in sampling. [P14] [P16]"""

    def __init__(self, text_encoder: TextEncoder, tokenizer: Tokenizer):
        self.text_encoder, self.tokenizer = text_encoder.eval().requires_grad_(False), tokenizer

    @torch.no_grad()
    def __call__(self, prompts: list[str], device, warn_unknown: bool = True):
        ids, mask = self.tokenizer(prompts, warn_unknown=warn_unknown)
        encoding = self.text_encoder(ids.to(device), mask.to(device))
        return encoding.hidden, encoding.mask


def text_conditioner_from_state(state: dict, device="cpu") -> TextConditioner:
    """The frozen text encoder a checkpoint stores as text_encoder, tokenizer and text_config
    (train_ldm.py's), on `device`."""
    tokenizer = Tokenizer.from_state_dict(state["tokenizer"])
    encoder = build_text_encoder(state["text_config"], tokenizer)
    load_weights(encoder, state["text_encoder"], "the text encoder")
    return TextConditioner(encoder.to(device), tokenizer)


def text_settings_problem(config: dict, where: str) -> str | None:
    """What keeps stored TEXT_SETTINGS from building a text encoder, or None."""
    problem = entries_problem(config, TEXT_SETTINGS, where)
    if problem is None and config["text_width"] % config["text_heads"]:
        problem = (f"{where} has text_heads {config['text_heads']}: must divide text_width "
                   f"{config['text_width']}")
    return problem


def text_problem(state: dict) -> str | None:
    """What keeps the text side a train_ldm.py checkpoint stores (text_state: text_encoder,
    tokenizer, text_config) from rebuilding its text encoder, or None; an unconditional model
    stores none of the three."""
    entries = {"text_encoder": dict, "tokenizer": dict, "text_config": dict}
    if all(state.get(name) is None for name in entries):
        return None
    problem = (entries_problem(state, entries, "it")
               or text_settings_problem(state["text_config"], "its text_config")
               or tokenizer_problem(state["tokenizer"], "its tokenizer"))
    if problem:
        return problem
    tokenizer = Tokenizer.from_state_dict(state["tokenizer"])
    return weights_problem({"text_encoder": state["text_encoder"]},
                           lambda: build_text_encoder(state["text_config"], tokenizer),
                           "text encoder")


def text_state(clip: "TrainedCLIP") -> dict:
    """What a checkpoint stores of a CLIP's text side, to rebuild it with
    text_conditioner_from_state: the text encoder's weights, the tokenizer and its settings."""
    return {"text_encoder": clip.clip.text_encoder.state_dict(),
            "tokenizer": clip.tokenizer.state_dict(),
            "text_config": {name: clip.config[name] for name in TEXT_SETTINGS}}


@dataclass
class TrainedCLIP:
    """A train_clip.py checkpoint, loaded: everything needed to embed images and texts."""
    clip: CLIP                  # eval mode, frozen
    tokenizer: Tokenizer        # the vocabulary it was trained with
    vae: AutoencoderKL          # the frozen autoencoder whose latents the image side reads
    scale_factor: float         # z * scale_factor has unit variance (train_vae.py)
    config: dict                # train_clip.py's config
    vae_config: dict            # train_vae.py's config
    step: int                   # the optimizer steps it was trained for


def clip_checkpoint_problem(state: dict) -> str | None:
    """What a "clip" checkpoint lacks to be rebuilt (load_checkpoint's check), or None."""
    problem = (entries_problem(state, {"config": dict, "step": int, "model": dict, "tokenizer": dict,
                                       "vae": dict, "vae_config": dict, "scale_factor": float}, "it")
               or scale_factor_problem(state["scale_factor"])
               or entries_problem(state["config"], IMAGE_SETTINGS, "its config")
               or text_settings_problem(state["config"], "its config")
               or widths_bound_problem(state["config"], "head_channels", "head_mult", "its config")
               or tokenizer_problem(state["tokenizer"], "its tokenizer")
               or vae_config_problem(state["vae_config"], "its vae_config"))
    if problem:
        return problem
    config, vae_config = state["config"], state["vae_config"]
    if not config["head_mult"]:
        return "its config has head_mult (empty): expected one multiplier per level, at least one"
    if config["head_channels"] % NUM_GROUPS:
        return (f"its config has head_channels {config['head_channels']}: expected a multiple of "
                f"{NUM_GROUPS} (GroupNorm groups)")
    tokenizer = Tokenizer.from_state_dict(state["tokenizer"])
    return (vae_weights_problem(state["vae"], vae_config, "vae")
            or weights_problem({"model": state["model"]}, lambda: build_clip(
                config, tokenizer, vae_config["latent_channels"]), "CLIP"))


def load_clip(path, device="cpu") -> TrainedCLIP:
    """A train_clip.py checkpoint -> TrainedCLIP, models on `device` in eval mode and frozen."""
    state = load_checkpoint(path, kind="clip", check=clip_checkpoint_problem)
    tokenizer = Tokenizer.from_state_dict(state["tokenizer"])
    vae = vae_from_state(state["vae"], state["vae_config"], device)
    clip = build_clip(state["config"], tokenizer, vae.latent_channels)
    load_weights(clip, state["model"], f"checkpoint {path}")
    return TrainedCLIP(clip.to(device).eval().requires_grad_(False), tokenizer, vae,
                       state["scale_factor"], state["config"], state["vae_config"], state["step"])
