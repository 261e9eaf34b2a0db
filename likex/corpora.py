"""Several corpora at once: ``--corpus`` repeated, each with a weight, and the built-in kinds of
text that every install of likex already has.

A corpus is ``builtin`` (Python's pydoc topics, likex.data), one of the built-in kinds below, a
UTF-8 file, or ``mix`` (all built-in kinds). ``NAME=WEIGHT`` weights it (default 1): training
windows are drawn from the corpora in proportion to their weights. ``=`` rather than ``:``
because a colon already names kinds (``builtin:code``, as ``hf:`` names models) and Windows
drives; a value that names an existing file is always that file. Each corpus is its own
*domain*: it is split into its own training part and held-out last tenth, and rates are
measured on each held-out part.

The built-in kinds (``KINDS``) are read where they are installed, offline, and never copied
into a run folder (config.json records names, not text):

- ``builtin`` (technical prose): the topics of ``pydoc`` (``pydoc_data.topics``).
- ``builtin:code`` (code): the standard library's own Python sources (PSF licence).
- ``builtin:legal`` (legal): the licence texts installed packages ship in their
  ``*.dist-info`` folders (identical texts once).
- ``builtin:docs`` (markdown and reStructuredText): the READMEs installed packages ship as the
  description in their ``*.dist-info/METADATA`` (likex's own left out: it changes with likex).

Each kind takes documents in the order of a hash of their names up to ``KIND_CHARS``
characters (at most ``DOC_CHARS`` of one document), then joins them in name order: the same
text wherever the same Python and packages are installed. Kinds that no installed package
holds (fiction, dialogue) come from the model's own text: generated contexts that start from
the start-of-text token or a chat turn (likex.batches).
"""

from __future__ import annotations

import hashlib
import math
import re
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from likex.data import (
    BUILTIN_CORPUS,
    builtin_corpus_text,
    corpus_token_ids,
    corpus_windows,
    load_corpus_text,
    split_heldout,
)
from likex.errors import ConfigError, LikexError
from likex.io import input_file

if TYPE_CHECKING:
    from likex.models.tokenizer import Tokenizer

MIX = "mix"
KIND_CHARS = 400_000  # about the size of the pydoc topics (465k characters)
DOC_CHARS = 20_000  # one long file (a 200k-character module) would be most of a kind
OWN = "likex"  # the distribution left out of the kinds: its text changes with likex

_NOT_MODULES = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_LICENCE = re.compile(r"^(licen[cs]e|copying|notice)", re.IGNORECASE)


def _pick(docs: Sequence[tuple[str, str]], budget: int = KIND_CHARS) -> str:
    """Documents (name, text) taken in the order of a hash of their names until ``budget``
    characters, joined in name order: another installed file changes only whether it is
    taken, not which others are."""
    order = sorted(docs, key=lambda d: hashlib.sha256(d[0].encode()).hexdigest())
    chosen, size = [], 0
    for name, text in order:
        if size >= budget:
            break
        text = text.strip()[:DOC_CHARS]
        if text:
            chosen.append((name, text))
            size += len(text)
    return "\n\n".join(text for _, text in sorted(chosen))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _distributions() -> list:
    """Installed distributions, one per name (the first on the path), likex's own left out."""
    from importlib.metadata import distributions

    seen: dict[str, object] = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name and name != OWN and name not in seen:
            seen[name] = dist
    return [seen[name] for name in sorted(seen)]


def code_text() -> str:
    """The standard library's Python sources (not its tests, nor installed packages)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _NOT_MODULES.isdisjoint(rel.parts) and (text := _read(path)) is not None:
            docs.append((rel.as_posix(), text))
    return _pick(docs)


def legal_text() -> str:
    """Licence texts in the installed packages' dist-info folders, each distinct text once."""
    docs, seen = [], set()
    for dist in _distributions():
        for file in dist.files or []:
            if ".dist-info" not in str(file) or not _LICENCE.match(Path(str(file)).name):
                continue
            text = _read(Path(str(dist.locate_file(file))))
            if text is not None and text.strip() and text.strip() not in seen:
                seen.add(text.strip())
                docs.append((f"{dist.metadata['Name']}/{file}", text))
    return _pick(docs)


def docs_text() -> str:
    """The installed packages' READMEs (markdown or reStructuredText, their METADATA's
    description)."""
    docs = []
    for dist in _distributions():
        meta = dist.metadata
        text = meta["Description"] or meta.get_payload() or ""
        if isinstance(text, str) and len(text.strip()) >= 200:
            docs.append((meta["Name"], text))
    return _pick(docs)


# name -> (what kind of text, where it comes from, its text)
KINDS: dict[str, tuple[str, str, Callable[[], str]]] = {
    BUILTIN_CORPUS: ("technical prose", "pydoc topics", builtin_corpus_text),
    "builtin:code": ("code", "standard-library sources", code_text),
    "builtin:legal": ("legal", "licence texts in installed dist-info folders", legal_text),
    "builtin:docs": ("markdown/reST", "installed packages' READMEs", docs_text),
}


@cache
def kind_text(name: str) -> str:
    text = KINDS[name][2]()
    if not text.strip():
        raise LikexError(f"corpus {name}: no {KINDS[name][1]} are installed")
    return text


def corpus_text(source: str) -> str:
    """The text of a built-in kind or of a UTF-8 file."""
    return kind_text(source) if source in KINDS else load_corpus_text(source)


def token_ids(source: str, tokenizer: Tokenizer | None = None) -> torch.Tensor:
    """A corpus as token ids (GPT-2's by default), the built-in kinds' GPT-2 ids cached."""
    if source == BUILTIN_CORPUS or source not in KINDS:
        return corpus_token_ids(source, tokenizer)
    if tokenizer is None or tokenizer.name == "gpt2":
        return _gpt2_kind_ids(source).clone()
    return torch.tensor(tokenizer.encode(kind_text(source)), dtype=torch.long)


@cache
def _gpt2_kind_ids(source: str) -> torch.Tensor:
    from likex.models.tokenizer import gpt2

    return torch.tensor(gpt2().encode(kind_text(source)), dtype=torch.long)


@dataclass(frozen=True)
class Corpus:
    """One ``--corpus`` value: a source and its weight."""

    source: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Corpus:
        """``NAME`` or ``NAME=WEIGHT``; a value that names an existing file is that file."""
        name, sep, weight = text.rpartition("=")
        if not sep or Path(text).exists():
            return cls(text)
        try:
            value = float(weight)
        except ValueError:
            return cls(text)  # not a weight: the whole value is the name (then not found)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError("corpus", f"{text}: a weight must be a positive number")
        return cls(name, value)

    def spec(self) -> str:
        return self.source if self.weight == 1 else f"{self.source}={self.weight:g}"


def corpus_arg(text: str) -> str:
    """A ``--corpus`` value as the command line is read: a built-in kind, ``mix`` or a
    regular file, with an optional ``=WEIGHT``; a missing file is refused before any model
    loads."""
    try:
        source = Corpus.parse(text).source
    except ConfigError:
        return text  # a bad weight: refused, naming its flag, where the corpora are read
    if source != MIX and source not in KINDS and source != BUILTIN_CORPUS:
        input_file(source, "corpus file")
    return text


class Heldout(NamedTuple):
    """A domain's held-out text: its name and its tokens."""

    name: str
    tokens: torch.Tensor


@dataclass(frozen=True)
class Corpora:
    """The corpora of a run, as given (``mix`` unexpanded)."""

    parts: tuple[Corpus, ...]

    @classmethod
    def of(cls, value: str | Sequence[str] | None) -> Corpora | None:
        """``--corpus`` as given (one value or several; a config.json record), checked."""
        if value is None:
            return None
        values = [value] if isinstance(value, str) else list(value)
        if not values or not all(isinstance(v, str) and v for v in values):
            raise ConfigError("corpus", f"must name one or more corpora, got {value!r}")
        corpora = cls(tuple(Corpus.parse(v) for v in values))
        corpora.domains()  # a corpus given twice is refused here
        return corpora

    def record(self) -> str | list[str]:
        """config.json's "corpus": one name as before, or the list of ``NAME=WEIGHT``."""
        specs = [c.spec() for c in self.parts]
        return specs[0] if len(specs) == 1 and self.parts[0].weight == 1 else specs

    def label(self) -> str:
        return ", ".join(c.spec() for c in self.parts)

    def domains(self) -> tuple[Corpus, ...]:
        """Each corpus a domain; ``mix=W`` is every built-in kind, sharing W equally."""
        out: list[Corpus] = []
        for c in self.parts:
            if c.source == MIX:
                out += [Corpus(k, c.weight / len(KINDS)) for k in KINDS]
            else:
                out.append(c)
        names = [c.source for c in out]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError("corpus", f"names {twice[0]} twice (mix holds every built-in kind)")
        return tuple(out)

    def check(self) -> None:
        """Every corpus readable as text (a missing, empty, binary or non-UTF-8 file, or a
        kind no installed package holds, is refused in one line naming it)."""
        domains = self.domains()
        for i, c in enumerate(domains, 1):
            try:
                corpus_text(c.source)
            except LikexError as e:
                where = f" (corpus {i} of {len(domains)})" if len(domains) > 1 else ""
                raise LikexError(f"{e}{where}") from e

    def load(self, tokenizer: Tokenizer | None, min_len: int) -> CorpusMix:
        """Every domain read (each checked before any is tokenized), tokenized and split into
        its training part and held-out last tenth."""
        self.check()
        domains = self.domains()
        total = sum(c.weight for c in domains)
        parts = []
        for c in domains:
            try:
                train, heldout = split_heldout(token_ids(c.source, tokenizer), min_len)
            except LikexError as e:
                raise LikexError(f"corpus {c.source}: {e}") from e
            parts.append(Domain(c.source, c.weight / total, train, heldout))
        return CorpusMix(tuple(parts))


@dataclass(frozen=True)
class Domain:
    """One corpus of a run: its name, its share of the training windows, its two parts."""

    name: str
    share: float
    train: torch.Tensor
    heldout: torch.Tensor


@dataclass(frozen=True)
class CorpusMix:
    """The training parts of several corpora, drawn in proportion to their shares, and their
    held-out parts, one domain each."""

    domains: tuple[Domain, ...]

    @classmethod
    def single(cls, tokens: torch.Tensor, name: str = "corpus") -> CorpusMix:
        return cls((Domain(name, 1.0, tokens, tokens[:0]),))

    @property
    def heldout(self) -> list[Heldout]:
        return [Heldout(d.name, d.heldout) for d in self.domains]

    @property
    def train_size(self) -> int:
        return sum(d.train.numel() for d in self.domains)

    def all_heldout(self) -> torch.Tensor:
        """Every held-out part, one after the other (pretraining's perplexity is on all)."""
        return torch.cat([d.heldout for d in self.domains])

    def windows(
        self, batch: int, length: int, gen: torch.Generator, pick: torch.Generator
    ) -> torch.Tensor:
        """``batch`` windows of ``length + 1`` tokens. Each row's corpus is drawn from
        ``pick`` with the domains' shares; each corpus's rows are then drawn from ``gen`` in
        domain order. One corpus draws from ``gen`` alone, as a single text always did."""
        if len(self.domains) == 1:
            return corpus_windows(self.domains[0].train, batch, length, gen)
        shares = torch.tensor([d.share for d in self.domains], dtype=torch.float64)
        which = torch.multinomial(shares, batch, replacement=True, generator=pick)
        out = torch.empty(batch, length + 1, dtype=torch.long)
        for i, d in enumerate(self.domains):
            rows = (which == i).nonzero().flatten()
            if rows.numel():
                out[rows] = corpus_windows(d.train, rows.numel(), length, gen)
        return out
