"""The rate of a target set in sampled sequences, with an interval that holds under
within-sequence correlation (docs/statistics.md, section 1), and the one way a rate is printed."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from likex.stats.distributions import Z95, t_quantile, z_quantile


def fmt_rate(rate: float, ci: Sequence[float], digits: int = 3) -> str:
    """A rate with its interval: "0.123 [0.100, 0.150]"."""
    return f"{rate:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def none_seen(hits: int, count: int, unit: str, sequences: int, upper: float) -> str:
    """What a rate of 0 says where it is printed: its interval's upper bound is no estimate,
    only as far as the samples can rule out (``rate_interval``: with no hit, the exact bound
    over sequences). "" where some were seen."""
    if hits:
        return ""
    return (
        f"none seen in {count:,} {unit}: {sequences} samples rule out only rates above {upper:.3f}"
    )


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
