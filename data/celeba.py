"""CelebA: its attribute table, its train/val/test partition, and the files of one split.

[P13] The video trains its text-to-image model on CelebA, whose 40 binary facial attributes
data/captions.py turns into captions. The aligned-and-cropped release is a folder:

    img_align_celeba/000001.jpg ... 202599.jpg   178x218 aligned faces
    list_attr_celeba.txt                         the attribute table, format below
    list_eval_partition.txt                      optional: "000001.jpg 0", 0 train 1 val 2 test

list_attr_celeba.txt is a count line, a line of names, then one row per image with 1 or -1 per
attribute, separated by any whitespace:

    202599
    5_o_Clock_Shadow Arched_Eyebrows Attractive ... Young
    000001.jpg -1  1  1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 ...

The same layout with other attribute columns (e.g. data/synthetic.py's 15) reads the same way.
"""

import os
from pathlib import Path

import numpy as np

from common.errors import DataError, warn
from data.files import read_utf8
from data.images import IMAGE_EXTENSIONS, not_images_message

CELEBA_ATTRIBUTES = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
]  # the official 40, in the official column order
PARTITIONS = {"train": 0, "val": 1, "test": 2}  # the numbers of list_eval_partition.txt


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Parse a list_attr_celeba.txt: (A attribute names, N file names, values (N, A) int8 0/1)."""
    lines = read_utf8(path).splitlines()
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count line and a line of attribute names")
    try:
        count = int(lines[0])
    except ValueError:
        raise DataError(f"{path}:1: expected the number of images, got {lines[0]!r}") from None
    names = lines[1].split()
    if not names:
        raise DataError(f"{path}:2: expected the attribute names, got an empty line")
    repeated = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None:
        raise DataError(f"{path}:2: the attribute {repeated!r} is named twice; expected each "
                        "attribute once")

    files, rows, line_of = [], [], {}  # line_of: file name -> its line number
    for number, line in enumerate(lines[2:], start=3):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != len(names) + 1:
            raise DataError(
                f"{path}:{number}: expected a file name and {len(names)} values, "
                f"got {len(tokens) - 1} values"
            )
        if not set(tokens[1:]) <= {"1", "-1"}:
            bad = next(token for token in tokens[1:] if token not in ("1", "-1"))
            raise DataError(f"{path}:{number}: value {bad!r} for {tokens[0]}; expected 1 or -1")
        if tokens[0] in line_of:
            raise DataError(f"{path}:{number}: a second row for {tokens[0]} (the first is on line "
                            f"{line_of[tokens[0]]}); expected one row per image")
        line_of[tokens[0]] = number
        files.append(tokens[0])
        rows.append([token == "1" for token in tokens[1:]])  # -1 -> 0, 1 -> 1
    if count != len(files):
        raise DataError(f"{path}:1: says {count} images but {len(files)} rows follow")
    values = np.array(rows, dtype=np.int8).reshape(len(files), len(names))  # (N, A)
    return names, files, values


def read_partition(path: Path) -> dict[str, int]:
    """Parse a list_eval_partition.txt: file name -> 0 (train), 1 (val) or 2 (test)."""
    partition = {}
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2 or tokens[1] not in ("0", "1", "2"):
            raise DataError(f"{path}:{number}: expected 'FILE 0|1|2', got {line.strip()!r}")
        if tokens[0] in partition:
            raise DataError(f"{path}:{number}: a second entry for {tokens[0]}; expected one per "
                            "image")
        partition[tokens[0]] = int(tokens[1])
    return partition


def celeba_split(
    root: Path, split: str, attributes: list[str] | None
) -> tuple[list[Path], np.ndarray, list[str]]:
    """The image files of one split of a CelebA folder, with the chosen attribute columns.

    Returns files (N paths, in the order of the attribute file), values (N, A) float32 in {0, 1},
    and the A names: `attributes` in the order given, or every column of the file when None.
    split is "train", "val", "test" or "all". Without list_eval_partition.txt the split is by row:
    the first 80% train, the next 10% val, the last 10% test (the official split is contiguous too).
    """
    attribute_path = root / "list_attr_celeba.txt"
    image_folder = root / "img_align_celeba"
    names, files, values = read_attributes(attribute_path)

    # Attribute columns
    chosen = names if attributes is None else list(attributes)
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise DataError(f"unknown attribute {unknown[0]!r}; {attribute_path} has {' '.join(names)}")
    columns = [names.index(name) for name in chosen]

    # Image files: every row needs its image; images without a row are left out
    present = {entry.name for entry in os.scandir(image_folder) if entry.is_file()}
    missing = [file for file in files if file not in present]
    if missing:  # missing, or a folder named like an image: say which
        raise DataError(not_images_message(attribute_path.name, image_folder, missing))
    images = {name for name in present if Path(name).suffix.lower() in IMAGE_EXTENSIONS}
    unlisted = len(images - set(files))
    if unlisted:
        warn(f"ignoring {unlisted} images in {image_folder} not listed in {attribute_path.name}")

    # Split
    rows = np.arange(len(files)) if split == "all" else _split_rows(root, files, PARTITIONS[split])
    chosen_values = values[np.ix_(rows, columns)].astype(np.float32)  # (N_split, A)
    return [image_folder / files[row] for row in rows], chosen_values, chosen


def _split_rows(root: Path, files: list[str], partition_number: int) -> np.ndarray:
    """Row numbers of the files in partition 0 (train), 1 (val) or 2 (test)."""
    partition_path = root / "list_eval_partition.txt"
    if partition_path.is_file():
        partition = read_partition(partition_path)
        unassigned = [file for file in files if file not in partition]
        if unassigned:
            raise DataError(
                f"{partition_path} has no entry for {len(unassigned)} images of "
                f"list_attr_celeba.txt, e.g. {unassigned[0]}"
            )
        numbers = np.array([partition[file] for file in files])  # (N,)
    else:
        decile = np.arange(len(files)) * 10 // len(files)  # (N,) 0..9 by position
        numbers = np.where(decile < 8, 0, np.where(decile < 9, 1, 2))  # 80/10/10
    return np.flatnonzero(numbers == partition_number)
