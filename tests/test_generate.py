import math

import pytest
import torch

import likex.generate
from likex.errors import ConfigError
from likex.generate import sample, sample_next
from likex.models.gpt import GPTConfig, build_model

CFG = GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32)


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.7, 20)])
def test_cached_and_uncached_paths_give_identical_tokens(temperature, top_k):
    model = build_model(CFG, 0)
    prompt = torch.randint(0, 300, (4, 10))
    kwargs = dict(temperature=temperature, top_k=top_k)
    cached = sample(model, prompt, 20, torch.Generator().manual_seed(5), use_cache=True, **kwargs)
    plain = sample(model, prompt, 20, torch.Generator().manual_seed(5), use_cache=False, **kwargs)
    assert torch.equal(cached, plain)
    other = sample(model, prompt, 20, torch.Generator().manual_seed(6), use_cache=True, **kwargs)
    assert not torch.equal(cached, other)


def test_sliding_window_beyond_context():
    model = build_model(CFG, 0)
    prompt = torch.randint(0, 300, (2, 32))  # a full context, as in the seed
    out = sample(model, prompt, 40, torch.Generator().manual_seed(0))
    assert out.shape == (2, 40)
    with pytest.raises(ValueError, match="exceed"):
        sample(model, prompt, 40, torch.Generator().manual_seed(0), use_cache=True)


def test_greedy_and_top_k():
    model = build_model(CFG, 3)
    prompt = torch.randint(0, 300, (2, 5))
    g1 = sample(model, prompt, 8, torch.Generator().manual_seed(0), temperature=0)
    g2 = sample(model, prompt, 8, torch.Generator().manual_seed(9), temperature=0)
    assert torch.equal(g1, g2)
    first = model(prompt, positions="last")
    top3 = torch.topk(first, 3, dim=-1).indices
    for seed in range(10):
        tok = sample(model, prompt, 1, torch.Generator().manual_seed(seed), top_k=3)
        assert all(tok[i, 0] in top3[i] for i in range(2))


# chi-square 0.999 quantiles (table values) for the goodness-of-fit tests below
CHI2_999 = {4: 18.467, 5: 20.515}


def _chi2(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampling_follows_softmax_of_log_p_over_temperature(temperature):
    log_p = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]), -1)
    draws = torch.stack(
        [sample_next(log_p, torch.Generator().manual_seed(s), temperature) for s in range(4000)]
    ).flatten()
    counts = torch.bincount(draws, minlength=5).double()
    target = torch.softmax(log_p[0].double() / temperature, -1)
    assert _chi2(counts, target) < CHI2_999[4]
    if temperature != 1.0:  # the same test rejects the untempered distribution
        assert _chi2(counts, torch.softmax(log_p[0].double(), -1)) > CHI2_999[4]


def test_each_row_draws_from_its_own_distribution_over_a_large_vocabulary():
    """Rows of one batch over SmolLM2's 49,152 tokens: each row's draws follow its own
    probabilities (five named tokens and the rest pooled), and a token of probability 0 is
    never drawn, even next to the row's whole tail of tiny shares."""
    vocab, g = 49_152, torch.Generator().manual_seed(0)
    logits = torch.randn(2, vocab, generator=g)
    heads = torch.tensor([[3, 40_000, 7, 12_345, 49_151], [0, 1, 2, 3, 4]])
    logits.scatter_(1, heads, torch.tensor([[12.0, 11.5, 11.0, 10.0, 9.0]] * 2))
    logits[:, 5_000] = float("-inf")
    log_p = torch.log_softmax(logits, -1)
    draws = torch.stack([sample_next(log_p, g) for _ in range(3000)])  # [3000, 2]
    assert not (draws == 5_000).any()
    for row in range(2):
        probs = log_p[row].double().exp()
        named = probs[heads[row]]
        expected = torch.cat([named, (1 - named.sum()).reshape(1)])
        hits = draws[:, row, None] == heads[row][None, :]
        counts = torch.cat([hits.sum(0), (~hits.any(1)).sum().reshape(1)]).double()
        assert _chi2(counts, expected) < CHI2_999[5]


def test_top_k_keeps_exactly_the_k_best_in_proportion():
    log_p = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -2.0, -3.0]]), -1)
    draws = torch.stack(
        [sample_next(log_p, torch.Generator().manual_seed(s), 1.0, top_k=6) for s in range(4000)]
    ).flatten()
    counts = torch.bincount(draws, minlength=7).double()
    assert counts[6] == 0
    assert _chi2(counts[:6], torch.softmax(log_p[0, :6].double(), -1)) < CHI2_999[5]


@pytest.mark.parametrize("prompt_len", [30, 5, 40])  # crossing, within, beyond the context
def test_sliding_window_matches_a_full_recompute(prompt_len):
    model = build_model(CFG, 1).eval()
    prompt = torch.randint(0, 300, (2, prompt_len))
    out = sample(model, prompt, 12, torch.Generator().manual_seed(3), use_cache=False)
    # by hand: each step sees exactly the last block_size tokens of prompt + new tokens
    gen, seq = torch.Generator().manual_seed(3), prompt.clone()
    with torch.no_grad():
        for _ in range(12):
            log_p = model(seq[:, -CFG.block_size :], positions="last")
            seq = torch.cat([seq, sample_next(log_p, gen)[:, None]], dim=1)
    assert torch.equal(out, seq[:, prompt_len:])


def test_bad_temperature_and_top_k_name_their_field():
    model, prompt = build_model(CFG, 0), torch.zeros(1, 3, dtype=torch.long)
    for bad in (-0.1, math.nan):
        with pytest.raises(ConfigError) as err:
            sample(model, prompt, 2, temperature=bad)
        assert err.value.field == "temperature"
    with pytest.raises(ConfigError) as err:
        sample(model, prompt, 2, top_k=0)
    assert err.value.field == "top_k"
    assert sample(model, prompt, 2, top_k=1).shape == (1, 2)


def test_greedy_and_top_1_are_the_argmax():
    log_p = torch.log_softmax(torch.tensor([[0.1, 2.0, 0.3], [1.5, -1.0, 1.4]]), -1)
    assert sample_next(log_p, None, 0.0).tolist() == [1, 0]
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        assert sample_next(log_p, g, 1.0, top_k=1).tolist() == [1, 0]
    # top_k as large as the vocabulary keeps everything: the same draws as no top_k
    a = sample_next(log_p, torch.Generator().manual_seed(1), 1.0, top_k=3)
    assert torch.equal(a, sample_next(log_p, torch.Generator().manual_seed(1), 1.0))


def test_cache_is_used_exactly_when_everything_fits(monkeypatch):
    model = build_model(CFG, 0)
    calls, decodes = [], []
    real, real_decode = likex.generate.prefill, likex.generate.decode_step
    monkeypatch.setattr(likex.generate, "prefill", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(
        likex.generate, "decode_step", lambda *a: decodes.append(a[3]) or real_decode(*a)
    )
    g = torch.Generator().manual_seed(0)
    fits = sample(model, torch.zeros(2, 30, dtype=torch.long), 2, g)  # 30 + 2 = 32: the cache
    assert calls == [1] and fits.shape == (2, 2)
    assert decodes == [30]  # 2 tokens: the prefill's, then one decode step at position 30
    sample(model, torch.zeros(2, 30, dtype=torch.long), 2, g, use_cache=True)  # allowed
    assert calls == [1, 1]
    sample(model, torch.zeros(2, 30, dtype=torch.long), 3, g)  # 33: the sliding window
    assert calls == [1, 1]


def test_no_new_tokens_and_training_mode_kept():
    model = build_model(CFG, 0)
    prompt = torch.zeros(3, 4, dtype=torch.long)
    for use_cache in (True, False):
        assert sample(model, prompt, 0, use_cache=use_cache).shape == (3, 0)
    model.train()
    sample(model, prompt, 2)
    assert model.training
    model.eval()
    sample(model, prompt, 2)
    assert not model.training


def test_cache_holds_more_rows_than_prompt_tokens():
    model = build_model(CFG, 0)
    prompt = torch.randint(0, 300, (6, 2), generator=torch.Generator().manual_seed(0))
    cached = sample(model, prompt, 3, torch.Generator().manual_seed(1), use_cache=True)
    plain = sample(model, prompt, 3, torch.Generator().manual_seed(1), use_cache=False)
    assert cached.shape == (6, 3) and torch.equal(cached, plain)
