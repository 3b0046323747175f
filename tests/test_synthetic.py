"""The synthetic faces: deterministic, consistent, in CelebA's format, and each attribute drawn
where it belongs (toggling one changes pixels only in its own region of the face)."""

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.synthetic import (HAIR_COLOURS, SYNTHETIC_ATTRIBUTES, draw_face, face_layout, generate,
                            main, sample_attributes)

SIZE = 64
SEEDS = [0, 1, 2]


def face(**changes) -> dict[str, bool]:
    """A consistent attribute set: a man with black hair and nothing else, plus `changes`."""
    attributes = {name: False for name in SYNTHETIC_ATTRIBUTES}
    attributes.update(Male=True, Black_Hair=True, No_Beard=True)
    attributes.update(changes)
    return attributes


WOMAN = dict(Male=False, Black_Hair=False, Brown_Hair=True)


def hair_region(u, v):
    """Hair may be anywhere around the face, never on the eyes, nose, mouth and chin."""
    return ~((abs(u) < 0.65) & (v > -0.3) & (v < 0.85))


# attribute -> (attributes without it, attributes with it, where it is drawn: (u, v) -> bool)
# Face units: u to the right, v down, 0 at the head's centre, the head about 2 units wide.
TOGGLES = {
    "Male": (face(**WOMAN), face(Black_Hair=False, Brown_Hair=True),
             lambda u, v: (abs(u) < 1.7) & (v > -1.5) & (v < 1.7)),
    "Smiling": (face(), face(Smiling=True), lambda u, v: (abs(u) < 0.7) & (v > 0.3) & (v < 1.0)),
    "Eyeglasses": (face(), face(Eyeglasses=True), lambda u, v: (abs(u) < 1.3) & (v > -0.5) & (v < 0.25)),
    "Black_Hair": (face(**WOMAN), face(**WOMAN | dict(Brown_Hair=False, Black_Hair=True)),
                   hair_region),
    "Blond_Hair": (face(**WOMAN), face(**WOMAN | dict(Brown_Hair=False, Blond_Hair=True)),
                   hair_region),
    "Brown_Hair": (face(Male=False), face(**WOMAN), hair_region),
    "Gray_Hair": (face(**WOMAN), face(**WOMAN | dict(Brown_Hair=False, Gray_Hair=True)),
                  hair_region),
    "Bald": (face(), face(Bald=True, Black_Hair=False), lambda u, v: (abs(u) < 1.4) & (v < 0.15)),
    "Bangs": (face(), face(Bangs=True), lambda u, v: (abs(u) < 1.1) & (v > -1.2) & (v < -0.3)),
    "No_Beard": (face(No_Beard=False), face(), lambda u, v: (abs(u) < 1.4) & (v > -0.3) & (v < 1.5)),
    "Mustache": (face(), face(Mustache=True), lambda u, v: (abs(u) < 0.65) & (v > 0.15) & (v < 0.65)),
    "Wearing_Hat": (face(), face(Wearing_Hat=True), lambda u, v: v < -0.25),
    "Wearing_Lipstick": (face(**WOMAN), face(**WOMAN | dict(Wearing_Lipstick=True)),
                         lambda u, v: (abs(u) < 0.65) & (v > 0.3) & (v < 0.95)),
    "Pale_Skin": (face(), face(Pale_Skin=True), lambda u, v: (abs(u) < 1.4) & (v > -1.2)),
    "Oval_Face": (face(), face(Oval_Face=True), lambda u, v: (abs(u) < 1.4) & (v > -1.45) & (v < 1.6)),
}


def pixels(attributes, seed, size=SIZE) -> np.ndarray:
    return np.asarray(draw_face(attributes, size, seed), dtype=np.int32)  # (H, W, 3)


def face_coordinates(seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) face units of every pixel centre of draw_face(..., size, seed), each (H, W)."""
    layout = face_layout(size, seed)
    y, x = np.mgrid[0:size, 0:size] + 0.5
    return layout.to_face(x, y)


def is_consistent(a: dict[str, bool]) -> bool:
    hair = sum(a[name] for name in HAIR_COLOURS)
    return ((hair == 0 if a["Bald"] else hair == 1)
            and not (a["Bald"] and (a["Bangs"] or a["Wearing_Hat"] or not a["Male"]))
            and not (a["Wearing_Hat"] and a["Bangs"])
            and (a["Male"] or (a["No_Beard"] and not a["Mustache"]))
            and not (a["Male"] and a["Wearing_Lipstick"]))


def test_sampled_attributes_are_consistent_and_every_value_is_common():
    rng = random.Random(0)
    rows = [sample_attributes(rng) for _ in range(2000)]
    assert all(list(row) == SYNTHETIC_ATTRIBUTES for row in rows)
    assert all(is_consistent(row) for row in rows)
    for name in SYNTHETIC_ATTRIBUTES:
        share = np.mean([row[name] for row in rows])
        assert 0.15 < min(share, 1 - share), (name, share)


def test_toggle_cases_are_consistent():
    for name, (without, with_, _) in TOGGLES.items():
        assert is_consistent(without) and is_consistent(with_), name
        assert without[name] != with_[name], name
    assert set(TOGGLES) == set(SYNTHETIC_ATTRIBUTES)


def test_same_seed_same_image_other_seed_other_image():
    attributes = sample_attributes(random.Random(5))
    assert draw_face(attributes, SIZE, 7).tobytes() == draw_face(attributes, SIZE, 7).tobytes()
    assert draw_face(attributes, SIZE, 7).tobytes() != draw_face(attributes, SIZE, 8).tobytes()


@pytest.mark.parametrize("size", [16, 32, 100, 128])
def test_any_size(size):
    image = draw_face(face(), size, seed=3)
    assert image.size == (size, size) and image.mode == "RGB"


@pytest.mark.parametrize("name", SYNTHETIC_ATTRIBUTES)
def test_toggling_an_attribute_changes_only_its_region(name):
    without, with_, region = TOGGLES[name]
    for seed in SEEDS:
        change = np.abs(pixels(with_, seed) - pixels(without, seed)).sum(axis=2)  # (H, W)
        u, v = face_coordinates(seed)
        assert change.sum() > 0, (name, seed)
        inside = change[region(u, v)].sum() / change.sum()
        assert inside > 0.7, f"{name}, seed {seed}: only {inside:.0%} of the change in its region"
        # The background far from the face never changes.
        background = (v < -1.8) | ((abs(u) > 1.75) & (v < 1.3))
        assert background.sum() > 50 and change[background].sum() == 0, (name, seed)


def test_generate_writes_the_celeba_layout(tmp_path):
    generate(tmp_path / "a", 12, size=32, seed=0, workers=1)
    generate(tmp_path / "b", 12, size=32, seed=0, workers=2)  # the same files from a Pool
    root = tmp_path / "a"
    files = [f"{i:06d}.png" for i in range(1, 13)]
    assert sorted(p.name for p in (root / "img_align_celeba").iterdir()) == files
    for name in files:
        assert (root / "img_align_celeba" / name).read_bytes() == \
            (tmp_path / "b" / "img_align_celeba" / name).read_bytes()

    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == "12"
    assert lines[1] == " ".join(SYNTHETIC_ATTRIBUTES)
    assert len(lines) == 14
    for name, line in zip(files, lines[2:]):
        tokens = line.split()
        assert tokens[0] == name and len(tokens) == 1 + len(SYNTHETIC_ATTRIBUTES)
        assert set(tokens[1:]) <= {"1", "-1"}
        assert line == name + " " + " ".join(f"{int(t):2d}" for t in tokens[1:])  # CelebA spacing
        assert is_consistent({n: t == "1" for n, t in zip(SYNTHETIC_ATTRIBUTES, tokens[1:])})
    assert lines == (tmp_path / "b" / "list_attr_celeba.txt").read_text().splitlines()

    partition = (root / "list_eval_partition.txt").read_text().splitlines()
    assert partition == [f"{name} 0" for name in files[:10]] + ["000011.png 1", "000012.png 2"]


def test_command_line_rejects_bad_values(tmp_path, capsys):
    for argv, message in ((["--n", "0"], "--n 0"), (["--size", "8"], "--size 8")):
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path)] + argv)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "list_attr_celeba.txt").exists()


def test_a_script_without_a_main_guard_gets_its_faces_drawn_in_one_process(tmp_path):
    """A user's script that loads synthetic data at its top level, with no
    `if __name__ == "__main__":`: each spawned drawing process runs it again as it starts. They
    stop there, before touching the folder, and the script draws the faces itself, with one
    warning, instead of hanging while the pool starts new processes forever."""
    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "my_script.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(root)!r})\n"
                      "from data import load_dataset\n"
                      f"faces = load_dataset('synthetic:24', 16, split='all', "
                      f"cache_dir={str(tmp_path / 'cache')!r})\n"
                      "print('faces', len(faces))\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "faces 24"
    assert result.stderr.count("warning: the drawing processes could not start") == 1
    assert "Traceback" not in result.stderr
    generate(tmp_path / "one", 24, size=64, seed=0, workers=1)
    drawn = tmp_path / "cache" / "synthetic-64-n24-seed0"
    assert (drawn / "list_attr_celeba.txt").read_text() == \
        (tmp_path / "one" / "list_attr_celeba.txt").read_text()
