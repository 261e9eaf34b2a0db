"""The statistics every layer above shares: binomial intervals and their one format, the
two-sample rate test with Holm's correction, and the sample size (power) of that test."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from statistics import NormalDist

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (also for non-integer n)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At p = 0 or 1 the bound is exactly 0 or 1; the float arithmetic would leave ~1e-18.
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


def fmt_rate(rate: float, ci: Sequence[float], digits: int = 3) -> str:
    """A rate with its interval: "0.123 [0.100, 0.150]"."""
    return f"{rate:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def holm(p_values: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down procedure: which hypotheses to reject with the family-wise error
    rate at most ``alpha``, under any dependence between the tests."""
    m = len(p_values)
    reject = np.zeros(m, dtype=bool)
    for rank, i in enumerate(np.argsort(p_values, kind="stable")):
        if p_values[i] > alpha / (m - rank):
            break
        reject[i] = True
    return reject


def rate_difference_z(
    hits_a: np.ndarray, len_a: np.ndarray, hits_b: np.ndarray, len_b: np.ndarray
) -> np.ndarray:
    """z statistics for rate_a - rate_b, one per predicate (rows of the hit matrices).

    ``hits_x`` is [predicates, sequences]: tokens of a sequence are not independent, so the
    variance of each side's rate is the cluster-robust (between-sequence) one around that
    side's rate, never below the binomial variance at the pooled rate (which keeps a side
    with no hits at all from having zero variance).
    """
    n_a, n_b = len_a.sum(), len_b.sum()
    h_a, h_b = hits_a.sum(1), hits_b.sum(1)
    p0 = (h_a + h_b) / (n_a + n_b)

    def variance(hits: np.ndarray, lengths: np.ndarray, n: float) -> np.ndarray:
        k = len(lengths)
        resid = hits - (hits.sum(1) / n)[:, None] * lengths[None, :]
        robust = (resid**2).sum(1) / n**2 * (k / max(k - 1, 1))
        return np.maximum(robust, p0 * (1 - p0) / n)

    var = variance(hits_a, len_a, n_a) + variance(hits_b, len_b, n_b)
    diff = h_a / n_a - h_b / n_b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var > 0, diff / np.sqrt(var), 0.0)


def two_sided_p(z: np.ndarray) -> np.ndarray:
    return np.array([math.erfc(abs(float(v)) / math.sqrt(2)) for v in z])


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


def _detections(
    p0: float,
    p1: float,
    samples: int,
    tokens_per_sample: int,
    design_effect: float,
    alpha_per_test: float,
    reps: int,
    rng: np.random.Generator,
) -> int:
    """How many of ``reps`` simulated two-sample tests detect p0 -> p1. With a design effect
    above 1 each sample's rate varies (beta-binomial with intra-sample correlation
    rho = (deff - 1) / (tokens - 1)), as when a model repeats itself within a sample."""
    lengths = np.full(samples, float(tokens_per_sample))
    rho = (design_effect - 1) / max(tokens_per_sample - 1, 1)

    def draw(p: float) -> np.ndarray:
        if rho <= 0:
            return rng.binomial(tokens_per_sample, p, size=(reps, samples)).astype(np.float64)
        a, b = p * (1 / rho - 1), (1 - p) * (1 / rho - 1)
        rates = rng.beta(a, b, size=(reps, samples))
        return rng.binomial(tokens_per_sample, rates).astype(np.float64)

    z = rate_difference_z(draw(p1), lengths, draw(p0), lengths)
    p = two_sided_p(z)
    return int(((p <= alpha_per_test) & (np.sign(z) == np.sign(p1 - p0))).sum())


def samples_needed(
    p0: float,
    p1: float,
    tokens_per_sample: int,
    alpha: float = 0.05,
    power: float = 0.9,
    n_tests: int = 1,
    design_effect: float = 1.0,
    reps: int = 2000,
    seed: int = 0,
) -> PowerAnalysis:
    """Samples per side for the two-sample test (``rate_difference_z``) to reach ``power``
    against p0 -> p1, two-sided at alpha / n_tests (Bonferroni, the strictest step of Holm).

    The normal-approximation formula gives a start; because the test estimates its variance
    from between-sample spread (unstable with few samples), the count is then raised until
    ``reps`` simulated audits reach the power.
    """
    nd = NormalDist()
    alpha_per_test = alpha / n_tests
    z_a = nd.inv_cdf(1 - alpha_per_test / 2)
    z_b = nd.inv_cdf(power)
    p_bar = (p0 + p1) / 2
    tokens = (
        z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    ) ** 2 / (p1 - p0) ** 2
    samples = max(2, math.ceil(tokens * design_effect / tokens_per_sample))
    rng = np.random.default_rng(seed)
    while (
        _detections(p0, p1, samples, tokens_per_sample, design_effect, alpha_per_test, reps, rng)
        < power * reps
    ):
        samples += max(1, samples // 20)
    return PowerAnalysis(p0, p1, power, alpha, n_tests, tokens_per_sample, design_effect, samples)


def simulated_power(
    analysis: PowerAnalysis, reps: int = 2000, seed: int = 1
) -> tuple[float, tuple[float, float]]:
    """An independent Monte Carlo check of ``samples_needed`` (fresh draws): the share of
    simulated audits with ``analysis.samples`` samples per side that detect the shift, with
    its 95% Wilson interval."""
    a = analysis
    hits = _detections(
        a.p0,
        a.p1,
        a.samples,
        a.tokens_per_sample,
        a.design_effect,
        a.alpha / a.n_tests,
        reps,
        np.random.default_rng(seed),
    )
    return hits / reps, wilson_interval(hits, reps)
