"""Datasets: decode images once into a uint8 cache, then serve batches by index.

`load_dataset(data, size, split)` reads one of three sources and returns an `ImageDataset`:

- `synthetic` or `synthetic:N`: a generated CelebA-format dataset (data/synthetic.py), made on
  first use under cache_dir, so that every stage runs offline with no download;
- a CelebA folder: `list_attr_celeba.txt` + `img_align_celeba/` (+ optional
  `list_eval_partition.txt`), with its binary attributes (data/celeba.py);
- a folder of images, optionally captioned by `metadata.jsonl` or `metadata.csv` in the Hugging Face
  imagefolder convention (data/imagefolder.py).

Every image is decoded once, center-cropped and resized to S x S, into a memory-mapped (N, S, S, 3)
uint8 cache (data/cache.py). A batch is then a pure function of its indices: no decoding and no
DataLoader workers while training, and a resumed run sees exactly the batches it would have seen.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.device import to_device
from common.errors import DataError
from data.cache import build_image_cache
from data.celeba import celeba_split
from data.files import make_folder
from data.imagefolder import VAL_PERCENT, imagefolder_split
from data.images import IMAGE_EXTENSIONS

SPLITS = ("train", "val", "test", "all")
SYNTHETIC_N = 20_000  # images in the generated dataset of `--data synthetic`
LAYOUTS = (
    "expected a CelebA folder (list_attr_celeba.txt + img_align_celeba/) or a folder of images "
    f"({' '.join(IMAGE_EXTENSIONS)}; optional metadata.jsonl or metadata.csv with file_name,text)"
)


@dataclass
class ImageDataset:
    """The images of one split, with their attributes or captions, indexed 0..N-1."""

    images: np.ndarray                # (N, S, S, 3) uint8, usually a read-only memmap of the cache
    attributes: np.ndarray | None     # (N, A) float32 in {0, 1}: CelebA-style labels, or None
    attribute_names: list[str] | None  # the A column names of `attributes`, or None
    texts: list[str] | None           # N captions from an image folder's metadata, or None
    name: str                         # e.g. "celeba-train"; also names the cache file

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: torch.Tensor | np.ndarray, device: torch.device | str) -> dict:
        """The examples at `indices` (B,): image (B, 3, S, S) in [-1, 1] on `device`, plus
        attributes (B, A) and/or text (B strings) when the dataset has them, and the indices."""
        index = torch.as_tensor(indices, dtype=torch.long).cpu()  # (B,)
        rows = index.numpy()
        pixels = torch.from_numpy(np.asarray(self.images[rows]))  # (B, S, S, 3) uint8, from disk
        # Send one byte per value and convert on the device: v in {0..255} -> v / 127.5 - 1.
        pixels = to_device(pixels, device).permute(0, 3, 1, 2).contiguous()  # (B, 3, S, S) uint8
        out = {"image": pixels.float() / 127.5 - 1.0, "index": index}
        if self.attributes is not None:
            out["attributes"] = to_device(torch.from_numpy(self.attributes[rows]), device)  # (B, A)
        if self.texts is not None:
            out["text"] = [self.texts[i] for i in rows]
        return out


def load_dataset(
    data: str,                            # "synthetic", "synthetic:N", a CelebA or image folder
    size: int,                            # S: images are center-cropped, resized to S x S; S >= 8
    split: str = "train",                 # "train", "val", "test" (CelebA only) or "all"
    attributes: list[str] | None = None,  # CelebA columns to keep, in this order; None: all
    cache_dir: str | Path = "cache",      # where the image caches and the synthetic dataset live
    val_percent: int = VAL_PERCENT,       # an image folder's held-out share (CelebA: its own file)
) -> ImageDataset:
    """Load one split of a dataset as an ImageDataset, decoding the images on first use only."""
    if not 1 <= val_percent <= 50:
        raise DataError(f"--val-percent {val_percent}: expected 1 to 50 (the share of an image "
                        "folder held out for evaluation)")
    if size < 8:
        raise DataError(f"image size {size}: expected at least 8 pixels")
    if split not in SPLITS:
        raise DataError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    cache_dir = Path(cache_dir)

    if data == "synthetic" or data.startswith("synthetic:"):
        root = _synthetic_folder(data, size, cache_dir)
    else:
        root = Path(data).expanduser().resolve()  # resolved, so that "." has a name
        if not root.is_dir():
            raise DataError(f"--data {data}: no such folder")
        if not any(root.iterdir()):
            raise DataError(f"--data {data}: the folder is empty; {LAYOUTS}")

    has_attribute_file = (root / "list_attr_celeba.txt").is_file()
    has_image_folder = (root / "img_align_celeba").is_dir()
    if (has_attribute_file or has_image_folder) and val_percent != VAL_PERCENT:
        raise DataError(f"--val-percent {val_percent}: {data} is in CelebA's layout, whose split is "
                        "its list_eval_partition.txt; --val-percent applies to image folders")
    if has_attribute_file and has_image_folder:
        files, values, names = celeba_split(root, split, attributes)
        texts = None
    elif has_attribute_file or has_image_folder:
        found, lacking = (
            ("list_attr_celeba.txt", "img_align_celeba/")
            if has_attribute_file
            else ("img_align_celeba/", "list_attr_celeba.txt")
        )
        raise DataError(f"--data {data}: has {found} but no {lacking}; a CelebA folder needs both")
    elif any(path.suffix.lower() in IMAGE_EXTENSIONS for path in root.rglob("*")):
        if attributes is not None:
            raise DataError(f"--data {data}: attributes need a CelebA folder, not an image folder")
        files, texts = imagefolder_split(root, split, val_percent)
        values, names = None, None
    else:
        raise DataError(f"--data {data}: no images and no CelebA files; {LAYOUTS}")
    if not files:
        raise DataError(f"--data {data}: split {split!r} has no images")

    key = f"{root.name}-{split}" + (f"-val{val_percent}" if val_percent != VAL_PERCENT else "")
    images, ok = build_image_cache(files, size, cache_dir, key)  # drops unreadable images
    return ImageDataset(
        images=images,
        attributes=None if values is None else values[ok],
        attribute_names=names,
        texts=None if texts is None else [text for text, readable in zip(texts, ok) if readable],
        name=key,
    )


def _synthetic_folder(data: str, size: int, cache_dir: Path) -> Path:
    """The folder of `synthetic` / `synthetic:N`, generated at max(64, S) pixels on first use."""
    count = data.partition(":")[2]
    if count and not (count.isdigit() and int(count) > 0):
        raise DataError(f"--data {data}: expected synthetic or synthetic:N, N a positive integer")
    n = int(count) if count else SYNTHETIC_N
    generated_size = max(64, size)
    folder = make_folder(cache_dir) / f"synthetic-{generated_size}-n{n}-seed0"
    if not folder.is_dir():
        from data.synthetic import generate, in_a_starting_worker  # only when one must be made

        if in_a_starting_worker():  # a drawing process re-running an unguarded script: stop it
            raise SystemExit(1)     # before it touches the folder (generate() then draws alone)
        # Generate under another name and rename when done, so an interrupted run starts over.
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            generate(partial, n, size=generated_size, seed=0)
        except DataError:  # a full disk: what was drawn is removed, to free the space it held
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(folder)
    return folder
