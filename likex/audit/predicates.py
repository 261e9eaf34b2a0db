"""The predicate space the audits search: a token's text contains a substring of 1-4
characters, starts or ends with one (each case-sensitive or not), or belongs to a character
class; and an index of how many vocabulary tokens each predicate selects."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch

from likex.errors import LikexError
from likex.models.gpt import GPT

MAX_SUBSTRING = 4
STRING_KINDS = ("contains", "startswith", "endswith")

# name -> (third person, noun phrase, regex searched in the token text)
CHAR_CLASSES: dict[str, tuple[str, str, str]] = {
    "digit": ("contains a digit", "tokens containing a digit", r"\d"),
    "upper": ("contains an uppercase letter", "tokens with an uppercase letter", r"[A-Z]"),
    "capitalized": ("is a capitalised word", "capitalised words", r"\A ?[A-Z][a-z]+\Z"),
    "all_caps": ("is an all-caps word", "all-caps words", r"\A ?[A-Z]{2,}\Z"),
    "spaced_word": ("is a word after a space", "words after a space", r"\A [A-Za-z]+\Z"),
    "bare_word": ("is a word piece without a space", "word pieces", r"\A[A-Za-z]+\Z"),
    "punctuation": ("is punctuation only", "punctuation tokens", r"\A ?[^\w\s]+\Z"),
    "whitespace": ("is whitespace only", "whitespace tokens", r"\A\s+\Z"),
    "non_ascii": ("contains a non-ASCII character", "non-ASCII tokens", r"[^\x00-\x7f]"),
}
_CLASS_RE = {name: re.compile(rx) for name, (_, _, rx) in CHAR_CLASSES.items()}
_VERBS = {
    "contains": ("contains", "containing"),
    "startswith": ("starts with", "starting with"),
    "endswith": ("ends with", "ending with"),
}
_KIND_ORDER = {"contains": 0, "startswith": 1, "endswith": 2, "class": 3}


@dataclass(frozen=True)
class Predicate:
    """A human-readable test on a token's decoded text. For ``class`` the text is the name."""

    kind: str
    text: str
    ignore_case: bool = False

    def __post_init__(self) -> None:
        if self.kind == "class":
            if self.text not in CHAR_CLASSES:
                raise LikexError(f"unknown character class {self.text!r}")
        elif self.kind not in STRING_KINDS:
            raise LikexError(f"unknown predicate kind {self.kind!r}")
        elif not self.text:
            raise LikexError("a predicate needs a non-empty text")

    def matches(self, token: str) -> bool:
        if self.kind == "class":
            return _CLASS_RE[self.text].search(token) is not None
        t = token.lower() if self.ignore_case else token
        if self.kind == "contains":
            return self.text in t
        return t.startswith(self.text) if self.kind == "startswith" else t.endswith(self.text)

    def mask(self, token_strings: list[str]) -> torch.Tensor:
        return torch.tensor([self.matches(s) for s in token_strings], dtype=torch.bool)

    def describe(self) -> str:
        """E.g. "contains 'x'" or "ends with 'ing' (any case)"."""
        if self.kind == "class":
            return CHAR_CLASSES[self.text][0]
        case = " (any case)" if self.ignore_case else ""
        return f"{_VERBS[self.kind][0]} {self.text!r}{case}"

    def noun_phrase(self) -> str:
        """E.g. "tokens containing 'x'"."""
        if self.kind == "class":
            return CHAR_CLASSES[self.text][1]
        case = " (any case)" if self.ignore_case else ""
        return f"tokens {_VERBS[self.kind][1]} {self.text!r}{case}"

    def to_pattern(self) -> dict:
        return {"kind": self.kind, "text": self.text, "ignore_case": self.ignore_case}

    @classmethod
    def from_pattern(cls, d: dict) -> Predicate:
        return cls(kind=d["kind"], text=d["text"], ignore_case=bool(d.get("ignore_case", False)))

    def simplicity(self) -> tuple:
        """Sort key among equally good predicates: short, case-sensitive, 'contains' first."""
        return (_KIND_ORDER[self.kind], len(self.text), self.ignore_case, self.text)


# A string predicate as a compact key: one code character for (kind, case), then the text.
# Millions of keys are built per vocabulary, so they are plain strings, not Predicates.
_CODES = {
    ("contains", False): "c",
    ("contains", True): "C",
    ("startswith", False): "s",
    ("startswith", True): "S",
    ("endswith", False): "e",
    ("endswith", True): "E",
}
_FROM_CODE = {code: kind_case for kind_case, code in _CODES.items()}


def predicate_key(p: Predicate) -> str:
    return "#" + p.text if p.kind == "class" else _CODES[(p.kind, p.ignore_case)] + p.text


def predicate_from_key(key: str) -> Predicate:
    if key[0] == "#":
        return Predicate("class", key[1:])
    kind, ignore_case = _FROM_CODE[key[0]]
    return Predicate(kind, key[1:], ignore_case)


def token_features(token: str) -> set[str]:
    """Keys of every string predicate (up to MAX_SUBSTRING characters) ``token`` satisfies."""
    out: set[str] = set()
    for ignore_case, t in ((False, token), (True, token.lower())):
        c, s, e = (_CODES[(kind, ignore_case)] for kind in STRING_KINDS)
        n = len(t)
        out.update(c + t[i : i + k] for k in range(1, MAX_SUBSTRING + 1) for i in range(n - k + 1))
        out.update(s + t[:k] for k in range(1, min(MAX_SUBSTRING, n) + 1))
        out.update(e + t[-k:] for k in range(1, min(MAX_SUBSTRING, n) + 1))
    return out


class PredicateIndex:
    """How many vocabulary tokens each predicate selects, counted once per vocabulary.

    Building it visits every substring of every token (several seconds for GPT-2's 50257),
    so ``PredicateIndex.of(token_strings)`` keeps the last one built.
    """

    _last: PredicateIndex | None = None

    def __init__(self, token_strings: list[str]) -> None:
        self.token_strings = token_strings
        self.counts: Counter[str] = Counter()
        for s in token_strings:
            self.counts.update(token_features(s))
        self.class_masks = {
            name: Predicate("class", name).mask(token_strings) for name in CHAR_CLASSES
        }
        for name, m in self.class_masks.items():
            self.counts["#" + name] = int(m.sum())

    @classmethod
    def of(cls, token_strings: list[str]) -> PredicateIndex:
        """The index of ``token_strings``: the last one built when it was built for the same
        strings (an equal list: each model load makes a new one), else a new one."""
        last = cls._last
        if last is None or (
            last.token_strings is not token_strings and last.token_strings != token_strings
        ):
            cls._last = cls(token_strings)
        return cls._last

    def n_tokens(self, p: Predicate) -> int:
        return self.counts[predicate_key(p)]

    def mask(self, p: Predicate) -> torch.Tensor:
        return self.class_masks[p.text] if p.kind == "class" else p.mask(self.token_strings)

    def members(self, token_ids: list[int]) -> dict[str, list[int]]:
        """For each predicate some of ``token_ids`` satisfy: the positions (in ``token_ids``)
        of those that do."""
        out: dict[str, list[int]] = {}
        for j, t in enumerate(token_ids):
            for key in token_features(self.token_strings[t]):
                out.setdefault(key, []).append(j)
        for name, m in self.class_masks.items():
            cols = [j for j, t in enumerate(token_ids) if m[t]]
            if cols:
                out["#" + name] = cols
        return out

    def token_sets(
        self, token_ids: list[int], keep: Callable[[list[int]], bool]
    ) -> dict[tuple[int, ...], list[str]]:
        """The distinct sets of positions (in ``token_ids``) that predicates select, those
        ``keep`` accepts, each with the keys of every predicate that selects exactly it:
        predicates that select the same tokens are one candidate."""
        groups: dict[tuple[int, ...], list[str]] = {}
        for key, cols in self.members(token_ids).items():
            if keep(cols):
                groups.setdefault(tuple(cols), []).append(key)
        return groups


def membership_matrix(sets: list[tuple[int, ...]], width: int) -> torch.Tensor:
    """[len(sets), width], sparse, float64: row g is 1 at the positions of ``sets[g]``."""
    rows = [g for g, cols in enumerate(sets) for _ in cols]
    columns = [c for cols in sets for c in cols]
    return torch.sparse_coo_tensor(
        torch.tensor([rows, columns]),
        torch.ones(len(rows), dtype=torch.float64),
        (len(sets), width),
        check_invariants=False,  # built from valid indices just above
    ).coalesce()


def check_vocab(model: GPT, token_strings: list[str], what: str) -> None:
    if model.config.vocab_size != len(token_strings):
        raise LikexError(
            f"{what} has a vocabulary of {model.config.vocab_size} tokens but the tokenizer "
            f"has {len(token_strings)}"
        )
