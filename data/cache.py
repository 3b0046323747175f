"""Decode a list of image files once into a memory-mapped uint8 cache.

Preprocessing, the same for every dataset, is data/images.py's load_square_image: a center crop
to a square, then a bicubic resize to S x S.

A cache is two files in cache_dir, named after a hash of (key, S, every file's path, size and
modification time, in the given order), so that changed files or another S give a new cache:

    {key}-{S}px-{hash}.uint8     the readable images: raw bytes of an (N_ok, S, S, 3) uint8 array
    {key}-{S}px-{hash}.ok.npy    (N,) bool: which of the N files could be read

Both are written under temporary names and renamed into place, the mask last, so an interrupted
build never leaves a cache that looks complete. Unreadable files are skipped and reported once.
"""

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data import DataError, warn
from data.images import load_square_image


def build_image_cache(
    files: list[Path], size: int, cache_dir: Path, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Decode `files` at S = size into cache_dir, or reuse the cache made before for the same input.

    Returns images, a read-only memmap (N_ok, S, S, 3) uint8 of the readable files in order, and
    ok, (N,) bool, which files those are: images[j] is files[np.flatnonzero(ok)[j]].
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{re.sub(r'[^A-Za-z0-9._-]+', '_', key)}-{size}px-{_fingerprint(files, size, key)}"
    images_path = cache_dir / f"{stem}.uint8"
    ok_path = cache_dir / f"{stem}.ok.npy"

    ok = _complete_cache_mask(images_path, ok_path, len(files), size)
    if ok is None:
        ok = _build(files, size, images_path, ok_path, key)
    shape = (int(ok.sum()), size, size, 3)  # (N_ok, S, S, 3)
    return np.memmap(images_path, dtype=np.uint8, mode="r", shape=shape), ok


def _fingerprint(files: list[Path], size: int, key: str) -> str:
    """A short hash of key, S and the files (path, size, mtime): any change gives a new cache."""
    digest = hashlib.sha1(f"{key}\n{size}\n".encode())
    for path in files:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _complete_cache_mask(images_path: Path, ok_path: Path, n: int, size: int) -> np.ndarray | None:
    """The ok mask (N,) of a complete cache at these paths, or None when there is none."""
    if not (images_path.is_file() and ok_path.is_file()):
        return None
    ok = np.load(ok_path)
    if ok.shape != (n,) or images_path.stat().st_size != int(ok.sum()) * size * size * 3:
        return None
    return ok


def _read_or_none(path: Path, size: int) -> np.ndarray | None:
    """load_square_image, or None for a file PIL cannot read."""
    try:
        return load_square_image(path, size)
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, ... on corrupt files
        return None


def _build(files: list[Path], size: int, images_path: Path, ok_path: Path, key: str) -> np.ndarray:
    """Decode the files in threads (PIL releases the GIL); write the readable ones, and the mask."""
    ok = np.zeros(len(files), dtype=bool)  # (N,)
    temporary = images_path.with_name(f"{images_path.name}.tmp{os.getpid()}")
    pool = ThreadPoolExecutor()
    try:
        with open(temporary, "wb") as out:
            decoded = pool.map(partial(_read_or_none, size=size), files)  # in the order of files
            progress = tqdm(decoded, desc=f"caching {key} at {size}px", total=len(files))
            for i, pixels in enumerate(progress):
                if pixels is not None:
                    out.write(pixels.tobytes())  # (S, S, 3) uint8, row-major
                    ok[i] = True
        folder = os.path.commonpath([str(path.parent) for path in files])
        if not ok.any():
            raise DataError(
                f"none of the {len(files)} images in {folder} can be read, e.g. {files[0]}"
            )
        os.replace(temporary, images_path)
    finally:
        pool.shutdown(cancel_futures=True)  # on an interrupt, do not decode the rest first
        temporary.unlink(missing_ok=True)

    temporary_ok = ok_path.with_name(f"{ok_path.name}.tmp{os.getpid()}")
    with open(temporary_ok, "wb") as out:
        np.save(out, ok)
    os.replace(temporary_ok, ok_path)

    skipped = np.flatnonzero(~ok)
    if len(skipped):
        warn(
            f"skipped {len(skipped)} unreadable images of {len(files)} in {folder}, "
            f"e.g. {files[skipped[0]]}"
        )
    return ok
