"""One image file -> a square array or tensor: the preprocessing every dataset and sample.py use.

Center-crop to a square on the shorter side, then resize to S x S with PIL's bicubic filter
(which antialiases when shrinking). CelebA's aligned 178x218 faces become 178x178 (20 rows cut
at the top and at the bottom), then S x S.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # the files datasets are made of


def load_square_image(path: str | Path, size: int) -> np.ndarray:
    """Read one image file as (size, size, 3) uint8 RGB: center-crop to a square, resize bicubic."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))  # (side, side)
    image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)  # (size, size, 3)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(S, S, 3) uint8 -> (1, 3, S, S) float32 in [-1, 1], the range the models work in."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
