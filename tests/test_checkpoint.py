import pytest
import torch

from likex.errors import LikexError
from likex.models.checkpoint import load_model, load_optimizer, save_model, save_optimizer
from likex.models.gpt import GPTConfig, build_model

CFG = GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16)


def test_round_trip_keeps_weights_and_tie(tmp_path):
    model = build_model(CFG, 0)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config == CFG
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert loaded.lm_head.weight is loaded.wte.weight


def test_optimizer_round_trip(tmp_path):
    model = build_model(CFG, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    save_optimizer(opt, 7, tmp_path)
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    assert load_optimizer(fresh, tmp_path) == 7
    a, b = opt.state_dict()["state"], fresh.state_dict()["state"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k]["exp_avg"], b[k]["exp_avg"])


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(LikexError, match="not found"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(LikexError, match="no model.safetensors"):
        load_model(tmp_path)
    save_model(build_model(CFG, 0), tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LikexError, match="corrupt"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(LikexError, match="corrupt"):
        load_model(tmp_path)


def test_incompatible_config(tmp_path):
    save_model(build_model(CFG, 0), tmp_path)
    bigger = GPTConfig(**{**CFG.to_dict(), "n_embd": 32})
    (tmp_path / "model.json").write_text(__import__("json").dumps(bigger.to_dict()))
    with pytest.raises(LikexError, match="corrupt or incompatible"):
        load_model(tmp_path)
