"""A folder of images, optionally captioned, in the Hugging Face `imagefolder` convention.

    my_images/
        a.png
        more/b.jpg          subfolders are searched too (hidden ones are skipped)
        metadata.jsonl      one line per image: {"file_name": "a.png", "text": "a smiling woman"}
     or metadata.csv        a header file_name,text then one row per image

file_name is relative to the folder. Without metadata the dataset is unconditional (no texts);
with metadata, images it does not name are left out (and counted in a warning).

Split: an image is in val when crc32(file_name) % 100 < 5, else in train (95/5). Hashing the name
rather than using the position keeps every image in its split when others are added or removed.
"""

import csv
import io
import json
import zlib
from pathlib import Path, PurePosixPath

from common.errors import DataError, warn
from data.files import read_utf8
from data.images import IMAGE_EXTENSIONS, not_images_message

VAL_PERCENT = 5  # share of the images in the val split


def list_images(root: Path) -> list[str]:
    """The image files under root, recursively, as sorted relative posix paths ("more/b.jpg")."""
    names = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        hidden = any(part.startswith(".") for part in relative.parts)
        if path.suffix.lower() in IMAGE_EXTENSIONS and not hidden and path.is_file():
            names.append(relative.as_posix())
    return sorted(names)


def read_metadata(root: Path) -> tuple[Path, dict[str, str]] | None:
    """The metadata file of root and its captions (file_name -> text), or None without one."""
    jsonl_path, csv_path = root / "metadata.jsonl", root / "metadata.csv"
    if jsonl_path.is_file() and csv_path.is_file():
        raise DataError(f"{root}: has both metadata.jsonl and metadata.csv; expected one of them")
    if jsonl_path.is_file():
        captions = {}
        for number, line in enumerate(read_utf8(jsonl_path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{jsonl_path}:{number}: not valid JSON ({error.msg})") from None
            _add_caption(captions, record, jsonl_path, number)
        return jsonl_path, captions
    if csv_path.is_file():
        captions = {}
        # newline="": the csv module itself splits rows, so a quoted caption may hold a newline.
        reader = csv.DictReader(io.StringIO(read_utf8(csv_path), newline=""))
        if not {"file_name", "text"} <= set(reader.fieldnames or []):
            raise DataError(
                f"{csv_path}:1: expected a header with columns file_name,text, "
                f"got {','.join(reader.fieldnames or [])!r}"
            )
        for record in reader:
            _add_caption(captions, record, csv_path, reader.line_num)
        return csv_path, captions
    return None


def _add_caption(captions: dict[str, str], record: object, path: Path, number: int) -> None:
    """Check one metadata record and add its file_name -> text to captions."""
    if not isinstance(record, dict):
        raise DataError(f"{path}:{number}: expected an object with 'file_name' and 'text'")
    missing = [key for key in ("file_name", "text") if not isinstance(record.get(key), str)]
    if missing:
        raise DataError(f"{path}:{number}: no {' or '.join(missing)}; expected file_name and text")
    name = PurePosixPath(record["file_name"]).as_posix()  # "./a.png" -> "a.png"
    if name in captions:
        raise DataError(f"{path}:{number}: a second entry for {name!r}")
    captions[name] = record["text"]


def is_val(name: str, val_percent: int = VAL_PERCENT) -> bool:
    """Whether the image of this relative file name is in the val split (by a hash of the name):
    about val_percent of the images are."""
    return zlib.crc32(name.encode("utf-8")) % 100 < val_percent


def imagefolder_split(root: Path, split: str, val_percent: int = VAL_PERCENT
                      ) -> tuple[list[Path], list[str] | None]:
    """The image files of one split ("train", "val" or "all") of an image folder, sorted by
    relative name, and their captions (None without metadata); val holds about val_percent of
    them."""
    if split not in ("train", "val", "all"):
        raise DataError(f"split {split!r}: an image folder ({root}) has only train, val and all")
    names = list_images(root)
    if not names:
        extensions = " ".join(IMAGE_EXTENSIONS)
        raise DataError(f"{root}: no image files ({extensions}), not even in subfolders")

    metadata = read_metadata(root)
    if metadata is not None:
        metadata_path, captions = metadata
        present = set(names)
        missing = [name for name in captions if name not in present]
        if missing:  # missing, or a folder, a .gif, a hidden file: say which
            raise DataError(not_images_message(metadata_path.name, root, missing))
        if len(captions) < len(names):
            unnamed = len(names) - len(captions)
            warn(f"ignoring {unnamed} images in {root} not named in {metadata_path.name}")
        names = [name for name in names if name in captions]

    if split != "all":
        names = [name for name in names if is_val(name, val_percent) == (split == "val")]
    texts = [captions[name] for name in names] if metadata is not None else None
    return [root / name for name in names], texts
