"""Figure: the first 64 synthetic faces, each above the caption that names all its attributes.

    python -m data.synthetic --out data_cache/synthetic --n 64
    python -m docs.figures.make_synthetic_grid --data data_cache/synthetic

writes docs/figures/synthetic_faces.png: an 8x8 grid, faces shown at 2x with nearest-neighbour
upscaling so the real 64x64 pixels stay visible. Every attribute should be readable from the
picture alone; if one is not, the drawing in data/synthetic.py needs work.
"""

import argparse
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from data.captions import full_caption
from data.celeba import read_attributes

COLUMNS, ROWS = 8, 8
ZOOM = 2          # each image pixel becomes ZOOM x ZOOM
LINE_CHARS = 24   # caption wrap width in characters
LINE_HEIGHT = 12  # pixels per caption line
TEXT_LINES = 5    # caption lines under each face (longer captions are cut with "...")
PAD = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder made by python -m data.synthetic")
    parser.add_argument("--out", default="docs/figures/synthetic_faces.png", help="output PNG")
    args = parser.parse_args()

    root = Path(args.data)
    names, files, values = read_attributes(root / "list_attr_celeba.txt")
    count = min(COLUMNS * ROWS, len(files))
    size = Image.open(root / "img_align_celeba" / files[0]).width * ZOOM
    cell_w, cell_h = size + 2 * PAD, size + PAD + TEXT_LINES * LINE_HEIGHT + PAD
    grid = Image.new("RGB", (COLUMNS * cell_w, ROWS * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=10)

    for i in range(count):
        x, y = (i % COLUMNS) * cell_w + PAD, (i // COLUMNS) * cell_h + PAD
        face = Image.open(root / "img_align_celeba" / files[i]).convert("RGB")
        grid.paste(face.resize((size, size), Image.Resampling.NEAREST), (x, y))
        text = full_caption(dict(zip(names, values[i].astype(bool)))).removeprefix("a photo of ")
        lines = textwrap.wrap(text, LINE_CHARS, max_lines=TEXT_LINES, placeholder=" ...")
        for k, line in enumerate(lines):
            draw.text((x, y + size + 2 + k * LINE_HEIGHT), line, fill="black", font=font)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
