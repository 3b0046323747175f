"""Output paths: checked before any work, so that a run never fails at its end for want of a
place to write. One ConfigError line naming the flag, the path and what was expected."""

import os
from pathlib import Path

from common.errors import ConfigError


def check_output(flag: str, path: str | Path, folder: bool = True,
                 extensions: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output that could not be written: `path` must be (or become)
    a folder when `folder`, else a file with one of `extensions` (an image PIL writes). One
    ConfigError line naming the flag, the path and what is expected."""
    path = Path(path)
    expected = "a folder" if folder else f"an image file ({' '.join(extensions)})"
    there = next(p for p in (path, *path.parents) if p.exists())  # the part that exists already
    if there == path and path.is_dir() != folder:
        raise ConfigError(f"{flag} {path}: is a {'file' if folder else 'folder'}; "
                          f"expected {expected}")
    if there != path and not there.is_dir():
        raise ConfigError(f"{flag} {path}: {there} is a file; expected a folder there")
    if not folder and path.suffix.lower() not in extensions:
        found = f"extension {path.suffix}" if path.suffix else "no extension"
        raise ConfigError(f"{flag} {path}: {found}; expected {expected}")
    if not os.access(there, os.W_OK):
        raise ConfigError(f"{flag} {path}: {there} is not writable")
    return path


def output_folder(path: str | Path, name: str = "--out") -> Path:
    """Create the folder `path` (and its parents), once check_output has passed it; a
    ConfigError if the file system still refuses."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{name} {path}: cannot create the folder ({error.strerror})") from None
    return path
