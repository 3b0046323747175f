"""The grids a person looks at: images enlarged by nearest neighbour, a prompt beside each row."""

import numpy as np
import torch
from PIL import Image

from common.images import labelled_grid, upscaled
from conftest import run
from fixed_checkpoints import text_checkpoint


def test_upscaled_repeats_every_pixel_as_a_block():
    images = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    big = upscaled(images, 3)
    assert big.shape == (2, 3, 6, 6)
    for y in range(6):
        for x in range(6):
            assert torch.equal(big[:, :, y, x], images[:, :, y // 3, x // 3])


def test_labelled_grid_places_each_image_in_its_row_and_column():
    colours = torch.tensor([[-1.0, -1, 1], [1, -1, -1], [-1, 1, -1], [1, 1, -1]])  # blue red green yellow
    images = colours[:, :, None, None].expand(4, 3, 8, 8).clone()
    images[:, :, 0, 0] = 0.0                       # one grey pixel at each image's corner
    grid = np.asarray(labelled_grid(images, ["first prompt", "a second, longer prompt"],
                                    ["seed 0", "seed 1"], scale=4))
    expected = ((colours + 1) * 127.5).round().to(torch.uint8).numpy()
    # find every image's block: the tiles are 32x32 with a 2-pixel gap, after the text margin
    width, height = grid.shape[1], grid.shape[0]
    left, top = width - 2 * 34, height - 2 * 34
    assert left > 0 and top > 0
    for index, colour in enumerate(expected):
        r, c = divmod(index, 2)
        y, x = top + r * 34, left + c * 34
        tile = grid[y:y + 32, x:x + 32]
        assert (tile[4:, 4:] == colour).all()              # the colour, untouched by smoothing
        assert (tile[:4, :4] == 128).all()                 # the grey pixel is a 4x4 block
        assert (tile[:4, 4:] == colour).all()
    margin = grid[top:, :left - 2]
    assert (margin < 128).any(), "the prompt's text is drawn beside its row"
    assert (grid[:top - 2, left:] < 128).any(), "the seeds are written above the columns"


def test_sample_py_labels_the_rows_of_a_text_model(tmp_path):
    checkpoint = text_checkpoint(tmp_path / "text.pt", tmp_path / "cache")
    out = tmp_path / "grid.png"
    run(["sample.py", "--ckpt", str(checkpoint), "--prompt", "a photo of a man", "--prompt", "",
         "--n", "3", "--steps", "2", "--upscale", "4", "--out", str(out), "--device", "cpu"])
    size = torch.load(checkpoint, weights_only=True)["vae_config"]["image_size"]
    with Image.open(out) as grid:
        width, height = grid.size
    assert height >= 2 * size * 4 and width > 3 * size * 4  # two rows, three columns and a margin


def test_attention_figure_prompts_do_not_run_into_the_word_titles():
    """sample.py --attention-maps: each prompt is written above its image, wrapped to the image's
    width, so no prompt's text overlaps the first token's title beside it (it did for prompts of
    about 40 characters and more)."""
    from training.plots import _pyplot, attention_figure

    prompts = ["a photo of a woman with black hair, bangs and lipstick", "a bald man",
               "a portrait of a smiling young woman with blond hair, wearing a hat and lipstick"]
    tokens = [["<bos>", *p.replace(",", " ,").split(), "<eos>"] for p in prompts]
    L = max(len(t) for t in tokens)
    fig = attention_figure(torch.zeros(3, 3, 16, 16), torch.rand(3, L, 4, 4), prompts, tokens)
    renderer = fig.canvas.get_renderer()
    axes = fig.axes
    cols = len(axes) // 3
    for r in range(3):
        assert axes[r * cols].get_title() and not axes[r * cols].get_title("left")
        prompt_box = axes[r * cols].title.get_window_extent(renderer)
        word_box = axes[r * cols + 1].title.get_window_extent(renderer)
        image_box = axes[r * cols].get_window_extent(renderer)
        assert prompt_box.x1 <= word_box.x0, (r, prompt_box, word_box)
        assert prompt_box.width <= 1.15 * image_box.width
        assert "\n" in axes[r * cols].title.get_text() or len(prompts[r]) <= 26
    _pyplot().close(fig)
