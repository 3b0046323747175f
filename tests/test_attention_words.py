"""docs/figures/attention_words.py, page 16's one-layer attention figure: its per-layer maps are
softmax weights (each position's weights over the tokens sum to 1), their mean over the layers
is what AttentionRecorder averages, and the script draws the layer it says it draws."""

import sys

import pytest
import torch
import torch.nn.functional as F

from docs.figures import attention_words
from docs.figures.common import load_text_model, sample_text_to_image
from fixed_checkpoints import text_checkpoint
from models.attention import AttentionRecorder

PROMPT = "a photo of a bald man with glasses and a beard"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attention_words")
    return str(text_checkpoint(folder / "ldm.pt", folder / "cache"))


def test_per_layer_maps_are_softmax_weights_and_average_to_the_recorders_maps(ckpt):
    pipe = load_text_model(ckpt)
    _, h, w = pipe.sample_shape                                      # 8x8 latents
    per_layer = attention_words.PerLayer(pipe.unet, 2)
    sample_text_to_image(pipe, [PROMPT] * 2, [0, 1], 3.0, steps=4, recorder=per_layer)
    assert per_layer.count == 4 and len(per_layer.names) == len(per_layer.layers) >= 3
    maps = [per_layer.maps(i) for i in range(len(per_layer.names))]
    for m in maps:
        assert m.shape == (2, len(pipe.text.tokenizer.tokens(PROMPT)), 4, 4)  # level 1: 8 / 2
        assert torch.allclose(m.sum(1), torch.ones(2, 4, 4), atol=1e-5)
    for layer in per_layer.layers:
        layer.record, layer.last_weights = False, None

    recorder = AttentionRecorder(pipe.unet, 2, (h, w))
    sample_text_to_image(pipe, [PROMPT] * 2, [0, 1], 3.0, steps=4, recorder=recorder)
    recorder.close()
    resized = [F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False) for m in maps]
    assert torch.allclose(torch.stack(resized).mean(0), recorder.maps(), atol=1e-5)


def test_the_script_draws_the_layer_it_names(ckpt, tmp_path, monkeypatch, capsys):
    out = tmp_path / "words.png"
    monkeypatch.setattr(sys, "argv", ["attention_words", "--ckpt", ckpt, "--seeds", "2",
                                      "--out", str(out)])
    attention_words.main()
    printed = capsys.readouterr().out.splitlines()
    spreads = [float(line.split()[-1]) for line in printed if line.startswith("layer ")]
    chosen = int(next(line for line in printed if line.startswith("drawing layer")).split()[2])
    assert len(spreads) >= 3 and chosen == max(range(len(spreads)), key=spreads.__getitem__)
    assert out.stat().st_size > 10_000

    monkeypatch.setattr(sys, "argv", ["attention_words", "--ckpt", ckpt, "--layer", "2",
                                      "--out", str(out)])
    attention_words.main()
    assert "drawing layer 2 " in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--words", "bald", "glasses", "hat"], "--words hat: not tokens of"),
    (["--layer", "9"], "--layer 9: expected auto or 0.."),
])
def test_bad_words_and_layers_are_refused_in_one_line(ckpt, tmp_path, monkeypatch, flags, message):
    monkeypatch.setattr(sys, "argv", ["attention_words", "--ckpt", ckpt,
                                      "--out", str(tmp_path / "x.png"), *flags])
    with pytest.raises(SystemExit, match=message):
        attention_words.main()
    assert not (tmp_path / "x.png").exists()
