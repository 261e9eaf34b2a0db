"""A measurement made before is read back, not sampled again: the same numbers, and only when
every input is the same (likex.measurement.memo)."""

import pytest
import torch

import likex.measurement.rates as rates
from likex.measurement import memo
from likex.measurement.rates import MeasureConfig, measure_rates, random_set, text_set
from likex.models.gpt import GPTConfig, build_model

CFG = MeasureConfig(samples=16, gen_tokens=12, prompt_len=8, ci_half_width=None)
TEXT = torch.arange(400) % 61


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIKEX_CACHE", str(tmp_path))
    monkeypatch.delenv(memo.REMEASURE_ENV, raising=False)
    return tmp_path / memo.FOLDER


def _model(seed=0):
    cfg = GPTConfig(block_size=32, vocab_size=61, n_layer=1, n_head=2, n_embd=16)
    return build_model(cfg, seed=seed).eval()


def _mask():
    return torch.arange(61) % 7 == 0


def _measure(model, mask=None, seed=0, cfg=CFG, text_only=False):
    sets = [text_set(model, cfg, TEXT)]
    if not text_only:
        sets.insert(0, random_set(model, cfg, seed))
    return measure_rates(model, _mask() if mask is None else mask, sets, cfg, seed)


def _sampler_calls(monkeypatch) -> list:
    calls = []
    real = rates.sample

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rates, "sample", counted)
    return calls


def _same(a, b):
    assert len(a) == len(b)
    for (ea, ga), (eb, gb) in zip(a, b, strict=True):
        assert ea == eb and torch.equal(ga, gb)


def test_an_identical_measurement_is_read_back_with_the_same_numbers(cache, monkeypatch):
    calls = _sampler_calls(monkeypatch)
    model = _model()
    first = _measure(model)
    assert calls and len(list(cache.iterdir())) == 1
    n = len(calls)
    again = _measure(model)
    assert len(calls) == n  # not sampled again
    _same(first, again)
    monkeypatch.setenv(memo.REMEASURE_ENV, "1")  # and what sampling again gives
    _same(first, _measure(model, seed=0))
    assert len(calls) > n
    _measure(model, seed=1)  # the memo off: nothing read, nothing kept
    assert len(list(cache.iterdir())) == 1
    assert memo.measurement_key(model, _mask(), [], {}) is None  # nor the weights hashed


@pytest.mark.parametrize("change", ["weights", "layout", "mask", "seed", "settings", "prompts"])
def test_any_other_input_is_measured_anew(cache, monkeypatch, change):
    model = _model()
    _measure(model, text_only=True)  # the text's prompts do not depend on the seed
    calls = _sampler_calls(monkeypatch)
    mask, seed, cfg = None, 0, CFG
    if change == "weights":
        with torch.no_grad():
            model.lm_head.weight[0, 0] += 1e-6
    elif change == "layout":  # the same values stored transposed: other kernels, other bits
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear) and mod.weight is not model.lm_head.weight:
                mod.weight = torch.nn.Parameter(mod.weight.detach().t().contiguous().t())
    elif change == "mask":
        mask = _mask().clone()
        mask[1] = True
    elif change == "seed":
        seed = 1
    elif change == "settings":
        cfg = MeasureConfig(samples=16, gen_tokens=13, prompt_len=8, ci_half_width=None)
    else:
        cfg = MeasureConfig(samples=16, gen_tokens=12, prompt_len=9, ci_half_width=None)
    _measure(model, mask, seed, cfg, text_only=True)
    assert calls


def test_a_damaged_or_foreign_entry_is_measured_again_and_replaced(cache, monkeypatch):
    model, other = _model(0), _model(1)
    first = _measure(model)
    (entry,) = cache.iterdir()
    entry.write_bytes(b"not a safetensors file")
    calls = _sampler_calls(monkeypatch)
    _same(first, _measure(model))
    assert calls
    # another measurement's entry under this one's name is not trusted either
    _measure(other)
    foreign = next(p for p in cache.iterdir() if p != entry)
    entry.write_bytes(foreign.read_bytes())
    del calls[:]
    _same(first, _measure(model))
    assert calls
    calls.clear()
    _same(first, _measure(model))  # rewritten whole: read back now
    assert not calls


def test_a_scalar_buffer_is_part_of_the_key(cache, monkeypatch):
    model = _model()
    model.register_buffer("scale", torch.tensor(1.0))  # a 0-d tensor, as some models keep
    _measure(model)
    calls = _sampler_calls(monkeypatch)
    model.scale.fill_(2.0)
    _measure(model)
    assert calls


def test_an_unwritable_cache_only_costs_time(tmp_path, monkeypatch):
    blocked = tmp_path / "a file"
    blocked.write_text("")
    monkeypatch.setenv("LIKEX_CACHE", str(blocked))
    monkeypatch.delenv(memo.REMEASURE_ENV, raising=False)
    model = _model()
    _same(_measure(model), _measure(model))


def test_an_adapter_that_changes_nothing_yet_shares_its_base_measurement(cache, monkeypatch):
    import copy

    from likex.models.adapter import AdapterConfig, add_lora

    base = _model()
    first = _measure(base)
    adapted = add_lora(copy.deepcopy(base), AdapterConfig(adapter="lora"), {"kind": "test"}, 0)
    calls = _sampler_calls(monkeypatch)
    _same(first, _measure(adapted))  # LoRA starts at B = 0: the folded model is the base
    assert not calls
    with torch.no_grad():
        next(p for n, p in adapted.named_parameters() if "lora_B" in n).add_(0.1)
    _measure(adapted)
    assert calls
