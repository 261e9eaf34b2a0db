"""How many samples a two-sample test needs to see a rate shift, at a design effect measured on
real samples, and a simulation that checks the formula."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from likex.stats.distributions import Z95, t_quantile, t_sf
from likex.stats.intervals import fmt_rate, wilson_interval
from likex.stats.significance import min_samples_per_side, welch_t_test


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


def beta_binomial_hits(
    rng: np.random.Generator, p: float, deff: float, length: int, shape: tuple[int, ...]
) -> np.ndarray:
    """Target-token counts of sequences of ``length`` tokens with rate ``p`` and design effect
    ``deff`` (1 <= deff < length): beta-binomial, intra-sequence correlation
    rho = (deff - 1) / (length - 1), so a sequence's rate has variance p (1 - p) deff / length."""
    rho = (deff - 1) / max(length - 1, 1)
    rates = np.full(shape, p)
    if rho > 0:
        rates = rng.beta(p * (1 / rho - 1), (1 - p) * (1 / rho - 1), size=shape)
    return rng.binomial(length, rates)


def simulated_power(
    analysis: PowerAnalysis, reps: int = 2000, seed: int = 1
) -> tuple[float, tuple[float, float]]:
    """A Monte Carlo check of a power analysis, independent of its formula: the share of
    ``reps`` simulated audits (beta-binomial sequences with intra-sequence correlation
    rho = (deff - 1) / (L - 1), ``analysis.samples`` per side) in which Welch's test
    (``welch_t_test``) rejects at alpha / n_tests in the right direction, with its 95% Wilson
    interval."""
    a, rng = analysis, np.random.default_rng(seed)
    L, shape = a.tokens_per_sample, (reps, a.samples)
    rates = (beta_binomial_hits(rng, p, a.design_effect, L, shape) / L for p in (a.p1, a.p0))
    t, _, p = welch_t_test(*rates)
    hits = int(((p <= a.alpha / a.n_tests) & (np.sign(t) == np.sign(a.p1 - a.p0))).sum())
    return hits / reps, wilson_interval(hits, reps, Z95)
