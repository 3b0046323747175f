"""Decode a list of image files once into a memory-mapped uint8 cache.

Preprocessing, the same for every dataset, is data/images.py's load_square_image: upright as the
EXIF orientation says, a center crop to a square, then a bicubic resize to S x S.

A cache is two files in cache_dir, named after a hash of (key, S, the preprocessing's version,
every file's path, size and modification time, in the given order), so that changed files, another
S or a changed preprocessing give a new cache:

    {key}-{S}px-{hash}.uint8     the readable images: raw bytes of an (N_ok, S, S, 3) uint8 array
    {key}-{S}px-{hash}.ok.npy    (N,) bool: which of the N files could be read

Both are written under temporary names ({name}.tmp{pid}) and renamed into place, the mask last, so
an interrupted build never leaves a cache that looks complete. A build first removes the temporaries
of builds whose process is gone (stopped by kill -9 or a crash). Unreadable files are skipped and
reported once.
"""

import errno
import hashlib
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.errors import DataError, warn
from data.files import make_folder
from data.images import PREPROCESSING, load_square_image


def build_image_cache(
    files: list[Path], size: int, cache_dir: Path, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Decode `files` at S = size into cache_dir, or reuse the cache made before for the same input.

    Returns images, a read-only memmap (N_ok, S, S, 3) uint8 of the readable files in order, and
    ok, (N,) bool, which files those are: images[j] is files[np.flatnonzero(ok)[j]].
    """
    cache_dir = make_folder(cache_dir)
    stem = f"{re.sub(r'[^A-Za-z0-9._-]+', '_', key)}-{size}px-{_fingerprint(files, size, key)}"
    images_path = cache_dir / f"{stem}.uint8"
    ok_path = cache_dir / f"{stem}.ok.npy"

    ok = _complete_cache_mask(images_path, ok_path, len(files), size)
    if ok is None:
        ok = _build(files, size, images_path, ok_path, key)
    shape = (int(ok.sum()), size, size, 3)  # (N_ok, S, S, 3)
    return np.memmap(images_path, dtype=np.uint8, mode="r", shape=shape), ok


def _fingerprint(files: list[Path], size: int, key: str) -> str:
    """A short hash of key, S, the preprocessing and the files (path, size, mtime): any change
    gives a new cache."""
    digest = hashlib.sha1(f"{key}\n{size}\n{PREPROCESSING}\n".encode())
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
    _remove_stale_temporaries(images_path.parent)
    ok = np.zeros(len(files), dtype=bool)  # (N,)
    temporary = images_path.with_name(f"{images_path.name}.tmp{os.getpid()}")
    temporary_ok = ok_path.with_name(f"{ok_path.name}.tmp{os.getpid()}")
    pool = ThreadPoolExecutor()
    try:
        with open(temporary, "wb") as out:
            decoded = pool.map(partial(_read_or_none, size=size), files)  # in the order of files
            # (closed on an error too, so that the error is a line of its own)
            with tqdm(decoded, desc=f"caching {key} at {size}px", total=len(files)) as progress:
                for i, pixels in enumerate(progress):
                    if pixels is not None:
                        out.write(pixels.tobytes())  # (S, S, 3) uint8, row-major
                        ok[i] = True
        folder = os.path.commonpath([str(path.parent) for path in files])
        if not ok.any():
            raise DataError(
                f"none of the {len(files)} images in {folder} can be read, e.g. {files[0]}"
            )
        with open(temporary_ok, "wb") as out:
            np.save(out, ok)
        # Both files are complete: only now rename them into place, the mask last.
        os.replace(temporary, images_path)
        os.replace(temporary_ok, ok_path)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        temporary.unlink(missing_ok=True)  # first, so that `free` counts the space it held
        temporary_ok.unlink(missing_ok=True)
        needed = len(files) * size * size * 3  # N * S * S * 3 bytes at most (N_ok <= N)
        free = shutil.disk_usage(images_path.parent).free
        raise DataError(
            f"no space left on device writing {images_path}: the cache needs {needed} bytes, "
            f"{free} bytes are free"
        ) from None
    finally:
        pool.shutdown(cancel_futures=True)  # on an interrupt, do not decode the rest first
        temporary.unlink(missing_ok=True)  # gone already when the build succeeded
        temporary_ok.unlink(missing_ok=True)

    skipped = np.flatnonzero(~ok)
    if len(skipped):
        warn(
            f"skipped {len(skipped)} unreadable images of {len(files)} in {folder}, "
            f"e.g. {files[skipped[0]]}"
        )
    return ok


TEMPORARY_NAME = re.compile(r"\.(uint8|ok\.npy)\.tmp(\d+)$")  # what _build writes, and its pid


def _remove_stale_temporaries(cache_dir: Path) -> None:
    """Delete the temporaries in cache_dir of builds whose process has ended without cleaning up
    (kill -9, a crash, a power cut), with one warning. A running build's files are left alone."""
    if os.name != "posix":  # on Windows, os.kill(pid, 0) would end the process, not look it up
        return
    removed, removed_bytes = [], 0
    for path in cache_dir.iterdir():
        match = TEMPORARY_NAME.search(path.name)
        if match and not is_running(int(match[2])):
            try:
                removed_bytes += path.stat().st_size
                path.unlink()
            except FileNotFoundError:  # another build removed it first
                continue
            removed.append(path.name)
    if removed:
        warn(
            f"removed {len(removed)} temporary files ({removed_bytes} bytes) of interrupted cache "
            f"builds from {cache_dir}, e.g. {removed[0]}"
        )


def is_running(pid: int) -> bool:
    """Whether process `pid` exists (POSIX only). A pid reused by another process reads as
    running, so at worst a stale temporary, or a run's lock (training/folders.py), stays until that
    process ends."""
    try:
        os.kill(pid, 0)  # signal 0 sends nothing: it only checks that the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; a number too big for a pid
        return True
    return True
