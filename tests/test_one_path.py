"""One generation path: the same (prompt or no prompt, seed, sampler settings) gives the same
image, bit for bit, through sample.py, evaluate.py's generation and the explorer, for a pixel
model and for a text model. DDIM at eta 1 draws step noise too, so the rule for that noise is
checked along with the rule for x_T (image j from seed j)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.images import png_bytes
from tests import fixed_checkpoints
from tests.conftest import run


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_path")
    return {"pixel": fixed_checkpoints.pixel_checkpoint(root / "pixel.pt", root / "cache"),
            "text": fixed_checkpoints.text_checkpoint(root / "text.pt", root / "cache")}


def pixels(png: bytes | Path) -> np.ndarray:
    """The 8-bit pixels of a PNG file or of PNG bytes."""
    import io
    return np.asarray(Image.open(io.BytesIO(png) if isinstance(png, bytes) else png))


@pytest.mark.parametrize("kind, prompt", [("pixel", ""), ("text", "a photo of a man with glasses"),
                                          ("text", "")])
def test_sample_evaluate_and_the_explorer_draw_the_same_images(checkpoints, kind, prompt,
                                                               tmp_path):
    import evaluate
    from diffusion.pipeline import load_pipeline
    from diffusion.sampling import make_sampler
    from explorer.session import Explorer, Settings

    ckpt, n, steps, eta, guidance = checkpoints[kind], 3, 6, 1.0, 2.0
    run(["sample.py", "--ckpt", str(ckpt), "--n", str(n), "--seed", "0", "--sampler", "ddim",
         "--steps", str(steps), "--eta", str(eta), "--guidance", str(guidance), "--device", "cpu",
         *(["--prompt", prompt] if prompt else []), "--out", str(tmp_path / "grid.png"),
         "--out-dir", str(tmp_path / "images")])
    from_sample_py = [pixels(f) for f in sorted((tmp_path / "images").glob("*.png"))]

    pipe = load_pipeline(ckpt)
    scheduler, eta_used = make_sampler(pipe.scheduler, "ddim", steps, eta=eta)
    from_evaluate = evaluate.generate_images(pipe, [prompt], n, guidance, scheduler, eta_used,
                                             batch_size=8, desc="test")[prompt]

    result = Explorer(ckpt).generate(Settings(prompt=prompt, sampler="ddim", steps=steps,
                                              guidance=guidance, eta=eta, seed=0, n=n))

    assert len(from_sample_py) == n
    for j in range(n):
        assert np.array_equal(pixels(png_bytes(from_evaluate[j])), from_sample_py[j]), j
        assert np.array_equal(pixels(png_bytes(result.images[j])), from_sample_py[j]), j
    assert result.seeds == [0, 1, 2]
    assert not np.array_equal(from_sample_py[0], from_sample_py[1])  # one seed per image


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_a_flow_checkpoint_draws_the_same_images_in_sample_py_and_the_explorer(tmp_path, solver):
    """A flow-matching checkpoint (its config says objective flow) goes through the same path:
    sample.py --sampler euler/heun and the explorer give the same pixels; DDPM's samplers are
    refused for it, in one line."""
    from explorer.session import Explorer, Settings

    ckpt = fixed_checkpoints.pixel_checkpoint(tmp_path / "flow.pt", tmp_path / "cache",
                                              objective="flow")
    run(["sample.py", "--ckpt", str(ckpt), "--n", "2", "--seed", "4", "--sampler", solver,
         "--steps", "5", "--device", "cpu", "--out", str(tmp_path / "grid.png"),
         "--out-dir", str(tmp_path / "images"), "--trajectory"])
    from_sample_py = [pixels(f) for f in sorted((tmp_path / "images").glob("*.png"))]
    explorer = Explorer(ckpt)
    result = explorer.generate(Settings(sampler=solver, steps=5, seed=4, n=2))
    assert explorer.samplers == ("euler", "heun")
    assert result.steps == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])  # every step kept
    for j in range(2):
        assert np.array_equal(pixels(png_bytes(result.images[j])), from_sample_py[j]), j
    assert (tmp_path / "grid_trajectory.png").exists()
    refused = run(["sample.py", "--ckpt", str(ckpt), "--sampler", "ddim", "--device", "cpu",
                   "--out", str(tmp_path / "no.png")], check=False)
    assert refused.returncode == 2
    assert "--sampler ddim: a flow-matching model samples with euler or heun" in refused.stderr
