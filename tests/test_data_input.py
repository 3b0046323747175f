"""Data input defects (issue 27 #4): a phone photo's EXIF orientation, a full disk while the
synthetic set is drawn, duplicate rows and attribute names in a CelebA table, and a listed file
that is a folder or a .gif. Each gives the right pixels, or one line naming the file and what was
expected, with nothing half-written left behind."""

import errno
import json
import os

import numpy as np
import pytest
from PIL import Image

from common.errors import DataError
from data import load_dataset
from tests.conftest import TINY
from tests.test_data import make_celeba, make_imagefolder
from tests.test_run_faults import one_line_error, run_main


def raises_one_line(*args, **kwargs) -> str:
    """load_dataset(*args, **kwargs)'s DataError, which is one line."""
    with pytest.raises(DataError) as error:
        load_dataset(*args, **kwargs)
    assert "\n" not in str(error.value), error.value
    return str(error.value)


def test_a_phone_photo_is_cached_upright(tmp_path):
    """Orientation 6: the stored pixels are the upright picture turned 90 degrees counter-clockwise
    (a portrait photo held sideways), so the upright one is them turned clockwise."""
    stored = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    (tmp_path / "photos").mkdir()
    Image.fromarray(stored).save(tmp_path / "photos" / "phone.png", exif=exif)
    dataset = load_dataset(str(tmp_path / "photos"), 16, split="all", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(dataset.images[0], np.rot90(stored, k=-1))  # clockwise


def test_a_full_disk_while_drawing_the_synthetic_set_is_one_line(monkeypatch, capsys, tmp_path):
    """The fourth face fills the disk: one line naming it, and nothing of the set is left that a
    later run could take for complete (nor the space it held); the cache's other files stay."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "other-run.uint8").write_bytes(b"kept")
    saved = []

    def full_disk(image, path, *args, **kwargs):
        if len(saved) == 3:
            with open(path, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n half an image")
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        return real_save(image, path, *args, **kwargs)

    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", full_disk)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # drawn in this process, where save is patched
    code, err = run_main("train_unconditional", [*TINY, "--data", "synthetic:10", "--cache-dir",
                                                 str(cache), "--steps", "1", "--out",
                                                 str(tmp_path / "run")], capsys)
    one_line_error(code, err, "no space left on device writing "
                   f"{cache / 'synthetic-64-n10-seed0.partial' / 'img_align_celeba' / '000004.png'}",
                   "10 faces of 64x64 take up to 0.12 MB", "MB are free")
    assert sorted(p.name for p in cache.iterdir()) == ["other-run.uint8"]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_celeba_table_with_a_row_twice_is_refused(capsys, tmp_path):
    """Through a stage's command line: the duplicate is named, with both lines."""
    make_celeba(tmp_path / "celeba")
    path = tmp_path / "celeba" / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["7", *lines[1:], lines[3]]) + "\n")  # 000002.jpg again, on line 9
    code, err = run_main("train_unconditional", [*TINY, "--data", str(tmp_path / "celeba"),
                                                 "--cache-dir", str(tmp_path / "cache"), "--steps",
                                                 "1", "--out", str(tmp_path / "run")], capsys)
    one_line_error(code, err, f"{path}:9: a second row for 000002.jpg (the first is on line 4); "
                              "expected one row per image")


def test_a_celeba_table_or_partition_naming_something_twice_is_refused(tmp_path):
    make_celeba(tmp_path / "celeba")
    root = str(tmp_path / "celeba")
    path = tmp_path / "celeba" / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1].replace("Young", "Smiling"), *lines[2:]]))
    assert raises_one_line(root, 16, cache_dir=tmp_path / "cache") == (
        f"{path}:2: the attribute 'Smiling' is named twice; expected each attribute once")

    path.write_text("\n".join(lines) + "\n")
    partition = tmp_path / "celeba" / "list_eval_partition.txt"
    partition.write_text(partition.read_text() + "000001.jpg 2\n")
    assert raises_one_line(root, 16, cache_dir=tmp_path / "cache") == (
        f"{partition}:7: a second entry for 000001.jpg; expected one per image")


@pytest.mark.parametrize("listed, make, expected", [
    ("anim.gif", lambda p: Image.new("RGB", (4, 4)).save(p),
     "metadata.jsonl names anim.gif, a .gif file in {root}: not an image format read here; "
     "expected .png .jpg .jpeg .webp .bmp"),
    ("x.png", lambda p: p.mkdir(), "metadata.jsonl names x.png, which is a folder in {root}, "
                                   "not an image file"),
    (".thumbs/a.png", lambda p: p.parent.mkdir() or Image.new("RGB", (4, 4)).save(p),
     "metadata.jsonl names .thumbs/a.png in {root}, which is hidden (a name starting with '.'): "
     "hidden files and folders are skipped"),
])
def test_a_listed_file_that_is_not_an_image_says_what_it_is(listed, make, expected, tmp_path):
    root = tmp_path / "images"
    make_imagefolder(root, "jsonl")
    make(root / listed)
    with open(root / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file_name": listed, "text": "a face"}) + "\n")
    assert expected.format(root=root) in raises_one_line(str(root), 16, cache_dir=tmp_path / "cache")


def test_a_celeba_image_that_is_a_folder_says_so(tmp_path):
    make_celeba(tmp_path / "celeba")
    folder = tmp_path / "celeba" / "img_align_celeba"
    (folder / "000003.jpg").unlink()
    (folder / "000003.jpg").mkdir()
    assert raises_one_line(str(tmp_path / "celeba"), 16, cache_dir=tmp_path / "cache") == (
        f"list_attr_celeba.txt names 000003.jpg, which is a folder in {folder}, not an image file")


def test_an_init_image_becomes_a_tensor_without_a_warning(tmp_path):
    """sample.py --init-image: PIL's pixels are a read-only array; torch warned ("non-writable
    NumPy array") on every call before the copy."""
    import warnings

    from PIL import Image

    from data.images import load_square_image, to_tensor
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "red.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = to_tensor(load_square_image(tmp_path / "red.png", 16))
    assert x.shape == (1, 3, 16, 16) and x[0, 0].eq(1).all() and x[0, 1:].eq(-1).all()
