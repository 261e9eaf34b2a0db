"""Two-sample tests over sequences (each sequence one observation, whatever the correlation of
its tokens), Holm's correction, and the fewest samples per side an audit accepts."""

from __future__ import annotations

import math
from itertools import combinations, islice

import numpy as np

from likex.stats.distributions import f_sf, t_two_sided_p


def holm(p_values, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down: (reject mask, adjusted p-values), FWER <= alpha under any
    dependence. Adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(p_values, np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adj_sorted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = adj_sorted
    return adjusted <= alpha, adjusted


def _rates(x, lengths):
    x = np.atleast_2d(np.asarray(x, np.float64))
    return x if lengths is None else x / np.asarray(lengths, np.float64)[None, :]


MIN_SAMPLES = 4  # per side: below it Welch's null false-positive rate blows up (docs/results.md)


def min_samples_permutation(n_tests: int = 1, alpha: float = 0.05) -> int:
    """Smallest n per side (balanced) with which an exact two-sided permutation test can
    reach Holm's strictest per-test level alpha / n_tests: its smallest p is 2 / C(2n, n)."""
    n = 2
    while 2 / math.comb(2 * n, n) > alpha / n_tests:
        n += 1
    return n


def min_samples_per_side(n_tests: int = 1, alpha: float = 0.05) -> int:
    """The enforced minimum: MIN_SAMPLES, and enough for the permutation test to be able to
    reject at alpha / n_tests (m=1: 4, m=10: 6, m=100: 8, m=1000: 9)."""
    return max(MIN_SAMPLES, min_samples_permutation(n_tests, alpha))


def welch_t_test(a, b, len_a=None, len_b=None, min_per_side: int = MIN_SAMPLES):
    """Welch's t test with Satterthwaite df on per-sequence rates (each sequence is one
    observation, so within-sequence correlation is accounted for). ``a``/``b`` are rates
    [sequences] or [predicates, sequences], or hit counts with ``len_a``/``len_b``.
    Returns (t, df, two-sided p), arrays over predicates. Conservative under identical
    sides at n >= MIN_SAMPLES; anti-conservative in the far tail when the sides' dispersions
    differ (docs/results.md), where ``permutation_p`` holds up better."""
    ra, rb = _rates(a, len_a), _rates(b, len_b)
    na, nb = ra.shape[1], rb.shape[1]
    if min(na, nb) < max(2, min_per_side):
        raise ValueError(f"need >= {max(2, min_per_side)} sequences per side, got {na}, {nb}")
    va, vb = ra.var(1, ddof=1) / na, rb.var(1, ddof=1) / nb
    diff, se2 = ra.mean(1) - rb.mean(1), va + vb
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se2 > 0, diff / np.sqrt(se2), np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
        df = np.where(se2 > 0, se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1)), na + nb - 2.0)
    return t, df, t_two_sided_p(t, df)


def welch_anova(means, variances, counts) -> tuple[float, float, float, float]:
    """Welch's (1951) heteroscedastic one-way ANOVA: are k group means equal, each with its own
    variance? ``means`` [k], ``variances`` [k] (of each mean: s_i^2 / n_i), ``counts`` [k]
    (observations behind each mean). Returns (F, df1, df2, p)."""
    m, v, n = (np.asarray(x, np.float64) for x in (means, variances, counts))
    k = m.size
    if k < 2 or (n < 2).any() or (v <= 0).any():
        raise ValueError("need >= 2 groups, each of >= 2 observations with a positive variance")
    w = 1 / v
    centre = (w * m).sum() / w.sum()
    lam = ((1 - w / w.sum()) ** 2 / (n - 1)).sum()
    f = (w * (m - centre) ** 2).sum() / (k - 1) / (1 + 2 * (k - 2) / (k * k - 1) * lam)
    df2 = (k * k - 1) / (3 * lam)
    return float(f), float(k - 1), float(df2), float(f_sf(f, k - 1, df2))


def _split_stat(s: np.ndarray, y: np.ndarray, w: np.ndarray, studentized: bool) -> np.ndarray:
    """|statistic| for splits ``s`` [S, N] (True = side a) of rows y [m, N] (lengths w [N])."""
    na, nb = s.sum(1, keepdims=True), (~s).sum(1, keepdims=True)
    sf = s.astype(np.float64)
    if not studentized:  # difference of pooled rates sum(h) / sum(L); y holds hits here
        return np.abs((sf @ y.T) / (sf @ w)[:, None] - ((1 - sf) @ y.T) / ((1 - sf) @ w)[:, None])
    s1a, s2a = sf @ y.T, sf @ (y * y).T
    s1, s2 = y.sum(1)[None, :], (y * y).sum(1)[None, :]
    ma, mb = s1a / na, (s1 - s1a) / nb
    va = np.maximum(s2a - na * ma**2, 0) / (na - 1) / na
    vb = np.maximum(s2 - s2a - nb * mb**2, 0) / (nb - 1) / nb
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(ma - mb) / np.sqrt(va + vb)
    return np.where(np.isnan(t), 0.0, t)


def permutation_p(
    hits_a,
    len_a,
    hits_b,
    len_b,
    n_tests: int = 1,
    alpha: float = 0.05,
    studentized: bool = True,
    max_exact: int = 200_000,
    n_perm: int = 20_000,
    seed: int = 0,
) -> np.ndarray:
    """Two-sided permutation p-values, one per predicate row of hits [m, sequences],
    permuting whole sequences between the sides. Statistic: Welch's |t| on per-sequence
    rates (``studentized``; asymptotically valid for equal means even when the sides'
    dispersions differ) or |difference of pooled rates|. Exact when C(na + nb, na) <=
    ``max_exact`` (all splits), else Monte Carlo, (1 + count) / (1 + n_perm). Exact under
    H0 "sequences are exchangeable between the sides", whatever the within-sequence
    dependence; filtering predicates on pooled counts keeps it exact (they are invariant).
    Raises unless both sides have ``min_samples_permutation(n_tests, alpha)`` sequences (the
    audit should require ``min_samples_per_side``); Monte Carlo needs n_perm >> n_tests / alpha
    to resolve Holm's smallest level."""
    ha, hb = np.atleast_2d(hits_a).astype(np.float64), np.atleast_2d(hits_b).astype(np.float64)
    L = np.concatenate([np.asarray(len_a, np.float64), np.asarray(len_b, np.float64)])
    na, N = ha.shape[1], L.size
    need = min_samples_permutation(n_tests, alpha)
    if min(na, N - na) < need:
        raise ValueError(f"need >= {need} sequences per side for {n_tests} tests at {alpha}")
    h = np.concatenate([ha, hb], 1)
    y = h / L[None, :] if studentized else h
    observed = np.zeros((1, N), bool)
    observed[0, :na] = True
    obs = _split_stat(observed, y, L, studentized)[0]
    exact = math.comb(N, na) <= max_exact
    it, rng = combinations(range(N), na), np.random.default_rng(seed)
    count, total, left = np.zeros(h.shape[0]) + (not exact), int(not exact), n_perm
    while True:  # blocks of 20k splits: all of them (exact) or random ones (Monte Carlo)
        if exact:
            idx = np.array(list(islice(it, 20_000)))
        else:
            idx = np.argsort(rng.random((min(left, 20_000), N)), axis=1)[:, :na]
            left -= len(idx)
        if idx.size == 0:
            break
        s = np.zeros((len(idx), N), bool)
        s[np.arange(len(idx))[:, None], idx] = True
        stat = _split_stat(s, y, L, studentized)
        count += (stat >= obs[None, :] * (1 - 1e-12)).sum(0)
        total += len(idx)
    return count / total
