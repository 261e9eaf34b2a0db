import pytest
import torch

from likex.generate import sample
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
