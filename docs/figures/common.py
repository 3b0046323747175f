"""Shared by the figure scripts: synthetic faces as tensors, a labelled image grid, loading the
EMA weights of a trained stage-1 checkpoint, sampling a text-to-image checkpoint the way
sample.py does, boxes and arrows for diagrams, and writing compact PNGs."""

import ast
import random
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from common.errors import CheckpointError  # noqa: E402
from data.synthetic import draw_face, sample_attributes  # noqa: E402
from diffusion.pipeline import Pipeline, generate, load_pipeline  # noqa: E402
from diffusion.sampling import default_sampler, make_sampler  # noqa: E402

FIGURES = Path(__file__).parent  # docs/figures/
ROOT = FIGURES.parents[1]         # the repository


def script_defaults(script: str) -> SimpleNamespace:
    """The defaults of a program's Config (`field: type = option(DEFAULT, ...)`), read from its
    source with ast: a figure labels the code's own numbers without importing a stage script
    (no program imports another). Fields whose default is not a literal are left out.
    script_defaults("train_vae").kl_weight == train_vae.Config().kl_weight."""
    tree = ast.parse((ROOT / f"{script}.py").read_text())
    config = next(node for node in tree.body
                  if isinstance(node, ast.ClassDef) and node.name == "Config")
    values = {}
    for node in config.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            value = node.value
            if isinstance(value, ast.Call) and value.args:     # option(default, help, ...)
                value = value.args[0]
            try:
                values[node.target.id] = ast.literal_eval(value)
            except ValueError:
                continue
    return SimpleNamespace(**values)


def synthetic_faces(seeds, size: int = 32) -> torch.Tensor:
    """Synthetic faces (len(seeds), 3, size, size) in [-1, 1], one per seed, drawn at 64x64 and
    shrunk with PIL's bicubic filter, as the training data cache does (data/cache.py)."""
    faces = []
    for seed in seeds:
        image = draw_face(sample_attributes(random.Random(seed)), size=64, seed=seed)
        image = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        faces.append(pixels.view(size, size, 3).permute(2, 0, 1).float() / 127.5 - 1.0)
    return torch.stack(faces)                                          # (N, 3, size, size)


def load_ema_model(ckpt: str):
    """The EMA UNet (eval mode, CPU), the DDPMScheduler (x0_pred clipped to [-1, 1], as for
    pixels) and the config of a stage-1 checkpoint (diffusion.pipeline.load_pipeline)."""
    pipe = load_pipeline(ckpt)
    if pipe.vae is not None:
        raise SystemExit(f"error: {ckpt} is a latent model; this figure needs a stage-1 pixel DDPM")
    return pipe.unet, pipe.scheduler, pipe.config


def load_text_model(ckpt: str) -> Pipeline:
    """diffusion.pipeline.load_pipeline() of a text-conditioned checkpoint (EMA weights, CPU,
    eval mode), or a one-line exit for a missing file or an unconditional model."""
    try:
        pipe = load_pipeline(ckpt)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None
    if pipe.text is None:
        raise SystemExit(f"error: {ckpt} is an unconditional model (train_ldm.py --clip ''): it "
                         "takes no prompt and has no cross-attention")
    return pipe


def sampler_name(pipe: Pipeline) -> str:
    """How sample_text_to_image draws from this checkpoint, for titles: "DDIM (eta 0)" or "Euler"."""
    return "DDIM (eta 0)" if default_sampler(pipe.scheduler) == "ddim" else "Euler"


def sample_text_to_image(pipe: Pipeline, prompts: list[str], seeds: list[int], guidance: float,
                         steps: int = 50, recorder=None) -> torch.Tensor:
    """One image per (prompt, seed) from a text Pipeline, as sample.py makes it
    (diffusion.pipeline.generate with the checkpoint's default sampler: DDIM at eta 0, or Euler for
    flow matching): `python sample.py --ckpt ... --prompt P --seed s --n 1` gives the same image.
    recorder: a models.attention.AttentionRecorder on pipe.unet.
    Returns images (N, 3, S, S) on the CPU, not clamped."""
    scheduler, eta = make_sampler(pipe.scheduler, None, steps)  # DDIM (leading, eta 0) or Euler
    return generate(pipe, prompts, seeds, guidance, scheduler, eta=eta, recorder=recorder).images


def save_image_grid(images: torch.Tensor, path: Path, row_labels: list[str],
                    column_labels: dict[int, list[str]], title: str = "", zoom: int = 3,
                    label_width: float = 1.1, label_height: float = 0.4) -> None:
    """Write a grid of images with a label left of every row and column labels above chosen rows.

    images:        (rows, cols, 3, H, W) in [-1, 1]; every image is shown at zoom x its pixels
    column_labels: {row index: one label per column}, printed above that row
    """
    rows, cols, _, H, W = images.shape
    dpi, pad = 100, 0.06                                   # pad: inches between images
    cell_w, cell_h = zoom * W / dpi, zoom * H / dpi        # inches per image
    top = 0.35 if title else 0.05
    heights = [(label_height if r in column_labels else 0) + cell_h + pad for r in range(rows)]
    fig_w = label_width + cols * (cell_w + pad) + 0.05
    fig_h = top + sum(heights) + 0.05
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    if title:
        fig.text(0.5, 1 - 0.05 / fig_h, title, ha="center", va="top", fontsize=10)
    y = fig_h - top                                        # inches from the bottom
    for r in range(rows):
        if r in column_labels:
            for c, label in enumerate(column_labels[r]):
                x = label_width + c * (cell_w + pad) + cell_w / 2
                fig.text(x / fig_w, (y - label_height / 2) / fig_h, label, ha="center",
                         va="center", fontsize=8)
            y -= label_height
        y -= cell_h
        fig.text((label_width - 0.08) / fig_w, (y + cell_h / 2) / fig_h, row_labels[r],
                 ha="right", va="center", fontsize=8)
        for c in range(cols):
            x = label_width + c * (cell_w + pad)
            ax = fig.add_axes((x / fig_w, y / fig_h, cell_w / fig_w, cell_h / fig_h))
            pixels = ((images[r, c].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
            ax.imshow(pixels, interpolation="nearest")
            ax.set_axis_off()
        y -= pad
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    compact_png(path)


def diagram_axes(width: float, height: float):
    """A blank figure for a diagram, width x height inches, whose data coordinates are inches from
    the lower-left corner: a box drawn 2 units wide is 2 inches wide whatever the figure's size.
    Returns (fig, ax)."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def draw_box(ax, x: float, y: float, width: float, height: float, text: str = "",
             colour: str = "#e8eef7", edge: str = "0.35", fontsize: float = 9, **text_options):
    """A rounded box with its lower-left corner at (x, y) and `text` centred in it."""
    ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0,rounding_size=0.06",
                                facecolor=colour, edgecolor=edge, linewidth=1))
    if text:
        ax.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=fontsize,
                **text_options)


def draw_arrow(ax, start: tuple, end: tuple, colour: str = "0.25", style: str = "-|>",
               linewidth: float = 1.2, **arrow_options):
    """An arrow from start (x, y) to end (x, y); arrow_options go to matplotlib's arrowprops
    (e.g. linestyle="--", connectionstyle="arc3,rad=0.2")."""
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle=style, color=colour, linewidth=linewidth,
                                shrinkA=0, shrinkB=0, **arrow_options))


def save_figure(fig, path, dpi: int = 100) -> None:
    """Write a matplotlib figure as a compact RGB PNG and say how large it is."""
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    compact_png(path)


def compact_png(path, max_kib: int = 300) -> None:
    """Rewrite a PNG as optimised RGB (dropping alpha saves about 10%); if it is still larger than
    max_kib, as 256 colours (an adaptive palette: invisible on these figures, about 2x smaller).
    Says how large it is."""
    image = Image.open(path).convert("RGB")
    image.save(path, optimize=True)
    if Path(path).stat().st_size > max_kib * 1024:
        image.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({Path(path).stat().st_size / 1024:.0f} KiB)")


# The colours of the overview, markov_chain and unet_diagram diagrams: one (fill, edge) pair per
# kind of thing, the same in all three (draw_box's colour and edge).
KIND_COLOURS = {
    "image": ("#dfe8f3", "#4c72b0"),   # pixels and images
    "latent": ("#dff0e3", "#3f8f55"),  # the autoencoder and its latents
    "text": ("#fbe8d8", "#d0702e"),    # captions, tokens, the CLIP text encoder
    "unet": ("#e8e4f3", "#6f5fa8"),    # the denoising UNet, the learned reverse process p_theta
    "noise": ("#eeeeee", "#777777"),   # noise, and the fixed forward process q
    "time": ("#f9e0ee", "#c2407f"),    # the timestep embedding
    "file": ("#f4efe6", "#8a6d4b"),    # files a script writes
}
SAMPLING_COLOUR = "#c44e52"  # arrows of the sampling path (sample.py)
FROZEN_COLOUR = "#2b83ba"    # the snowflake of a frozen part: used, not trained
