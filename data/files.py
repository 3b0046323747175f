"""Files the data package reads and writes: folders it makes, and text files it reads."""

from pathlib import Path

from common.errors import ConfigError, DataError


def make_folder(path: str | Path) -> Path:
    """Create folder `path` and the folders above it, unless they exist; a DataError when a file
    stands where a folder should be. Every folder the data package writes is made here."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # Name what is in the way: path itself, or the first folder above it that is not one.
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        where = f"{path} is a file" if blocker == path else f"{path}: {blocker} is a file"
        raise DataError(f"{where}; expected a folder") from None
    return path


def read_utf8(path: Path) -> str:
    """The text of a UTF-8 file, or a DataError naming the line and byte of the first bad byte."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{path}:{line}: byte {error.start} of the file (0x{data[error.start]:02x}) is not "
            f"UTF-8; expected a UTF-8 text file"
        ) from None


def read_prompts_file(path: Path, flag: str) -> list[str]:
    """The prompts of a file given as `flag` (sample.py --prompts-file, train_ldm.py
    --validation-prompts): one per line, blank lines skipped; at least one."""
    if not path.is_file():
        raise ConfigError(f"{flag} {path}: no such file")
    try:
        text = read_utf8(path)
    except DataError as error:  # "PATH:LINE: byte N of the file (0x..) is not UTF-8; ..."
        raise ConfigError(f"{flag} {error}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"{flag} {path}: no prompt in it (expected one per line; for "
                          "unconditional samples give the empty prompt '')")
    return prompts
