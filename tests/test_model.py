import math

import pytest
import torch

from likex.errors import LikexError
from likex.models.gpt import GPT, GPTConfig, KVCache, build_model, preset_config

SMALL = GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32)


def test_model5_is_gpt2_small_sized():
    with torch.device("meta"):
        model = GPT(preset_config("model5"))
    cfg = model.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size) == (12, 12, 768, 256)
    # GPT-2 small is 124.4M with a 1024 context; 768 fewer positions here.
    assert model.num_params() == 124_439_808 - 768 * 768
    assert model.lm_head.weight is model.wte.weight


def test_last_position_head_equals_last_row():
    model = build_model(SMALL, 0).eval()
    idx = torch.randint(0, 300, (3, 20))
    full = model(idx, positions="all")
    last = model(idx, positions="last")
    assert full.shape == (3, 20, 300) and last.shape == (3, 300)
    assert torch.allclose(full[:, -1], last, atol=1e-5)
    assert torch.allclose(last.exp().sum(-1), torch.ones(3), atol=1e-5)


def test_kv_cache_matches_full_forward():
    model = build_model(SMALL, 1).eval()
    idx = torch.randint(0, 300, (2, 12))
    full = model(idx, positions="all")
    cache = KVCache(SMALL, 2, torch.device("cpu"), torch.float32)
    model(idx[:, :5], positions="all", cache=cache)
    chunk = model(idx[:, 5:9], positions="all", cache=cache, start_pos=5)  # masked chunk
    assert torch.allclose(chunk, full[:, 5:9], atol=1e-5)
    for t in range(9, 12):
        step = model(idx[:, t : t + 1], positions="last", cache=cache, start_pos=t)
        assert torch.allclose(step, full[:, t], atol=1e-5)


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(SMALL, 7)
    after = torch.rand(1)
    b = build_model(SMALL, 7)
    assert torch.equal(expected, after)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_course_init_copies_last_token_and_gpt2_init_is_near_uniform():
    """The seed's 0/200: N(0,1) tied embeddings at d=768 make the untrained model copy."""
    cfg = GPTConfig(vocab_size=2000, block_size=16, n_layer=1, n_head=12, n_embd=768)
    idx = torch.randint(0, 2000, (8, 16))
    with torch.no_grad():
        course = build_model(cfg, 0).eval()(idx, positions="last")
        gpt2 = build_model(GPTConfig(**{**cfg.to_dict(), "weight_init": "gpt2"}), 0).eval()(
            idx, positions="last"
        )
    copy_prob = course.exp().gather(1, idx[:, -1:]).squeeze(1)
    assert (copy_prob > 0.9).all()
    # N(0, 0.02) weights: every token near 1/V, so the entropy is near log V.
    entropy = -(gpt2.exp() * gpt2).sum(-1)
    assert (entropy > math.log(2000) - 0.05).all()


def test_context_overflow_is_refused():
    model = build_model(SMALL, 0)
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("bad", [{"n_embd": 30, "n_head": 4}, {"n_layer": 0}, {"weight_init": "x"}])
def test_bad_configs(bad):
    with pytest.raises(LikexError):
        GPTConfig(**bad)


def test_unknown_preset():
    with pytest.raises(LikexError, match="unknown preset"):
        preset_config("model9")
