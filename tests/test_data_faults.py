"""Bad inputs and faults in the data package (issue 14: #2, #6, #9, #10, #15): each gives one clear
line, or the right pixels, and leaves nothing half-written behind."""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from common.errors import DataError
from data import cache as cache_module
from data import load_dataset
from data.celeba import read_attributes, read_partition
from data.imagefolder import read_metadata
from data.images import load_square_image
from tests.test_data import make_celeba, make_imagefolder
from tests.conftest import run


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def train_unconditional(data, cache_dir, out):
    """A one-step stage-1 run on the CPU, as a user types it; returns the finished process."""
    return run(["train_unconditional.py", "--preset", "cpu", "--data", str(data), "--image-size",
                "16", "--batch-size", "4", "--steps", "1", "--device", "cpu", "--cache-dir",
                str(cache_dir), "--out", str(out)], check=False)


# 2. Every image mode becomes the right 8-bit RGB


def gradient16(n=8):
    """(n, n) uint16 values over 0..65535, with the rounding edges 128 (down) and 129 (up)."""
    values = np.linspace(0, 65535, n * n).astype(np.uint16)
    values[1:4] = [128, 129, 257]
    return values.reshape(n, n)


def to_8bit(values16):
    """The expected 8-bit values: value * 255 / 65535, rounded to the nearest integer."""
    return np.round(values16.astype(np.float64) * 255 / 65535).astype(np.uint8)


def grey_rgb(values):
    return np.repeat(values[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)


def test_16_bit_grayscale_png_is_scaled_not_saturated(tmp_path):
    values = gradient16()
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    pixels = load_square_image(tmp_path / "deep.png", 8)  # 8 x 8: no crop, no resize
    np.testing.assert_array_equal(pixels, grey_rgb(to_8bit(values)))
    assert pixels[0, 1, 0] == 0 and pixels[0, 2, 0] == 1  # 128 / 257 rounds down, 129 / 257 up


def saved(tmp_path, image, suffix):
    """Save `image` and check that it opens in the same mode, so that mode is the one tested."""
    path = tmp_path / f"image{suffix}"
    image.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == image.mode
    return path


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_other_16_bit_modes_are_scaled(tmp_path, mode):
    values = gradient16()
    if mode == "I":  # 32-bit integers holding 16-bit values, as older Pillows read 16-bit PNGs
        image = Image.fromarray(values.astype(np.int32))
    else:
        image = Image.frombytes(mode, (8, 8), values.astype(">u2").tobytes())
    pixels = load_square_image(saved(tmp_path, image, ".tif"), 8)
    np.testing.assert_array_equal(pixels, grey_rgb(to_8bit(values)))


def test_little_endian_16_bit_mode_is_scaled(tmp_path, monkeypatch):
    values = gradient16()
    image = Image.frombytes("I;16L", (8, 8), values.astype("<u2").tobytes())
    monkeypatch.setattr(Image, "open", lambda path: image.copy())  # no file format keeps I;16L
    np.testing.assert_array_equal(load_square_image("any.png", 8), grey_rgb(to_8bit(values)))


def test_float_images_in_0_1_are_scaled_and_others_clipped(tmp_path):
    unit = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    pixels = load_square_image(saved(tmp_path, Image.fromarray(unit), ".tif"), 8)
    np.testing.assert_array_equal(pixels, grey_rgb(np.round(unit * 255).astype(np.uint8)))

    wide = np.linspace(-50, 300, 64, dtype=np.float32).reshape(8, 8)
    (tmp_path / "image.tif").unlink()
    pixels = load_square_image(saved(tmp_path, Image.fromarray(wide), ".tif"), 8)
    clipped = np.clip(np.round(wide), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels, grey_rgb(clipped))


def eight_bit_images():
    """(name, image, suffix, expected (8, 8, 3) uint8 RGB) for the 8-bit modes: alpha dropped."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    colour = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    paletted = Image.fromarray(index, "L").convert("P")  # a grey palette, replaced below
    paletted.putpalette(palette.tobytes())
    with_alpha = paletted.convert("PA")
    with_alpha.putalpha(Image.fromarray(alpha, "L"))
    bits = grey >= 128
    cmyk = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    k = 255 - cmyk[:, :, 3:].astype(np.int64)
    cmyk_rgb = np.round((255 - cmyk[:, :, :3]) * k / 255).astype(np.uint8)  # R = (1-C)(1-K)
    return [
        ("L", Image.fromarray(grey, "L"), ".png", grey_rgb(grey)),
        ("LA", Image.fromarray(np.dstack([grey, alpha]), "LA"), ".png", grey_rgb(grey)),
        ("RGB", Image.fromarray(colour, "RGB"), ".png", colour),
        ("RGBA", Image.fromarray(np.dstack([colour, alpha]), "RGBA"), ".png", colour),
        ("P", paletted, ".png", palette[index]),
        ("PA", with_alpha, ".tif", palette[index]),
        ("1", Image.fromarray(bits), ".png", grey_rgb(bits.astype(np.uint8) * 255)),
        ("CMYK", Image.fromarray(cmyk, "CMYK"), ".tif", cmyk_rgb),
    ]


@pytest.mark.parametrize("name, image, suffix, expected", eight_bit_images(),
                         ids=[case[0] for case in eight_bit_images()])
def test_8_bit_modes_give_their_rgb_with_alpha_dropped(tmp_path, name, image, suffix, expected):
    pixels = load_square_image(saved(tmp_path, image, suffix), 8)
    assert pixels.dtype == np.uint8 and pixels.shape == (8, 8, 3)
    np.testing.assert_array_equal(pixels, expected)


def test_8_bit_path_is_unchanged(tmp_path):
    """Crop and resize of 8-bit images are as before, bit for bit (every cache depends on it)."""
    rng = np.random.default_rng(1)
    for mode, shape in [("RGB", (30, 21, 3)), ("L", (17, 40))]:
        path = tmp_path / f"{mode}.jpg"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, quality=90)
        with Image.open(path) as image:  # the steps of load_square_image before issue 14
            image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        expected = np.asarray(image.resize((12, 12), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(load_square_image(path, 12), expected)


def test_16_bit_images_go_through_the_cache(tmp_path):
    values = gradient16(16)
    (tmp_path / "images").mkdir()
    Image.fromarray(values).save(tmp_path / "images" / "deep.png")
    dataset = load_dataset(str(tmp_path / "images"), 16, split="all", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(dataset.images[0], grey_rgb(to_8bit(values)))


# 9. Text files that are not UTF-8


def with_bad_byte(path, lines, line_number):
    """Write `lines`, with a 0xff byte in the middle of line `line_number` (1-based); returns the
    byte offset of that byte in the file."""
    data = "\n".join(lines).encode() + b"\n"
    start = sum(len(line.encode()) + 1 for line in lines[: line_number - 1])
    offset = start + len(lines[line_number - 1].encode()) // 2
    path.write_bytes(data[:offset] + b"\xff" + data[offset:])
    return offset


def assert_names_the_bad_byte(error, path, line_number, offset):
    message = one_line(error)
    assert str(path) in message and f":{line_number}:" in message, message
    assert f"byte {offset}" in message and "UTF-8" in message, message


def test_attribute_file_that_is_not_utf8(tmp_path):
    make_celeba(tmp_path / "celeba")
    path = tmp_path / "celeba" / "list_attr_celeba.txt"
    offset = with_bad_byte(path, path.read_text().splitlines(), 4)
    with pytest.raises(DataError) as error:
        read_attributes(path)
    assert_names_the_bad_byte(error, path, 4, offset)


def test_partition_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "list_eval_partition.txt"
    offset = with_bad_byte(path, ["000001.jpg 0", "000002.jpg 1", "000003.jpg 2"], 2)
    with pytest.raises(DataError) as error:
        read_partition(path)
    assert_names_the_bad_byte(error, path, 2, offset)


@pytest.mark.parametrize("metadata", ["jsonl", "csv"])
def test_metadata_that_is_not_utf8(tmp_path, metadata):
    root = tmp_path / "images"
    make_imagefolder(root, metadata)
    path = root / f"metadata.{metadata}"
    offset = with_bad_byte(path, path.read_text().splitlines(), 3)
    with pytest.raises(DataError) as error:
        read_metadata(root)
    assert_names_the_bad_byte(error, path, 3, offset)


def test_utf8_metadata_still_reads(tmp_path):
    root = tmp_path / "images"
    make_imagefolder(root, None)
    captions = {"a.png": "une femme souriante, très", "b.png": "微笑", "sub/c.png": "ok"}
    lines = [json.dumps({"file_name": name, "text": text}, ensure_ascii=False)
             for name, text in captions.items()]
    (root / "metadata.jsonl").write_bytes(("\n".join(lines) + "\n").encode())
    assert read_metadata(root)[1] == captions


def test_training_on_metadata_that_is_not_utf8_exits_2_with_one_line(tmp_path):
    root = tmp_path / "images"
    make_imagefolder(root, "jsonl")
    path = root / "metadata.jsonl"
    offset = with_bad_byte(path, path.read_text().splitlines(), 2)
    result = train_unconditional(root, tmp_path / "cache", tmp_path / "run")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"{path}:2:" in result.stderr and f"byte {offset}" in result.stderr, result.stderr


# 10. A cache folder that is a file


@pytest.mark.parametrize("below", [False, True], ids=["is-a-file", "under-a-file"])
@pytest.mark.parametrize("data", ["images", "synthetic:8"])
def test_cache_dir_that_is_a_file(tmp_path, below, data):
    make_imagefolder(tmp_path / "images", None)
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    cache_dir = blocker / "sub" if below else blocker
    data = str(tmp_path / data) if data == "images" else data
    with pytest.raises(DataError) as error:
        load_dataset(data, 16, split="all", cache_dir=cache_dir)
    message = one_line(error)
    assert str(cache_dir) in message and "expected a folder" in message, message
    assert blocker.read_text() == "not a folder"


def test_synthetic_generation_into_a_file(tmp_path):
    from data.synthetic import generate

    (tmp_path / "taken").write_text("")
    with pytest.raises(DataError) as error:
        generate(tmp_path / "taken", 2, size=16, workers=1)
    assert str(tmp_path / "taken") in one_line(error) and "expected a folder" in str(error.value)


def test_training_with_a_cache_dir_that_is_a_file_exits_2_with_one_line(tmp_path):
    make_imagefolder(tmp_path / "images", None)
    (tmp_path / "cache").write_text("")
    result = train_unconditional(tmp_path / "images", tmp_path / "cache", tmp_path / "run")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert str(tmp_path / "cache") in result.stderr and "expected a folder" in result.stderr


# 6. A full disk while the image cache is written


def full_disk_open(fail_on: str):
    """An `open` for data/cache.py whose writes to files named *{fail_on}* fail with ENOSPC after
    the first one, as on a disk that fills up part-way."""
    real_open = open

    class FillingFile:
        def __init__(self, file):
            self.file, self.writes = file, 0

        def write(self, data):
            self.writes += 1
            if self.writes > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.file.close()

    def fake_open(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        return FillingFile(file) if fail_on in os.path.basename(path) else file

    return fake_open


@pytest.mark.parametrize("fail_on", [".uint8.tmp", ".ok.npy.tmp"], ids=["images", "mask"])
def test_full_disk_during_the_cache_build(tmp_path, monkeypatch, fail_on):
    make_celeba(tmp_path / "celeba")
    root, cache_dir = str(tmp_path / "celeba"), tmp_path / "cache"
    previous = load_dataset(root, 8, split="all", cache_dir=cache_dir)  # a complete cache
    previous_pixels = np.array(previous.images)
    before = sorted(path.name for path in cache_dir.iterdir())

    monkeypatch.setattr(cache_module, "open", full_disk_open(fail_on), raising=False)
    with pytest.raises(DataError) as error:
        load_dataset(root, 16, split="all", cache_dir=cache_dir)
    message = one_line(error)
    assert "no space left on device" in message and str(cache_dir) in message, message
    assert f"{6 * 16 * 16 * 3} bytes" in message and "free" in message, message
    # No temporary and no half-written cache is left, and the previous cache is still there
    assert sorted(path.name for path in cache_dir.iterdir()) == before

    def no_decoding(path, size):
        raise AssertionError("the previous cache should have been reused")

    monkeypatch.undo()
    monkeypatch.setattr(cache_module, "load_square_image", no_decoding)
    again = load_dataset(root, 8, split="all", cache_dir=cache_dir)
    np.testing.assert_array_equal(again.images, previous_pixels)


# 15. Temporaries left by a killed cache build


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path, capsys):
    make_imagefolder(tmp_path / "images", None)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    stale = [cache_dir / f"images-all-16px-0123456789abcdef.uint8.tmp{exited.pid}",
             cache_dir / f"images-all-16px-0123456789abcdef.ok.npy.tmp{exited.pid}"]
    live = cache_dir / f"other-all-16px-fedcba9876543210.uint8.tmp{os.getpid()}"
    unrelated = cache_dir / "notes.tmp1"
    for path in [*stale, live, unrelated]:
        path.write_bytes(b"\0" * 100)

    load_dataset(str(tmp_path / "images"), 16, split="all", cache_dir=cache_dir)
    assert not any(path.exists() for path in stale)
    assert live.exists() and unrelated.exists()  # a live build's file, and one that is not ours
    warnings = [line for line in capsys.readouterr().err.splitlines() if "temporar" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:"), warnings
    assert "removed 2 temporary files" in warnings[0] and str(cache_dir) in warnings[0], warnings
