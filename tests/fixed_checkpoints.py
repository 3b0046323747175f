"""Tiny checkpoints whose weights are a pure function of a seed: no training, so the tests that
pin images and scores (tests/test_pinned.py) see the same models whatever the training code does.

Each is written in the checkpoint format of its stage (the keys train_unconditional.py,
train_ldm.py and evaluate.py write), from freshly initialised modules, with every weight
perturbed by seeded noise so that outputs are not the near-identity of an initial network.
"""

from pathlib import Path

import torch

from data.captions import VOCABULARY
from evaluation.judge import judge_path
from data.synthetic import SYNTHETIC_ATTRIBUTES
from models.classifier import AttributeClassifier
from models.clip import TextEncoder
from models.tokenizer import SPECIAL_TOKENS, Tokenizer
from models.unet import UNet
from models.vae import AutoencoderKL

SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
            "beta_schedule": "linear"}
UNET = {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_levels": [1],
        "dropout": 0.0, "num_heads": 4}
VAE = {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "latent_channels": 3,
       "attention": False}
TEXT = {"text_width": 32, "text_layers": 1, "text_heads": 4}
IMAGE_SIZE = 16
JUDGE_LR, JUDGE_BATCH = 2e-3, 64  # evaluate.py's --judge-lr and --judge-batch-size defaults


def perturbed(module: torch.nn.Module, seed: int, scale: float = 0.05) -> dict:
    """The module's weights after its seeded initialisation, plus seeded Gaussian noise."""
    generator = torch.Generator().manual_seed(seed + 1)
    return {name: value + scale * torch.randn(value.shape, generator=generator)
            if value.is_floating_point() else value
            for name, value in module.state_dict().items()}


def pixel_checkpoint(path: Path, cache_dir: Path, seed: int = 0, objective: str = "ddpm") -> Path:
    """A stage-1 pixel checkpoint ("ddpm") on synthetic:64 at 16x16, trained (as its config
    says) with DDPM's objective or with flow matching."""
    torch.manual_seed(seed)
    unet = UNet(in_channels=3, base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                attention_levels=(1,), num_heads=4)
    weights = perturbed(unet, seed)
    config = {**UNET, **SCHEDULE, "prediction_type": "epsilon", "image_size": IMAGE_SIZE,
              "data": "synthetic:64", "cache_dir": str(cache_dir), "objective": objective}
    torch.save({"kind": "ddpm", "config": config, "step": 1, "model": weights,
                "ema": {"model": weights, "num_updates": 1}}, path)
    return path


def text_checkpoint(path: Path, cache_dir: Path, seed: int = 0) -> Path:
    """A stage-4 text-to-image checkpoint ("ldm"): UNet, autoencoder and text encoder."""
    torch.manual_seed(seed)
    words = sorted({w for adjectives, phrases in VOCABULARY.values() for p in adjectives + phrases
                    for w in p.split()}
                   | {"a", "photo", "of", "person", "man", "woman", "with", "and"})
    tokenizer = Tokenizer(SPECIAL_TOKENS + words, max_length=24)
    encoder = TextEncoder(len(tokenizer), tokenizer.max_length, width=32, num_layers=1,
                          num_heads=4)
    vae = AutoencoderKL(base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                        latent_channels=3, attention=False)
    unet = UNet(in_channels=3, base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                attention_levels=(1,), num_heads=4, context_dim=32)
    weights = perturbed(unet, seed)
    config = {**UNET, **SCHEDULE, "prediction_type": "v", "guidance": 3.0, "clip": ""}
    vae_config = {**VAE, "image_size": IMAGE_SIZE, "data": "synthetic:64",
                  "cache_dir": str(cache_dir)}
    torch.save({"kind": "ldm", "config": config, "step": 1, "model": weights,
                "ema": {"model": weights, "num_updates": 1}, "vae": perturbed(vae, seed, 0.01),
                "vae_config": vae_config, "scale_factor": 0.8, "latent_shape": [3, 8, 8],
                "attribute_names": list(SYNTHETIC_ATTRIBUTES),
                "text_encoder": perturbed(encoder, seed), "tokenizer": tokenizer.state_dict(),
                "text_config": TEXT}, path)
    return path


def judge_cache(cache_dir: Path, data_name: str, steps: int, seed: int = 0) -> Path:
    """evaluate.py's cached judge for `data_name` (the dataset's cache key, e.g.
    "synthetic-64-n64-seed0-train"), trained for `steps` as far as the cache says: a seeded
    AttributeClassifier, so evaluate.py loads it instead of training one."""
    torch.manual_seed(seed)
    model = AttributeClassifier(len(SYNTHETIC_ATTRIBUTES))
    path = judge_path(cache_dir, data_name, IMAGE_SIZE, dict(steps=steps, lr=JUDGE_LR,
                                                            batch_size=JUDGE_BATCH))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": "classifier", "model": perturbed(model, seed, 0.2),
                "num_attributes": len(SYNTHETIC_ATTRIBUTES),
                "attribute_names": list(SYNTHETIC_ATTRIBUTES), "steps": steps, "lr": JUDGE_LR,
                "batch_size": JUDGE_BATCH,
                "val_accuracy": {name: 0.5 for name in SYNTHETIC_ATTRIBUTES}}, path)
    return path
