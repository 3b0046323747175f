"""Captions never name what is absent, vary a lot, and full_caption names everything present."""

import random
import re
from functools import cache

from data.captions import PHRASES, VOCABULARY, caption, caption_row, full_caption
from data.celeba import CELEBA_ATTRIBUTES
from data.synthetic import sample_attributes

FACIAL_HAIR = ["Mustache", "Goatee", "Sideburns", "5_o_Clock_Shadow"]


def allowed_features(attributes: dict[str, bool]) -> set[str]:
    """The PHRASES keys a caption of this row may use, worked out here from the labels' meaning."""
    allowed = {name for name, value in attributes.items() if value}
    if "Male" in attributes and not attributes["Male"]:
        allowed.add("Female")
    if "No_Beard" in attributes and not attributes["No_Beard"]:
        allowed.add("Beard")
    clean_shaven = (attributes.get("Male") and attributes.get("No_Beard")
                    and not any(attributes.get(name) for name in FACIAL_HAIR))
    if not clean_shaven:
        allowed.discard("No_Beard")
    return allowed


@cache
def whole_words(phrase: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)")


def says(text: str, phrase: str) -> bool:
    """Whole-word match: "man" is not said by "woman", nor "glasses" by "eyeglasses"."""
    return whole_words(phrase).search(text) is not None


def random_rows(n: int, rng: random.Random):
    """Half synthetic attribute sets, half random CelebA rows (sometimes without a Male column)."""
    for i in range(n):
        if i % 2:
            yield sample_attributes(rng)
        else:
            names = CELEBA_ATTRIBUTES if i % 10 else [a for a in CELEBA_ATTRIBUTES if a != "Male"]
            yield {name: rng.random() < 0.3 for name in names}


def test_every_celeba_attribute_has_phrases():
    for name in CELEBA_ATTRIBUTES:
        assert name in ("Male", "No_Beard") or PHRASES.get(name), name
    assert PHRASES["Beard"] and PHRASES["No_Beard"] and PHRASES["Male"] and PHRASES["Female"]


def test_phrases_of_different_features_never_contain_each_other():
    for a, phrases_a in PHRASES.items():
        for b, phrases_b in PHRASES.items():
            if a != b:
                for pa in phrases_a:
                    assert not any(says(pa, pb) for pb in phrases_b), (a, pa, b)


def test_captions_never_name_an_absent_feature():
    rng = random.Random(0)
    for attributes in random_rows(2000, rng):
        forbidden = [(feature, phrase) for feature, phrases in PHRASES.items()
                     if feature not in allowed_features(attributes) for phrase in phrases]
        for text in [caption(attributes, rng) for _ in range(4)] + [full_caption(attributes)]:
            said = [(feature, phrase) for feature, phrase in forbidden if says(text, phrase)]
            assert not said, (text, said, attributes)


def test_captions_are_clean_lower_case_text():
    rng = random.Random(1)
    for attributes in random_rows(300, rng):
        text = caption(attributes, rng)
        assert re.fullmatch(r"[a-z][a-z0-9 ,'\-]*[a-z]", text), text
        assert "  " not in text and " ," not in text and ",," not in text, text


def test_one_row_gives_many_different_captions():
    attributes = {name: False for name in CELEBA_ATTRIBUTES} | {
        "Male": True, "Smiling": True, "Eyeglasses": True, "Black_Hair": True, "Wearing_Hat": True}
    attributes["No_Beard"] = False  # a beard
    rng = random.Random(2)
    texts = {caption(attributes, rng) for _ in range(100)}
    assert len(texts) >= 20


def test_full_caption_names_every_present_feature_and_is_deterministic():
    rng = random.Random(3)
    for attributes in random_rows(500, rng):
        text = full_caption(attributes)
        assert text == full_caption(dict(attributes))
        for feature in allowed_features(attributes) - {"Blurry"}:
            assert any(says(text, phrase) for phrase in PHRASES[feature]), (feature, text)
        if attributes.get("Blurry"):
            assert text.startswith("a blurry photo"), text


def test_caption_row_reads_any_value_convention():
    names = ["Male", "Eyeglasses", "Unknown_Column", "No_Beard"]
    for values in ([1, 1, 1, -1], [1, 1, 1, 0], [True, True, True, False]):
        text = caption_row(names, values, random.Random(4))
        assert not any(says(text, phrase) for phrase in PHRASES["Female"]), text
    assert full_caption({"Male": True, "Eyeglasses": True, "No_Beard": False}) == \
        "a photo of a man with glasses and a beard"
    assert full_caption({"Male": False, "Young": True}) == "a photo of a young woman"
    assert "clean-shaven" in full_caption({"Male": True, "No_Beard": True, "Mustache": False})
    assert "clean-shaven" not in full_caption({"Male": True, "No_Beard": True, "Mustache": True})
    assert set(VOCABULARY) <= set(PHRASES)
