"""Black-box audit (samples only): for every candidate predicate, test whether its share of
the suspect's tokens differs from a baseline's (a reference model's samples or plain text),
with Holm's correction for the many predicates tried, and say how many samples the test
needs (``likex.stats.power``). Each sample is one observation (Welch's t with Satterthwaite df
on per-sample rates), so the p-values hold whatever the correlation between tokens of a sample;
the audit refuses fewer samples per side than ``min_samples_per_side`` (an exact test over
samples could not reach Holm's strictest level with fewer)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import torch

from likex.audit.predicates import (
    Predicate,
    PredicateIndex,
    membership_matrix,
    predicate_from_key,
)
from likex.errors import ConfigError, LikexError
from likex.options import option
from likex.stats.intervals import design_effect_bound
from likex.stats.power import PowerAnalysis, samples_needed
from likex.stats.significance import holm, min_samples_per_side, welch_t_test


@dataclass(frozen=True)
class BlackBoxConfig:
    alpha: float = option(0.05, "family-wise error rate")
    # predicates seen fewer times in both samples together can't be significant
    min_hits: int = option(10, "least hits of a tested predicate", cli=False)
    top_findings: int = option(10, "findings to report", cli=False)
    shift: tuple[float, float] = option(
        (0.006, 0.05),
        "the sample-size estimate: samples to detect a rate going from the first P to the second",
        metavar="P",
        shown="0.006 -> 0.05",
    )
    power: float = option(0.9, "power of the sample-size estimate")

    def validate(self) -> None:
        if not 0 < self.alpha < 1:
            raise ConfigError("alpha", f"must be in (0, 1), got {self.alpha}")
        if not 0 < self.power < 1:
            raise ConfigError("power", f"must be in (0, 1), got {self.power}")
        p0, p1 = self.shift
        if not (0 < p0 < 1 and 0 < p1 < 1 and p0 != p1):
            raise ConfigError("shift", f"needs two different rates in (0, 1), got {p0} {p1}")
        for name in ("min_hits", "top_findings"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")


# How both black-box audits (predicates of tokens, words) test, as audit.json records it
TEST_METHOD = {"correction": "holm", "test": "welch t over samples"}


def welch_text(t: float, df: float, p_value: float) -> str:
    """A test as both black-box audits print it: "t +2.3 (df 11), p 0.04"."""
    return f"t {t:+.1f} (df {df:.0f}), p {p_value:.2g}"


@dataclass(frozen=True)
class BlackBoxFinding:
    predicate: Predicate
    n_tokens: int
    rate_suspect: float
    rate_baseline: float
    t: float  # Welch's t on per-sample rates (sign: suspect above baseline)
    df: float
    p_value: float
    significant: bool
    equivalent: int  # other predicates with exactly the same hits in these samples

    @property
    def log_rate_ratio(self) -> float:
        a, b = self.rate_suspect, self.rate_baseline
        return math.log(a / b) if a > 0 and b > 0 else math.copysign(math.inf, a - b)

    def to_dict(self) -> dict:
        return {
            "predicate": self.predicate.describe(),
            "pattern": self.predicate.to_pattern(),
            "n_tokens": self.n_tokens,
            "rate_suspect": self.rate_suspect,
            "rate_baseline": self.rate_baseline,
            "difference": self.rate_suspect - self.rate_baseline,
            "log_rate_ratio": self.log_rate_ratio,
            "t": self.t,
            "df": self.df,
            "p_value": self.p_value,
            "significant": self.significant,
            "equivalent_predicates": self.equivalent,
        }

    def line(self, rank: int) -> str:
        mark = "*" if self.significant else " "
        return (
            f"  {mark}{rank}. {self.predicate.describe()}: {self.rate_suspect:.4f} vs "
            f"{self.rate_baseline:.4f} (log ratio {self.log_rate_ratio:+.2f}), "
            + welch_text(self.t, self.df, self.p_value)
        )


@dataclass(frozen=True)
class BlackBoxResult:
    KIND: ClassVar[str] = "black-box"  # audit.json's "audit"
    AGAINST: ClassVar[str] = "baseline"  # audit.json's key for what the suspect is compared with

    suspect_tokens: int
    suspect_samples: int
    baseline_tokens: int
    baseline_samples: int
    n_tests: int
    n_significant: int
    findings: list[BlackBoxFinding]
    power: PowerAnalysis
    config: BlackBoxConfig = field(repr=False, default_factory=BlackBoxConfig)

    @property
    def detected(self) -> bool:
        return self.n_significant > 0

    @property
    def top(self) -> BlackBoxFinding | None:
        """The significant predicate the suspect uses most above the baseline (largest t)."""
        boosted = [f for f in self.findings if f.significant and f.t > 0]
        return boosted[0] if boosted else None

    @property
    def alpha(self) -> float:
        return self.config.alpha

    def to_dict(self) -> dict:
        return {
            "audit": self.KIND,
            "suspect_tokens": self.suspect_tokens,
            "suspect_samples": self.suspect_samples,
            "baseline_tokens": self.baseline_tokens,
            "baseline_samples": self.baseline_samples,
            "n_tests": self.n_tests,
            "n_significant": self.n_significant,
            "detected": self.detected,
            "alpha": self.alpha,
            **TEST_METHOD,
            "min_samples_per_side": min_samples_per_side(self.n_tests, self.alpha),
            "findings": [f.to_dict() for f in self.findings],
            "power": asdict(self.power),
            "config": asdict(self.config),
        }

    def lines(self, model: str, baseline: str) -> list[str]:
        """What ``likex audit`` prints: both samples, the tests, the findings (* significant),
        and how many samples per side the test needs for the configured shift."""
        return [
            f"likex audit ({self.KIND}): {model} against {baseline}",
            f"  samples   {self.suspect_samples} ({self.suspect_tokens} tokens) vs "
            f"{self.baseline_samples} ({self.baseline_tokens} tokens)",
            f"  tests     {self.n_tests} predicates, {self.n_significant} significant at "
            f"family-wise alpha {self.alpha:g} (Holm)",
            *(f.line(i) for i, f in enumerate(self.findings, 1)),
            f"  power     {self.power.describe()}",
        ]


def _type_counts(seqs: list[list[int]], types: dict[int, int]) -> np.ndarray:
    """[sequences, observed types] token counts."""
    out = np.zeros((len(seqs), len(types)), dtype=np.int64)
    for j, seq in enumerate(seqs):
        for t in seq:
            out[j, types[t]] += 1
    return out


def baseline_design_effect(hits_b: np.ndarray, len_b: np.ndarray, first: int) -> float:
    """The design effect the sample size is planned at, measured on the baseline's own samples
    (never assumed to be 1): the 80% upper bound (``design_effect_bound``) for the predicate
    ranked first; where that predicate has no hit in the baseline, the median bound over the
    predicates that do; where none does, the worst case, the sample length."""
    bound = design_effect_bound(hits_b[first], len_b)
    if math.isnan(bound):
        bounds = [design_effect_bound(row, len_b) for row in hits_b]
        bounds = [b for b in bounds if not math.isnan(b)]
        bound = float(np.median(bounds)) if bounds else float(len_b.mean())
    return max(1.0, bound)


def _checked_samples(
    suspect: list[list[int]], baseline: list[list[int]], vocab: int, alpha: float
) -> tuple[list[list[int]], list[list[int]]]:
    """Both sides without their empty samples, refused when too few are left or an id falls
    outside the vocabulary."""
    suspect = [s for s in suspect if s]
    baseline = [s for s in baseline if s]
    if len(suspect) < 4 or len(baseline) < 4:  # the least of min_samples_per_side
        raise LikexError(
            f"a black-box audit needs at least {min_samples_per_side(1, alpha)} non-empty "
            f"samples on each side, got {len(suspect)} and {len(baseline)}"
        )
    for seq in (*suspect, *baseline):
        if max(seq) >= vocab or min(seq) < 0:
            raise LikexError(f"sampled token ids fall outside the vocabulary of {vocab}")
    return suspect, baseline


@dataclass(frozen=True)
class PredicateHits:
    """The candidate predicates of two sets of samples and their hits: ``keys`` are the
    distinct token sets (positions in ``observed``, the token types seen), ``groups`` every
    predicate's key that selects each, ``hits_a`` / ``hits_b`` [sets, samples] their hits in
    each sample of either side, ``len_a`` / ``len_b`` the samples' lengths."""

    observed: list[int]
    keys: list[tuple[int, ...]]
    groups: dict[tuple[int, ...], list[str]]
    hits_a: np.ndarray
    hits_b: np.ndarray
    len_a: np.ndarray
    len_b: np.ndarray


def predicate_hits(
    suspect: list[list[int]], baseline: list[list[int]], index: PredicateIndex, min_hits: int
) -> PredicateHits:
    """Candidates are the predicates some sampled token satisfies, seen at least ``min_hits``
    times in both samples together (rarer ones cannot reach significance; filtering on the
    pooled count does not favour either side). Predicates with the same hits in every
    sequence are one candidate."""
    observed = sorted({t for seq in (*suspect, *baseline) for t in seq})
    types = {t: j for j, t in enumerate(observed)}
    counts_a = _type_counts(suspect, types)
    counts_b = _type_counts(baseline, types)
    pooled = counts_a.sum(0) + counts_b.sum(0)
    groups = index.token_sets(observed, lambda cols: pooled[cols].sum() >= min_hits)
    if not groups:
        raise LikexError("the samples are too small: no predicate is seen often enough to test")
    keys = list(groups)
    membership = membership_matrix(keys, len(observed))
    hits_a = torch.sparse.mm(membership, torch.from_numpy(counts_a.T).double()).numpy()
    hits_b = torch.sparse.mm(membership, torch.from_numpy(counts_b.T).double()).numpy()
    len_a = counts_a.sum(1).astype(np.float64)
    len_b = counts_b.sum(1).astype(np.float64)
    return PredicateHits(observed, keys, groups, hits_a, hits_b, len_a, len_b)


def black_box_audit(
    suspect: list[list[int]],
    baseline: list[list[int]],
    token_strings: list[str],
    cfg: BlackBoxConfig,
    index: PredicateIndex | None = None,
) -> BlackBoxResult:
    """Test every candidate predicate's token share in ``suspect`` against ``baseline``
    (``predicate_hits``: the candidates), named by the simplest predicate of each."""
    cfg.validate()
    suspect, baseline = _checked_samples(suspect, baseline, len(token_strings), cfg.alpha)
    index = index or PredicateIndex.of(token_strings)
    h = predicate_hits(suspect, baseline, index, cfg.min_hits)
    keys, groups = h.keys, h.groups
    hits_a, hits_b, len_a, len_b = h.hits_a, h.hits_b, h.len_a, h.len_b
    need = min_samples_per_side(len(keys), cfg.alpha)
    if min(len(suspect), len(baseline)) < need:
        raise LikexError(
            f"{len(keys)} predicates at family-wise alpha {cfg.alpha} need at least {need} "
            f"samples on each side, got {len(suspect)} and {len(baseline)}"
        )
    t, df, p = welch_t_test(hits_a, hits_b, len_a, len_b, min_per_side=need)
    reject, _ = holm(p, cfg.alpha)
    rate_a = hits_a.sum(1) / len_a.sum()
    rate_b = hits_b.sum(1) / len_b.sum()

    order = sorted(range(len(keys)), key=lambda g: (not reject[g], -t[g]))
    findings: list[BlackBoxFinding] = []
    tokens_per_sample = int(round(len_a.mean()))
    for g in order[: cfg.top_findings]:
        preds = sorted(map(predicate_from_key, groups[keys[g]]), key=Predicate.simplicity)
        findings.append(
            BlackBoxFinding(
                predicate=preds[0],
                n_tokens=index.n_tokens(preds[0]),
                rate_suspect=float(rate_a[g]),
                rate_baseline=float(rate_b[g]),
                t=float(t[g]),
                df=float(df[g]),
                p_value=float(p[g]),
                significant=bool(reject[g]),
                equivalent=len(preds) - 1,
            )
        )
    p0, p1 = cfg.shift
    deff = baseline_design_effect(hits_b, len_b, order[0])
    power = samples_needed(p0, p1, deff, tokens_per_sample, cfg.alpha, cfg.power, len(keys))
    return BlackBoxResult(
        suspect_tokens=int(len_a.sum()),
        suspect_samples=len(suspect),
        baseline_tokens=int(len_b.sum()),
        baseline_samples=len(baseline),
        n_tests=len(keys),
        n_significant=int(reject.sum()),
        findings=findings,
        power=power,
        config=cfg,
    )
