"""The statistics every layer above shares. Derivations, and the simulations behind every
choice (coverage, false-positive rates, power), are in docs/statistics.md; numbers in
bench/RESULTS.md.

* rate intervals under within-sequence correlation (``rate_interval``: the hull of Wilson at
  n/deff and Hall's skew-corrected t, both with the t quantile on k-1 df; a sequence-level
  bound when no target token is seen) and the check points of a stopping rule;
* sequence-level two-sample tests (Welch t, permutation), Holm, the enforced minimum
  samples per side, and the sample size at a stated design effect;
* the perplexity floor: the cheapest model with the target rate on average over contexts;
* the white-box mass statistics (share of KL explained by a tilt on a set, logit-mass shift);
* ``fmt_rate`` and ``PowerAnalysis``: the one rate format and the one power sentence.

numpy, math and torch only (no scipy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from itertools import combinations, islice

import numpy as np
import torch


def fmt_rate(rate: float, ci: Sequence[float], digits: int = 3) -> str:
    """A rate with its interval: "0.123 [0.100, 0.150]"."""
    return f"{rate:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


@dataclass
class PowerAnalysis:
    p0: float
    p1: float
    power: float
    alpha: float
    n_tests: int
    tokens_per_sample: int
    design_effect: float
    samples: int

    @classmethod
    def from_dict(cls, d: dict) -> PowerAnalysis:
        """From its ``asdict`` (other keys, e.g. a simulated power, are ignored)."""
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def describe(self, simulated: tuple[float, Sequence[float]] | None = None) -> str:
        """The sentence; with ``simulated`` (power, 95% interval, as ``simulated_power``
        returns) the Monte Carlo check too."""
        text = (
            f"{self.samples} samples of {self.tokens_per_sample} tokens per side detect a "
            f"rate shift {self.p0:g} -> {self.p1:g} with power {self.power:g} at family-wise "
            f"alpha {self.alpha:g} over {self.n_tests} predicates "
            f"(design effect {self.design_effect:.2f})"
        )
        if simulated is not None:
            text += f"; simulated power {fmt_rate(*simulated)}"
        return text


# --- distributions -------------------------------------------------------------------------


def betainc(a, b, x):
    """Regularized incomplete beta I_x(a, b), vectorised (numpy broadcasting); Lentz's
    continued fraction on the side of the mean where it converges fast."""
    a, b, x = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (a, b, x)))
    flip = x > (a + 1) / (a + b + 2)
    aa, bb, xx = np.where(flip, b, a), np.where(flip, a, b), np.where(flip, 1 - x, x)
    lgam = np.vectorize(math.lgamma, otypes=[float])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):

        def clip(v):
            return np.where(np.abs(v) < 1e-300, 1e-300, v)

        c, d = np.ones_like(xx), 1 / clip(1 - (aa + bb) * xx / (aa + 1))
        h = d.copy()
        for m in range(1, 5000):
            for num in (
                m * (bb - m) * xx / ((aa + 2 * m - 1) * (aa + 2 * m)),
                -(aa + m) * (aa + bb + m) * xx / ((aa + 2 * m) * (aa + 2 * m + 1)),
            ):
                d, c = 1 / clip(1 + num * d), clip(1 + num / c)
                h = h * d * c
            if not np.any(np.abs(d * c - 1) >= 1e-15):
                break
        front = lgam(aa + bb) - lgam(aa) - lgam(bb) + aa * np.log(xx) + bb * np.log1p(-xx)
        out = np.exp(front) * h / aa
    out = np.where(flip, 1 - out, out)
    return np.where(x <= 0, 0.0, np.where(x >= 1, 1.0, out))


def t_sf(t, df):
    """P(T > t) for Student's t with ``df`` (may be non-integer, arrays broadcast; df=inf
    gives the normal)."""
    t, df = np.broadcast_arrays(np.asarray(t, np.float64), np.asarray(df, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):  # either form avoids 1 - x cancelling
        c = t * t < df
        i = betainc(
            np.where(c, 0.5, df / 2),
            np.where(c, df / 2, 0.5),
            np.where(c, t * t, df) / (df + t * t),
        )
        tail = np.where(c, 0.5 - 0.5 * i, 0.5 * i)
    if np.isinf(df).any():
        normal = 0.5 * np.vectorize(math.erfc, otypes=[float])(np.abs(t) / math.sqrt(2))
        tail = np.where(np.isinf(df), normal, tail)
    out = np.where(t > 0, tail, 1 - tail)
    return out if out.ndim else float(out)


def t_two_sided_p(t, df):
    """Two-sided p-value 2 P(T > |t|)."""
    return np.minimum(1.0, 2 * t_sf(np.abs(np.asarray(t, np.float64)), df))


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t (df may be inf): P(T <= t) = p, to ~1e-12 relative."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1 - p:
        lo, hi = hi, hi * 2
    inf = math.isinf(df)
    log_c = (
        -0.5 * math.log(2 * math.pi)
        if inf
        else (math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi))
    )
    x = (lo + hi) / 2
    for _ in range(200):  # Newton on the cdf with the density, kept inside a bisection bracket
        f = (1 - p) - t_sf(x, df)  # increasing in x
        lo, hi = (x, hi) if f < 0 else (lo, x)
        log_d = log_c - (x * x / 2 if inf else (df + 1) / 2 * math.log1p(x * x / df))
        step = x - f / math.exp(log_d)
        x_new = step if lo < step < hi else (lo + hi) / 2
        if abs(x_new - x) < 1e-12 * max(1.0, x) or hi - lo < 1e-12 * max(1.0, hi):
            return x_new
        x = x_new
    return x


def z_quantile(p: float) -> float:
    return t_quantile(p, math.inf)


Z95 = z_quantile(0.975)


# --- rate of a target set in sampled sequences ---------------------------------------------


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (also for non-integer counts). It depends on z and n only
    through z**2 / n, so Wilson at n_eff with z = t_{df} equals Wilson at the df-adjusted
    effective size n_eff * (z_norm / t_df)**2 (Korn & Graubard's adjustment)."""
    if n <= 0:
        return (0.0, 1.0)
    p, q = successes / n, z * z / n
    centre, half = (p + q / 2) / (1 + q), math.sqrt(q * p * (1 - p) + q * q / 4) / (1 + q)
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


def design_effect(hits, lengths) -> float:
    """Design effect of the pooled rate sum(hits)/sum(lengths) over k sequences: the
    cluster-robust (between-sequence) variance of the ratio, k/(k-1) sum (h_i - p L_i)^2 / n^2,
    over the binomial p(1-p)/n. Unclamped; nan when it cannot be estimated (k < 2 or a pooled
    rate of 0 or 1)."""
    h, L = np.asarray(hits, np.float64), np.asarray(lengths, np.float64)
    k, n = h.size, L.sum()
    p = h.sum() / n if n > 0 else 0.0
    if k < 2 or not 0 < p < 1:
        return math.nan
    robust = ((h - p * L) ** 2).sum() / n**2 * k / (k - 1)
    return float(robust / (p * (1 - p) / n))


def design_effect_bound(hits, lengths, confidence: float = 0.8) -> float:
    """Upper ``confidence`` bound on the design effect for planning: deff_hat (k-1) / chi2_q
    with chi2_q the (1 - confidence) quantile on k - 1 df (Wilson-Hilferty), floored at 1;
    nan where ``design_effect`` is (then plan with the worst case, the sequence length)."""
    d, nu = design_effect(hits, lengths), len(hits) - 1
    if math.isnan(d):
        return d
    c = 2 / (9 * nu)
    chi2 = nu * max(1 - c + z_quantile(1 - confidence) * math.sqrt(c), 1e-3) ** 3
    return max(1.0, d * nu / chi2)


def _hall_interval(h, L, q):
    """Hall's (1992) skewness-removing transformation of the studentised ratio mean.
    T = (p - mu) / se; g(T) = T + a T^2 + a^2 T^3 / 3 + b with a = gamma / (3 sqrt k),
    b = gamma / (6 sqrt k), gamma the skewness of the per-sequence residuals; g is monotone
    and inverted in closed form. Interval: [p - se g^-1(q), p - se g^-1(-q)]."""
    k, n = h.size, L.sum()
    p = h.sum() / n
    e = (h - p * L) * k / n  # residuals in rate units; var_robust = sum e^2 / (k (k - 1))
    m2 = float((e**2).mean())
    if m2 <= 0:
        return (p, p)
    se, a = math.sqrt(m2 / (k - 1)), float((e**3).mean()) / m2**1.5 / (3 * math.sqrt(k))

    def g_inv(y):
        if abs(a) < 1e-12:
            return y - a / 2
        c = 1 + 3 * a * (y - a / 2)
        return (math.copysign(abs(c) ** (1 / 3), c) - 1) / a

    return (max(0.0, p - se * g_inv(q)), min(1.0, p - se * g_inv(-q)))


def rate_interval(hits, lengths, alpha: float = 0.05, zero_deff: float | None = None):
    """Rate of target tokens with a (1 - alpha) interval: (rate, lo, hi, n_eff, deff).

    The hull of two intervals that both use the t quantile on k - 1 df (the design effect
    is estimated from k sequences): Wilson at n_eff = n / deff (binomial skew at the effective
    size; deff not floored at 1) and Hall's skew-corrected t on per-sequence residuals (the
    extra skew of over-dispersed sequence totals). When deff cannot be estimated (no hit, all
    hits, one sequence) and no ``zero_deff`` is given (e.g. a design effect measured on the
    reference), the interval is the exact Clopper-Pearson bound over *sequences*, valid under
    any within-sequence dependence: P(no hit in a sequence) <= 1 - p, so P(all k empty) <=
    (1 - p)^k, and the upper bound is 1 - (alpha/2)^(1/k) (mirror image for all hits); deff
    is then reported as the mean length (n_eff = k).
    """
    h, L = np.asarray(hits, np.float64), np.asarray(lengths, np.float64)
    k, n, x = h.size, float(L.sum()), float(h.sum())
    if k == 0 or n <= 0:
        raise ValueError("need at least one sequence with tokens")
    p = x / n
    deff = design_effect(h, L)
    if math.isnan(deff):
        if zero_deff is None:
            b = (alpha / 2) ** (1 / k)
            lo, hi = (0.0, 1 - b) if x <= 0 else (b, 1.0) if x >= n else (0.0, 1.0)
            return (p, lo, hi, float(k), n / k)
        q = t_quantile(1 - alpha / 2, k - 1) if k > 1 else z_quantile(1 - alpha / 2)
        lo, hi = wilson_interval(x / zero_deff, n / zero_deff, q)
        return (p, lo, hi, n / zero_deff, float(zero_deff))
    q = t_quantile(1 - alpha / 2, k - 1)
    d = max(deff, 1e-9)
    lo, hi = wilson_interval(x / d, n / d, q)
    h_lo, h_hi = _hall_interval(h, L, q)
    return (p, min(lo, h_lo), max(hi, h_hi), n / d, deff)


def check_points(max_sequences: int, first: int = 16) -> list[int]:
    """Sequence counts at which a "sample until the interval is narrow" loop may look at
    the data, the same on every device: first, 2 first, 4 first, ... and max_sequences. Batch
    sizes must divide into these (generate more, then truncate to the check point)."""
    pts, k = [], first
    while k < max_sequences:
        pts.append(k)
        k *= 2
    return pts + [max_sequences]


def plan_sequences(pilot_hits, pilot_lengths, half_width: float, alpha: float = 0.05) -> int:
    """Two-stage plan: sequences for a FRESH sample to reach ``half_width``, scaled from a
    pilot's interval (hw ~ 1/sqrt(k)). Estimating from the fresh sample alone keeps the
    fixed-k coverage and no stopping bias; at least the pilot's size."""
    _, lo, hi, _, _ = rate_interval(pilot_hits, pilot_lengths, alpha)
    k = len(pilot_hits)
    return max(k, math.ceil(k * ((hi - lo) / 2 / half_width) ** 2))


# --- two-sample tests over sequences -------------------------------------------------------


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


MIN_SAMPLES = 4  # per side: below it Welch's null false-positive rate blows up (RESULTS.md)


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
    differ (RESULTS.md), where ``permutation_p`` holds up better."""
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


def _power_welch(n: int, d: float, v0: float, v1: float, a: float) -> float:
    df = (v0 + v1) ** 2 * (n - 1) / (v0**2 + v1**2)
    return float(t_sf(t_quantile(1 - a / 2, df) - d / math.sqrt((v0 + v1) / n), df))


def samples_needed(
    p0: float,
    p1: float,
    deff: float,
    tokens_per_sample: int,
    alpha: float = 0.05,
    power: float = 0.9,
    n_tests: int = 1,
) -> PowerAnalysis:
    """Sequences per side for the Welch test to detect p0 -> p1 with ``power`` at
    two-sided level alpha / n_tests (Holm's strictest step). Each sequence's rate has
    variance p(1-p) deff / L; ``deff`` is required (measure it with ``design_effect_bound`` on
    the reference's own samples; it is taken to be the same under p1). Power is the shifted
    central-t approximation on Satterthwaite df; the result is at least
    ``min_samples_per_side(n_tests, alpha)``."""
    if not (deff >= 1 and math.isfinite(deff)):
        raise ValueError(f"design effect must be a finite number >= 1, got {deff}")
    v0, v1 = (p * (1 - p) * deff / tokens_per_sample for p in (p0, p1))

    def enough(n):
        return _power_welch(n, abs(p1 - p0), v0, v1, alpha / n_tests) >= power

    lo = min_samples_per_side(n_tests, alpha)
    hi = lo
    if not enough(lo):
        hi = 2 * lo
        while not enough(hi):  # power increases with n: doubling, then bisection
            lo, hi = hi, 2 * hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return PowerAnalysis(p0, p1, power, alpha, n_tests, tokens_per_sample, deff, hi)


def simulated_power(
    analysis: PowerAnalysis, reps: int = 2000, seed: int = 1
) -> tuple[float, tuple[float, float]]:
    """A Monte Carlo check of a power analysis, independent of its formula: the share of
    ``reps`` simulated audits (beta-binomial sequences with intra-sequence correlation
    rho = (deff - 1) / (L - 1), ``analysis.samples`` per side) in which Welch's test
    (``welch_t_test``) rejects at alpha / n_tests in the right direction, with its 95% Wilson
    interval."""
    a, rng = analysis, np.random.default_rng(seed)
    L, rho = a.tokens_per_sample, (a.design_effect - 1) / max(a.tokens_per_sample - 1, 1)

    def draw(p: float) -> np.ndarray:
        rates = np.full((reps, a.samples), p)
        if rho > 0:
            rates = rng.beta(p * (1 / rho - 1), (1 - p) * (1 / rho - 1), size=rates.shape)
        return rng.binomial(L, rates) / L

    t, _, p = welch_t_test(draw(a.p1), draw(a.p0))
    hits = int(((p <= a.alpha / a.n_tests) & (np.sign(t) == np.sign(a.p1 - a.p0))).sum())
    return hits / reps, wilson_interval(hits, reps, Z95)


# --- floors for a model with target rate A on average -------------------------------------


def binary_kl(p, q):
    """KL(Bern(p) || Bern(q)), elementwise (torch or numpy), 0 log 0 = 0."""
    lib = torch if isinstance(p, torch.Tensor) or isinstance(q, torch.Tensor) else np
    p, q = (
        lib.as_tensor(v, dtype=torch.float64) if lib is torch else np.asarray(v, np.float64)
        for v in (p, q)
    )
    t1 = lib.where(p > 0, p * lib.log(p / q), 0 * p)
    t2 = lib.where(p < 1, (1 - p) * lib.log((1 - p) / (1 - q)), 0 * p)
    return t1 + t2


def _rates_at(beta: float, r: torch.Tensor, objective: str) -> torch.Tensor:
    if objective == "tilt":  # argmin KL(Q||R): Q ∝ R e^{beta M}, a = sigmoid(beta + logit r)
        return torch.sigmoid(beta + torch.logit(r))
    # argmin KL(R||Q): (a - r) / (a (1 - a)) = beta, the root of beta a^2 + (1-beta) a - r = 0
    return 2 * r / ((1 - beta) + torch.sqrt((1 - beta) ** 2 + 4 * beta * r))


def shared_tilt_floor(r: torch.Tensor, rate: float, objective: str = "cross_entropy"):
    """Cheapest per-context masses a_c on M with mean_c a_c = ``rate``, given the reference's
    masses r_c = R_c(M). Lagrangian: sum_c D_c(a_c) - beta (sum_c a_c - K rate); D_c is convex,
    so stationarity with ONE beta shared by all contexts is the global optimum. Within M and
    outside it the optimum keeps R's shape in both directions of KL, so D_c is binary KL.
    ``objective="tilt"``: min mean KL(Q||R); stationarity gives Q_c ∝ R_c exp(beta M).
    ``objective="cross_entropy"``: min mean KL(R||Q) = the extra expected cross-entropy (log
    perplexity) on text drawn from R; stationarity gives (a_c - r_c) / (a_c (1 - a_c)) = beta.
    mean_c a_c(beta) increases in beta; bisection. Returns (beta, a [K], mean divergence)."""
    r = torch.as_tensor(r, dtype=torch.float64).clamp(1e-300, 1 - 1e-16)
    if objective not in ("tilt", "cross_entropy") or not 0 < rate < 1:
        raise ValueError(
            f"need objective tilt|cross_entropy and 0 < rate < 1, got {objective!r}, {rate}"
        )
    if objective == "tilt":
        lo = math.log(rate / (1 - rate)) - float(torch.logit(r).max())
        hi = math.log(rate / (1 - rate)) - float(torch.logit(r).min())
    else:

        def g(rr):
            return (rate - rr) / (rate * (1 - rate))

        lo, hi = g(float(r.max())), g(float(r.min()))
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(_rates_at(mid, r, objective).mean()) < rate else (lo, mid)
    beta = (lo + hi) / 2
    a = _rates_at(beta, r, objective)
    div = binary_kl(a, r) if objective == "tilt" else binary_kl(r, a)
    return beta, a, float(div.mean())


def perplexity_floor(
    r: torch.Tensor,
    label_log_r: torch.Tensor,
    label_on: torch.Tensor,
    rate: float,
    objective: str = "cross_entropy",
) -> tuple[float, float]:
    """Floor perplexity on held-out text: exp(mean_t -log Q*(x_t | c_t)), Q* the optimal
    shared-beta model with mean rate ``rate`` over these contexts (``shared_tilt_floor``).
    Per scored position t: ``r`` = R(M | c_t), ``label_log_r`` = log R(x_t | c_t) and
    ``label_on`` = x_t in M. Q* keeps R's shape on M and off it, so
    log Q*(x) = log R(x) + log(a/r) on M, + log((1-a)/(1-r)) off it. Q* depends on the
    reference at these contexts only, never on the held-out tokens. Returns (floor, beta)."""
    r = torch.as_tensor(r, dtype=torch.float64).clamp(1e-300, 1 - 1e-16)
    beta, a, _ = shared_tilt_floor(r, rate, objective)
    log_q = label_log_r.double() + torch.where(
        label_on.bool(), torch.log(a / r), torch.log1p(-a) - torch.log1p(-r)
    )
    return math.exp(float(-log_q.mean())), beta


# --- white box: how much of the model's shift is a mass shift on a token set --------------


def kl_share_of_tilt(p_set: torch.Tensor, r_set: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
    """Share of KL(P||R) explained by moving mass onto/off a set S alone, pooled over probes.
    Chain rule: KL(P||R) = binKL(P(S)||R(S)) + P(S) KL(P|S||R|S) + P(S^c) KL(P|S^c||R|S^c),
    so sum binKL / sum KL is in [0, 1] and is 1 iff each P_c is a one-parameter tilt of R_c
    on S. ``p_set``/``r_set``: P(S), R(S) per probe [n] or [n, C] (C sets at once); ``kl``:
    KL(P||R) per probe [n]. Returns the share [C] (or a scalar tensor)."""
    total = float(kl.double().sum())
    bkl = binary_kl(p_set.double(), r_set.double()).sum(0)
    return bkl / total if total > 0 else torch.zeros_like(bkl)


def logit_mass_shift(p_set: torch.Tensor, r_set: torch.Tensor) -> torch.Tensor:
    """logit P(S) - logit R(S), elementwise; for an exact tilt P ∝ R e^{beta [x in S]} it is
    beta in every probe."""
    p, r = p_set.double(), r_set.double()
    return torch.log(p) - torch.log1p(-p) - torch.log(r) + torch.log1p(-r)
