"""Images in [-1, 1] -> PNG files: the grids every program writes, and single images as bytes."""

import io
import math
from pathlib import Path

import torch


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> None:
    """Save a (B, 3, H, W) batch in [-1, 1] as one PNG grid."""
    from torchvision.utils import save_image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.sqrt(images.shape[0])))
    save_image((images.float().clamp(-1, 1) + 1) / 2, path, nrow=nrow, padding=1)


def png_bytes(image: torch.Tensor) -> bytes:
    """One (3, H, W) image in [-1, 1] as PNG bytes, quantized as save_grid does (so a single
    image's file from save_grid holds the same pixels)."""
    from torchvision.utils import save_image

    buffer = io.BytesIO()
    save_image((image[None].float().clamp(-1, 1) + 1) / 2, buffer, format="png")
    return buffer.getvalue()
