"""The sampling batch: chosen from a measurement, kept per machine and model, overridable."""

import json

import pytest

import likex.throughput as throughput
from likex.errors import LikexError
from likex.models.gpt import build_model, preset_config


def test_a_larger_batch_is_taken_while_it_is_cheaper_per_token():
    costs = {8: 1.0, 16: 0.6, 32: 0.58, 64: 0.3}  # 32 saves under 5%: the search stops there
    assert throughput.choose_batch(costs.__getitem__, (8, 16, 32, 64)) == 16
    assert throughput.choose_batch({8: 1.0, 16: 1.2}.__getitem__, (8, 16)) == 8
    assert throughput.choose_batch({8: 1.0, 16: 0.5, 32: 0.2}.__getitem__, (8, 16, 32)) == 32


def test_the_measured_batch_is_kept_per_model_and_overridable(tmp_path, monkeypatch):
    monkeypatch.setenv("LIKEX_CACHE", str(tmp_path))
    monkeypatch.delenv(throughput.SAMPLE_BATCH_ENV, raising=False)
    measured = []
    monkeypatch.setattr(throughput, "choose_batch", lambda cost, c: measured.append(c) or 16)
    model = build_model(preset_config("tiny"), 0)
    assert throughput.sampling_batch(model) == 16 and len(measured) == 1
    assert throughput.sampling_batch(model) == 16 and len(measured) == 1  # from the cache
    (entry,) = json.loads((tmp_path / throughput.CACHE_FILE).read_text()).values()
    assert entry == 16
    other = build_model(preset_config("tiny", n_layer=1), 0)
    throughput.sampling_batch(other)
    assert len(measured) == 2  # another shape is measured on its own
    monkeypatch.setenv(throughput.SAMPLE_BATCH_ENV, "5")
    assert throughput.sampling_batch(model) == 5
    monkeypatch.setenv(throughput.SAMPLE_BATCH_ENV, "0")
    with pytest.raises(LikexError, match="positive integer"):
        throughput.sampling_batch(model)


def test_the_measured_cost_is_seconds_per_token():
    """The measurement itself, on the tiny preset: seconds per token, positive and finite."""
    model = build_model(preset_config("tiny"), 0)
    cost = throughput._measured_cost(model, next(model.parameters()).device)
    assert all(0 < cost(b) < 1 for b in (1, 8))
