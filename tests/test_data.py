"""Datasets: CelebA and image folders, splits, the uint8 cache, batches, and each DataError."""

import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import DataError
from data import cache as cache_module
from data import load_dataset
from data.celeba import CELEBA_ATTRIBUTES, read_attributes
from data.images import load_square_image


def make_celeba(root, n=6, partition=(0, 0, 0, 0, 1, 2), seed=0):
    """A tiny CelebA folder: n 178x218 JPEGs, list_attr_celeba.txt in the official format (count
    line, names line with a trailing space, "%2d"-padded values) and optionally a partition file.
    Returns the (n, 40) {-1, 1} attribute table written."""
    rng = np.random.default_rng(seed)
    (root / "img_align_celeba").mkdir(parents=True)
    table = rng.choice([-1, 1], size=(n, len(CELEBA_ATTRIBUTES)))
    lines = [f"{n}", " ".join(CELEBA_ATTRIBUTES) + " "]
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        pixels = rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img_align_celeba" / name, quality=90)
        lines.append(f"{name} " + " ".join(f"{v:2d}" for v in table[i]))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if partition is not None:
        rows = [f"{i + 1:06d}.jpg {p}" for i, p in enumerate(partition)]
        (root / "list_eval_partition.txt").write_text("\n".join(rows) + "\n")
    return table


def solid_png(path, value, size=(12, 10)):
    """A PNG of one grey level (lossless, so the cached pixels are exactly `value`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def make_imagefolder(root, metadata):
    """Three solid PNGs (grey 10, 20, 30; one in a subfolder) and the metadata file asked for."""
    captions = {"a.png": "a first", "b.png": "a second", "sub/c.png": "a third"}
    for value, name in zip((10, 20, 30), captions):
        solid_png(root / name, value)
    if metadata == "jsonl":
        lines = [json.dumps({"file_name": name, "text": text}) for name, text in captions.items()]
        (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    elif metadata == "csv":
        rows = ["file_name,text"] + [f'{name},"{text}, quoted"' for name, text in captions.items()]
        (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return captions


def raises_data_error(match, *args, **kwargs):
    """load_dataset(*args, **kwargs) raises a one-line DataError containing `match`."""
    with pytest.raises(DataError) as error:
        load_dataset(*args, **kwargs)
    message = str(error.value)
    assert match in message and "\n" not in message, message
    return message


# CelebA


def test_celeba_parses_all_attributes_and_shapes(tmp_path):
    table = make_celeba(tmp_path / "celeba")
    dataset = load_dataset(str(tmp_path / "celeba"), 32, split="all", cache_dir=tmp_path / "cache")
    assert len(dataset) == 6 and dataset.images.shape == (6, 32, 32, 3)
    assert dataset.images.dtype == np.uint8
    assert dataset.attribute_names == CELEBA_ATTRIBUTES and dataset.texts is None
    assert dataset.attributes.dtype == np.float32
    np.testing.assert_array_equal(dataset.attributes, (table + 1) / 2)


def test_read_attributes_accepts_any_whitespace(tmp_path):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text("2\nSmiling  Male \n000001.jpg  1 -1\n000002.jpg\t-1\t 1\n\n")
    names, files, values = read_attributes(path)
    assert names == ["Smiling", "Male"] and files == ["000001.jpg", "000002.jpg"]
    assert values.dtype == np.int8
    np.testing.assert_array_equal(values, [[1, 0], [0, 1]])


def test_celeba_attribute_subset_in_the_order_asked(tmp_path):
    table = make_celeba(tmp_path / "celeba")
    chosen = ["Smiling", "Male", "Eyeglasses"]
    dataset = load_dataset(
        str(tmp_path / "celeba"), 16, split="all", attributes=chosen, cache_dir=tmp_path / "cache"
    )
    assert dataset.attribute_names == chosen
    columns = [CELEBA_ATTRIBUTES.index(name) for name in chosen]
    np.testing.assert_array_equal(dataset.attributes, (table[:, columns] + 1) / 2)


def test_celeba_splits_follow_the_partition_file(tmp_path):
    table = (make_celeba(tmp_path / "celeba") + 1) / 2  # partition 0 0 0 0 1 2
    for split, rows in [("train", [0, 1, 2, 3]), ("val", [4]), ("test", [5])]:
        dataset = load_dataset(str(tmp_path / "celeba"), 16, split, cache_dir=tmp_path / "cache")
        np.testing.assert_array_equal(dataset.attributes, table[rows])


def test_celeba_without_partition_file_splits_80_10_10_by_row(tmp_path):
    table = (make_celeba(tmp_path / "celeba", n=10, partition=None) + 1) / 2
    for split, rows in [("train", range(8)), ("val", [8]), ("test", [9])]:
        dataset = load_dataset(str(tmp_path / "celeba"), 8, split, cache_dir=tmp_path / "cache")
        np.testing.assert_array_equal(dataset.attributes, table[list(rows)])


def test_celeba_images_without_a_row_are_ignored_with_a_warning(tmp_path, capsys):
    make_celeba(tmp_path / "celeba")
    solid_png(tmp_path / "celeba" / "img_align_celeba" / "999999.png", 50)
    dataset = load_dataset(str(tmp_path / "celeba"), 8, split="all", cache_dir=tmp_path / "cache")
    assert len(dataset) == 6
    assert "ignoring 1 images" in capsys.readouterr().err


def test_center_crop_then_resize(tmp_path):
    # 10 wide, 14 high: 2 red rows at the top and bottom, a gradient square in the middle.
    pixels = np.zeros((14, 10, 3), dtype=np.uint8)
    pixels[:2] = pixels[-2:] = (255, 0, 0)
    square = np.arange(300, dtype=np.uint8).reshape(10, 10, 3)
    pixels[2:12] = square
    Image.fromarray(pixels).save(tmp_path / "tall.png")
    np.testing.assert_array_equal(load_square_image(tmp_path / "tall.png", 10), square)
    assert load_square_image(tmp_path / "tall.png", 4).shape == (4, 4, 3)


# Image folders


@pytest.mark.parametrize("metadata", ["jsonl", "csv"])
def test_imagefolder_with_metadata_pairs_each_image_with_its_text(tmp_path, metadata):
    captions = make_imagefolder(tmp_path / "images", metadata)
    dataset = load_dataset(str(tmp_path / "images"), 8, split="all", cache_dir=tmp_path / "cache")
    assert len(dataset) == 3 and dataset.attributes is None
    suffix = ", quoted" if metadata == "csv" else ""
    values = {10: "a.png", 20: "b.png", 30: "sub/c.png"}  # each image is one grey level
    for i in range(3):
        assert dataset.texts[i] == captions[values[int(dataset.images[i, 0, 0, 0])]] + suffix


def test_imagefolder_without_metadata_is_unconditional(tmp_path):
    make_imagefolder(tmp_path / "images", metadata=None)
    dataset = load_dataset(str(tmp_path / "images"), 8, split="all", cache_dir=tmp_path / "cache")
    assert len(dataset) == 3 and dataset.texts is None and dataset.attributes is None
    batch = dataset.batch(torch.arange(3), "cpu")
    assert set(batch) == {"image", "index"}


def test_imagefolder_split_is_95_5_by_name_and_deterministic(tmp_path):
    root = tmp_path / "images"
    for i in range(60):
        solid_png(root / f"{i:03d}.png", i, size=(8, 8))
    splits = {}  # split -> the grey levels of its images, i.e. the image numbers
    for split in ("train", "val", "all"):
        dataset = load_dataset(str(root), 8, split, cache_dir=tmp_path / "cache")
        splits[split] = {int(value) for value in dataset.images[:, 0, 0, 0]}
    assert splits["train"] | splits["val"] == splits["all"] == set(range(60))
    assert not splits["train"] & splits["val"] and 0 < len(splits["val"]) < 10


# Errors


def test_errors_for_missing_empty_and_unrecognised_folders(tmp_path):
    raises_data_error(f"--data {tmp_path / 'nope'}: no such folder", str(tmp_path / "nope"), 32)
    (tmp_path / "empty").mkdir()
    message = raises_data_error("empty", str(tmp_path / "empty"), 32)
    assert "list_attr_celeba.txt" in message and "metadata.jsonl" in message
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    message = raises_data_error(str(tmp_path / "notes"), str(tmp_path / "notes"), 32)
    assert "list_attr_celeba.txt" in message and ".png" in message


def test_errors_for_bad_size_split_and_attribute(tmp_path):
    make_celeba(tmp_path / "celeba")
    root = str(tmp_path / "celeba")
    raises_data_error("image size 4", root, 4, cache_dir=tmp_path / "cache")
    raises_data_error("split 'validation'", root, 32, split="validation")
    message = raises_data_error("'Happy'", root, 32, attributes=["Smiling", "Happy"])
    assert "Young" in message  # lists the available names


def test_errors_in_the_attribute_file(tmp_path):
    make_celeba(tmp_path / "celeba")
    path = tmp_path / "celeba" / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    root = str(tmp_path / "celeba")

    path.write_text("\n".join(["7"] + lines[1:]))  # count line does not match the 6 rows
    raises_data_error(f"{path}:1: says 7 images but 6 rows follow", root, 32)
    path.write_text("\n".join(["six"] + lines[1:]))
    raises_data_error(f"{path}:1: expected the number of images, got 'six'", root, 32)
    path.write_text("\n".join(lines[:4] + [lines[4] + "  1"] + lines[5:]))
    raises_data_error(f"{path}:5: expected a file name and 40 values, got 41", root, 32)
    path.write_text("\n".join(lines[:3] + [lines[3].replace("-1", " 0", 1)] + lines[4:]))
    raises_data_error(f"{path}:4: value '0' for 000002.jpg", root, 32)

    path.write_text("\n".join(lines))
    for name in ("000003.jpg", "000005.jpg"):
        (tmp_path / "celeba" / "img_align_celeba" / name).unlink()
    folder = tmp_path / "celeba" / "img_align_celeba"
    message = f"list_attr_celeba.txt names 2 images missing from {folder}, e.g. 000003.jpg"
    raises_data_error(message, root, 32)


def test_errors_in_image_folder_metadata(tmp_path):
    root = tmp_path / "images"
    make_imagefolder(root, "jsonl")
    jsonl, csv = root / "metadata.jsonl", root / "metadata.csv"
    lines = jsonl.read_text().splitlines()

    jsonl.write_text("\n".join(lines + ['{"file_name": "d.png", "text": "x"}']))
    raises_data_error(f"metadata.jsonl names 1 images missing from {root}, e.g. d", str(root), 8)
    jsonl.write_text("\n".join(lines[:1] + ['{"file_name": "b.png", '] + lines[2:]))
    raises_data_error(f"{jsonl}:2: not valid JSON", str(root), 8)
    jsonl.write_text("\n".join(lines[:2] + ['{"file_name": "sub/c.png"}']))
    raises_data_error(f"{jsonl}:3: no text", str(root), 8)

    jsonl.unlink()
    csv.write_text("name,caption\na.png,x\n")
    raises_data_error(f"{csv}:1: expected a header with columns file_name,text", str(root), 8)


def test_image_folders_have_no_attributes_and_no_test_split(tmp_path):
    make_imagefolder(tmp_path / "images", "jsonl")
    root = str(tmp_path / "images")
    raises_data_error("attributes need a CelebA folder", root, 8, attributes=["Male"])
    raises_data_error("split 'test': an image folder", root, 8, split="test")


# The cache


def test_corrupt_image_is_skipped_and_reported_once(tmp_path, capsys):
    table = (make_celeba(tmp_path / "celeba") + 1) / 2
    (tmp_path / "celeba" / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg at all")
    dataset = load_dataset(str(tmp_path / "celeba"), 16, split="all", cache_dir=tmp_path / "cache")
    assert len(dataset) == 5 and dataset.images.shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(dataset.attributes, table[[0, 2, 3, 4, 5]])
    stderr = capsys.readouterr().err.splitlines()
    warnings = [line for line in stderr if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "skipped 1 unreadable images of 6" in warnings[0] and "000002.jpg" in warnings[0]


def test_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    make_celeba(tmp_path / "celeba")
    first = load_dataset(str(tmp_path / "celeba"), 16, split="all", cache_dir=tmp_path / "cache")
    cache_files = sorted((tmp_path / "cache").iterdir())
    mtimes = [os.stat(path).st_mtime_ns for path in cache_files]

    def no_decoding(path, size):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(cache_module, "load_square_image", no_decoding)
    second = load_dataset(str(tmp_path / "celeba"), 16, split="all", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.images, second.images)
    assert sorted((tmp_path / "cache").iterdir()) == cache_files
    assert [os.stat(path).st_mtime_ns for path in cache_files] == mtimes

    monkeypatch.undo()
    solid_png(tmp_path / "celeba" / "img_align_celeba" / "000001.jpg", 0)  # a changed file
    load_dataset(str(tmp_path / "celeba"), 16, split="all", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2 * len(cache_files)


# Batches


def test_batch_shapes_range_and_exact_pixel_values(tmp_path):
    make_celeba(tmp_path / "celeba")
    root = str(tmp_path / "celeba")
    dataset = load_dataset(root, 16, "all", ["Male", "Young"], cache_dir=tmp_path / "cache")
    indices = torch.tensor([4, 0, 4])
    batch = dataset.batch(indices, "cpu")
    assert batch["image"].shape == (3, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    pixels = torch.from_numpy(np.array(dataset.images[[4, 0, 4]]))  # (3, 16, 16, 3) uint8
    assert torch.equal(batch["image"], pixels.permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert torch.equal(batch["attributes"], torch.from_numpy(dataset.attributes[[4, 0, 4]]))
    assert torch.equal(batch["index"], indices) and "text" not in batch
    assert torch.equal(dataset.batch(np.array([4, 0, 4]), "cpu")["image"], batch["image"])


def test_batch_of_texts(tmp_path):
    make_imagefolder(tmp_path / "images", "jsonl")
    dataset = load_dataset(str(tmp_path / "images"), 8, split="all", cache_dir=tmp_path / "cache")
    batch = dataset.batch(torch.tensor([2, 0]), "cpu")
    assert batch["text"] == [dataset.texts[2], dataset.texts[0]]
    corner = torch.tensor(dataset.images[[2, 0], 0, 0]).float() / 127.5 - 1  # (2, 3)
    assert torch.equal(batch["image"][:, :, 0, 0], corner)


# The synthetic dataset


@pytest.mark.skipif(not importlib.util.find_spec("data.synthetic"), reason="no data/synthetic.py")
def test_synthetic_dataset_is_generated_once_then_reused(tmp_path):
    (tmp_path / "synthetic-64-n40-seed0.partial").mkdir()  # left by an interrupted generation
    dataset = load_dataset("synthetic:40", 32, cache_dir=tmp_path)
    assert dataset.images.shape[1:] == (32, 32, 3) and 0 < len(dataset) <= 40
    assert dataset.attributes.shape == (len(dataset), len(dataset.attribute_names))
    assert (tmp_path / "synthetic-64-n40-seed0" / "list_attr_celeba.txt").is_file()
    again = load_dataset("synthetic:40", 32, split="val", cache_dir=tmp_path)
    assert len(again) > 0
    raises_data_error("synthetic:N", "synthetic:zero", 32, cache_dir=tmp_path)


def test_val_percent_sets_an_image_folders_held_out_share(tmp_path):
    """--val-percent (issue 28): the held-out share of an image folder, by the same name hash, so
    a larger share holds every image of a smaller one; its cache is its own; CelebA keeps its file
    and a share outside 1..50 is refused."""
    from data.imagefolder import is_val
    root = tmp_path / "images"
    for i in range(200):
        solid_png(root / f"{i:03d}.png", i, size=(8, 8))
    held = {}
    for percent in (5, 30):
        val = load_dataset(str(root), 8, "val", cache_dir=tmp_path / "cache", val_percent=percent)
        train = load_dataset(str(root), 8, "train", cache_dir=tmp_path / "cache",
                             val_percent=percent)
        held[percent] = {int(v) for v in val.images[:, 0, 0, 0]}
        assert len(held[percent]) + len(train) == 200
        assert held[percent] == {i for i in range(200) if is_val(f"{i:03d}.png", percent)}
    assert held[5] < held[30] and 40 <= len(held[30]) <= 80  # about 30% of 200
    assert load_dataset(str(root), 8, "val", cache_dir=tmp_path / "cache",
                        val_percent=30).name.endswith("-val30")
    raises = pytest.raises(DataError, match="--val-percent 0: expected 1 to 50")
    with raises:
        load_dataset(str(root), 8, "val", cache_dir=tmp_path / "cache", val_percent=0)
    celeba = tmp_path / "celeba"
    (celeba / "img_align_celeba").mkdir(parents=True)
    (celeba / "list_attr_celeba.txt").write_text("0\nSmiling\n")
    with pytest.raises(DataError, match="--val-percent 10: .* applies to image folders"):
        load_dataset(str(celeba), 8, "val", cache_dir=tmp_path / "cache", val_percent=10)
