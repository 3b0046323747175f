"""The latent cache: every image of a split encoded once by the trained autoencoder.

train_vae.py writes OUT/latents_{split}.pt next to its checkpoint (kind "latents"); the CLIP and
latent diffusion stages read it, so the frozen encoder runs once per image instead of once per
step. It holds the posterior q(z | x) = N(mean, std^2) of every image as float16 (each training
step draws a fresh z = mean + std * eps from it), the scale factor of the autoencoder that wrote
it, and the images' attribute rows and captions.
"""

from pathlib import Path

import torch
from tqdm import tqdm

from common.checkpoints import entries_problem, load_checkpoint, save_checkpoint
from common.errors import DataError

# what a latent cache holds, with the types load_latents checks
LATENT_ENTRIES = {"mean": torch.Tensor, "std": torch.Tensor, "scale_factor": float}


@torch.no_grad()
def encode_dataset(vae, dataset, batch_size: int, device, path: Path, scale_factor: float,
                   data: str, image_size: int) -> None:
    """Encode every image of `dataset` once: the posterior mean and std as float16, with the
    labels and captions, into the cache file `path`. In fp32 whatever the training precision:
    a bf16 encoder is off by up to a few hundredths, more than the float16 cache's own rounding
    (and bf16 would save only about 10 s of the demo's 18000 images)."""
    vae.eval()
    means, stds = [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc=f"encoding {path.name}"):
        x = dataset.batch(torch.arange(start, min(start + batch_size, len(dataset))),
                          device)["image"]
        posterior = vae.encode(x)
        means.append(posterior.mean.half().cpu())
        stds.append(posterior.std.half().cpu())
    save_checkpoint(path, {
        "kind": "latents", "mean": torch.cat(means), "std": torch.cat(stds),  # (N, C, h, w) each
        "scale_factor": scale_factor, "data": data, "image_size": image_size,
        "attributes": None if dataset.attributes is None else torch.from_numpy(dataset.attributes),
        "attribute_names": dataset.attribute_names, "texts": dataset.texts})
    vae.train()


def load_latents(vae_path: str | Path, split: str, scale_factor: float) -> dict:
    """The latent cache OUT/latents_{split}.pt written next to the autoencoder checkpoint
    `vae_path`, refused if another autoencoder wrote it (another scale factor)."""
    path = Path(vae_path).parent / f"latents_{split}.pt"
    if not path.is_file():
        raise DataError(f"latent cache {path}: no such file; write it with "
                        f"`python train_vae.py --out {path.parent} --resume --encode-latents` "
                        "(add the preset and flags the autoencoder was trained with)")
    cache = load_checkpoint(path, kind="latents",
                            check=lambda state: entries_problem(state, LATENT_ENTRIES, "it"))
    if abs(cache["scale_factor"] - scale_factor) >= 1e-6:
        raise DataError(f"{path} was written by another autoencoder than {vae_path} (scale "
                        f"factors {cache['scale_factor']:.4f} and {scale_factor:.4f}); re-encode "
                        "with --resume --encode-latents")
    return cache


def draw_latents(cache: dict, indices: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """[P12] z ~ q(z | x) for the cached images `indices`, scaled to unit variance:
    z = (mean + std * eps) * scale_factor, (B, C, h, w) float32 on the CPU."""
    mean, std = cache["mean"][indices].float(), cache["std"][indices].float()
    return (mean + std * torch.randn_like(mean)) * scale_factor
