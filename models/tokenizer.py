"""A word-level tokenizer: text -> a fixed-length sequence of token ids. [P14]

The video's point 14: text enters the model as a sequence of token embeddings, one per word,
not as one flat vector. Our captions use a few hundred words, so a vocabulary of whole words
built from the training captions is enough (CLIP itself uses byte-pair encoding with a
vocabulary of 49,152 entries, Radford et al. 2021; a word vocabulary is the same idea without
the merges).

    "A smiling man, wearing a hat"
      -> words   ["a", "smiling", "man", ",", "wearing", "a", "hat"]   lower-cased, punctuation split off
      -> ids     [<bos>, 7, 23, 11, 5, 31, 7, 40, <eos>, <pad>, <pad>, ...]   length max_length
      -> mask    [True x 9, False, False, ...]                          False = padding

Ids 0-3 are the special tokens <pad>, <bos>, <eos>, <unk>. A word outside the vocabulary becomes
<unk>, and the tokenizer says which words those were: a prompt is never silently changed.
"""

import re
from collections import Counter
from collections.abc import Iterable

import torch

from common.checkpoints import BOUND_NOTE, SIZE_BOUNDS, entries_problem
from common.errors import warn

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3
WORD = re.compile(r"\w+|[^\w\s]")      # a run of letters/digits/_, or one punctuation mark


def split_words(text: str) -> list[str]:
    """ "A bald-headed man, with a goatee." -> [a, bald, -, headed, man, ",", with, a, goatee, .]"""
    return WORD.findall(text.lower())


class Tokenizer:
    """Word <-> id, with padding to a fixed length. Build it with Tokenizer.build(captions)."""

    def __init__(self, vocabulary: list[str], max_length: int):
        if vocabulary[:len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with {SPECIAL_TOKENS}")
        if max_length < 3:
            raise ValueError(f"max_length {max_length}: expected at least 3 (<bos>, a word, <eos>)")
        self.vocabulary = list(vocabulary)
        self.ids = {word: i for i, word in enumerate(self.vocabulary)}
        self.max_length = max_length  # L, tokens per sequence including <bos> and <eos>
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = range(4)
        self._reported: set[str] = set()

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, margin: int = 8) -> "Tokenizer":
        """Every word seen at least min_count times, most frequent first. max_length fits the
        longest text plus <bos>, <eos> and `margin` extra words for users' longer prompts."""
        counts, longest = Counter(), 0
        for text in texts:
            words = split_words(text)
            counts.update(words)
            longest = max(longest, len(words))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(SPECIAL_TOKENS + words, max_length=longest + 2 + margin)

    def __len__(self) -> int:
        return len(self.vocabulary)

    @property
    def words(self) -> list[str]:
        """The words a prompt can use, in the vocabulary's order (most frequent in training
        first), without the special tokens."""
        return self.vocabulary[len(SPECIAL_TOKENS):]

    def unknown_words(self, text: str) -> list[str]:
        """The words of text that are not in the vocabulary, in order, each once."""
        return list(dict.fromkeys(w for w in split_words(text) if w not in self.ids))

    def tokens(self, text: str) -> list[str]:
        """The text as the text encoder reads it, one entry per position: <bos>, its words (cut
        at max_length), <eos>. Unknown words stay as they are written (they are read as <unk>)."""
        return [BOS] + split_words(text)[:self.max_length - 2] + [EOS]

    def encode(self, text: str, warn_unknown: bool = True) -> list[int]:
        """One text -> [<bos>, word ids..., <eos>], at most max_length ids (longer text is cut,
        with a warning). Unknown words become <unk> and are named in a warning (once per word)."""
        if warn_unknown:
            new = [w for w in self.unknown_words(text) if w not in self._reported]
            if new:
                self._reported.update(new)
                warn(f"not in the vocabulary, read as {UNK}: {', '.join(repr(w) for w in new)} "
                     f"(in the prompt {text!r})")
        words = split_words(text)
        if len(words) > self.max_length - 2 and warn_unknown:
            warn(f"the prompt {text!r} has {len(words)} words; only the first "
                 f"{self.max_length - 2} are used")
        return [self.ids.get(token, self.unk_id) for token in self.tokens(text)]

    def __call__(self, texts: list[str], warn_unknown: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of texts -> ids (B, L) int64 padded with <pad>, mask (B, L) bool, True = token.
        L is the batch's longest text (at most max_length): positions past it would be padding in
        every row, which the masked encoders ignore anyway, so they are not computed at all (the
        synthetic captions' batches are about 27 of 41 positions long)."""
        encoded = [self.encode(text, warn_unknown) for text in texts]
        ids = torch.full((len(texts), max(map(len, encoded), default=2)), self.pad_id,
                         dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, :len(tokens)] = torch.tensor(tokens)
        return ids, ids != self.pad_id

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Ids -> the words between <bos> and <eos>, joined by spaces (<unk> stays <unk>)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        words = [self.vocabulary[i] for i in ids if i not in (self.pad_id, self.bos_id)]
        return " ".join(words[:words.index(EOS)] if EOS in words else words)

    def state_dict(self) -> dict:
        """Plain lists and ints: saved inside checkpoints that torch.load(weights_only=True) reads."""
        return {"vocabulary": self.vocabulary, "max_length": self.max_length}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Tokenizer":
        return cls(state["vocabulary"], state["max_length"])


def tokenizer_problem(state, where: str) -> str | None:
    """What keeps a stored tokenizer (Tokenizer.state_dict) from being rebuilt, or None: a
    vocabulary of distinct words that starts with the special tokens, and max_length."""
    problem = entries_problem(state, {"max_length": int}, where)
    if problem:
        return problem
    if "vocabulary" not in state:
        return f"{where} has no 'vocabulary'"
    vocabulary, most = state["vocabulary"], SIZE_BOUNDS["vocabulary"][1]
    if (not isinstance(vocabulary, (list, tuple))
            or list(vocabulary[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS):
        return (f"{where} has vocabulary = {str(vocabulary)[:40]!r}: expected the words "
                f"{' '.join(SPECIAL_TOKENS)} first")
    if len(vocabulary) > most:
        return f"{where} has {len(vocabulary)} words: expected at most {most} ({BOUND_NOTE})"
    if not all(isinstance(word, str) for word in vocabulary) or len(set(vocabulary)) < len(vocabulary):
        return f"{where} has a vocabulary that is not a list of distinct words"
    return None
