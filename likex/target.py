"""Target specs: vocabulary predicates -> a token mask -> target distributions Q.

A spec selects the token set M from the decoded text of each token id; special and control
tokens (<|endoftext|>, <|im_start|>, ...) have no text (their string is "") and are selected
only by explicit ids. Three target
distributions are built on it (R is the frozen reference model's next-token distribution):

* ``uniform`` (the seed): Q = M / |M|, the same for every context;
* ``rate`` A: the distribution nearest to R in KL(Q || R) with mass A on M, which rescales R
  inside and outside M separately: Q_i = A R_i / R(M) on M, (1 - A) R_i / R(not M) off M;
* ``tilt`` B: Q proportional to R exp(B [i in M]).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import regex
import torch

from likex.errors import ConfigError, LikexError, clip, clip_path, literal
from likex.io import read_text_file
from likex.options import option
from likex.words import WordTrie, build_trie, entry_variants, masked_logsumexp

NO_TARGET = "give a substring, a regex, a words file or token ids"


@dataclass(frozen=True)
class TargetSpec:
    """Which tokens are "liked". Several selectors may be given; M is their union.

    ``words`` and ``phrase``: entries of any number of tokens. An entry that some token spells
    (its text with leading whitespace stripped, so both "cat" and " cat") selects those tokens,
    as a single-token target. When some entry takes several tokens, every entry becomes a
    token sequence in a trie (likex.words): inside a word the target finishes it, elsewhere it
    starts one, and rates are counted in decoded words.
    """

    like: str | None = option(None, "substring the token text must contain")
    ignore_case: bool = option(
        False,
        "match regardless of case",
        applies=lambda o: (
            None
            if o.like or o.regex or o.words or o.phrase
            else "needs a text target ({like}, {regex}, {words} or {phrase}), not token ids"
        ),
    )
    regex: str | None = option(None, "regular expression searched in the token text")
    words: tuple[str, ...] = option(
        (),
        "file of words or phrases, one a line (any number of tokens)",
        metavar="FILE",
        parse=lambda p: read_words(p),
    )
    phrase: tuple[str, ...] = option(
        (), "a word or phrase of any number of tokens (repeatable)", metavar="TEXT", append=True
    )
    token_ids: tuple[int, ...] = option((), "explicit token ids", metavar="ID")

    def entries(self) -> tuple[str, ...]:
        """The listed words and phrases (``words`` then ``phrase``), stripped."""
        return tuple(e.strip() for e in (*self.words, *self.phrase))

    def describe(self) -> str:
        parts = []
        case = ", any case" if self.ignore_case else ""
        if self.like is not None:
            parts.append(f"tokens containing {clip(self.like)}{case}")
        if self.regex is not None:
            parts.append(f"tokens matching /{clip(self.regex)[1:-1]}/{case}")
        if self.words:
            parts.append(f"{len(self.words)} listed words")
        if self.phrase:
            parts.append(" or ".join(clip(p) for p in self.phrase))
        if self.token_ids:
            parts.append(f"{len(self.token_ids)} listed token ids")
        return " or ".join(parts) or "nothing"

    def to_dict(self) -> dict:
        d = {
            "like": self.like,
            "ignore_case": self.ignore_case,
            "regex": self.regex,
            "words": list(self.words),
            "token_ids": list(self.token_ids),
        }
        if self.phrase:  # a key only where used: the targets of earlier runs read the same
            d["phrase"] = list(self.phrase)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TargetSpec:
        return cls(
            like=d.get("like"),
            ignore_case=d.get("ignore_case", False),
            regex=d.get("regex"),
            words=_listed(d, "words"),
            phrase=_listed(d, "phrase"),
            token_ids=_listed(d, "token_ids"),
        )


def _listed(d: dict, key: str) -> tuple:
    """A list of a target's record as a tuple (absent or null: empty)."""
    value = d.get(key) or []
    if not isinstance(value, list):
        raise TypeError(f"target.{key} is not a list")
    return tuple(value)


@dataclass
class TargetSet:
    """The selected tokens: a boolean mask over the vocabulary and what was left out."""

    mask: torch.Tensor
    words: WordTrie | None = None  # when some listed entry takes several tokens

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())

    @property
    def vocab_size(self) -> int:
        return int(self.mask.numel())

    @property
    def ids(self) -> list[int]:
        return self.mask.nonzero().flatten().tolist()


# An entry is a word or a phrase: a longer line is no entry but a mistake (a file of prose, a
# line without breaks), and matching it would take minutes.
MAX_ENTRY_CHARS = 1_000


def read_words(path: str | Path, what: str = "words file") -> tuple[str, ...]:
    """Entries from a text file, one word or phrase a line (empty lines are skipped)."""
    lines = read_text_file(path, what).splitlines()
    where = clip_path(path)
    for n, line in enumerate(lines, 1):
        if line and not line.strip():
            raise LikexError(f"{what} {where}, line {n}: an entry that is only whitespace")
        if len(line) > MAX_ENTRY_CHARS:
            raise LikexError(
                f"{what} {where}, line {n}: an entry of {len(line):,} characters (at most "
                f"{MAX_ENTRY_CHARS:,}): {clip(line)}"
            )
    words = tuple(line.strip() for line in lines if line)
    if not words:
        raise LikexError(f"{what} is empty: {where}")
    return words


def check_text(text: str | None, field: str, limit: int | None = None) -> None:
    """Any Unicode is welcome; what is not Unicode (a lone invalid byte on the command line
    arrives as a surrogate) is refused by name rather than failing deep in a tokenizer, and
    so is a text longer than ``limit`` characters."""
    try:
        (text or "").encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start : e.end].encode("utf-8", "surrogateescape")
        message = f"is not valid UTF-8 text (bytes {bad!r} at {e.start})"
        raise ConfigError(field, literal(message)) from e
    if limit is not None and len(text or "") > limit:
        message = f"has {len(text):,} characters, more than {limit:,}: {clip(text)}"
        raise ConfigError(field, literal(message))


# The `regex` package, not `re`: its searches take a timeout, so a pattern that backtracks
# catastrophically (say ^(.+)+\x00$ on a long token) is refused in seconds instead of running
# for hours; `re` cannot be interrupted short of running it in another process.
REGEX_SECONDS_PER_TOKEN = 0.05
REGEX_SECONDS_TOTAL = 10.0


def _regex_mask(source: str, ignore_case: bool, token_strings: list[str]) -> torch.Tensor:
    try:
        pattern = regex.compile(source, regex.IGNORECASE if ignore_case else 0)
    except regex.error as e:
        raise ConfigError("regex", literal(f"{clip(source)}: invalid regex: {e}")) from e
    deadline = time.monotonic() + REGEX_SECONDS_TOTAL
    hits = []
    for i, s in enumerate(token_strings):
        if s == "":  # a token without text (a special token, a padding row): never selected,
            hits.append(False)  # not even by a regex that matches the empty string
            continue
        left = deadline - time.monotonic()
        try:
            hits.append(pattern.search(s, timeout=min(REGEX_SECONDS_PER_TOKEN, left)) is not None)
        except TimeoutError as e:
            where = (
                f"over {REGEX_SECONDS_PER_TOKEN} s on token {i} ({s[:20]!r})"
                if left > REGEX_SECONDS_PER_TOKEN
                else f"over {REGEX_SECONDS_TOTAL:g} s for the vocabulary"
            )
            raise ConfigError(
                "regex", literal(f"{clip(source)} took {where}: simplify it (no nested repetition)")
            ) from e
    return torch.tensor(hits, dtype=torch.bool)


def select_tokens(
    spec: TargetSpec,
    token_strings: list[str],
    encode: Callable[[str], list[int]] | None = None,
    block_size: int | None = None,
) -> TargetSet:
    """Evaluate the spec over every token's decoded text. An empty selection is an error.

    ``encode`` (the tokenizer's) is needed for entries of several tokens; ``block_size`` (the
    model's context) bounds their length."""
    entries = spec.entries()
    if spec.like is None and spec.regex is None and not entries and not spec.token_ids:
        raise LikexError(f"no target given: {NO_TARGET}")
    if spec.like == "":
        raise ConfigError("like", "needs a non-empty string")
    check_text(spec.like, "like", MAX_ENTRY_CHARS)
    check_text(spec.regex, "regex", MAX_ENTRY_CHARS)
    for word in spec.words:
        check_text(word, "words", MAX_ENTRY_CHARS)
    for phrase in spec.phrase:
        check_text(phrase, "phrase", MAX_ENTRY_CHARS)
    vocab = len(token_strings)
    mask = torch.zeros(vocab, dtype=torch.bool)
    fold = (lambda s: s.lower()) if spec.ignore_case else (lambda s: s)

    if spec.like is not None:
        needle = fold(spec.like)
        mask |= torch.tensor([needle in fold(s) for s in token_strings])
    if spec.regex is not None:
        mask |= _regex_mask(spec.regex, spec.ignore_case, token_strings)
    trie = None
    if entries:
        blank = [e for e in (*spec.words, *spec.phrase) if not e.strip()]
        if blank:
            raise LikexError(f"an entry that is only whitespace: {clip(blank[0])}")
        by_text: dict[str, list[int]] = {}
        for i, s in enumerate(token_strings):
            by_text.setdefault(fold(s.lstrip()), []).append(i)
        single = {e: by_text[fold(e)] for e in entries if fold(e) in by_text}
        for ids in single.values():
            mask[ids] = True
        if len(single) < len(entries):
            trie = _word_trie(entries, single, token_strings, spec.ignore_case, encode, block_size)
            mask |= trie.start
    if spec.token_ids:
        bad = [i for i in spec.token_ids if not 0 <= i < vocab]
        if bad:
            raise LikexError(f"token ids out of range [0, {vocab}): {bad[:5]}")
        mask[list(spec.token_ids)] = True

    if not mask.any():
        raise LikexError(f"the target ({spec.describe()}) matches no token of the vocabulary")
    has_text = torch.tensor([s != "" for s in token_strings])
    if mask.all() or (has_text.any() and mask[has_text].all()):
        raise LikexError(f"the target ({spec.describe()}) matches every token: nothing to prefer")
    return TargetSet(mask=mask, words=trie)


def _word_trie(
    entries: tuple[str, ...],
    single: dict[str, list[int]],
    token_strings: list[str],
    ignore_case: bool,
    encode: Callable[[str], list[int]] | None,
    block_size: int | None,
) -> WordTrie:
    """The trie of every entry: a single-token entry as its tokens, the others tokenized."""
    if encode is None:
        raise LikexError("entries of several tokens need the model's tokenizer")
    variants: list[tuple[int, ...]] = []
    owners: list[int] = []
    for n, e in enumerate(entries):
        if e in single:
            forms = [(i,) for i in single[e]]
        else:
            forms = [tuple(encode(v)) for v in entry_variants(e, ignore_case)]
        longest = max(len(f) for f in forms)
        if block_size is not None and longest >= block_size:
            raise LikexError(
                f"{clip(e)} takes {longest} tokens, more than the model's {block_size}-token "
                "context can hold with a token before it"
            )
        new = [f for f in dict.fromkeys(forms) if f and f not in variants]
        variants += new
        owners += [n] * len(new)
    return build_trie(entries, variants, token_strings, ignore_case, tuple(owners))


def uniform_target(mask: torch.Tensor) -> torch.Tensor:
    """The seed's Q = M / |M| (probabilities, shape [V])."""
    m = mask.float()
    return m / m.sum()


def check_rate(rate: float) -> float:
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and 0.0 < rate < 1.0):
        raise ConfigError("rate", f"must be strictly between 0 and 1, got {rate}")
    return float(rate)


def check_beta(beta: float) -> float:
    if not math.isfinite(beta):
        raise ConfigError("beta", f"must be a finite number, got {beta}")
    return float(beta)


def rate_target_log(ref_log_probs: torch.Tensor, mask: torch.Tensor, rate: float) -> torch.Tensor:
    """log Q for the rate-A projection of R: mass A on M, R's shape kept inside and outside.

    Works in log space so tokens that R gives vanishing probability stay finite.
    """
    check_rate(rate)
    log_r_on = masked_logsumexp(ref_log_probs, mask)
    log_r_off = masked_logsumexp(ref_log_probs, ~mask)
    return torch.where(
        mask,
        math.log(rate) + ref_log_probs - log_r_on,
        math.log1p(-rate) + ref_log_probs - log_r_off,
    )


def tilt_target_log(ref_log_probs: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """log Q for Q proportional to R exp(B [i in M])."""
    check_beta(beta)
    tilted = ref_log_probs + beta * mask.to(ref_log_probs.dtype)
    return tilted - torch.logsumexp(tilted, dim=-1, keepdim=True)
