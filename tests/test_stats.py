"""likex.stats against independent references: t tables, closed forms, hand-solved values,
brute-force enumeration, direct constructions; hypothesis where a property fits."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from likex.stats.distributions import Z95, betainc, t_quantile, t_sf, z_quantile
from likex.stats.intervals import (
    check_points,
    design_effect,
    design_effect_bound,
    fmt_rate,
    plan_sequences,
    rate_interval,
    wilson_interval,
)
from likex.stats.kl import (
    binary_kl,
    kl_share_of_tilt,
    logit_mass_shift,
    perplexity_floor,
    shared_tilt_floor,
)
from likex.stats.power import (
    PowerAnalysis,
    _power_welch,
    beta_binomial_hits,
    samples_needed,
    simulated_power,
)
from likex.stats.significance import (
    MIN_SAMPLES,
    holm,
    min_samples_per_side,
    min_samples_permutation,
    permutation_p,
    welch_t_test,
)
from likex.target import rate_target_log

FAST = settings(max_examples=60, deadline=None)


@pytest.fixture(autouse=True)
def _fresh_quantiles():
    """t_quantile is cached: each test computes its quantiles afresh, so it checks the code
    and not a value an earlier test (or an import) left in the cache."""
    t_quantile.cache_clear()


# --- distributions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "df,value",
    [(3, 3.182446), (7, 2.364624), (15, 2.131450), (63, 1.998341), (1, 12.706205), (30, 2.042272)],
)
def test_t_quantile_table(df, value):
    assert abs(t_quantile(0.975, df) - value) < 1e-6


def test_t_quantile_other_levels_and_normal():
    assert abs(t_quantile(0.95, 10) - 1.812461) < 1e-6  # t table
    assert abs(t_quantile(0.995, 5) - 4.032143) < 1e-6
    assert abs(z_quantile(0.975) - 1.959963985) < 1e-8
    assert t_quantile(0.025, 7) == -t_quantile(0.975, 7)


@FAST
@given(st.floats(-50, 50))
@example(1e-9)
@example(-3e-7)
def test_t_sf_closed_forms_df1_df2(t):
    # df=1 is Cauchy, df=2 has sf = 1/2 - t / (2 sqrt(2 + t^2))
    assert abs(t_sf(t, 1) - (0.5 - math.atan(t) / math.pi)) < 1e-10
    assert abs(t_sf(t, 2) - (0.5 - t / (2 * math.sqrt(2 + t * t)))) < 1e-10


@FAST
@given(st.floats(1e-6, 1 - 1e-6), st.floats(0.05, 40))
def test_betainc_closed_forms(x, a):
    assert abs(betainc(a, 1, x) - x**a) < 1e-10
    assert abs(betainc(1, a, x) - (1 - (1 - x) ** a)) < 1e-10


@FAST
@given(st.floats(0.001, 0.999), st.floats(1, 500))
def test_t_quantile_inverts_sf(p, df):
    assert abs(1 - t_sf(t_quantile(p, df), df) - p) < 1e-9


# --- rate intervals ------------------------------------------------------------------------


def test_wilson_hand_solved_3_of_10():
    lo, hi = wilson_interval(3, 10, 1.96)  # Newcombe (1998): 0.1078, 0.6032
    assert abs(lo - 0.1078) < 5e-5 and abs(hi - 0.6032) < 5e-5


@FAST
@given(st.floats(0, 1), st.floats(2, 1e4), st.integers(2, 200))
def test_wilson_t_equals_df_adjusted_effective_size(frac, n, k):
    z, t = z_quantile(0.975), t_quantile(0.975, k - 1)
    a = wilson_interval(frac * n, n, t)
    f = (z / t) ** 2
    b = wilson_interval(frac * n * f, n * f, z)
    assert np.allclose(a, b, atol=1e-12)


def test_design_effect_hand():
    # p = 1/2, n = 20, robust var = 2/1 * (25 + 25) / 400 = 0.25, binomial 0.25 / 20
    assert design_effect([0, 10], [10, 10]) == pytest.approx(20.0)
    assert design_effect([3, 3, 3], [10, 10, 10]) == 0.0
    assert math.isnan(design_effect([0, 0], [10, 10]))
    assert math.isnan(design_effect([4], [10]))


def test_zero_hits_sequence_level_bound():
    p, lo, hi, n_eff, deff = rate_interval(np.zeros(8), np.full(8, 200))
    assert (p, lo) == (0.0, 0.0)
    assert hi == pytest.approx(0.369417, abs=1e-6)  # 1 - exp(ln(0.025) / 8), by hand
    assert n_eff == 8 and deff == 200
    _, lo, hi, _, _ = rate_interval(np.full(8, 200), np.full(8, 200))
    assert lo == pytest.approx(0.630583, abs=1e-6) and hi == 1.0
    # with a design effect supplied (e.g. measured on the reference): Wilson-t at n / deff
    _, lo, hi, n_eff, _ = rate_interval(np.zeros(8), np.full(8, 200), zero_deff=4.0)
    t2 = t_quantile(0.975, 7) ** 2
    assert hi == pytest.approx(t2 / (400 + t2)) and n_eff == 400


@FAST
@given(st.lists(st.integers(0, 50), min_size=2, max_size=40))
def test_rate_interval_is_hull_and_contains_rate(hits):
    k = len(hits)
    lengths = np.full(k, 50)
    p, lo, hi, n_eff, deff = rate_interval(hits, lengths)
    assert 0 <= lo <= p <= hi <= 1
    if not math.isnan(design_effect(hits, lengths)):
        q = t_quantile(0.975, k - 1)
        d = max(deff, 1e-9)
        w = wilson_interval(sum(hits) / d, 50 * k / d, q)
        assert lo <= w[0] + 1e-15 and hi >= w[1] - 1e-15


def test_hall_component_hand_solved():
    # hits [0, 0, 0, 8] in 4 x 100 tokens: residuals e = (h - 2) / 100 = (-.02, -.02, -.02, .06),
    # m2 = .0012, m3 = .000048, skew 1.1547, se = .02, a = skew / 6 = .19245, q = t_{.975,3};
    # upper = .02 - se * ((cbrt(1 + 3a(-q - a/2)) - 1) / a) = .22400, lower clipped at 0.
    # Wilson-t alone (deff 8.163, n_eff 49): [.00163, .20280], so the hull is (0, .22400).
    p, lo, hi, n_eff, deff = rate_interval([0, 0, 0, 8], [100] * 4)
    assert (p, lo) == (0.02, 0.0)
    assert hi == pytest.approx(0.22400, abs=1e-5)
    assert deff == pytest.approx(8.163265, abs=1e-6) and n_eff == pytest.approx(49.0)


def _coverage(interval, p, deff, k, reps, seed, length=200):
    rng = np.random.default_rng(seed)
    rho = (deff - 1) / (length - 1)
    theta = rng.beta(p * (1 / rho - 1), (1 - p) * (1 / rho - 1), size=(reps, k))
    hits = rng.binomial(length, theta)
    return np.mean([(lambda r: r[0] <= p <= r[1])(interval(h, np.full(k, length))) for h in hits])


def _legacy(h, lengths):  # likex today: Wilson-z at n / max(1, deff)
    d = design_effect(h, lengths)
    d = 1.0 if math.isnan(d) else max(1.0, d)
    return wilson_interval(h.sum() / d, lengths.sum() / d, 1.959963984540054)


def test_small_coverage_simulation():
    ours = lambda h, L: rate_interval(h, L)[1:3]  # noqa: E731
    assert _coverage(ours, 0.1, 3, 16, 1000, 1) >= 0.92
    assert _coverage(ours, 0.02, 10, 16, 1000, 2) >= 0.92
    # the same check rejects today's interval in the hard cell (measured ~0.89)
    assert _coverage(_legacy, 0.02, 10, 16, 1000, 2) < 0.92


def test_check_points_and_plan():
    assert check_points(100) == [16, 32, 64, 100]
    assert check_points(16) == [16]
    hits, lengths = [2, 0, 5, 1] * 4, [200] * 16
    _, lo, hi, _, _ = rate_interval(hits, lengths)
    k = plan_sequences(hits, lengths, (hi - lo) / 4)  # half the width: 4x sequences
    assert k == 64


# --- tests over sequences ------------------------------------------------------------------


def test_holm_hand():
    reject, adj = holm([0.01, 0.04, 0.03, 0.005], 0.05)
    # sorted 0.005*4 = .02, .01*3 = .03, .03*2 = .06, max(.04*1, .06) = .06
    assert np.allclose(adj, [0.03, 0.06, 0.06, 0.02])
    assert reject.tolist() == [True, False, False, True]


@FAST
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30), st.floats(0.001, 0.2))
def test_holm_matches_step_down_loop(p, alpha):
    m, expect = len(p), np.zeros(len(p), bool)
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - rank):
            break
        expect[i] = True
    assert (holm(p, alpha)[0] == expect).all()


def test_welch_hand():
    t, df, p = welch_t_test([1, 2, 3, 4], [2, 4, 6, 8, 10])
    # se^2 = 1.6667/4 + 10/5 = 2.416667; df = se^4 / (0.416667^2 / 3 + 2^2 / 4)
    assert t[0] == pytest.approx(-2.251436, abs=1e-6)
    assert df[0] == pytest.approx(5.520788, abs=1e-6)
    assert p[0] == pytest.approx(2 * t_sf(2.251436, 5.520788), abs=1e-6)
    with pytest.raises(ValueError):
        welch_t_test([1, 2, 3], [1, 2, 3, 4])  # below MIN_SAMPLES
    # no spread on either side: equal means -> p = 1, different means -> p = 0
    t, df, p = welch_t_test([[0.1] * 4, [0.1] * 4], [[0.1] * 4, [0.2] * 4])
    assert t.tolist() == [0.0, -math.inf] and p.tolist() == [1.0, 0.0]


def test_permutation_hand_and_brute_force():
    # splits of {0,1,2,3} into pairs: |diff of means| = 2,1,0,0,1,2 -> P(>= 2) = 2/6
    p = permutation_p(
        [[0, 1]], [1, 1], [[2, 3]], [1, 1], studentized=False, alpha=0.5
    )  # tiny n allowed only at a level it can reach
    assert p[0] == pytest.approx(1 / 3)
    rng = np.random.default_rng(3)
    ha, hb, L = rng.integers(0, 30, 5), rng.integers(0, 30, 5), rng.integers(50, 100, 10)
    y = np.concatenate([ha, hb]) / L

    def welch(ix):
        a, b = y[list(ix)], np.delete(y, list(ix))
        return abs(a.mean() - b.mean()) / math.sqrt(a.var(ddof=1) / 5 + b.var(ddof=1) / 5)

    obs = welch(range(5))
    splits = list(itertools.combinations(range(10), 5))
    expect = sum(welch(s) >= obs - 1e-12 for s in splits) / len(splits)
    got = permutation_p([ha], L[:5], [hb], L[5:], alpha=0.5)[0]
    assert got == pytest.approx(expect)
    mc = permutation_p([ha], L[:5], [hb], L[5:], alpha=0.5, max_exact=1, n_perm=40_000)
    assert abs(mc[0] - expect) < 0.01
    with pytest.raises(ValueError):  # 5 per side cannot reach 0.05 / 10
        permutation_p([ha], L[:5], [hb], L[5:], n_tests=10)


def test_min_samples_permutation_hand():
    # 2 / C(2n, n) <= 0.05 / m: C(8,4)=70 >= 40; C(12,6)=924 >= 400 > C(10,5)=252;
    # C(16,8)=12870 >= 4000 > C(14,7)=3432; C(18,9)=48620 >= 40000
    assert [min_samples_permutation(m) for m in (1, 10, 100, 1000)] == [4, 6, 8, 9]
    assert min_samples_per_side(1) == MIN_SAMPLES


def test_samples_needed():
    with pytest.raises(TypeError):
        samples_needed(0.02, 0.04, tokens_per_sample=200)  # deff has no default
    with pytest.raises(ValueError):
        samples_needed(0.02, 0.04, math.nan, 200)
    n1 = samples_needed(0.02, 0.04, 1, 200).samples
    n3 = samples_needed(0.02, 0.04, 3, 200).samples
    assert n3 > 2 * n1  # roughly proportional to deff
    # normal-approximation reference: n = (z_a + z_b)^2 (v0 + v1) / d^2, t makes it larger
    za, zb = z_quantile(0.975), z_quantile(0.9)
    v = (0.02 * 0.98 + 0.04 * 0.96) * 3 / 200
    assert n3 >= (za + zb) ** 2 * v / 0.02**2
    assert n3 <= (za + zb) ** 2 * v / 0.02**2 + 4


@FAST
@given(st.floats(1, 20), st.floats(1, 20))
def test_samples_needed_monotone_in_deff(d1, d2):
    lo, hi = sorted((d1, d2))
    n = [samples_needed(0.05, 0.1, d, 100).samples for d in (lo, hi)]
    assert n[0] <= n[1]


def test_design_effect_bound():
    hits, lengths = [0, 4, 1, 9, 2, 0, 3, 5], [100] * 8
    assert design_effect_bound(hits, lengths) > design_effect(hits, lengths)


# --- floors --------------------------------------------------------------------------------


def test_floor_two_contexts_issue_example():
    r = torch.tensor([0.01, 0.3], dtype=torch.float64)
    ref = torch.log(torch.tensor([[0.01, 0.99], [0.3, 0.7]], dtype=torch.float64))
    lq = rate_target_log(ref, torch.tensor([True, False]), 0.1)  # the per-context projection
    kl_rq, kl_qr = (ref.exp() * (ref - lq)).sum(1), (lq.exp() * (lq - ref)).sum(1)
    assert float(kl_rq.mean()) == pytest.approx(0.1125, abs=5e-5)  # issue: per-context
    assert float(kl_qr.mean()) == pytest.approx(0.1304, abs=5e-5)  # hand, other direction
    _, a, kl = shared_tilt_floor(r, 0.1, "cross_entropy")
    assert kl == pytest.approx(0.0166, abs=5e-5)  # issue: the floor
    assert float(a.mean()) == pytest.approx(0.1, abs=1e-12)
    _, a, kl = shared_tilt_floor(r, 0.1, "tilt")
    assert kl == pytest.approx(0.0150, abs=5e-5)  # hand: a = (0.00565, 0.1944)


@pytest.mark.parametrize("objective", ["tilt", "cross_entropy"])
def test_floor_brute_force_grid(objective):
    r, A = np.array([0.01, 0.3]), 0.1
    a1 = np.linspace(1e-6, 2 * A - 1e-6, 200_001)
    a = np.stack([a1, 2 * A - a1])
    d = binary_kl(a, r[:, None]) if objective == "tilt" else binary_kl(r[:, None], a)
    assert shared_tilt_floor(torch.tensor(r), A, objective)[2] == pytest.approx(
        d.mean(0).min(), abs=1e-9
    )


@FAST
@given(
    st.lists(st.floats(1e-4, 0.99), min_size=2, max_size=8),
    st.floats(0.01, 0.9),
    st.sampled_from(["tilt", "cross_entropy"]),
    st.integers(0, 10**6),
)
def test_floor_is_optimal_against_feasible_perturbations(r, A, objective, seed):
    r = torch.tensor(r, dtype=torch.float64)
    beta, a, best = shared_tilt_floor(r, A, objective)
    assert float(a.mean()) == pytest.approx(A, abs=1e-9)
    if objective == "tilt":  # Lagrangian form: one beta, Q_c ∝ R_c e^{beta M}
        assert torch.allclose(a, torch.sigmoid(beta + torch.logit(r)), atol=1e-12)
    g = np.random.default_rng(seed)
    for _ in range(20):
        v = torch.tensor(g.normal(size=len(r)))
        b = a + 1e-3 * float(torch.minimum(a, 1 - a).min()) * (v - v.mean())  # same mean
        d = binary_kl(b, r) if objective == "tilt" else binary_kl(r, b)
        assert float(d.mean()) >= best - 1e-12


def test_perplexity_floor_independent_path():
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(300, 40, generator=g, dtype=torch.float64) * 2, -1)
    mask = torch.zeros(40, dtype=torch.bool)
    mask[:4] = True
    ids = torch.multinomial(lp.exp(), 1, generator=g)[:, 0]
    r, label, on = lp.exp()[:, mask].sum(1), lp.gather(1, ids[:, None])[:, 0], mask[ids]
    ppl, beta = perplexity_floor(r, label, on, 0.3, objective="tilt")
    q = torch.log_softmax(lp + beta * mask.double(), -1)  # the tilt, built directly
    assert float(q.exp()[:, mask].sum(1).mean()) == pytest.approx(0.3, abs=1e-9)
    assert ppl == pytest.approx(math.exp(-float(q.gather(1, ids[:, None]).mean())), rel=1e-9)
    ppl_ce, _ = perplexity_floor(r, label, on, 0.3)
    lq = rate_target_log(lp, mask, 0.3)
    ppl_proj = math.exp(-float(lq.gather(1, ids[:, None]).mean()))
    ppl_ref = math.exp(-float(lp.gather(1, ids[:, None]).mean()))
    assert ppl_ref < ppl_ce < ppl_proj


# --- white box -----------------------------------------------------------------------------


def _logits(seed, n=40, V=50):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, V, generator=g, dtype=torch.float64) * 2


def _masses(log_probs, mask):
    p = log_probs.exp()
    return p[:, mask].sum(1)


def _kl(model, ref):
    return (model.exp() * (model - ref)).sum(1)


def test_exact_tilt_has_share_one_and_shift_beta():
    ref = torch.log_softmax(_logits(0), -1)
    mask = torch.arange(50) % 7 == 0
    model = torch.log_softmax(ref + 1.3 * mask.double(), -1)
    share = kl_share_of_tilt(_masses(model, mask), _masses(ref, mask), _kl(model, ref))
    assert float(share) == pytest.approx(1.0, abs=1e-10)
    shift = logit_mass_shift(_masses(model, mask), _masses(ref, mask))
    assert torch.allclose(shift, torch.full((40,), 1.3, dtype=torch.float64))


def test_chain_rule_decomposition():
    ref, model = (torch.log_softmax(_logits(s), -1) for s in (1, 2))
    mask = torch.arange(50) < 10
    P, R = model.exp(), ref.exp()

    def cond_kl(m):
        p, r = P[:, m] / P[:, m].sum(1, keepdim=True), R[:, m] / R[:, m].sum(1, keepdim=True)
        return (p * (p / r).log()).sum(1)

    rest = P[:, mask].sum(1) * cond_kl(mask) + P[:, ~mask].sum(1) * cond_kl(~mask)
    kl = _kl(model, ref)
    share = kl_share_of_tilt(_masses(model, mask), _masses(ref, mask), kl)
    assert float(share) == pytest.approx(1 - float(rest.sum() / kl.sum()), abs=1e-12)


@FAST
@given(st.integers(0, 10**6), st.integers(1, 49))
def test_share_in_unit_interval(seed, size):
    ref, model = (torch.log_softmax(_logits(seed + i, n=4), -1) for i in (0, 1))
    mask = torch.arange(50) < size
    share = kl_share_of_tilt(_masses(model, mask), _masses(ref, mask), _kl(model, ref))
    assert -1e-12 <= float(share) <= 1 + 1e-12


# --- the one rate format and power sentence ------------------------------------------------


def test_fmt_rate():
    assert fmt_rate(0.1234, (0.1, 0.15)) == "0.123 [0.100, 0.150]"
    assert fmt_rate(0.5, [0.25, 0.75], digits=2) == "0.50 [0.25, 0.75]"


def test_power_sentence_round_trips_through_its_dict():
    a = PowerAnalysis(0.006, 0.05, 0.9, 0.05, 1000, 200, 3.0, 59)
    b = PowerAnalysis.from_dict({**a.__dict__, "simulated_power": 0.9})
    assert b == a
    assert a.describe() == (
        "59 samples of 200 tokens per side detect a rate shift 0.006 -> 0.05 with power 0.9 "
        "at family-wise alpha 0.05 over 1000 predicates (design effect 3.00)"
    )
    assert a.describe((0.91, (0.89, 0.93))) == (
        a.describe() + "; simulated power 0.910 [0.890, 0.930]"
    )


def test_simulated_power_brackets_the_planned_power():
    # The simulation draws beta-binomial sequences and runs Welch's test (not the formula).
    a = samples_needed(0.006, 0.05, 3.0, 200, n_tests=100)
    power, (lo, hi) = simulated_power(a, reps=3000, seed=0)
    assert 0.88 <= power <= 0.99 and lo < power < hi
    fewer = PowerAnalysis(**{**a.__dict__, "samples": a.samples // 2})
    assert simulated_power(fewer, reps=3000, seed=1)[0] < 0.6


# --- more independent references (found by the mutation run, bench/mutation.sh) -------------


def test_design_effect_bound_hand():
    hits, lengths = [0, 4, 1, 9, 2, 0, 3, 5], [100] * 8
    d = design_effect(hits, lengths)
    # d (k-1) / chi2_{0.2, 7}; the chi-square table gives 3.822 (Wilson-Hilferty: 3.836)
    assert design_effect_bound(hits, lengths) == pytest.approx(d * 7 / 3.822, rel=0.005)
    assert design_effect_bound(hits, lengths, 0.9) == pytest.approx(d * 7 / 2.833, rel=0.01)
    assert design_effect_bound([5, 5, 5, 5], [100] * 4) == 1.0  # floored at 1
    assert math.isnan(design_effect_bound([0, 0, 0], [100] * 3))


def test_welch_rows_and_lengths_are_independent_tests():
    a = np.array([[1.0, 2, 3, 4], [0, 0, 1, 3]])
    b = np.array([[2.0, 4, 6, 8, 10], [1, 1, 0, 2, 2]])
    t, df, p = welch_t_test(a, b)
    for row in range(2):
        t1, df1, p1 = welch_t_test(a[row], b[row])
        assert (t[row], df[row], p[row]) == pytest.approx((t1[0], df1[0], p1[0]))
    assert t[0] != pytest.approx(t[1])
    # hit counts with lengths are per-sequence rates
    la, lb = np.array([10.0, 20, 40, 80]), np.array([5.0, 10, 20, 40, 50])
    th, dfh, ph = welch_t_test(a, b, la, lb)
    tr, dfr, pr = welch_t_test(a / la, b / lb)
    assert np.allclose(th, tr) and np.allclose(dfh, dfr) and np.allclose(ph, pr)
    # one side without spread: df is the other side's n - 1
    t, df, _ = welch_t_test([0.1] * 4, [0.1, 0.2, 0.3, 0.4])
    assert df[0] == pytest.approx(3.0) and t[0] < 0


def test_permutation_rows_pooled_rates_and_monte_carlo_floor():
    rng = np.random.default_rng(5)
    ha, hb = rng.integers(0, 20, (2, 5)), rng.integers(0, 20, (2, 5))
    la, lb = rng.integers(40, 90, 5), rng.integers(40, 90, 5)
    both = permutation_p(ha, la, hb, lb, alpha=0.5, studentized=False)
    L = np.concatenate([la, lb])
    for row in range(2):
        h = np.concatenate([ha[row], hb[row]])

        def diff(ix, h=h):
            rest = np.delete(np.arange(10), list(ix))
            return abs(h[list(ix)].sum() / L[list(ix)].sum() - h[rest].sum() / L[rest].sum())

        obs = diff(range(5))
        splits = list(itertools.combinations(range(10), 5))
        expect = sum(diff(s) >= obs - 1e-12 for s in splits) / len(splits)
        assert both[row] == pytest.approx(expect)
    # all-or-nothing sides: exactly 2 of the C(12, 6) splits are as extreme
    exact = permutation_p([[50] * 6], [50] * 6, [[0] * 6], [50] * 6)
    assert exact[0] == pytest.approx(2 / math.comb(12, 6))
    # Monte Carlo p-values are (1 + count) / (1 + n_perm): about the exact one, never 0
    mc = permutation_p([[50] * 6], [50] * 6, [[0] * 6], [50] * 6, max_exact=1, n_perm=9999)
    assert abs(mc[0] - exact[0]) < 0.0012
    assert abs(mc[0] * 10000 - round(mc[0] * 10000)) < 1e-6 and mc[0] > 0


def test_simulated_power_agrees_with_the_formula_at_design_effect_one():
    a = PowerAnalysis(0.02, 0.04, 0.9, 0.05, 1, 200, 1.0, 10)
    v0, v1 = 0.02 * 0.98 / 200, 0.04 * 0.96 / 200
    formula = _power_welch(10, 0.02, v0, v1, 0.05)
    power, (lo, hi) = simulated_power(a, reps=4000, seed=2)
    assert abs(power - formula) < 0.05
    assert (lo, hi) == wilson_interval(round(power * 4000), 4000, Z95)
    # a decrease is detected as well as an increase (the sign is checked, not assumed)
    down = PowerAnalysis(0.04, 0.02, 0.9, 0.05, 1, 200, 1.0, 10)
    assert abs(simulated_power(down, reps=4000, seed=2)[0] - power) < 0.05
    # a larger design effect lowers the power of the same n
    worse = PowerAnalysis(0.02, 0.04, 0.9, 0.05, 1, 200, 3.0, 10)
    assert simulated_power(worse, reps=4000, seed=2)[0] < power - 0.2


# --- edges and defaults, each against a value solved by hand (second mutation run) ---------


def test_wilson_edges_by_hand():
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no data: the whole range
    # Newcombe (1998), z = 1.96: 1 of 10 -> (0.0179, 0.4042); 0 of 10 -> (0, z^2 / (10 + z^2))
    lo, hi = wilson_interval(1, 10, 1.96)
    assert abs(lo - 0.0179) < 5e-5 and abs(hi - 0.4042) < 5e-5
    assert wilson_interval(0, 10, 1.96) == (0.0, pytest.approx(1.96**2 / (10 + 1.96**2)))
    assert wilson_interval(10, 10, 1.96) == (pytest.approx(10 / (10 + 1.96**2)), 1.0)


def test_rate_interval_edges_by_hand():
    for hits, lengths in (([], []), ([0, 0], [0, 0])):
        with pytest.raises(ValueError, match="at least one sequence with tokens"):
            rate_interval(hits, lengths)
    # one sequence: no design effect; a hit in it says nothing beyond 0 < p < 1
    assert rate_interval([1], [10]) == (0.1, 0.0, 1.0, 1.0, 10.0)
    assert rate_interval([1], [1]) == (1.0, 0.025, 1.0, 1.0, 1.0)  # 1 - (0.05/2)^(1/1)
    # a supplied design effect: Wilson at n / deff with z (1 sequence) or t on k - 1 df
    z2, t1, t3 = 1.959963984540054**2, 12.706204736, t_quantile(0.975, 3)
    _, lo, hi, n_eff, deff = rate_interval([0], [200], zero_deff=4.0)
    assert (lo, n_eff, deff) == (0.0, 50.0, 4.0) and hi == pytest.approx(z2 / (50 + z2))
    _, _, hi, _, _ = rate_interval([0, 0], [100, 100], zero_deff=4.0)
    assert hi == pytest.approx(t1**2 / (50 + t1**2), rel=1e-8)
    _, lo, hi, _, _ = rate_interval([200] * 4, [200] * 4, zero_deff=2.0)
    assert lo == pytest.approx(400 / (400 + t3**2)) and hi == 1.0
    # under-dispersed sequences: deff < 1 is kept (not floored), n_eff = n / deff
    # p = 0.1, residuals (-1, 0, 1, 0): robust var 2 / 400^2 * 4/3, binomial 0.09 / 400
    _, _, _, n_eff, deff = rate_interval([9, 10, 11, 10], [100] * 4)
    assert deff == pytest.approx(2 / 27) and n_eff == pytest.approx(400 * 27 / 2)


def test_plan_sequences_scales_with_the_square_of_the_width():
    hits, lengths = [2, 0, 5, 1] * 4, [200] * 16
    _, lo, hi, _, _ = rate_interval(hits, lengths, alpha=0.2)
    k = plan_sequences(hits, lengths, (hi - lo) / 6, alpha=0.2)  # a third: 9x
    assert 144 <= k <= 145  # 16 * 9, up to rounding
    _, lo, hi, _, _ = rate_interval(hits, lengths)
    assert plan_sequences(hits, lengths, hi - lo) == 16  # never fewer than the pilot


def test_holm_default_level_and_cap():
    reject, adj = holm([0.04, 0.5])  # adjusted 0.08, 0.5: nothing at the default 0.05
    assert reject.tolist() == [False, False] and adj.tolist() == [0.08, 0.5]
    assert holm([0.04, 0.5], 0.1)[0].tolist() == [True, False]
    assert holm([0.6, 0.7])[1].tolist() == [1.0, 1.0]  # 1.2, 0.7 -> capped at 1


def test_welch_small_sides_and_no_spread_df():
    t, df, p = welch_t_test([1.0, 2.0], [3.0, 5.0], min_per_side=2)  # allowed at 2
    # se^2 = 0.5/2 + 2/2 = 1.25, t = -2.5 / sqrt(1.25); df = 1.25^2 / (0.25^2 + 1^2) = 1.470588
    assert t[0] == pytest.approx(-2.5 / math.sqrt(1.25)) and df[0] == pytest.approx(1.470588, 1e-6)
    with pytest.raises(ValueError, match="need >= 2 sequences per side"):
        welch_t_test([1.0], [3.0, 5.0], min_per_side=1)
    with pytest.raises(ValueError, match="need >= 4 sequences per side"):
        welch_t_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    # no spread on either side: df falls back to the pooled na + nb - 2
    _, df, _ = welch_t_test([[0.25] * 4, [0.25] * 4], [[0.25] * 5, [0.5] * 5])
    assert df.tolist() == [7.0, 7.0]


def test_permutation_unbalanced_sides_by_brute_force():
    rng = np.random.default_rng(7)
    ha, hb, L = rng.integers(0, 30, 4), rng.integers(0, 30, 7), rng.integers(50, 100, 11)
    y = np.concatenate([ha, hb]) / L

    def welch(ix):
        a, b = y[list(ix)], np.delete(y, list(ix))
        return abs(a.mean() - b.mean()) / math.sqrt(a.var(ddof=1) / 4 + b.var(ddof=1) / 7)

    obs = welch(range(4))
    splits = list(itertools.combinations(range(11), 4))
    expect = sum(welch(s) >= obs - 1e-12 for s in splits) / len(splits)
    assert permutation_p([ha], L[:4], [hb], L[4:], alpha=0.5)[0] == pytest.approx(expect)
    # exact up to max_exact splits inclusive: C(11, 4) = 330
    at = permutation_p([ha], L[:4], [hb], L[4:], alpha=0.5, max_exact=330)
    assert at[0] == pytest.approx(expect, rel=1e-12)
    with pytest.raises(ValueError, match="sequences per side"):  # side b too small
        permutation_p([hb], L[4:], [ha[:3]], L[:3])  # 4 needed at 0.05


def test_permutation_identical_sequences_and_monte_carlo_details():
    # every sequence the same rate: no split differs from another, p = 1 (not 0)
    for h in (5, 0):  # with no hit at all every split's t is 0 / 0
        same = permutation_p([[h] * 5], [50] * 5, [[h] * 5], [50] * 5, alpha=0.5)
        assert same.tolist() == [1.0]
    # all-or-nothing sides of 10: exact p = 2 / C(20, 10) = 1.1e-5; 999 random splits almost
    # surely never match it, and the Monte Carlo p is then exactly 1 / (1 + 999)
    mc = permutation_p([[50] * 10], [50] * 10, [[0] * 10], [50] * 10, max_exact=1, n_perm=999)
    assert mc.tolist() == [0.001]
    # Monte Carlo is reproducible from its seed (a moderate p, so draws differ between seeds)
    args = ([[3, 5, 2, 6, 4]], [50] * 5, [[4, 6, 5, 7, 3]], [50] * 5)
    kw = dict(alpha=0.5, max_exact=1, n_perm=3000)
    one = permutation_p(*args, **kw, seed=4).tolist()
    assert one == permutation_p(*args, **kw, seed=4).tolist()
    assert one != permutation_p(*args, **kw, seed=5).tolist()


def test_share_of_tilt_edges():
    ref = torch.log_softmax(_logits(3), -1)
    m1, m2 = torch.arange(50) % 7 == 0, torch.arange(50) < 20
    model = torch.log_softmax(ref + 0.05 * m1.double(), -1)  # a small tilt: total KL < 1
    kl = _kl(model, ref)
    assert 0 < float(kl.sum()) < 1
    p_set = torch.stack([_masses(model, m1), _masses(model, m2)], 1)  # [n, 2]: two sets
    r_set = torch.stack([_masses(ref, m1), _masses(ref, m2)], 1)
    share = kl_share_of_tilt(p_set, r_set, kl)
    assert share.shape == (2,) and float(share[0]) == pytest.approx(1.0, abs=1e-9)
    assert float(share[1]) == pytest.approx(
        float(kl_share_of_tilt(p_set[:, 1], r_set[:, 1], kl)), abs=0
    )
    assert float(share[1]) < 0.9
    none = kl_share_of_tilt(r_set, r_set, _kl(ref, ref))  # P = R: no KL to explain
    assert none.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("objective", ["tilt", "cross_entropy"])
def test_floor_with_contexts_at_zero_and_one(objective):
    # R(M) = 0 or 1 exactly in two contexts. At rate 0.45 (beta < 1) they keep a = 0 and 1 in
    # both directions of KL, so the third carries the rate: a = 0.35; tilt: beta = logit 0.35 -
    # logit 0.2 = ln(0.35 * 4 / 0.65); cross-entropy: beta = (a - r) / (a (1 - a)) = 0.15 / 0.2275
    r = torch.tensor([0.0, 0.2, 1.0], dtype=torch.float64)
    beta, a, div = shared_tilt_floor(r, 0.45, objective)
    expect = math.log(0.35 * 4 / 0.65) if objective == "tilt" else 0.15 / 0.2275
    assert beta == pytest.approx(expect, rel=1e-9) and float(a[1]) == pytest.approx(0.35)
    assert float(a[0]) < 1e-290 and float(a[2]) == pytest.approx(1.0) and math.isfinite(div)


def test_cross_entropy_floor_puts_mass_where_r_has_none():
    # KL(R||Q) charges only -log(1 - a) for mass a on M where R(M) = 0, so at rate 0.5 over
    # R(M) = (0, 0.2, 1) the optimum gives the first context a = 1 - 1/beta > 0 (beta > 1).
    # Brute force over a0 (a1 = 0.5 - a0, a2 = 1): mean of -log(1 - a0) + binKL(0.2 || a1).
    r = torch.tensor([0.0, 0.2, 1.0], dtype=torch.float64)
    beta, a, div = shared_tilt_floor(r, 0.5)
    a0 = np.linspace(0, 0.5 - 1e-9, 500_001)
    a1 = 0.5 - a0
    cost = (-np.log1p(-a0) + 0.2 * np.log(0.2 / a1) + 0.8 * np.log(0.8 / (1 - a1))) / 3
    assert div == pytest.approx(cost.min(), abs=1e-10)
    assert beta > 1 and float(a[0]) == pytest.approx(1 - 1 / beta, rel=1e-9)
    assert float(a[0]) == pytest.approx(a0[cost.argmin()], abs=1e-5)


def test_floor_defaults_argument_checks_and_float32_input():
    r = torch.tensor([0.01, 0.3], dtype=torch.float64)
    assert shared_tilt_floor(r, 0.1)[2] == pytest.approx(0.0166, abs=5e-5)  # issue
    for bad in ((0.1, "kl"), (0.0, "tilt"), (1.0, "tilt")):
        with pytest.raises(ValueError, match="need objective tilt"):
            shared_tilt_floor(r, bad[0], bad[1])
    # float32 masses are computed in float64: the same as their float64 values
    r32 = torch.tensor([0.01, 0.3])
    beta32, _, kl32 = shared_tilt_floor(r32, 0.1)
    beta64, _, kl64 = shared_tilt_floor(r32.double(), 0.1)
    assert (beta32, kl32) == (beta64, kl64)


def test_beta_binomial_hits_have_the_stated_mean_and_design_effect():
    rng = np.random.default_rng(0)
    for p, deff, length in ((0.3, 3.0, 5), (0.2, 1.5, 2), (0.1, 1.0, 20)):
        rates = beta_binomial_hits(rng, p, deff, length, (200_000,)) / length
        assert abs(rates.mean() - p) < 4 * math.sqrt(p * (1 - p) * deff / length / 200_000)
        assert rates.var() == pytest.approx(p * (1 - p) * deff / length, rel=0.03)


def test_simulated_power_is_reproducible():
    a = PowerAnalysis(0.02, 0.04, 0.9, 0.05, 1, 200, 2.0, 10)
    assert simulated_power(a) == simulated_power(a)
    assert simulated_power(a, seed=2) != simulated_power(a)


def test_t_sf_normal_limit_and_scalars():
    # df = inf is the normal: table values P(Z > 1.96) = 0.0249979, P(Z > -1) = 0.8413447
    assert t_sf(1.96, math.inf) == pytest.approx(0.0249979, abs=1e-7)
    assert t_sf(-1.0, math.inf) == pytest.approx(0.8413447, abs=1e-7)
    both = t_sf([1.0, 1.0], [math.inf, 1.0])  # normal and Cauchy side by side
    assert both == pytest.approx([0.1586553, 0.25], abs=1e-7)
    assert isinstance(t_sf(1.0, 3), float) and t_sf(0.0, 3) == 0.5


def test_betainc_outside_and_at_the_ends():
    assert betainc(2, 3, [-0.5, 0.0, 1.0, 1.5]).tolist() == [0.0, 0.0, 1.0, 1.0]
    # I_x(2, 3) = 6x^2 - 8x^3 + 3x^4 (the binomial tail of 4 trials), by hand at 0.3
    assert betainc(2, 3, 0.3) == pytest.approx(6 * 0.09 - 8 * 0.027 + 3 * 0.0081)


def test_power_welch_uses_the_satterthwaite_df():
    n, d, v0, v1, a = 12, 0.03, 0.0004, 0.0012, 0.01
    s0, s1 = v0 / n, v1 / n  # the per-side variances of the means, textbook form
    df = (s0 + s1) ** 2 / (s0**2 / (n - 1) + s1**2 / (n - 1))
    expect = t_sf(t_quantile(1 - a / 2, df) - d / math.sqrt(s0 + s1), df)
    assert _power_welch(n, d, v0, v1, a) == pytest.approx(expect, rel=1e-12)


def test_samples_needed_floor_minimality_and_checks():
    # a huge shift: the enforced minimum per side binds (m=100 at 0.05: 8; at 0.5: 6, by hand
    # from 2 / C(2n, n) <= alpha / m: C(12, 6) = 924 >= 400 > C(10, 5) = 252)
    a = samples_needed(0.01, 0.9, 1.0, 200, n_tests=100)
    assert (a.samples, a.power, a.n_tests, a.design_effect) == (8, 0.9, 100, 1.0)
    assert samples_needed(0.01, 0.9, 1.0, 200, alpha=0.5, n_tests=100).samples == 6
    for p0, p1, deff in ((0.02, 0.04, 3.0), (0.006, 0.05, 2.0), (0.1, 0.13, 1.0)):
        n = samples_needed(p0, p1, deff, 200).samples
        v0, v1 = (p * (1 - p) * deff / 200 for p in (p0, p1))
        assert _power_welch(n, p1 - p0, v0, v1, 0.05) >= 0.9  # enough, and the least
        assert _power_welch(n - 1, p1 - p0, v0, v1, 0.05) < 0.9
    for bad in (math.inf, 0.5):
        with pytest.raises(ValueError, match="design effect must be a finite number"):
            samples_needed(0.02, 0.04, bad, 200)


def test_min_samples_defaults_and_exact_boundary():
    assert min_samples_permutation() == 4 and min_samples_per_side() == 4
    assert min_samples_per_side(100) == 8 and min_samples_per_side(100, 0.5) == 6
    # reachable exactly at the level: 2 / C(8, 4) = 2 / 70 <= alpha
    assert min_samples_permutation(1, 2 / 70) == 4


def test_binary_kl_ends_and_types():
    # KL(Bern(p) || Bern(1/2)) = log 2 - H(p): log 2 at p = 0 and p = 1
    assert binary_kl(np.array([0.0, 1.0]), 0.5) == pytest.approx([math.log(2)] * 2)
    t = binary_kl(torch.tensor([0.0, 1.0, 0.25]), torch.tensor(0.5))
    assert t.dtype == torch.float64  # float32 inputs computed in float64
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert t.tolist() == pytest.approx([math.log(2), math.log(2), math.log(2) - h], rel=1e-12)
    mixed = binary_kl(np.array([0.25]), torch.tensor([0.5], dtype=torch.float64))
    assert isinstance(mixed, torch.Tensor)  # torch if either side is a tensor


def test_perplexity_floor_when_a_mass_rounds_to_one():
    # R(M) summed in floating point can come out as exactly 1 in a context whose label is off M
    # (R(label) = 1e-20). That context cannot move (a = r), so its label keeps log R; the
    # other carries the rate: (1 + a) / 2 = 0.8 -> a = 0.6, label on M: log(0.2 * 0.6 / 0.3).
    r = torch.tensor([1.0, 0.3], dtype=torch.float64)
    label_log_r = torch.log(torch.tensor([1e-20, 0.2], dtype=torch.float64))
    ppl, beta = perplexity_floor(r, label_log_r, torch.tensor([False, True]), 0.8)
    assert beta == pytest.approx(0.3 / (0.6 * 0.4), rel=1e-9)  # (a - r) / (a (1 - a))
    assert ppl == pytest.approx(1 / math.sqrt(1e-20 * 0.4), rel=1e-9)
