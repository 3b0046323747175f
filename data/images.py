"""One image file -> a square array or tensor: the preprocessing every dataset and sample.py use.

Turn the image upright as its EXIF orientation tag says (a phone stores a portrait photo as
landscape pixels and that tag), center-crop to a square on the shorter side, then resize to S x S
with PIL's bicubic filter (which antialiases when shrinking). CelebA's aligned 178x218 faces become
178x178 (20 rows cut at the top and at the bottom), then S x S.

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
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # the files datasets are made of
PREPROCESSING = "upright (EXIF), center crop, bicubic"  # changing it makes the caches anew


def not_images_message(listing: str, folder: Path, names: list[str]) -> str:
    """Why the files a listing (an attribute table, a metadata file) names are not among the
    images of `folder`: the first that is something else (a folder, a format that is not an image
    format here, a hidden file), else how many are missing."""
    for name in names:
        path = folder / name
        if path.is_dir():
            return f"{listing} names {name}, which is a folder in {folder}, not an image file"
        if path.is_file() and path.suffix.lower() not in IMAGE_EXTENSIONS:
            found = f"a {path.suffix} file" if path.suffix else "a file without an extension"
            return (f"{listing} names {name}, {found} in {folder}: not an image format read here; "
                    f"expected {' '.join(IMAGE_EXTENSIONS)}")
        if path.is_file() and any(part.startswith(".") for part in Path(name).parts):
            return (f"{listing} names {name} in {folder}, which is hidden (a name starting with "
                    "'.'): hidden files and folders are skipped")
    return f"{listing} names {len(names)} images missing from {folder}, e.g. {names[0]}"


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
    """Read one image file as (size, size, 3) uint8 RGB: upright as its EXIF orientation says,
    center-cropped to a square, resized bicubic."""
    with Image.open(path) as image:
        image = to_rgb(ImageOps.exif_transpose(image))
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))  # (side, side)
    image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)  # (size, size, 3)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(S, S, 3) uint8 -> (1, 3, S, S) float32 in [-1, 1], the range the models work in."""
    # a copy: PIL's arrays are read-only, which torch.from_numpy warns about
    return torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
