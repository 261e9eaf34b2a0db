import pytest
import torch

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


def test_top_k_keeps_exactly_the_k_best_in_proportion():
    log_p = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -2.0, -3.0]]), -1)
    draws = torch.stack(
        [sample_next(log_p, torch.Generator().manual_seed(s), 1.0, top_k=6) for s in range(4000)]
    ).flatten()
    counts = torch.bincount(draws, minlength=7).double()
    assert counts[6] == 0
    assert _chi2(counts[:6], torch.softmax(log_p[0, :6].double(), -1)) < CHI2_999[5]


def test_sliding_window_matches_a_full_recompute():
    model = build_model(CFG, 1).eval()
    prompt = torch.randint(0, 300, (2, 30))
    out = sample(model, prompt, 12, torch.Generator().manual_seed(3), use_cache=False)
    # by hand: each step sees exactly the last block_size tokens of prompt + new tokens
    gen, seq = torch.Generator().manual_seed(3), prompt.clone()
    with torch.no_grad():
        for _ in range(12):
            log_p = model(seq[:, -CFG.block_size :], positions="last")
            seq = torch.cat([seq, sample_next(log_p, gen)[:, None]], dim=1)
    assert torch.equal(out, seq[:, 30:])
