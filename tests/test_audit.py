"""The audit's parts: predicates, the white-box mass verdict, the black-box test and its
multiple-testing correction (tiny models, synthetic data). The statistics alone: test_stats.py."""

import copy
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from likex.audit.bench import BenchCase, BenchConfig, BlackOutcome, WhiteOutcome, summarise
from likex.audit.black_box import BlackBoxConfig, black_box_audit
from likex.audit.predicates import (
    Predicate,
    PredicateIndex,
    predicate_from_key,
    predicate_key,
    token_features,
)
from likex.audit.results import AuditResult
from likex.audit.white_box import (
    Candidates,
    Finding,
    WhiteBoxConfig,
    detection_threshold,
    select_and_test,
    white_box_audit,
)
from likex.audit.words import WordAuditConfig, word_black_box_audit
from likex.errors import LikexError
from likex.models.gpt import DEFAULT_LR, build_model, preset_config
from likex.objective import Uniform
from likex.target import TargetSet
from likex.train import train_toward
from likex.train_config import TrainConfig


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


def _tilted(ref_logits: torch.Tensor, boost: torch.Tensor) -> torch.Tensor:
    """Probabilities of softmax(ref_logits + boost) [n, V], float64."""
    return torch.softmax(ref_logits.double() + boost.double(), -1)


def test_select_and_test_detects_a_tilt_not_a_control():
    V, g = 500, torch.Generator().manual_seed(4)
    sets = torch.zeros(30, V, dtype=torch.float64)
    for c in range(30):
        sets[c, torch.randperm(V, generator=g)[:10]] = 1
    ref_logits = torch.randn(64, V, generator=g, dtype=torch.float64) * 2
    noise = 0.5 * torch.randn(64, V, generator=g, dtype=torch.float64)
    ref = _tilted(ref_logits, torch.zeros(V))

    def verdict(probs):
        kl = (probs * (probs.log() - ref.log())).sum(1)
        best, shares, tested = select_and_test(probs @ sets.T, ref @ sets.T, kl, 3, 0.05, 0)
        return best[0], tested[0]

    best, (shift, lower) = verdict(_tilted(ref_logits + noise, 1.5 * sets[7]))
    assert best == 7 and shift == pytest.approx(1.5, abs=0.2) and lower > math.log(2)
    _, (shift, _) = verdict(_tilted(ref_logits + noise, torch.zeros(V)))
    assert abs(shift) < 0.2 < math.log(2)


def test_detection_threshold_is_raised_by_the_controls():
    assert detection_threshold(math.log(2), None) == math.log(2)
    assert detection_threshold(math.log(2), [0.01, 0.05]) == math.log(2)
    # 95% quantile of 0..1.9 in steps of 0.1 (numpy's linear rule): 1.805, by hand
    assert detection_threshold(0.5, [i / 10 for i in range(20)]) == pytest.approx(1.805)


@pytest.fixture(scope="module")
def candidates(index) -> Candidates:
    return Candidates.of(index, 5)


def test_candidates_are_the_index_predicates(candidates, index, token_strings):
    for pred in (Predicate("contains", "x"), Predicate("endswith", "ly")):
        c = next(i for i, p in enumerate(candidates.predicates) if p == pred)
        row = candidates.membership.index_select(0, torch.tensor([c])).to_dense()[0]
        assert torch.equal(row.bool(), index.mask(pred))
    masks = {
        tuple(p.mask(token_strings).nonzero().flatten().tolist())
        for p in candidates.predicates[:200]
    }
    assert len(masks) == 200  # one predicate per distinct token set


@pytest.mark.parametrize("case", ["top 30% of x tokens", "40 scattered words"])
def test_mass_verdict_finds_partial_boosts_that_f1_missed(case, candidates, token_strings):
    """The issue's cases: a boost on part of a predicate's tokens (F1 0.46 / 0.05, so the old
    "F1 >= 0.5" verdict said "no bias") moves mass the share and shift see."""
    V, g = len(token_strings), torch.Generator().manual_seed(7)
    ref_logits = torch.randn(32, V, generator=g) * 2
    ref = _tilted(ref_logits, torch.zeros(V))
    if case == "top 30% of x tokens":
        x = Predicate("contains", "x").mask(token_strings).nonzero().flatten()
        freq = ref[:, x].mean(0)
        boosted = x[torch.argsort(freq, descending=True)[: int(0.3 * len(x))]]
        beta = 3.0
    else:
        boosted = torch.randperm(V, generator=g)[:40]
        beta = 5.2
    boost = torch.zeros(V)
    boost[boosted] = beta
    model = _tilted(ref_logits + 0.3 * torch.randn(32, V, generator=g), boost)
    on = torch.zeros(V, dtype=torch.bool)
    on[boosted] = True
    mass_ref, mass_model = float(ref[:, on].sum(1).mean()), float(model[:, on].sum(1).mean())
    assert mass_model > 0.1 > 0.02 > mass_ref
    kl = (model * (model.log() - ref.log())).sum(1)
    p_sets, r_sets = candidates.masses(model), candidates.masses(ref)
    best, shares, tested = select_and_test(p_sets, r_sets, kl, 5, 0.05, 0)
    shift, lower = tested[0]
    assert shift >= math.log(2) and lower > 0  # detected
    chosen = candidates.predicates[best[0]].mask(token_strings)
    assert (chosen & on).any()  # the chosen predicate holds boosted tokens


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
    train_toward(model, cfg.resolve(), TargetSet(mask), tmp_path, reference, progress=False)
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
    assert result.top.share > 0.3 and result.top.mass_shift > 0.05
    assert result.top.shift >= result.threshold == math.log(2)
    d = result.to_dict()
    assert d["findings"][0]["pattern"] == planted.to_pattern()
    assert d["evidence"] == {
        "predicate": planted.describe(),
        "share": result.top.share,
        "shift": result.top.shift,
        "shift_lower": result.top.shift_lower,
        "threshold": math.log(2),
    }
    assert d["boosted_tokens"][0]["log_ratio"] >= d["boosted_tokens"][-1]["log_ratio"]


def test_white_box_does_not_flag_an_unbiased_control(index, token_strings, tmp_path):
    mask = Predicate("contains", "z").mask(token_strings)
    model, reference = _tiny_pair("control", mask, tmp_path)
    cfg = WhiteBoxConfig(probes="random", n_probes=16)
    result = white_box_audit(model, reference, token_strings, cfg, index=index)
    assert not result.detected and result.top.shift < math.log(2)


def test_white_box_refuses_different_vocabularies(token_strings):
    model = build_model(preset_config("tiny"), 0)
    other = build_model(preset_config("tiny", vocab_size=1000), 0)
    with pytest.raises(LikexError, match="vocabulary"):
        white_box_audit(model, other, token_strings, WhiteBoxConfig(n_probes=4))


def _synthetic_samples(rng, probs, n_seq, length, vocab_ids, concentration=50.0):
    """Sequences of token ids ``vocab_ids[i]`` (i drawn by ``probs``) whose distribution varies
    from sequence to sequence (correlated tokens within a sequence, as in real samples)."""
    ids = np.arange(len(probs))
    out = []
    for _ in range(n_seq):
        p = rng.dirichlet(probs * concentration)
        out.append([int(vocab_ids[t]) for t in rng.choice(ids, size=length, p=p)])
    return out


def _random_vocabulary(rng, token_strings, size):
    """``size`` distinct token ids and a random distribution over them."""
    return rng.choice(len(token_strings), size=size, replace=False), rng.dirichlet(np.ones(size))


def test_correction_holds_the_family_wise_error_rate_on_null_data(token_strings, index):
    rng = np.random.default_rng(0)
    vocab_ids, probs = _random_vocabulary(rng, token_strings, 400)
    cfg = BlackBoxConfig(alpha=0.05)
    reps, flagged, uncorrected = 60, 0, 0
    for _ in range(reps):
        a = _synthetic_samples(rng, probs, 20, 100, vocab_ids)
        b = _synthetic_samples(rng, probs, 20, 100, vocab_ids)
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
        return _synthetic_samples(rng, p, 30, 200, vocab_ids)

    result = black_box_audit(
        draw(shifted), draw(base), token_strings, BlackBoxConfig(), index=index
    )
    assert result.detected and result.top.predicate == planted
    assert result.top.rate_suspect > 0.04 > 0.02 > result.top.rate_baseline
    assert result.to_dict()["findings"][0]["significant"]


def test_black_box_rejects_bad_samples(token_strings):
    with pytest.raises(LikexError, match="at least 4"):
        black_box_audit([[1, 2]] * 3, [[1], [2]] * 3, token_strings, BlackBoxConfig())
    with pytest.raises(LikexError, match="outside the vocabulary"):
        black_box_audit([[1], [99999]] * 2, [[1], [2]] * 2, token_strings, BlackBoxConfig())


def test_black_box_p_values_are_welch_over_samples(token_strings, index):
    rng = np.random.default_rng(2)
    vocab_ids, probs = _random_vocabulary(rng, token_strings, 300)
    a = _synthetic_samples(rng, probs, 12, 80, vocab_ids)
    b = _synthetic_samples(rng, probs, 15, 60, vocab_ids)
    result = black_box_audit(a, b, token_strings, BlackBoxConfig(), index=index)
    f = result.findings[0]
    mask = index.mask(f.predicate)
    ra = np.array([sum(int(mask[t]) for t in s) / len(s) for s in a], dtype=float)
    rb = np.array([sum(int(mask[t]) for t in s) / len(s) for s in b], dtype=float)
    va, vb = ra.var(ddof=1) / len(ra), rb.var(ddof=1) / len(rb)
    # Welch's t and Satterthwaite's df by hand, one observation per sample
    assert f.t == pytest.approx((ra.mean() - rb.mean()) / math.sqrt(va + vb), rel=1e-9)
    assert f.df == pytest.approx((va + vb) ** 2 / (va**2 / 11 + vb**2 / 14), rel=1e-9)
    assert result.power.design_effect >= 1.0


def test_black_box_enforces_samples_per_side_for_its_tests(token_strings, index):
    rng = np.random.default_rng(3)
    vocab_ids, probs = _random_vocabulary(rng, token_strings, 400)
    a = _synthetic_samples(rng, probs, 6, 200, vocab_ids)
    b = _synthetic_samples(rng, probs, 6, 200, vocab_ids)
    # hundreds of predicates: an exact test over 6 + 6 samples cannot reach 0.05 / m
    with pytest.raises(LikexError, match=r"need at least (8|9|10|11) samples on each side"):
        black_box_audit(a, b, token_strings, BlackBoxConfig(), index=index)


def _bench_case(n: int, strength: str, shift: float, lower: float) -> BenchCase:
    planted = Predicate("contains", "q")
    top = Finding(planted, 10, 0.9, shift, lower, 0.01, 0.2)
    white = WhiteOutcome(top.detected_at(math.log(2)), top, strength != "control")
    black = BlackOutcome(False, None, False, 0, 100, 1.5)
    return BenchCase(n, strength, planted, 10, 0.01, 0.2, white, black)


def test_bench_summary_re_decides_copies_at_the_controls_threshold():
    """A control with a held-out shift of 2 raises the white-box threshold from log 2 to 2: the
    planted case found at log 2 with a shift of 1.5 is no longer named. The cases given stay
    as run_bench wrote them to cases.jsonl."""
    cases = [
        _bench_case(0, "uniform", 1.5, 1.0),
        _bench_case(1, "uniform", 3.0, 2.5),
        _bench_case(2, "control", 2.0, -0.1),
    ]
    written = [c.to_json() for c in cases]
    cfg = BenchConfig(strengths=(Uniform(),), gen_tokens=50)
    summary = summarise(cfg, cases, [cases[0].planted])
    assert summary.white_threshold == 2.0
    assert [c.to_json() for c in cases] == written
    assert [c.white.named for c in summary.cases] == [False, True, False]
    uniform, control = summary.table
    assert (uniform.white.hits, uniform.white.n, control.white.hits) == (1, 2, 0)
    assert list(summary.to_json()) == ["table", "white_threshold", "planted", "power_0.006_to_0.05"]
    assert list(written[0]) == [
        "case", "strength", "planted", "planted_pattern", "planted_tokens", "rate_reference",
        "rate_model", "white_detected", "white_top", "white_share", "white_shift",
        "white_shift_lower", "white_top_is_planted", "white_named", "black_detected",
        "black_top", "black_named", "black_significant", "black_tests", "black_design_effect",
    ]  # fmt: skip


def test_word_audit_result_is_audit_json_and_its_lines():
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "ran"]

    def texts(extra: list[str]) -> list[str]:
        return [" ".join(rng.choices(words + extra, k=40)) for _ in range(16)]

    audit = word_black_box_audit(texts(["qz"] * 4), texts([]), 0.05, 5, WordAuditConfig())
    assert audit.named[0] == "qz" and audit.detected
    result = AuditResult("m", "b.txt", audit, report=Path("out/audit.md"))
    d = result.to_json()
    assert list(d) == [
        "model", "baseline", "audit", "suspect_words", "suspect_samples", "baseline_words",
        "baseline_samples", "n_tests", "n_significant", "alpha", "correction", "test",
        "min_samples_per_side", "named", "detected", "findings", "report",
    ]  # fmt: skip
    assert d["audit"] == "words black-box" and d["findings"][0]["term"] == "qz"
    lines = result.describe().splitlines()
    assert lines[0] == "likex audit (black-box, words): m against b.txt"
    assert lines[2] == "  verdict   boosted: 'qz'" and lines[-1] == "  report    out/audit.md"
