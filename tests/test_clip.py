"""Stage 3: the tokenizer, the text encoder's padding mask, the CLIP loss against closed forms,
the evaluation measures on hand-checked cases, and a short train_clip.py run."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from data.captions import nameable_attributes
from models.clip import CLIP, ImageHead, TextEncoder, clip_loss
from models.clip_eval import retrieval_accuracy
from models.tokenizer import SPECIAL_TOKENS, Tokenizer, split_words
from tests.conftest import run

CAPTIONS = ["a photo of a smiling man with glasses", "a woman with blond hair, wearing a hat",
            "the face of a bald-headed man"]


# ---- Tokenizer [P14] -----------------------------------------------------------------------

def test_words_are_lower_cased_and_punctuation_is_split_off():
    assert split_words("A Bald-headed man, wearing a HAT.") == \
        ["a", "bald", "-", "headed", "man", ",", "wearing", "a", "hat", "."]


def test_tokenizer_round_trip_special_tokens_and_padding():
    tokenizer = Tokenizer.build(CAPTIONS, margin=2)
    assert tokenizer.vocabulary[:4] == SPECIAL_TOKENS
    longest = max(len(split_words(c)) for c in CAPTIONS)
    assert tokenizer.max_length == longest + 2 + 2
    ids, mask = tokenizer(CAPTIONS)
    assert ids.shape == mask.shape == (3, longest + 2)  # padded to the batch's longest caption
    for row, text in enumerate(CAPTIONS):
        n = len(split_words(text)) + 2
        assert ids[row, 0] == tokenizer.bos_id and ids[row, n - 1] == tokenizer.eos_id
        assert mask[row, :n].all() and not mask[row, n:].any()
        assert (ids[row, n:] == tokenizer.pad_id).all()
        assert tokenizer.decode(ids[row]) == " ".join(split_words(text))  # round trip
    again = Tokenizer.from_state_dict(tokenizer.state_dict())
    assert torch.equal(again(CAPTIONS)[0], ids)


def test_unknown_words_are_named_in_a_warning_and_become_unk(capsys):
    tokenizer = Tokenizer.build(CAPTIONS)
    ids = tokenizer.encode("a smiling astronaut with purple glasses")
    err = capsys.readouterr().err
    assert "'astronaut'" in err and "'purple'" in err and "'smiling'" not in err
    assert ids.count(tokenizer.unk_id) == 2
    assert tokenizer.decode(ids) == "a smiling <unk> with <unk> glasses"
    tokenizer.encode("an astronaut")  # each unknown word is reported once
    assert "'astronaut'" not in capsys.readouterr().err


def test_a_too_long_prompt_is_cut_with_a_warning(capsys):
    tokenizer = Tokenizer.build(CAPTIONS, margin=0)
    ids = tokenizer.encode(" ".join(["man"] * 50))
    assert len(ids) == tokenizer.max_length and ids[-1] == tokenizer.eos_id
    assert "only the first" in capsys.readouterr().err


# ---- Text encoder [P14] --------------------------------------------------------------------

def test_padding_does_not_change_the_outputs_at_real_positions():
    torch.manual_seed(0)
    tokenizer = Tokenizer.build(CAPTIONS, margin=6)
    encoder = TextEncoder(len(tokenizer), tokenizer.max_length, width=32, num_layers=2,
                          num_heads=4).eval()
    ids, mask = tokenizer(CAPTIONS)  # (3, L): padded to the longest caption
    reference = encoder(ids, mask)
    L = ids.shape[1]
    # padded further to all max_length positions, with the pad token or with other tokens:
    # the same outputs at the real positions
    extra = tokenizer.max_length - L
    longer_ids = F.pad(ids, (0, extra), value=tokenizer.pad_id)
    longer_mask = F.pad(mask, (0, extra))
    scrambled = torch.where(longer_mask, longer_ids, torch.randint(4, len(tokenizer), longer_ids.shape))
    for other_ids in (longer_ids, scrambled):
        other = encoder(other_ids, longer_mask)
        assert torch.allclose(other.hidden[:, :L][mask], reference.hidden[mask], atol=1e-6)
        assert torch.allclose(other.pooled, reference.pooled, atol=1e-6)
    # and the mask is what does it: without it, the padding leaks into the real positions
    unmasked = encoder(scrambled, torch.ones_like(longer_mask))
    assert not torch.allclose(unmasked.hidden[:, :L][mask], reference.hidden[mask], atol=1e-3)
    # pooled = mean of the hidden states over the real tokens
    expected = torch.stack([reference.hidden[b][mask[b]].mean(0) for b in range(len(CAPTIONS))])
    assert torch.allclose(reference.pooled, expected, atol=1e-6)


def test_image_head_maps_latents_to_one_vector():
    head = ImageHead(latent_channels=3, base_channels=32, channel_mult=(1, 2, 4), width=48)
    assert head(torch.randn(5, 3, 16, 16)).shape == (5, 48)


# ---- The contrastive loss [P15] ------------------------------------------------------------

def test_identical_embeddings_give_log_n():
    for n in (2, 8, 64):
        logits = torch.full((n, n), 3.7)  # every image equally similar to every caption
        assert clip_loss(logits).item() == pytest.approx(math.log(n), abs=1e-6)


def test_loss_is_symmetric_and_matches_the_cross_entropy_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(6, 6) * 3
    assert clip_loss(logits).item() == pytest.approx(clip_loss(logits.T).item(), abs=1e-6)
    rows = -(logits.diagonal() - logits.logsumexp(dim=1)).mean()   # -log softmax over captions
    cols = -(logits.diagonal() - logits.logsumexp(dim=0)).mean()   # -log softmax over images
    assert clip_loss(logits).item() == pytest.approx(((rows + cols) / 2).item(), abs=1e-6)


def test_aligned_embeddings_at_the_maximal_temperature_give_a_loss_near_zero():
    n = 16
    tokenizer = Tokenizer.build(CAPTIONS)
    model = CLIP(TextEncoder(len(tokenizer), tokenizer.max_length, width=32, num_layers=1),
                 ImageHead(3, 32, (1,), width=32), embed_dim=n)
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-6)  # CLIP's initial value
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    model.clamp_logit_scale_()                                          # after an optimizer step
    assert model.scale().item() == pytest.approx(100.0)                # clamped at 100
    vectors = torch.eye(n)                                              # pair i: e_i and e_i
    logits = model.scale() * vectors @ vectors.T
    # closed form: log(1 + (n - 1) e^-100), about 1.4e-42
    assert clip_loss(logits).item() == pytest.approx(math.log1p((n - 1) * math.exp(-100)), abs=1e-12)
    assert clip_loss(logits).item() < 1e-6


# ---- Evaluation measures -------------------------------------------------------------------

def test_retrieval_counts_a_caption_of_the_same_feature_set_as_right():
    e = torch.eye(4)
    images = e                          # image i at e_i
    texts = e[[1, 0, 2, 3]].clone()     # caption 0 sits where image 1 is, caption 1 where image 0
    texts[3] = F.normalize(e[3] + 2 * e[2], dim=0)  # caption 3 is nearer image 2 than image 3
    keys = ["man", "man", "woman", "bald"]   # images 0 and 1 share their feature set
    result = retrieval_accuracy(images, texts, keys, batch_size=4, ks=(1, 2))
    # image to text: 0 -> caption 1 (same set: right), 1 -> caption 0 (right), 2 -> caption 2
    # (right; caption 3 scores 2/sqrt 5 < 1), 3 -> caption 3 (right): 4/4
    assert result["image_to_text_top1"] == 1.0
    # text to image: captions 0, 1, 2 right; caption 3 -> image 2 first (wrong), image 3 second
    assert result["text_to_image_top1"] == 0.75 and result["text_to_image_top2"] == 1.0
    assert result["chance_top1"] == pytest.approx((2 / 4 + 2 / 4 + 1 / 4 + 1 / 4) / 4)


def test_zero_shot_asks_about_every_attribute_a_caption_can_name():
    from data.synthetic import SYNTHETIC_ATTRIBUTES
    assert nameable_attributes(list(SYNTHETIC_ATTRIBUTES)) == list(SYNTHETIC_ATTRIBUTES)
    assert nameable_attributes(["Male", "Attractive", "Blurry", "No_Beard"]) == \
        ["Male", "Attractive", "Blurry", "No_Beard"]


# ---- train_clip.py end to end --------------------------------------------------------------

def test_a_short_run_lifts_zero_shot_accuracy_above_chance(vae_run, tmp_path):
    out = tmp_path / "clip"
    result = run(["train_clip.py", "--preset", "cpu", "--vae", str(vae_run / "checkpoint.pt"),
                  "--steps", "200", "--batch-size", "64", "--lr", "2e-3", "--warmup-steps", "20",
                  "--text-width", "64", "--text-layers", "2", "--head-channels", "32",
                  "--embed-dim", "64", "--eval-every", "200", "--eval-images", "128",
                  "--device", "cpu", "--out", str(out)])
    assert "zero-shot attribute accuracy" in result.stdout
    report = json.loads((out / "eval.json").read_text())
    balanced = [r["balanced_accuracy"] for r in report["zero_shot"].values()]
    assert len(balanced) == 15
    # chance is 0.5 on every attribute (120 held-out images: the mean's noise is about +-0.02);
    # this run reaches about 0.76
    assert sum(balanced) / len(balanced) > 0.65, report["zero_shot"]
    # chance top-1 is about 0.02; this run reaches about 0.37
    assert report["retrieval"]["image_to_text_top1"] > 5 * report["retrieval"]["chance_top1"]
    for name in ("similarity.png", "zero_shot.png", "loss.png", "checkpoint.pt"):
        assert (out / name).is_file()

    from models.clip import load_clip
    loaded = load_clip(out / "checkpoint.pt")  # self-contained: tokenizer and autoencoder inside
    images = torch.zeros(2, 3, 32, 32)
    from models.clip import encode_images
    vectors = encode_images(loaded.clip, loaded.vae, images, loaded.scale_factor)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_train_clip_names_a_missing_latent_cache(vae_run, tmp_path):
    vae_copy = tmp_path / "vae"
    vae_copy.mkdir()
    (vae_copy / "checkpoint.pt").write_bytes((vae_run / "checkpoint.pt").read_bytes())
    result = run(["train_clip.py", "--vae", str(vae_copy / "checkpoint.pt"), "--device", "cpu",
                  "--out", str(tmp_path / "clip")], check=False)
    assert result.returncode == 2
    assert f"latent cache {vae_copy}/latents_train.pt: no such file" in result.stderr
    assert "Traceback" not in result.stderr


# ---- a held-out split smaller than the evaluation (issue 27 #1) ----------------------------

SMALL_CLIP = ["--preset", "cpu", "--steps", "1", "--batch-size", "16", "--text-width", "32",
              "--text-layers", "1", "--embed-dim", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def vae_20_held_out(vae_run, tmp_path_factory):
    """The session autoencoder with 20 held-out latents, as a dataset of 200 images has."""
    import shutil

    folder = tmp_path_factory.mktemp("vae_20_held_out")
    for name in ("checkpoint.pt", "latents_train.pt"):
        shutil.copy(vae_run / name, folder / name)
    state = torch.load(vae_run / "latents_val.pt", weights_only=True)
    state.update({key: state[key][:20] for key in ("mean", "std", "attributes")})
    torch.save(state, folder / "latents_val.pt")
    return folder / "checkpoint.pt"


def run_clip_main(argv: list[str], capsys) -> str:
    """`python train_clip.py argv` in this process, finishing with exit status 0: its stdout."""
    import importlib
    import sys

    from common.errors import main_guard
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["train_clip.py", *argv])
        capsys.readouterr()
        main_guard(importlib.import_module("train_clip").main)
    return capsys.readouterr().out


def test_a_held_out_split_smaller_than_the_retrieval_batch_is_evaluated_in_smaller_batches(
        vae_20_held_out, capsys, tmp_path):
    """20 held-out images against the retrieval batch of 64: the run finishes, says so, and
    measures retrieval within one batch of 20 (it crashed at its final evaluation, before
    saving: "retrieval needs at least 64 pairs, got 20")."""
    out = tmp_path / "clip"
    stdout = run_clip_main([*SMALL_CLIP, "--vae", str(vae_20_held_out), "--out", str(out)],
                           capsys)
    assert ("note: the held-out split has 20 pairs, fewer than --retrieval-batch 64: "
            "retrieval is measured within batches of 20") in stdout
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1
    assert json.loads((out / "eval.json").read_text())["retrieval"]["pairs"] == 20


def test_the_final_checkpoint_is_saved_before_an_evaluation_that_fails(vae_20_held_out, capsys,
                                                                        monkeypatch, tmp_path):
    import train_clip

    def failing(*args, **kwargs):
        raise RuntimeError("the evaluation failed")

    monkeypatch.setattr(train_clip, "evaluate", failing)
    out = tmp_path / "clip"
    with pytest.raises(RuntimeError, match="the evaluation failed"):
        run_clip_main([*SMALL_CLIP, "--vae", str(vae_20_held_out), "--out", str(out)], capsys)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1  # the training kept


def test_captioned_data_without_attributes_lists_only_the_figures_it_wrote(vae_run, capsys,
                                                                          tmp_path):
    """issue 28: with captions but no attributes there is no zero-shot test, and the final line
    no longer names a zero_shot.png that was never written."""
    import shutil
    shutil.copy(vae_run / "checkpoint.pt", tmp_path / "checkpoint.pt")
    for split in ("train", "val"):
        state = torch.load(vae_run / f"latents_{split}.pt", weights_only=True)
        count = len(state["mean"])
        state.update(attributes=None, attribute_names=None,
                     texts=[f"a {('red', 'blue')[i % 2]} circle" for i in range(count)])
        torch.save(state, tmp_path / f"latents_{split}.pt")
    out = tmp_path / "clip"
    stdout = run_clip_main([*SMALL_CLIP, "--vae", str(tmp_path / "checkpoint.pt"), "--out",
                            str(out)], capsys)
    done = [line for line in stdout.splitlines() if line.startswith("done:")][0]
    assert "similarity.png" in done and "zero_shot.png" not in done
    assert not (out / "zero_shot.png").exists() and (out / "similarity.png").exists()
