"""Student's t without scipy: the regularized incomplete beta, the tail, the quantile."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


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


def f_sf(f, df1, df2):
    """P(F > f) for Fisher's F with (df1, df2) degrees of freedom (non-integer allowed):
    I_{df2 / (df2 + df1 f)}(df2 / 2, df1 / 2)."""
    f = np.maximum(np.asarray(f, np.float64), 0.0)
    out = betainc(np.asarray(df2, np.float64) / 2, np.asarray(df1, np.float64) / 2,
                  df2 / (df2 + df1 * f))  # fmt: skip
    return out if np.ndim(out) else float(out)
