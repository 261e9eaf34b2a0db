"""The audit's parts: predicates, the white-box explanation, the black-box test and its
multiple-testing correction (tiny models, synthetic data). The statistics alone: test_stats.py."""

import copy
import math

import numpy as np
import pytest
import torch

from likex.audit.black_box import BlackBoxConfig, black_box_audit
from likex.audit.predicates import (
    Predicate,
    PredicateIndex,
    predicate_from_key,
    predicate_key,
    token_features,
)
from likex.audit.white_box import (
    ProbeStats,
    WhiteBoxConfig,
    boosted_set,
    explain,
    white_box_audit,
)
from likex.errors import LikexError
from likex.models.gpt import DEFAULT_LR, build_model, preset_config
from likex.train import TrainConfig, train


@pytest.fixture(scope="session")
def index(token_strings) -> PredicateIndex:
    return PredicateIndex.of(token_strings)


def test_predicates_match_describe_and_round_trip():
    p = Predicate("contains", "x")
    assert p.matches(" box") and not p.matches(" BOX") and p.describe() == "contains 'x'"
    assert Predicate("contains", "x", ignore_case=True).matches(" BOX")
    assert Predicate("startswith", " un").matches(" under") and not Predicate(
        "startswith", " un"
    ).matches("fun")
    assert Predicate("endswith", "ing").matches(" sing") and not Predicate(
        "endswith", "ing"
    ).matches("ingot")
    assert Predicate("class", "digit").matches(" 42") and not Predicate("class", "digit").matches(
        "ab"
    )
    assert p.noun_phrase() == "tokens containing 'x'"
    assert p.to_pattern() == {"kind": "contains", "text": "x", "ignore_case": False}
    for q in (p, Predicate("endswith", "Ly", True), Predicate("class", "punctuation")):
        assert Predicate.from_pattern(q.to_pattern()) == q
        assert predicate_from_key(predicate_key(q)) == q
    with pytest.raises(LikexError):
        Predicate("regex", "x")
    with pytest.raises(LikexError):
        Predicate("class", "nonsense")


def test_features_are_exactly_the_predicates_a_token_satisfies():
    token = " Boxes"
    feats = {predicate_from_key(k) for k in token_features(token)}
    assert all(f.matches(token) for f in feats)
    assert Predicate("contains", "oxe") in feats and Predicate("startswith", " b", True) in feats
    assert Predicate("endswith", "xes") in feats and Predicate("contains", "Boxes") not in feats


def test_index_counts_agree_with_masks(index, token_strings):
    assert index.n_tokens(Predicate("contains", "x")) == 896  # the seed's 897 less <|endoftext|>
    assert index.n_tokens(Predicate("contains", "x", True)) == 984
    for p in (Predicate("endswith", "ing"), Predicate("startswith", " un", True)):
        assert index.n_tokens(p) == int(p.mask(token_strings).sum())


def _stats_with_boost(mask: torch.Tensor, boost: float, noise: float, seed: int) -> ProbeStats:
    gen = torch.Generator().manual_seed(seed)
    lr = torch.randn(mask.numel(), generator=gen, dtype=torch.float64) * noise
    lr[mask] += boost
    p = torch.full((mask.numel(),), 1.0 / mask.numel(), dtype=torch.float64)
    return ProbeStats(lr, torch.ones_like(lr), p * lr.exp() / (p * lr.exp()).sum(), p, 32)


def test_explain_names_a_boosted_predicate_without_being_told(index, token_strings):
    planted = Predicate("endswith", "ly")
    mask = planted.mask(token_strings)
    stats = _stats_with_boost(mask, boost=2.0, noise=0.1, seed=0)
    boosted, _ = boosted_set(stats, z=5.0, min_log_ratio=math.log(2))
    findings = explain(boosted, index, top=3, stats=stats)
    assert findings[0].predicate == planted and findings[0].f1 > 0.99
    assert findings[0].mass_shift > 0
    assert len({f.predicate for f in findings}) == 3


def test_noise_alone_boosts_nothing(index, token_strings):
    stats = _stats_with_boost(torch.zeros(len(token_strings), dtype=torch.bool), 0.0, 0.1, 1)
    boosted, threshold = boosted_set(stats, z=5.0, min_log_ratio=math.log(2))
    assert threshold == pytest.approx(math.log(2)) and not boosted.any()
    assert explain(boosted, index, top=3) == []


def _tiny_pair(mode: str, mask: torch.Tensor, tmp_path, steps: int = 60):
    reference = build_model(preset_config("tiny", weight_init="gpt2"), 0).eval()
    reference.requires_grad_(False)
    model = copy.deepcopy(reference).requires_grad_(True)
    kw = dict(steps=steps, batch_size=8, lr=DEFAULT_LR["tiny"], context_len=64)
    cfg = {
        "uniform": TrainConfig(mode="uniform", **kw),
        "rate": TrainConfig(mode="rate", rate=0.2, **kw),
        "control": TrainConfig(mode="tilt", beta=0.0, **kw),
    }[mode]
    train(model, cfg, mask, tmp_path, reference=reference, progress=False)
    return model.eval(), reference


@pytest.mark.parametrize("mode", ["uniform", "rate"])
def test_white_box_recovers_a_planted_predicate(mode, index, token_strings, tmp_path):
    planted = Predicate("contains", "z")
    mask = planted.mask(token_strings)
    model, reference = _tiny_pair(mode, mask, tmp_path)
    cfg = WhiteBoxConfig(probes="random", n_probes=16)
    result = white_box_audit(model, reference, token_strings, cfg, index=index)
    assert result.detected
    assert torch.equal(result.top.predicate.mask(token_strings), mask)
    assert result.top.f1 > 0.9 and result.top.mass_shift > 0.05
    d = result.to_dict()
    assert d["findings"][0]["pattern"] == planted.to_pattern()
    assert {"predicate", "pattern", "n_tokens", "precision", "recall", "f1", "mass_shift"} <= set(
        d["findings"][0]
    )
    assert d["boosted_tokens"][0]["log_ratio"] >= d["boosted_tokens"][-1]["log_ratio"]


def test_white_box_does_not_flag_an_unbiased_control(index, token_strings, tmp_path):
    mask = Predicate("contains", "z").mask(token_strings)
    model, reference = _tiny_pair("control", mask, tmp_path)
    cfg = WhiteBoxConfig(probes="random", n_probes=16)
    result = white_box_audit(model, reference, token_strings, cfg, index=index)
    assert not result.detected


def test_white_box_refuses_different_vocabularies(token_strings):
    model = build_model(preset_config("tiny"), 0)
    other = build_model(preset_config("tiny", vocab_size=1000), 0)
    with pytest.raises(LikexError, match="vocabulary"):
        white_box_audit(model, other, token_strings, WhiteBoxConfig(n_probes=2))


def _synthetic_samples(rng, probs, n_seq, length, concentration=50.0):
    """Sequences whose token distribution varies from sequence to sequence (correlated
    tokens within a sequence, as in real samples)."""
    ids = np.arange(len(probs))
    out = []
    for _ in range(n_seq):
        p = rng.dirichlet(probs * concentration)
        out.append(rng.choice(ids, size=length, p=p).tolist())
    return out


def test_correction_holds_the_family_wise_error_rate_on_null_data(token_strings, index):
    rng = np.random.default_rng(0)
    vocab_ids = rng.choice(len(token_strings), size=400, replace=False)
    probs = rng.dirichlet(np.ones(400))
    cfg = BlackBoxConfig(alpha=0.05)
    reps, flagged, uncorrected = 60, 0, 0
    for _ in range(reps):
        a = _synthetic_samples(rng, probs, 20, 100)
        b = _synthetic_samples(rng, probs, 20, 100)
        a = [[int(vocab_ids[t]) for t in s] for s in a]
        b = [[int(vocab_ids[t]) for t in s] for s in b]
        result = black_box_audit(a, b, token_strings, cfg, index=index)
        flagged += result.detected
        uncorrected += any(f.p_value < 0.05 for f in result.findings)
    # Holm keeps the chance of any false positive at 5%: expect ~3 of 60, allow sampling noise
    assert flagged <= 7
    # without a correction nearly every replicate would report something
    assert uncorrected >= reps * 0.8


def test_black_box_finds_a_planted_shift_and_names_it(token_strings, index):
    rng = np.random.default_rng(1)
    planted = Predicate("contains", "q")
    q_ids = planted.mask(token_strings).nonzero().flatten().numpy()
    other = rng.choice(np.setdiff1d(np.arange(len(token_strings)), q_ids), 600, replace=False)
    vocab_ids = np.concatenate([q_ids, other])
    base = np.concatenate([np.full(len(q_ids), 0.01 / len(q_ids)), np.full(600, 0.99 / 600)])
    shifted = np.concatenate([np.full(len(q_ids), 0.06 / len(q_ids)), np.full(600, 0.94 / 600)])

    def draw(p):
        return [[int(vocab_ids[t]) for t in s] for s in _synthetic_samples(rng, p, 30, 200)]

    result = black_box_audit(
        draw(shifted), draw(base), token_strings, BlackBoxConfig(), index=index
    )
    assert result.detected and result.top.predicate == planted
    assert result.top.rate_suspect > 0.04 > 0.02 > result.top.rate_baseline
    assert result.to_dict()["findings"][0]["significant"]


def test_black_box_rejects_bad_samples(token_strings):
    with pytest.raises(LikexError, match="at least 2"):
        black_box_audit([[1, 2]], [[1], [2]], token_strings, BlackBoxConfig())
    with pytest.raises(LikexError, match="outside the vocabulary"):
        black_box_audit([[1], [99999]], [[1], [2]], token_strings, BlackBoxConfig())
