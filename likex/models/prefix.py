"""The log-probability of many short sequences after the same prompts, each prompt run once.

Scoring C candidate words after P prompts the plain way runs C x P rows of prompt + word through
the model, the prompt again in every row. Here each prompt is run once into a KV cache, the
cache is repeated for a batch of candidates, and only the candidates' own tokens run after it,
their log-probabilities read at those positions alone: the cost of a word is its own tokens,
not its prompt's. The two kinds of cache (likex's GPT and a transformers model's) are repeated
here, the one place that tells them apart.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import torch
from tqdm import tqdm

from likex.errors import LikexError
from likex.models import LanguageModel
from likex.models.gpt import KVCache


def repeat_cache(cache: Any, rows: int, times: int) -> Any:
    """A copy of the cache of ``rows`` prompts in which row r is repeated ``times`` times (row
    r * times + j of the copy is prompt r), the original left as it was."""
    if isinstance(cache, KVCache):
        out = copy.copy(cache)
        out.k = [k[:rows].repeat_interleave(times, 0) for k in cache.k]
        out.v = [v[:rows].repeat_interleave(times, 0) for v in cache.v]
        return out
    out = copy.deepcopy(cache)  # a transformers Cache: its own batch operations
    out.batch_repeat_interleave(times)
    return out


def _padded(seqs: list[list[int]], start: int, stop: int, width: int) -> torch.Tensor:
    """Tokens [start, len + stop) of each sequence, zero-padded to ``width``."""
    rows = [s[start : len(s) + stop] for s in seqs]
    return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)


@torch.no_grad()
def sequence_log_probs(
    model: LanguageModel,
    prompts: torch.Tensor,
    seqs: list[list[int]],
    rows: int = 128,
    progress: bool = False,
) -> torch.Tensor:
    """[len(seqs), P]: log P(whole sequence | prompt) under ``model`` for every sequence (each
    of one or more tokens) after every prompt row of ``prompts`` [P, L]. ``rows``: candidate
    rows run together after a prompt's cache (memory: rows x longest sequence x vocabulary)."""
    if not seqs or any(not s for s in seqs):
        raise LikexError("every sequence to score needs at least one token")
    n_prompts, length = prompts.shape
    width = max(map(len, seqs))
    if length + width - 1 > model.config.block_size:
        raise LikexError(
            f"prompts of {length} tokens and sequences of {width} exceed the model's "
            f"{model.config.block_size}-token context"
        )
    device = next(model.parameters()).device
    model.eval()
    out = torch.zeros(len(seqs), n_prompts, dtype=torch.float64)
    first = torch.tensor([s[0] for s in seqs], device=device)
    # sequences of one token are read off the prompt's last position; the others are run in
    # chunks of similar length, so little of a chunk is padding
    longer = sorted((c for c, s in enumerate(seqs) if len(s) > 1), key=lambda c: len(seqs[c]))
    per_prompt = max(1, min(len(longer), rows)) if longer else 1
    chunks = [longer[i : i + per_prompt] for i in range(0, len(longer), per_prompt)]
    bar = tqdm(
        total=n_prompts * max(1, len(chunks)),
        desc="score words",
        disable=not progress,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    )
    for p in range(n_prompts):
        cache = model.new_cache(1)
        prompt = prompts[p : p + 1].to(device)
        last = model(prompt, positions="last", cache=cache, start_pos=0)[0]
        out[:, p] = last[first].double().cpu()
        for chunk in chunks:
            chosen = [seqs[c] for c in chunk]
            wide = max(map(len, chosen)) - 1
            inputs = _padded(chosen, 0, -1, wide).to(device)
            labels = _padded(chosen, 1, 0, wide).to(device)
            repeated = repeat_cache(cache, 1, len(chunk))
            log_p = model(inputs, positions="all", cache=repeated, start_pos=length)
            picked = log_p.gather(-1, labels[..., None])[..., 0].double()
            real = (
                torch.arange(wide, device=device)[None, :]
                < torch.tensor([len(s) - 1 for s in chosen], device=device)[:, None]
            )
            out[chunk, p] += (picked * real).sum(1).cpu()
            bar.update(1)
        if not chunks:
            bar.update(1)
    bar.close()
    return out
