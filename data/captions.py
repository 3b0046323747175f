"""Captions from face attributes: many different true sentences for one row of CelebA labels.

[P13] CelebA gives 40 binary attributes per image, not text. To train a text-to-image model, each
row becomes a caption drawn at random every time the image is seen, so the model learns the words
rather than one fixed sentence per image:

    a photo of a smiling man with glasses and black hair, wearing a hat
    a portrait of a young blonde woman with a fringe, wearing red lipstick
    a bald man with a moustache

A caption names a random subset of the present features, in random order, each by a random
phrase of VOCABULARY, inside a random template. It never names an absent one: negative attributes
are simply not mentioned. Two attributes need care:

- No_Beard is negated (1 means no beard). A beard is the feature "Beard", present when No_Beard is
  False; a man with no facial hair at all may be called "clean-shaven" (the No_Beard phrase).
- Male picks the noun: a man word, a woman word ("Female", when Male is False), or "person".

Phrases of different features never contain one another as whole words, so PHRASES (feature ->
all its phrases) lets a test check any caption for words of absent features. full_caption names
every present feature, deterministically, for zero-shot evaluation with a CLIP model.
"""

import random
from collections.abc import Sequence

# How each feature may be named: adjectives go before the noun ("a smiling man"), "with" phrases
# after it ("a man with a smile"). The first "with" phrase (else the first adjective) is the one
# full_caption uses.
#   feature                adjectives                       "with ..."
VOCABULARY = {
    "Smiling":             (["smiling", "grinning"],        ["a smile", "a big smile", "a grin"]),
    "Eyeglasses":          (["bespectacled"],               ["glasses", "eyeglasses", "spectacles"]),
    "Black_Hair":          (["black-haired"],               ["black hair", "jet-black hair"]),
    "Blond_Hair":          (["blond", "blonde"],            ["blond hair", "blonde hair", "fair hair"]),
    "Brown_Hair":          (["brown-haired", "brunette"],   ["brown hair", "brunette hair"]),
    "Gray_Hair":           (["gray-haired", "grey-haired"], ["gray hair", "grey hair", "silver hair"]),
    "Bald":                (["bald", "bald-headed"],        ["a bald head", "a shiny bald head"]),
    "Bangs":               ([],                             ["bangs", "a fringe"]),
    "Beard":               (["bearded"],                    ["a beard", "a full beard", "facial hair"]),
    "No_Beard":            (["clean-shaven"],               []),
    "Mustache":            (["mustached"],                  ["a mustache", "a moustache"]),
    "Goatee":              ([],                             ["a goatee"]),
    "Sideburns":           ([],                             ["sideburns"]),
    "5_o_Clock_Shadow":    (["stubbly"],                    ["stubble", "a five o'clock shadow"]),
    "Wearing_Hat":         ([],                             ["a hat", "a cap"]),
    "Wearing_Lipstick":    ([],                             ["lipstick", "red lipstick", "red lips"]),
    "Heavy_Makeup":        ([],                             ["heavy makeup", "a lot of makeup"]),
    "Wearing_Earrings":    ([],                             ["earrings"]),
    "Wearing_Necklace":    ([],                             ["a necklace"]),
    "Wearing_Necktie":     ([],                             ["a necktie", "a tie"]),
    "Pale_Skin":           (["pale", "pale-skinned"],       ["pale skin", "fair skin", "a pale complexion"]),
    "Oval_Face":           (["oval-faced"],                 ["an oval face"]),
    "Young":               (["young", "youthful"],          []),
    "Attractive":          (["attractive", "good-looking"], []),
    "Chubby":              (["chubby"],                     ["a chubby face"]),
    "Double_Chin":         ([],                             ["a double chin"]),
    "High_Cheekbones":     ([],                             ["high cheekbones"]),
    "Rosy_Cheeks":         ([],                             ["rosy cheeks", "pink cheeks"]),
    "Wavy_Hair":           (["wavy-haired"],                ["wavy hair", "curly hair"]),
    "Straight_Hair":       ([],                             ["straight hair", "sleek hair"]),
    "Receding_Hairline":   ([],                             ["a receding hairline"]),
    "Bushy_Eyebrows":      ([],                             ["bushy eyebrows", "thick eyebrows"]),
    "Arched_Eyebrows":     ([],                             ["arched eyebrows", "arched brows"]),
    "Narrow_Eyes":         ([],                             ["narrow eyes"]),
    "Bags_Under_Eyes":     ([],                             ["bags under the eyes", "under-eye bags"]),
    "Big_Nose":            ([],                             ["a big nose", "a large nose"]),
    "Pointy_Nose":         ([],                             ["a pointy nose", "a pointed nose"]),
    "Big_Lips":            ([],                             ["big lips", "full lips"]),
    "Mouth_Slightly_Open": ([],                             ["a slightly open mouth", "parted lips"]),
}
WEARING = {  # things one wears may also go in a "wearing ..." clause: "a man wearing a hat"
    "Eyeglasses": ["glasses", "eyeglasses", "spectacles"],
    "Wearing_Hat": ["a hat", "a cap"],
    "Wearing_Lipstick": ["lipstick", "red lipstick"],
    "Heavy_Makeup": ["heavy makeup", "a lot of makeup"],
    "Wearing_Earrings": ["earrings"],
    "Wearing_Necklace": ["a necklace"],
    "Wearing_Necktie": ["a necktie", "a tie"],
}
PHOTO_ADJECTIVES = {"Blurry": ["blurry", "out-of-focus"]}  # describe the photo, not the person
NOUNS = {
    "Male": ["man", "guy", "gentleman", "male person"],
    "Female": ["woman", "lady", "female person"],       # Male is False
    "Person": ["person"],                                # no Male column; may name anyone
}
PHOTO_NOUNS = ["photo", "picture", "portrait", "headshot", "close-up photo", "image"]
TEMPLATES = [  # {photo}: an article and a photo noun; {subject}: the person with their features
    "{photo} of {subject}",
    "{photo} showing {subject}",
    "{subject}",
    "the face of {subject}",
    "close-up of the face of {subject}",
]
FACIAL_HAIR = {"Beard", "Mustache", "Goatee", "Sideburns", "5_o_Clock_Shadow"}  # not clean-shaven

# Every phrase of every feature, nouns included: what a caption may say only of a present feature.
PHRASES = {
    **{feature: adjectives + phrases for feature, (adjectives, phrases) in VOCABULARY.items()},
    **PHOTO_ADJECTIVES,
    "Male": NOUNS["Male"],
    "Female": NOUNS["Female"],
}


def features(attributes: dict[str, bool]) -> list[str]:
    """The features a caption may name besides the noun, in table order (Blurry last).

    The positive attributes that have phrases; Beard when No_Beard is False; No_Beard
    ("clean-shaven") only for a man with no facial hair at all.
    """
    present = {name for name, value in attributes.items() if value}
    if "No_Beard" in attributes and not attributes["No_Beard"]:
        present.add("Beard")
    if "Male" not in present or present & FACIAL_HAIR:
        present.discard("No_Beard")
    return [name for name in [*VOCABULARY, *PHOTO_ADJECTIVES] if name in present]


def _noun_key(attributes: dict[str, bool]) -> str:
    """Which NOUNS list names the person: from Male, or Person when the row has no Male column."""
    if "Male" not in attributes:
        return "Person"
    return "Male" if attributes["Male"] else "Female"


def _with_article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _join(phrases: list[str]) -> str:
    """["a"] -> "a", ["a", "b"] -> "a and b", ["a", "b", "c"] -> "a, b and c"."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _sentence(template: str, photo_words: list[str], person_words: list[str],
              clauses: list[str]) -> str:
    """Fill a template: "{photo} of {subject}" with ["blurry", "photo"], ["young", "man"] and
    ["with glasses", "wearing a hat"]: "a blurry photo of a young man with glasses, wearing a hat".
    """
    subject = _with_article(" ".join(person_words))
    if clauses:
        subject += " " + ", ".join(clauses)
    return template.format(photo=_with_article(" ".join(photo_words)), subject=subject)


def caption(attributes: dict[str, bool], rng: random.Random) -> str:
    """A random caption naming a random subset of the present features (never an absent one)."""
    present = features(attributes)
    chosen = rng.sample(present, rng.randint(min(1, len(present)), len(present)))  # random order
    template = rng.choice(TEMPLATES)
    noun_key = _noun_key(attributes) if rng.random() < 0.9 else "Person"

    photo_adjectives, adjectives, with_phrases, wearing_phrases = [], [], [], []
    for feature in chosen:
        if feature in PHOTO_ADJECTIVES:  # only a template that mentions the photo can say "blurry"
            if "{photo}" in template:
                photo_adjectives.append(rng.choice(PHOTO_ADJECTIVES[feature]))
            continue
        # One of the ways this feature can be said (adjective, with, wearing), then one phrase.
        ways = [(adjectives, VOCABULARY[feature][0]), (with_phrases, VOCABULARY[feature][1]),
                (wearing_phrases, WEARING.get(feature, []))]
        target, phrases = rng.choice([(target, phrases) for target, phrases in ways if phrases])
        target.append(rng.choice(phrases))

    clauses = []
    if with_phrases:
        clauses.append("with " + _join(with_phrases))
    if wearing_phrases:
        clauses.append("wearing " + _join(wearing_phrases))
    rng.shuffle(clauses)
    photo_words = photo_adjectives + [rng.choice(PHOTO_NOUNS)]
    return _sentence(template, photo_words, adjectives + [rng.choice(NOUNS[noun_key])], clauses)


def full_caption(attributes: dict[str, bool]) -> str:
    """The one caption that names every present feature, by its first phrase, in table order."""
    photo_adjectives, adjectives, with_phrases = [], [], []
    for feature in features(attributes):
        if feature in PHOTO_ADJECTIVES:
            photo_adjectives.append(PHOTO_ADJECTIVES[feature][0])
        elif VOCABULARY[feature][1]:
            with_phrases.append(VOCABULARY[feature][1][0])
        else:
            adjectives.append(VOCABULARY[feature][0][0])
    clauses = ["with " + _join(with_phrases)] if with_phrases else []
    return _sentence(TEMPLATES[0], photo_adjectives + [PHOTO_NOUNS[0]],
                     adjectives + [NOUNS[_noun_key(attributes)][0]], clauses)


def nameable_attributes(names: list[str]) -> list[str]:
    """The attributes whose presence changes a full caption (others cannot be asked about)."""
    base = {name: False for name in names}
    return [name for name in names
            if full_caption({**base, name: True}) != full_caption({**base, name: False})]


# ---- Prompts from attribute requirements (evaluate.py) -----------------------------------------
# A requirement maps attributes to the value an image must show: {"Male": False, "Smiling": True}
# is "a photo of a woman with a smile" (full_caption), met when the image is not Male and Smiling.

def single_requirements(names: list[str]) -> list[dict[str, bool]]:
    """One requirement per nameable attribute; No_Beard is asked as "a beard" (No_Beard False),
    and Male both ways ("a man", "a woman")."""
    singles = [{name: name != "No_Beard"} for name in nameable_attributes(names)]
    if "Male" in names:
        singles.append({"Male": False})
    return singles


def combined_requirements(rows, names: list[str], k: int, count: int,
                          rng: random.Random) -> list[dict[str, bool]]:
    """`count` distinct sets of k features that occur together in real attribute rows (a tensor
    (N, A) of values, > 0 = present), so that each is possible."""
    nameable = set(nameable_attributes(names))
    found, tries = [], 0
    while len(found) < count and tries < 100 * count:
        tries += 1
        row = {n: v > 0 for n, v in zip(names, rows[rng.randrange(len(rows))].tolist())}
        options = [(n, v) for n, v in row.items()
                   if n in nameable and (v or n == "Male") and n != "No_Beard"]
        if "No_Beard" in row and not row["No_Beard"]:
            options.append(("No_Beard", False))                      # "with a beard"
        if len(options) >= k:
            chosen = dict(sorted(rng.sample(options, k), key=lambda o: names.index(o[0])))
            if chosen not in found:
                found.append(chosen)
    return found


def step_rng(seed: int, step: int, rank: int = 0) -> random.Random:
    """The caption generator of one training step: a function of (seed, step, rank) alone, so a
    resumed run draws the same captions as one that never stopped."""
    return random.Random(seed * 1_000_003 + step * 131 + rank)


def captions_for(names: list[str] | None, rows, texts: list[str] | None, indices: list[int],
                 rng: random.Random) -> list[str]:
    """[P13] The captions of a batch: a fresh random caption of each attribute row (rows (N, A),
    names their columns), or the dataset's own texts when it has no attributes."""
    if rows is not None:
        return [caption_row(names, rows[i].tolist(), rng) for i in indices]
    return [texts[i] for i in indices]


def caption_row(names: list[str], values: Sequence, rng: random.Random) -> str:
    """caption() for one row of a table: values are 1/-1, 1/0 or booleans aligned with names.
    Names other than Male, Blurry and those of VOCABULARY are ignored."""
    return caption({name: float(value) > 0 for name, value in zip(names, values)}, rng)


# The prompts of train_ldm.py's validation grids (one column each) and of docs/figures.
VALIDATION_PROMPTS = [
    "a photo of a smiling woman with blond hair",
    "a photo of a man with black hair and a beard",
    "a photo of a bald man with glasses",
    "a photo of a woman with brown hair, wearing a hat",
    "a photo of a man with gray hair and a mustache",
    "a photo of a woman with black hair, bangs and lipstick",
    "a portrait of a pale woman with glasses",
    "a picture of a smiling man wearing a hat",
]
