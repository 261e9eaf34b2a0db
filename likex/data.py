"""Context sources: random tokens (the seed) and windows of real text.

Every batch is a pure function of (seed, rank, step): a resumed or distributed run draws
exactly the batches an uninterrupted single run would, with no RNG state to save.
"""

from __future__ import annotations

import math
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import torch

from likex.errors import ConfigError, LikexError, clip_path
from likex.io import read_text_file

if TYPE_CHECKING:
    from likex.models.tokenizer import Tokenizer

BUILTIN_CORPUS = "builtin"


SEED_MAX = 2**63 - 1  # seeds become torch generator seeds (signed 64-bit) after mixing


def check_seed(seed: int, field: str = "seed") -> None:
    """Seeds are integers in 0..2**63-1; anything else is refused by name."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(field, f"must be an integer in 0..{SEED_MAX} (2**63-1), got {seed}")


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded from (seed, rank, step, stream), well mixed by SeedSequence."""
    state = np.random.SeedSequence([seed, rank, step, stream]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]) & 0x7FFF_FFFF_FFFF_FFFF)


def random_contexts(
    batch: int, length: int, vocab_size: int, generator: torch.Generator
) -> torch.Tensor:
    """Uniformly random token ids, shape [batch, length] (the seed's training inputs)."""
    return torch.randint(0, vocab_size, (batch, length), generator=generator)


def corpus_windows(
    tokens: torch.Tensor, batch: int, length: int, generator: torch.Generator
) -> torch.Tensor:
    """Random windows of ``length + 1`` tokens from a 1-D token array, shape [batch, length+1].

    The extra token lets next-token training use ``w[:, :-1]`` as input and ``w[:, 1:]`` as
    labels; context-only users take ``w[:, :-1]``.
    """
    if tokens.numel() < length + 2:
        raise LikexError(
            f"the text has {tokens.numel()} tokens, too few for windows of {length + 1}"
        )
    starts = torch.randint(0, tokens.numel() - length - 1, (batch,), generator=generator)
    offsets = torch.arange(length + 1)
    return tokens[starts[:, None] + offsets[None, :]]


def builtin_corpus_text() -> str:
    """Real English prose that every Python ships: the documentation topics of ``pydoc``.

    About 465k characters (~139k GPT-2 tokens); sorted by topic so the text, and hence the
    held-out split taken from its end, is the same on every machine with the same Python.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def load_corpus_text(source: str, what: str = "corpus file") -> str:
    """``builtin`` or the path of a UTF-8 text file (``what`` names it in messages); a
    missing, empty or binary file, or one that is no regular file, is an error."""
    if source == BUILTIN_CORPUS:
        return builtin_corpus_text()
    text = read_text_file(source, what)
    if not text.strip():
        raise LikexError(f"{what} is empty: {clip_path(source)}")
    return text


# The held-out share of a corpus: its last tenth, so no training window overlaps it.
HELDOUT_FRACTION = 0.1


def corpus_token_ids(source: str, tokenizer: Tokenizer | None = None) -> torch.Tensor:
    """A corpus (``builtin`` or a UTF-8 file) as token ids, 1-D int64 (GPT-2's by default)."""
    if tokenizer is None or tokenizer.name == "gpt2":
        if source == BUILTIN_CORPUS:
            return _builtin_gpt2_ids().clone()
        return _gpt2_ids(load_corpus_text(source))
    return torch.tensor(tokenizer.encode(load_corpus_text(source)), dtype=torch.long)


@cache
def _builtin_gpt2_ids() -> torch.Tensor:
    # The built-in text never changes within a process; encoding it takes about a second.
    return _gpt2_ids(builtin_corpus_text())


def _gpt2_ids(text: str) -> torch.Tensor:
    from likex.models.tokenizer import gpt2

    return torch.tensor(gpt2().encode(text), dtype=torch.long)


def split_heldout(
    tokens: torch.Tensor, min_len: int, fraction: float = HELDOUT_FRACTION
) -> tuple[torch.Tensor, torch.Tensor]:
    """(training part, held-out part): the held-out part is the end of the text.

    Both parts must hold at least one window of ``min_len`` tokens; a text too short for that
    is an error rather than an evaluation on a handful of tokens.
    """
    if not 0 < fraction < 1:
        raise LikexError(f"held-out fraction must be in (0, 1), got {fraction}")
    cut = int(tokens.numel() * (1 - fraction))
    train, heldout = tokens[:cut], tokens[cut:]
    if min(train.numel(), heldout.numel()) < min_len + 2:
        need = math.ceil((min_len + 2) / min(fraction, 1 - fraction))
        raise LikexError(
            f"the text has {tokens.numel()} tokens, too few for a held-out split with windows "
            f"of {min_len + 1} (needs about {need})"
        )
    return train, heldout


def corpus_split(
    source: str, tokenizer: Tokenizer | None, min_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``source`` (builtin or a file) tokenized, split into (training part, held-out part)."""
    return split_heldout(corpus_token_ids(source, tokenizer), min_len)
