"""Guidance on an interval of noise levels (diffusion/guidance.py: guidance_at): inside the band
the guided prediction is classifier-free guidance, outside it the conditional prediction alone,
in one model pass."""

import pytest
import torch

from common.errors import ConfigError
from diffusion import generate, load_pipeline, make_sampler
from diffusion.guidance import check_interval, guidance_at
from tests import fixed_checkpoints


def test_the_scale_applies_inside_the_interval_only():
    assert guidance_at(3.0, 0.7, (0.5, 0.9)) == 3.0
    assert guidance_at(3.0, 0.5, (0.5, 0.9)) == 3.0 and guidance_at(3.0, 0.9, (0.5, 0.9)) == 3.0
    assert guidance_at(3.0, 0.3, (0.5, 0.9)) == 1.0 and guidance_at(3.0, 0.95, (0.5, 0.9)) == 1.0
    assert check_interval([0.2, 0.8]) == (0.2, 0.8)
    for bad in ([0.8, 0.2], [0.5], [-0.1, 0.5], [0.5, 1.5]):
        with pytest.raises(ConfigError, match="--guidance-interval"):
            check_interval(bad)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("interval")
    return load_pipeline(fixed_checkpoints.text_checkpoint(root / "text.pt", root / "cache"))


def draw(pipe, interval, guidance=3.0, calls=None):
    scheduler, eta = make_sampler(pipe.scheduler, "ddim", 10)   # t = 900, 800, ..., 0
    if calls is not None:
        hook = pipe.unet.register_forward_hook(lambda module, args, out: calls.append(len(out)))
    try:
        return generate(pipe, ["a photo of a man with glasses"] * 2, [0, 1], guidance, scheduler,
                        eta=eta, guidance_interval=interval).images
    finally:
        if calls is not None:
            hook.remove()


def test_outside_the_interval_the_model_is_the_conditional_one_and_inside_it_is_cfg(pipe):
    everywhere = draw(pipe, (0.0, 1.0))
    assert torch.equal(everywhere, draw(pipe, (0.0, 1.0), calls=[]))
    # level (t + 1) / T >= 0.001 at every step: (0, 0) guides nowhere, as guidance 1 does
    assert torch.equal(draw(pipe, (0.0, 0.0)), draw(pipe, (0.0, 1.0), guidance=1.0))
    calls = []
    partial = draw(pipe, (0.5, 1.0), calls=calls)
    assert calls == [4] * 5 + [2] * 5        # 2B rows (cond, uncond) at t >= 499, then B rows
    assert not torch.equal(partial, everywhere)
    assert not torch.equal(partial, draw(pipe, (0.0, 1.0), guidance=1.0))
