"""Sequences scored after a prompt run once (likex.models.prefix) agree with scoring prompt +
sequence whole, row by row, for both kinds of model and cache."""

import pytest
import torch

from likex.errors import LikexError
from likex.models.gpt import build_model, preset_config
from likex.models.hf import load_hf
from likex.models.prefix import sequence_log_probs

SEQS = [[5], [7, 3], [2, 9, 4, 1], [11, 0, 6]]


def _direct(model, prompts: torch.Tensor, seqs: list[list[int]]) -> torch.Tensor:
    """log P(seq | prompt), each (sequence, prompt) pair run whole."""
    out = torch.zeros(len(seqs), prompts.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for c, seq in enumerate(seqs):
            for p in range(prompts.shape[0]):
                idx = torch.cat([prompts[p], torch.tensor(seq[:-1], dtype=torch.long)])[None]
                log_p = model(idx, positions="all")[0, prompts.shape[1] - 1 :]
                out[c, p] = log_p.gather(-1, torch.tensor(seq)[:, None]).double().sum()
    return out


def test_gpt_prompts_run_once_give_the_whole_sequence_log_probability():
    model = build_model(preset_config("tiny", vocab_size=16, weight_init="gpt2"), 0).eval()
    prompts = torch.randint(0, 16, (3, 10), generator=torch.Generator().manual_seed(1))
    # rows=2: the longer sequences are run in two chunks after each prompt's cache
    fast = sequence_log_probs(model, prompts, SEQS, rows=2)
    assert torch.allclose(fast, _direct(model, prompts, SEQS), atol=1e-5)


def test_transformers_cache_is_repeated_not_consumed(tiny_llama):
    model = load_hf(str(tiny_llama)).eval()
    prompts = torch.randint(0, 12, (2, 6), generator=torch.Generator().manual_seed(2))
    fast = sequence_log_probs(model, prompts, SEQS, rows=2)
    assert torch.allclose(fast, _direct(model, prompts, SEQS), atol=1e-5)


def test_sequences_that_do_not_fit_or_are_empty_are_refused():
    model = build_model(preset_config("tiny", vocab_size=16, block_size=8), 0).eval()
    prompts = torch.zeros(1, 6, dtype=torch.long)
    with pytest.raises(LikexError, match="context"):
        sequence_log_probs(model, prompts, [[1, 2, 3, 4]])
    with pytest.raises(LikexError, match="at least one token"):
        sequence_log_probs(model, prompts, [[]])
