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


def upscaled(images: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, scale*H, scale*W), every pixel repeated as a scale x scale block
    (nearest neighbour): small images made visible without inventing detail."""
    return images.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def png_bytes(image: torch.Tensor) -> bytes:
    """One (3, H, W) image in [-1, 1] as PNG bytes, quantized as save_grid does (so a single
    image's file from save_grid holds the same pixels)."""
    from torchvision.utils import save_image

    buffer = io.BytesIO()
    save_image((image[None].float().clamp(-1, 1) + 1) / 2, buffer, format="png")
    return buffer.getvalue()


def labelled_grid(images: torch.Tensor, rows: list[str], columns: list[str] | None = None,
                  scale: int = 3):
    """A (R*C, 3, H, W) batch in [-1, 1], row-major with R = len(rows), as one PIL image a
    person can read: every image enlarged `scale` times with nearest neighbour (each pixel a
    scale x scale block, nothing smoothed), the text of each row on its left and the label of
    each column above it."""
    from PIL import Image, ImageDraw, ImageFont

    count, _, height, width = images.shape
    if count % len(rows):
        raise ValueError(f"{count} images do not fill {len(rows)} rows")
    ncols = count // len(rows)
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # as save_image
    pixels = upscaled(pixels, scale)                                              # (N, 3, sH, sW)
    text_size = 14                              # pixels of a line of labels
    try:
        font = ImageFont.load_default(size=text_size)  # Pillow's scalable font (needs FreeType)
    except (AttributeError, TypeError, OSError):
        font = ImageFont.load_default()         # the small bitmap font
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max(draw.textlength(text, font=font) for text in rows)
    pad, cell_h, cell_w = 6, height * scale, width * scale
    left = int(text_width) + 2 * pad
    top = 2 * pad + text_size if columns else pad
    canvas = Image.new("RGB", (left + ncols * (cell_w + 2), top + len(rows) * (cell_h + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, text in enumerate(rows):
        y = top + r * (cell_h + 2)
        draw.text((pad, y + (cell_h - text_size) // 2), text, fill="black", font=font)
        for c in range(ncols):
            tile = pixels[r * ncols + c].permute(1, 2, 0).numpy()
            canvas.paste(Image.fromarray(tile), (left + c * (cell_w + 2), y))
    for c, text in enumerate(columns or []):
        draw.text((left + c * (cell_w + 2) + 2, pad), text, fill="black", font=font)
    return canvas


def save_labelled_grid(images: torch.Tensor, path: str | Path, rows: list[str],
                       columns: list[str] | None = None, scale: int = 3) -> None:
    """labelled_grid(...) saved as a PNG at `path`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(images, rows, columns, scale).save(path)
