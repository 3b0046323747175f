"""Synthetic CelebA: procedural cartoon faces with CelebA attributes, drawn with PIL.

A stand-in for CelebA that needs no download and trains in minutes. Every image is a cartoon face
whose 15 attributes (CelebA's own names, SYNTHETIC_ATTRIBUTES) are known exactly and can be read
by eye at 64x64. `generate` writes CelebA's own folder layout, so one reader loads both:

    out_dir/img_align_celeba/000001.png ...   the images, 6-digit 1-based names
    out_dir/list_eval_partition.txt           "000001.png 0" per image: 0 train, 1 val, 2 test
    out_dir/list_attr_celeba.txt              N, the names, "000001.png -1  1 ..." (written last)

How a face is drawn: every shape is given in face units (u to the right, v down, origin at the
centre of the head, 1 unit about half the width of a head) and a FaceLayout maps them to pixels,
adding the random jitter (position, scale, rotation). Shapes are drawn at SUPERSAMPLE times the
output size and box-filtered down, which anti-aliases their edges.

Determinism: draw_face(attributes, size, seed) takes every non-attribute random number (jitter,
colours) from random.Random(seed) in a fixed order, whatever the attributes. Two faces with the
same seed therefore differ only where a toggled attribute is drawn (tests/test_synthetic.py).

Command line:
    python -m data.synthetic --out data_cache/synthetic --n 20000 --size 64 --seed 0
"""

import argparse
import colorsys
import errno
import math
import multiprocessing
import os
import random
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm import tqdm

from common.errors import DataError, warn
from data.files import make_folder

SYNTHETIC_ATTRIBUTES = [
    "Male", "Smiling", "Eyeglasses", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Bald",
    "Bangs", "No_Beard", "Mustache", "Wearing_Hat", "Wearing_Lipstick", "Pale_Skin", "Oval_Face",
]  # the columns of list_attr_celeba.txt, in this order
HAIR_COLOURS = {  # base RGB of each hair attribute, far apart so that even 32x32 tells them apart
    "Black_Hair": (30, 26, 26),
    "Blond_Hair": (238, 196, 70),
    "Brown_Hair": (128, 68, 28),
    "Gray_Hair": (178, 178, 184),
}
SUPERSAMPLE = 4  # shapes are drawn at 4x the output size, then averaged over 4x4 blocks

RGB = tuple[int, int, int]


# ----------------------------------------------------------------------------------------------
# Attributes


def sample_attributes(rng: random.Random) -> dict[str, bool]:
    """A consistent random set of attributes; each positive value has a probability of 20-50%.

    Rules: Bald only for men and then no hair colour, no bangs, no hat; otherwise exactly one hair
    colour; a hat hides the bangs; beards and mustaches only for men, lipstick only for women.
    """
    male = rng.random() < 0.5
    bald = male and rng.random() < 0.4                     # 20% of all faces
    hat = not bald and rng.random() < 0.3                  # 24%
    hair = None if bald else rng.choice(list(HAIR_COLOURS))  # 20% each
    attributes = {
        "Male": male,
        "Smiling": rng.random() < 0.5,
        "Eyeglasses": rng.random() < 0.35,
        **{name: name == hair for name in HAIR_COLOURS},
        "Bald": bald,
        "Bangs": not bald and not hat and rng.random() < 0.45,  # 25%
        "No_Beard": not (male and rng.random() < 0.5),          # a beard on 25%
        "Mustache": male and rng.random() < 0.45,               # 22%
        "Wearing_Hat": hat,
        "Wearing_Lipstick": not male and rng.random() < 0.5,    # 25%
        "Pale_Skin": rng.random() < 0.35,
        "Oval_Face": rng.random() < 0.45,
    }
    return {name: attributes[name] for name in SYNTHETIC_ATTRIBUTES}


# ----------------------------------------------------------------------------------------------
# Geometry: face units -> pixels


@dataclass
class FaceLayout:
    """Where the face sits in an image: maps face units (u right, v down) to pixels and back."""

    center_x: float  # pixel position of the face origin (u, v) = (0, 0)
    center_y: float
    unit: float      # pixels per face unit
    angle: float     # rotation of the whole face in degrees, counter-clockwise

    def __post_init__(self):  # the rotation, computed once: a face maps ~500 points
        self.cos, self.sin = math.cos(math.radians(self.angle)), math.sin(math.radians(self.angle))

    def to_pixels(self, u: float, v: float) -> tuple[float, float]:
        """Rotate (u, v) by `angle`, scale by `unit`, move to the centre (y points down)."""
        return (self.center_x + self.unit * (u * self.cos + v * self.sin),
                self.center_y + self.unit * (v * self.cos - u * self.sin))

    def to_face(self, x: float, y: float) -> tuple[float, float]:
        """The inverse of to_pixels: the face units (u, v) of pixel position (x, y)."""
        dx, dy = (x - self.center_x) / self.unit, (y - self.center_y) / self.unit
        return dx * self.cos - dy * self.sin, dx * self.sin + dy * self.cos


def face_layout(size: int, seed: int) -> FaceLayout:
    """The layout draw_face(..., size, seed) uses, in output pixels (for tests and figures)."""
    return _layout(random.Random(seed), size)


def _layout(rng: random.Random, size: float) -> FaceLayout:
    """Random jitter: position +-4% of the size, scale +-8%, rotation +-8 degrees."""
    center_x = size * (0.5 + rng.uniform(-0.04, 0.04))
    center_y = size * (0.54 + rng.uniform(-0.04, 0.04))
    unit = size * 0.26 * rng.uniform(0.92, 1.08)
    return FaceLayout(center_x, center_y, unit, angle=rng.uniform(-8.0, 8.0))


def _ellipse(cu: float, cv: float, ru: float, rv: float, n: int = 40) -> list[tuple[float, float]]:
    """n points on the ellipse with centre (cu, cv) and radii (ru, rv)."""
    return [(cu + ru * math.cos(2 * math.pi * k / n), cv + rv * math.sin(2 * math.pi * k / n))
            for k in range(n)]


def _head_outline(rx: float, ry: float, jaw: float, t0: float = 0.0, t1: float = 2 * math.pi,
                  n: int = 72) -> list[tuple[float, float]]:
    """Points of the head for angles t0..t1: an ellipse above the ears, below them the
    superellipse |u/rx|^jaw + |v/ry|^jaw = 1 (jaw = 2 is round, larger is a squarer jaw)."""
    points = []
    for k in range(n):
        t = t0 + (t1 - t0) * k / (n - 1)
        cos, sin = math.cos(t), math.sin(t)
        power = 2 / jaw if sin > 0 else 1.0  # sin > 0: the lower half, since v points down
        points.append((rx * math.copysign(abs(cos) ** power, cos),
                       ry * math.copysign(abs(sin) ** power, sin)))
    return points


class _Pen:
    """ImageDraw in face units: every point goes through the layout before it is drawn."""

    def __init__(self, image: Image.Image, layout: FaceLayout):
        self.draw = ImageDraw.Draw(image)
        self.layout = layout

    def _pixels(self, points):
        return [self.layout.to_pixels(u, v) for u, v in points]

    def _width(self, width: float) -> int:
        return max(1, round(width * self.layout.unit))

    def polygon(self, points, fill: RGB | None, outline: RGB | None = None, width: float = 0.04):
        """A filled polygon, optionally outlined `width` face units wide."""
        self.draw.polygon(self._pixels(points), fill, outline, width=self._width(width))

    def line(self, points, fill: RGB, width: float):
        """A polyline `width` face units wide."""
        self.draw.line(self._pixels(points), fill=fill, width=self._width(width), joint="curve")


# ----------------------------------------------------------------------------------------------
# Colours


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    """(1 - t) * a + t * b, per channel."""
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def _shade(rgb: RGB, factor: float) -> RGB:
    """Darker (factor < 1) or lighter (factor > 1) version of a colour."""
    return tuple(min(255, round(c * factor)) for c in rgb)


@dataclass
class _Palette:
    background: RGB
    shirt: RGB
    pale_skin: RGB
    skin: RGB            # the non-pale skin tone, from light tan to brown
    hair: dict[str, RGB]  # one shade per hair attribute
    bald_beard: RGB      # beard and eyebrows of a bald man, who has no hair colour
    eye: RGB
    glasses: RGB
    hat: RGB
    lipstick: RGB


def _palette(rng: random.Random) -> _Palette:
    """Draw every colour a face may need, always all of them and in the same order."""

    def vary(rgb: RGB, amount: int) -> RGB:
        return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)

    def hsv(hue: float, saturation: float, value: float) -> RGB:
        return tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value))

    background = hsv(rng.random(), rng.uniform(0.25, 0.55), rng.uniform(0.6, 0.95))
    shirt = hsv(rng.random(), rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.85))
    pale_skin = vary((252, 232, 220), 5)
    skin = vary(_mix((222, 168, 124), (146, 96, 62), rng.random()), 6)
    hair = {name: vary(rgb, 12) for name, rgb in HAIR_COLOURS.items()}
    bald_beard = vary((60, 42, 32), 10)
    eye = vary(rng.choice([(80, 50, 28), (60, 110, 170), (70, 120, 70), (40, 30, 25)]), 10)
    glasses = vary(rng.choice([(18, 18, 18), (62, 36, 20), (24, 30, 72)]), 8)
    hat = hsv(rng.random(), rng.uniform(0.65, 0.9), rng.uniform(0.55, 0.9))
    lipstick = vary((205, 22, 42), 15)
    return _Palette(background, shirt, pale_skin, skin, hair, bald_beard, eye, glasses, hat,
                    lipstick)


# ----------------------------------------------------------------------------------------------
# Drawing

# Where the features sit, in face units (the head is 2.1 units wide and ~2 tall).
EYE_U, EYE_V = 0.38, -0.1   # centre of the right eye; the left one is mirrored
BROW_V = -0.36              # eyebrows
MOUTH_V = 0.56              # closed mouth; a smile opens downwards from 0.46
HAIRLINE_V = -0.8           # top of the forehead without bangs
BANGS_V = -0.5              # lower edge of the bangs
BRIM_V = -0.6               # the hat brim


def draw_face(attributes: dict[str, bool], size: int = 64, seed: int = 0) -> Image.Image:
    """Draw a cartoon face with the given attributes as a size x size RGB image.

    Everything that is not an attribute (jitter, background and feature colours) comes from
    random.Random(seed), so the same seed with one attribute toggled redraws only that attribute.
    """
    rng = random.Random(seed)
    layout = _layout(rng, size * SUPERSAMPLE)  # drawn first: face_layout(size, seed) is the same
    colours = _palette(rng)

    a = attributes
    male, bald = a["Male"], a["Bald"]
    hair_name = next((name for name in HAIR_COLOURS if a[name]), None)
    hair = colours.hair[hair_name] if hair_name else None
    skin = colours.pale_skin if a["Pale_Skin"] else colours.skin
    beard = hair or colours.bald_beard  # facial hair has the hair colour, dark if bald
    line = _shade(skin, 0.6)            # outlines of the skin and mouth
    rx, ry = (0.82, 1.18) if a["Oval_Face"] else (1.05, 0.98)  # head radii: tall oval or round
    jaw = 3.2 if male else 2.0          # superellipse exponent of the jaw: square for men

    image = Image.new("RGB", (size * SUPERSAMPLE,) * 2, colours.background)
    pen = _Pen(image, layout)

    # Long hair (women) behind the neck and head and falling to the shoulders; neck; shoulders.
    if hair and not male:
        back = _head_outline(1.12 * rx, 1.1 * ry, 2.0, math.pi, 2 * math.pi, 36)
        for side in (1, -1):  # down the right side to the shoulder and back up behind the chin
            back += [(side * u, v) for u, v in [(1.12 * rx + 0.12, 0.7), (1.2 * rx + 0.18, 1.5),
                                                (0.5 * rx + 0.1, 1.5), (0.3 * rx, 0.6)][::side]]
        pen.polygon(back, hair, _shade(hair, 0.6))

    pen.polygon([(-0.3, 0.5), (0.3, 0.5), (0.3, 1.6), (-0.3, 1.6)], _shade(skin, 0.9))
    pen.polygon(_ellipse(0, 2.4, 1.75, 1.0), colours.shirt)

    # Ears and head.
    for side in (-1, 1):
        pen.polygon(_ellipse(side * rx, -0.05, 0.14, 0.22, 24), skin, line)
    pen.polygon(_head_outline(rx, ry, jaw), skin, line)
    if bald:  # a shiny scalp: a light patch and a white highlight on top of the head
        pen.polygon(_ellipse(-0.3 * rx, -0.72 * ry, 0.26, 0.11), _mix(skin, (255, 255, 255), 0.5))
        pen.polygon(_ellipse(-0.34 * rx, -0.75 * ry, 0.12, 0.05), (255, 255, 255))

    # Beard (No_Beard is False): the jaw and chin below the mouth, apart from the hair at the ears.
    if not a["No_Beard"]:
        jawline = [(u, v) for u, v in _head_outline(rx, ry, jaw, 0, math.pi, 60) if v > 0.28]
        outer = [(1.06 * u, 1.06 * v) for u, v in jawline]  # right to left, around the chin
        inner = [(-0.8 * rx, 0.36), (-0.55, 0.52), (-0.4, 0.72), (0, 0.8),  # left to right,
                 (0.4, 0.72), (0.55, 0.52), (0.8 * rx, 0.36)]                 # under the mouth
        pen.polygon(outer + inner, beard, _shade(beard, 0.6))

    # Nose.
    pen.polygon(_ellipse(0, 0.2, 0.1, 0.07, 20), _shade(skin, 0.82))

    # Mouth: an open smile with teeth, or a closed line; red lips with lipstick.
    lips = colours.lipstick if a["Wearing_Lipstick"] else _mix(skin, (170, 60, 60), 0.35)
    if a["Smiling"]:
        def curve(depth, half_width=0.38, n=9):  # v of a U-shaped edge, `depth` deep in the middle
            us = [half_width * (2 * k / (n - 1) - 1) for k in range(n)]
            return [(u, 0.46 + depth * (1 - (u / half_width) ** 2)) for u in us]

        mouth = curve(0.02) + curve(0.28)[::-1]  # flat upper edge, deep lower edge
        if a["Wearing_Lipstick"]:  # thick red lips: the mouth enlarged about its upper edge
            pen.polygon([(1.25 * u, 0.42 + 1.4 * (v - 0.46)) for u, v in mouth], lips)
        pen.polygon(mouth, (92, 22, 30), lips, 0.05)  # dark inside, outlined by the lips
        pen.polygon(curve(0.02, 0.33) + curve(0.12, 0.33)[::-1], (250, 250, 244))  # upper teeth
    else:
        if a["Wearing_Lipstick"]:  # red upper and lower lips around the closed mouth
            pen.polygon([(-0.36, MOUTH_V), (-0.16, MOUTH_V - 0.09), (0, MOUTH_V - 0.06),
                         (0.16, MOUTH_V - 0.09), (0.36, MOUTH_V), (0.16, MOUTH_V + 0.11),
                         (-0.16, MOUTH_V + 0.11)], lips)
        pen.line([(-0.3, MOUTH_V - 0.02), (0, MOUTH_V + 0.01), (0.3, MOUTH_V - 0.02)],
                 _shade(lips, 0.6), 0.06)

    # Mustache, between the nose and the upper lip.
    if a["Mustache"]:
        upper = [(-0.44, 0.5), (-0.32, 0.33), (-0.1, 0.29), (0, 0.33), (0.1, 0.29), (0.32, 0.33)]
        lower = [(0.44, 0.5), (0.2, 0.44), (0, 0.46), (-0.2, 0.44)]
        pen.polygon(upper + lower, beard, _shade(beard, 0.6))

    # Eyes; women get a thick dark upper lid (eyelashes), men thicker eyebrows.
    brows = _shade(hair, 0.75) if hair else colours.bald_beard
    for side in (-1, 1):
        pen.polygon(_ellipse(side * EYE_U, EYE_V, 0.17, 0.12, 24), (255, 255, 255), line, 0.03)
        pen.polygon(_ellipse(side * EYE_U, EYE_V + 0.01, 0.09, 0.09, 16), colours.eye)
        pen.polygon(_ellipse(side * EYE_U, EYE_V + 0.01, 0.04, 0.04, 12), (10, 10, 10))
        if not male:
            pen.line([(side * (EYE_U - 0.17), EYE_V - 0.02), (side * EYE_U, EYE_V - 0.13),
                      (side * (EYE_U + 0.2), EYE_V - 0.06)], (20, 16, 16), 0.05)
        pen.line([(side * 0.2, BROW_V + 0.03), (side * 0.38, BROW_V - 0.03),
                  (side * 0.58, BROW_V + 0.02)], brows, 0.11 if male else 0.05)

    # Hair on top of the head: from above the head down to the hairline, or to the bangs.
    if hair:
        bottom = BANGS_V if a["Bangs"] else HAIRLINE_V
        side_v = 0.05  # at the sides the hair comes down over the ears
        hairline = []   # 25 points from the right temple over the forehead to the left one
        for k in range(25):
            u = rx * (1 - k / 12)  # rx .. -rx
            v = bottom + (side_v - bottom) * abs(u / rx) ** 4
            if a["Bangs"] and k % 2:  # a jagged fringe
                v += 0.06
            hairline.append((u, v))
        cap = _head_outline(1.1 * rx, 1.1 * ry, 2.0, math.pi, 2 * math.pi, 40)
        pen.polygon(cap + [(1.1 * rx, side_v)] + hairline + [(-1.1 * rx, side_v)], hair,
                    _shade(hair, 0.6))
        if a["Bangs"]:  # strands of the fringe
            for u in (-0.45, -0.15, 0.15, 0.45):
                pen.line([(u * rx, bottom - 0.28), (u * rx * 1.1, bottom)], _shade(hair, 0.7), 0.04)

    # Eyeglasses: dark frames around both eyes, a bridge, arms to the ears.
    if a["Eyeglasses"]:
        frame = colours.glasses
        for side in (-1, 1):
            pen.polygon(_ellipse(side * EYE_U, EYE_V, 0.27, 0.22, 32), None, frame, 0.09)
            arm = [(side * (EYE_U + 0.26), EYE_V - 0.04), (side * rx, EYE_V - 0.08)]
            pen.line(arm, frame, 0.07)
        pen.line([(-0.12, EYE_V - 0.04), (0, EYE_V - 0.08), (0.12, EYE_V - 0.04)], frame, 0.08)

    # Hat: a crown over the top of the head, a dark band and a wide brim.
    if a["Wearing_Hat"]:
        edge = _shade(colours.hat, 0.6)
        height = 1.1 * ry + 0.22 + BRIM_V  # from the brim to above the hair
        crown = _ellipse(0, BRIM_V, 1.12 * rx, height, 48)[24:] + [(1.12 * rx, BRIM_V)]  # top half
        pen.polygon(crown, colours.hat, edge)
        band = [(u, v) for u, v in crown if v > BRIM_V - 0.18]  # the crown's lowest 0.18 units
        pen.polygon(band, _shade(colours.hat, 0.45))
        pen.polygon(_ellipse(0, BRIM_V, 1.12 * rx + 0.35, 0.12, 40), colours.hat, edge)

    return image.reduce(SUPERSAMPLE)  # average each 4x4 block: anti-aliased edges


# ----------------------------------------------------------------------------------------------
# A CelebA-format folder


def _image(seed: int, index: int) -> tuple[dict[str, bool], int]:
    """Attributes and drawing seed of image `index`: a pure function of (seed, index), so any worker
    can draw any image. A string seed is hashed with SHA-512, the same on every platform."""
    rng = random.Random(f"synthetic-faces/{seed}/{index}")
    attributes = sample_attributes(rng)
    return attributes, rng.getrandbits(64)


def _render(job: tuple[int, str, int, int, str]) -> list[int]:
    """Draw image `index` (1-based), save it, and return its attribute row as 1 / -1."""
    index, image_dir, size, seed, fmt = job
    attributes, image_seed = _image(seed, index)
    image = draw_face(attributes, size, image_seed)
    path = Path(image_dir) / f"{index:06d}.{fmt}"
    try:
        image.save(path, quality=95)  # quality: jpg only
    except OSError as error:  # a full disk: no half-written image is left, and the error names it
        path.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    return [1 if attributes[name] else -1 for name in SYNTHETIC_ATTRIBUTES]


def _split(index: int, n: int) -> int:
    """CelebA partition number of image `index` of n: the last 10% test (2), 10% before val (1)."""
    holdout = n // 10
    return 2 if index > n - holdout else 1 if index > n - 2 * holdout else 0


def in_a_starting_worker() -> bool:
    """True while a drawing process of generate() starts up. multiprocessing's "spawn" first runs
    the parent's main script again, as a module; a script that loads the synthetic data at its
    top level, without `if __name__ == "__main__":`, comes back to the data from there."""
    return getattr(multiprocessing.current_process(), "_inheriting", False)  # set by spawn


def _draw(jobs: list[tuple], workers: int, progress: dict) -> list[list[int]]:
    """The attribute rows of `jobs`, drawn by `workers` processes, or by this one."""
    if workers > 1:
        # "spawn": fresh worker processes, as on macOS and Windows. A fork of a process whose
        # torch threads are running (a test, a notebook) can deadlock in the child.
        try:
            with (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                  as pool, tqdm(pool.map(_render, jobs, chunksize=64), **progress) as bar):
                return list(bar)
        except BrokenProcessPool:  # the workers stopped as they started (in_a_starting_worker)
            warn("the drawing processes could not start: a script that loads the synthetic "
                 "data at its top level runs again in each of them (put its code under "
                 "`if __name__ == \"__main__\":`); drawing in this process instead")
    with tqdm(jobs, **progress) as bar:  # closed on an error too: its line ends
        return [_render(job) for job in bar]


def generate(out_dir: str | Path, n: int, size: int = 64, seed: int = 0, fmt: str = "png",
             workers: int | None = None) -> Path:
    """Write n faces in CelebA's layout under out_dir, drawing with `workers` processes.

    The attribute table is written last (through a temporary file), so a folder without
    list_attr_celeba.txt is an unfinished one. A file that cannot be written (a full disk) is one
    DataError naming it, not the tracebacks of the drawing processes.
    """
    out_dir = Path(out_dir)
    image_dir = make_folder(out_dir / "img_align_celeba")
    attribute_file = out_dir / "list_attr_celeba.txt"
    attribute_file.unlink(missing_ok=True)  # an old table would make a half-done folder look done

    jobs = [(index, str(image_dir), size, seed, fmt) for index in range(1, n + 1)]
    workers = workers or os.cpu_count() or 1
    progress = dict(total=n, desc="drawing faces", unit="img")
    temporary = attribute_file.with_suffix(".partial")
    try:
        rows = _draw(jobs, workers, progress)

        names = [f"{index:06d}.{fmt}" for index in range(1, n + 1)]
        partition = "".join(f"{name} {_split(index, n)}\n"
                            for index, name in enumerate(names, start=1))
        (out_dir / "list_eval_partition.txt").write_text(partition)
        # CelebA's format: the count, the names, then per image its file name and each value as
        # "%2d" after a space: "000001.png -1  1  1 -1".
        table = [str(n), " ".join(SYNTHETIC_ATTRIBUTES)]
        for name, row in zip(names, rows):
            table.append(name + " " + " ".join(f"{value:2d}" for value in row))
        temporary.write_text("\n".join(table) + "\n")
        temporary.replace(attribute_file)
    except OSError as error:  # raised again here from a drawing process, with its errno and file
        temporary.unlink(missing_ok=True)
        where = error.filename or out_dir
        if error.errno == errno.ENOSPC:
            needed, free = n * size * size * 3, shutil.disk_usage(out_dir).free  # bytes
            raise DataError(f"no space left on device writing {where}: {n} faces of {size}x{size} "
                            f"take up to {needed / 1e6:.2f} MB, {free / 1e6:.2f} MB are free") from None
        raise DataError(f"cannot write {where} ({error.strerror or error})") from None
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a CelebA-format dataset of cartoon faces.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, default=20_000, help="number of images")
    parser.add_argument("--size", type=int, default=64, help="image width and height in pixels")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same dataset")
    parser.add_argument("--format", choices=["png", "jpg"], default="png", help="image file format")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="drawing processes")
    args = parser.parse_args(argv)
    if args.n <= 0:
        parser.error(f"--n {args.n}: expected a positive number of images")
    if args.size < 16:
        parser.error(f"--size {args.size}: expected at least 16 pixels")
    if args.workers <= 0:
        parser.error(f"--workers {args.workers}: expected at least 1")

    start = time.perf_counter()
    try:
        out_dir = generate(args.out, args.n, args.size, args.seed, args.format, args.workers)
    except DataError as error:  # e.g. --out is a file: one line and exit status 2, as the stages
        parser.exit(2, f"error: {error}\n")
    elapsed = time.perf_counter() - start
    total_bytes = sum(path.stat().st_size for path in out_dir.rglob("*") if path.is_file())
    print(f"wrote {args.n} faces of {args.size}x{args.size} to {out_dir} in {elapsed:.1f} s "
          f"({total_bytes / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
