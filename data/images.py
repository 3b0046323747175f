"""One image file -> a square array or tensor: the preprocessing every dataset and sample.py use.

Center-crop to a square on the shorter side, then resize to S x S with PIL's bicubic filter
(which antialiases when shrinking). CelebA's aligned 178x218 faces become 178x178 (20 rows cut
at the top and at the bottom), then S x S.

Every image becomes 8-bit RGB first (to_rgb). 8-bit modes (L, LA, P, PA, RGB, RGBA, CMYK, 1, ...)
go through PIL's own conversion, alpha dropped. PIL would clip deeper images to 255, so they are
scaled here, by their own range:

    16-bit (I;16, I;16B, I;16L, and I, as 16-bit PNGs read)   v -> round(v * 255 / 65535)
    float (F), when every value lies in [0, 1]                  v -> round(v * 255)
    float (F), otherwise: taken as 0..255 already               v -> round(v), clipped to 0..255
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # the files datasets are made of


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: 16-bit and float values scaled to 0..255 (the rules above)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.int64)  # (H, W): I;16B is big-endian, I is int32
        values = np.clip(values, 0, 65535)  # I has 32 bits, of which a 16-bit PNG uses 0..65535
        # round(v * 255 / 65535) in integers: 65535 = 255 * 257, so it is floor((v + 128) / 257).
        grey = ((values + 128) // 257).astype(np.uint8)  # (H, W)
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float32))  # (H, W); NaN -> 0
        if values.min() >= 0 and values.max() <= 1:
            values = values * 255
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)  # (H, W)
    else:
        return image.convert("RGB")  # 8-bit modes: unchanged, as the existing caches hold them
    return Image.fromarray(grey, "L").convert("RGB")


def load_square_image(path: str | Path, size: int) -> np.ndarray:
    """Read one image file as (size, size, 3) uint8 RGB: center-crop to a square, resize bicubic."""
    with Image.open(path) as image:
        image = to_rgb(image)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))  # (side, side)
    image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)  # (size, size, 3)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(S, S, 3) uint8 -> (1, 3, S, S) float32 in [-1, 1], the range the models work in."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
