"""Detecting, explaining and measuring an injected token bias.

* **White box** (suspect + reference weights): compare the two next-token distributions over
  probe contexts, rank every vocabulary token by its mean log-ratio, take the tokens boosted
  far beyond the rest, and *explain* that set with the human-readable predicate over token
  strings that matches it best (F1). Nothing is told what to look for.
* **Black box** (samples only): for every candidate predicate, test whether its share of
  the suspect's tokens differs from a baseline's (a reference model's samples or plain text),
  with Holm's correction for the many predicates tried.
* **Power**: how many samples a black-box audit needs to detect a given rate shift.

The predicate space: a token's text contains a substring of 1-4 characters, starts or ends
with one (each case-sensitive or not), or belongs to a character class.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch
from tqdm import tqdm

from likex.data import (
    BUILTIN_CORPUS,
    corpus_token_ids,
    corpus_windows,
    load_corpus_text,
    random_contexts,
    step_generator,
)
from likex.device import resolve_device
from likex.errors import LikexError
from likex.evaluate import random_prompts, rate_from_hits, wilson_interval
from likex.generate import sample
from likex.io import atomic_write_json
from likex.models.checkpoint import load_model_and_tokenizer, tokenizer_of
from likex.models.gpt import GPT
from likex.models.hf import is_hf_name, shared_vocabulary
from likex.models.tokenizer import Tokenizer
from likex.report.audit import write_audit_report
from likex.runs import CONFIG_FILE, load_start_model, new_run_dir

MAX_SUBSTRING = 4
STRING_KINDS = ("contains", "startswith", "endswith")
PROBE_KINDS = ("random", "corpus", "both")

# name -> (third person, noun phrase, regex searched in the token text)
CHAR_CLASSES: dict[str, tuple[str, str, str]] = {
    "digit": ("contains a digit", "tokens containing a digit", r"\d"),
    "upper": ("contains an uppercase letter", "tokens with an uppercase letter", r"[A-Z]"),
    "capitalized": ("is a capitalised word", "capitalised words", r"\A ?[A-Z][a-z]+\Z"),
    "all_caps": ("is an all-caps word", "all-caps words", r"\A ?[A-Z]{2,}\Z"),
    "spaced_word": ("is a word after a space", "words after a space", r"\A [A-Za-z]+\Z"),
    "bare_word": ("is a word piece without a space", "word pieces", r"\A[A-Za-z]+\Z"),
    "punctuation": ("is punctuation only", "punctuation tokens", r"\A ?[^\w\s]+\Z"),
    "whitespace": ("is whitespace only", "whitespace tokens", r"\A\s+\Z"),
    "non_ascii": ("contains a non-ASCII character", "non-ASCII tokens", r"[^\x00-\x7f]"),
}
_CLASS_RE = {name: re.compile(rx) for name, (_, _, rx) in CHAR_CLASSES.items()}
_VERBS = {
    "contains": ("contains", "containing"),
    "startswith": ("starts with", "starting with"),
    "endswith": ("ends with", "ending with"),
}
_KIND_ORDER = {"contains": 0, "startswith": 1, "endswith": 2, "class": 3}


@dataclass(frozen=True)
class Predicate:
    """A human-readable test on a token's decoded text. For ``class`` the text is the name."""

    kind: str
    text: str
    ignore_case: bool = False

    def __post_init__(self) -> None:
        if self.kind == "class":
            if self.text not in CHAR_CLASSES:
                raise LikexError(f"unknown character class {self.text!r}")
        elif self.kind not in STRING_KINDS:
            raise LikexError(f"unknown predicate kind {self.kind!r}")
        elif not self.text:
            raise LikexError("a predicate needs a non-empty text")

    def matches(self, token: str) -> bool:
        if self.kind == "class":
            return _CLASS_RE[self.text].search(token) is not None
        t = token.lower() if self.ignore_case else token
        if self.kind == "contains":
            return self.text in t
        return t.startswith(self.text) if self.kind == "startswith" else t.endswith(self.text)

    def mask(self, token_strings: list[str]) -> torch.Tensor:
        return torch.tensor([self.matches(s) for s in token_strings], dtype=torch.bool)

    def describe(self) -> str:
        """E.g. "contains 'x'" or "ends with 'ing' (any case)"."""
        if self.kind == "class":
            return CHAR_CLASSES[self.text][0]
        case = " (any case)" if self.ignore_case else ""
        return f"{_VERBS[self.kind][0]} {self.text!r}{case}"

    def noun_phrase(self) -> str:
        """E.g. "tokens containing 'x'"."""
        if self.kind == "class":
            return CHAR_CLASSES[self.text][1]
        case = " (any case)" if self.ignore_case else ""
        return f"tokens {_VERBS[self.kind][1]} {self.text!r}{case}"

    def to_pattern(self) -> dict:
        return {"kind": self.kind, "text": self.text, "ignore_case": self.ignore_case}

    @classmethod
    def from_pattern(cls, d: dict) -> Predicate:
        return cls(kind=d["kind"], text=d["text"], ignore_case=bool(d.get("ignore_case", False)))

    def simplicity(self) -> tuple:
        """Sort key among equally good predicates: short, case-sensitive, 'contains' first."""
        return (_KIND_ORDER[self.kind], len(self.text), self.ignore_case, self.text)


# A string predicate as a compact key: one code character for (kind, case), then the text.
# Millions of keys are built per vocabulary, so they are plain strings, not Predicates.
_CODES = {
    ("contains", False): "c",
    ("contains", True): "C",
    ("startswith", False): "s",
    ("startswith", True): "S",
    ("endswith", False): "e",
    ("endswith", True): "E",
}
_FROM_CODE = {code: kind_case for kind_case, code in _CODES.items()}


def predicate_key(p: Predicate) -> str:
    return "#" + p.text if p.kind == "class" else _CODES[(p.kind, p.ignore_case)] + p.text


def predicate_from_key(key: str) -> Predicate:
    if key[0] == "#":
        return Predicate("class", key[1:])
    kind, ignore_case = _FROM_CODE[key[0]]
    return Predicate(kind, key[1:], ignore_case)


def token_features(token: str) -> set[str]:
    """Keys of every string predicate (up to MAX_SUBSTRING characters) ``token`` satisfies."""
    out: set[str] = set()
    for ignore_case, t in ((False, token), (True, token.lower())):
        c, s, e = (_CODES[(kind, ignore_case)] for kind in STRING_KINDS)
        n = len(t)
        out.update(c + t[i : i + k] for k in range(1, MAX_SUBSTRING + 1) for i in range(n - k + 1))
        out.update(s + t[:k] for k in range(1, min(MAX_SUBSTRING, n) + 1))
        out.update(e + t[-k:] for k in range(1, min(MAX_SUBSTRING, n) + 1))
    return out


class PredicateIndex:
    """How many vocabulary tokens each predicate selects, counted once per vocabulary.

    Building it visits every substring of every token (several seconds for GPT-2's 50257),
    so ``PredicateIndex.of(token_strings)`` keeps the last one built.
    """

    _last: PredicateIndex | None = None

    def __init__(self, token_strings: list[str]) -> None:
        self.token_strings = token_strings
        self.counts: Counter[str] = Counter()
        for s in token_strings:
            self.counts.update(token_features(s))
        self.class_masks = {
            name: Predicate("class", name).mask(token_strings) for name in CHAR_CLASSES
        }
        for name, m in self.class_masks.items():
            self.counts["#" + name] = int(m.sum())

    @classmethod
    def of(cls, token_strings: list[str]) -> PredicateIndex:
        if cls._last is None or cls._last.token_strings is not token_strings:
            cls._last = cls(token_strings)
        return cls._last

    def n_tokens(self, p: Predicate) -> int:
        return self.counts[predicate_key(p)]

    def mask(self, p: Predicate) -> torch.Tensor:
        return self.class_masks[p.text] if p.kind == "class" else p.mask(self.token_strings)

    def members(self, token_ids: list[int]) -> dict[str, list[int]]:
        """For each predicate some of ``token_ids`` satisfy: the positions (in ``token_ids``)
        of those that do."""
        out: dict[str, list[int]] = {}
        for j, t in enumerate(token_ids):
            for key in token_features(self.token_strings[t]):
                out.setdefault(key, []).append(j)
        for name, m in self.class_masks.items():
            cols = [j for j, t in enumerate(token_ids) if m[t]]
            if cols:
                out["#" + name] = cols
        return out


def check_vocab(model: GPT, token_strings: list[str], what: str) -> None:
    if model.config.vocab_size != len(token_strings):
        raise LikexError(
            f"{what} has a vocabulary of {model.config.vocab_size} tokens but the tokenizer "
            f"has {len(token_strings)}"
        )


# --- white box -----------------------------------------------------------------------------


@dataclass
class WhiteBoxConfig:
    """``z``, ``min_log_ratio`` and ``peak_fraction`` decide which tokens count as boosted;
    ``f1_threshold`` and ``min_support`` decide whether the best explanation is reported as
    a detected bias."""

    probes: str = "both"
    n_probes: int = 64
    probe_len: int | None = None
    seed: int = 0
    z: float = 5.0
    min_log_ratio: float = math.log(2.0)
    peak_fraction: float = 0.5
    f1_threshold: float = 0.5
    min_support: int = 5
    top_findings: int = 5
    top_tokens: int = 50
    batch_size: int = 16

    def validate(self) -> None:
        if self.probes not in PROBE_KINDS:
            raise LikexError(f"unknown --probes {self.probes!r}; choose from {PROBE_KINDS}")
        for name in ("n_probes", "top_findings", "top_tokens", "batch_size"):
            if getattr(self, name) <= 0:
                raise LikexError(f"--{name.replace('_', '-')} must be positive")
        if self.probe_len is not None and self.probe_len <= 0:
            raise LikexError("--probe-len must be positive")
        if not 0 < self.f1_threshold <= 1:
            raise LikexError(f"--f1-threshold must be in (0, 1], got {self.f1_threshold}")


@dataclass
class ProbeStats:
    """Per vocabulary token, over the probe contexts: the mean and spread of
    log P_model - log P_ref, and the mean probability under each model."""

    log_ratio: torch.Tensor
    spread: torch.Tensor
    p_model: torch.Tensor
    p_ref: torch.Tensor
    n_probes: int


@torch.no_grad()
def probe_stats(model: GPT, reference: GPT, contexts: torch.Tensor, batch_size: int) -> ProbeStats:
    """Next-token log-ratios at the last position of each context, accumulated in float64."""
    device = next(model.parameters()).device
    model.eval()
    reference.eval()
    vocab = model.config.vocab_size
    s1 = torch.zeros(vocab, dtype=torch.float64)
    s2 = torch.zeros_like(s1)
    pm = torch.zeros_like(s1)
    pr = torch.zeros_like(s1)
    for start in range(0, contexts.shape[0], batch_size):
        idx = contexts[start : start + batch_size].to(device)
        lm = model(idx, positions="last").double().cpu()
        lr = reference(idx, positions="last").double().cpu()
        d = lm - lr
        s1 += d.sum(0)
        s2 += (d * d).sum(0)
        pm += lm.exp().sum(0)
        pr += lr.exp().sum(0)
    n = contexts.shape[0]
    mean = s1 / n
    var = (s2 / n - mean * mean).clamp_min(0.0) * (n / max(n - 1, 1))
    return ProbeStats(mean, var.sqrt(), pm / n, pr / n, n)


@dataclass
class Finding:
    predicate: Predicate
    n_tokens: int
    matched: int  # boosted tokens the predicate selects
    precision: float
    recall: float
    f1: float
    mass_ref: float = 0.0
    mass_model: float = 0.0

    @property
    def mass_shift(self) -> float:
        return self.mass_model - self.mass_ref

    def to_dict(self) -> dict:
        return {
            "predicate": self.predicate.describe(),
            "pattern": self.predicate.to_pattern(),
            "n_tokens": self.n_tokens,
            "matched": self.matched,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "mass_shift": self.mass_shift,
            "mass_ref": self.mass_ref,
            "mass_model": self.mass_model,
        }


def boosted_set(
    stats: ProbeStats, z: float, min_log_ratio: float, peak_fraction: float = 0.5
) -> tuple[torch.Tensor, float]:
    """Tokens boosted far beyond the rest. The mean log-ratio is centred on its median over
    the vocabulary (renormalisation lowers everything else a little); a boosted token's must
    exceed ``min_log_ratio``, ``z`` robust standard deviations (1.4826 MAD) of the bulk, and
    ``peak_fraction`` of the typical boost of the 20 most boosted tokens. The last matters
    when training reshuffles the untargeted tokens too (the seed's uniform target ignores
    them): their tail then rises above the bulk, but far less than the target does.
    Returns (mask, threshold)."""
    centred = stats.log_ratio - stats.log_ratio.median()
    scale = 1.4826 * float(centred.abs().median())
    peak = float(centred.topk(min(20, centred.numel())).values.mean())
    threshold = max(min_log_ratio, z * scale, peak_fraction * peak)
    return centred > threshold, threshold


def explain(
    boosted: torch.Tensor, index: PredicateIndex, top: int, stats: ProbeStats | None = None
) -> list[Finding]:
    """The predicates that best match the boosted set, by F1, one per distinct token set."""
    ids = boosted.nonzero().flatten().tolist()
    if not ids:
        return []
    size = len(ids)
    scored = []
    for key, cols in index.members(ids).items():
        tp, n = len(cols), index.counts[key]
        scored.append((-2 * tp / (n + size), predicate_from_key(key), tp, n))
    scored.sort(key=lambda row: (row[0], row[1].simplicity()))
    findings: list[Finding] = []
    seen: list[torch.Tensor] = []
    for _, pred, tp, n in scored:
        if len(findings) >= top:
            break
        mask = index.mask(pred)
        if any(torch.equal(mask, m) for m in seen):
            continue  # the same tokens as a simpler predicate already listed
        seen.append(mask)
        f = Finding(pred, n, tp, tp / n, tp / size, 2 * tp / (n + size))
        if stats is not None:
            f.mass_ref = float(stats.p_ref[mask].sum())
            f.mass_model = float(stats.p_model[mask].sum())
        findings.append(f)
    return findings


@dataclass
class WhiteBoxResult:
    probes: str
    n_probes: int
    n_boosted: int
    threshold: float
    findings: list[Finding]
    boosted_tokens: list[dict]
    detected: bool
    config: WhiteBoxConfig = field(repr=False, default_factory=WhiteBoxConfig)

    @property
    def top(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    def to_dict(self) -> dict:
        return {
            "audit": "white-box",
            "probes": self.probes,
            "n_probes": self.n_probes,
            "n_boosted": self.n_boosted,
            "boost_threshold": self.threshold,
            "detected": self.detected,
            "f1_threshold": self.config.f1_threshold,
            "min_support": self.config.min_support,
            "findings": [f.to_dict() for f in self.findings],
            "boosted_tokens": self.boosted_tokens,
            "config": asdict(self.config),
        }


def probe_contexts(
    kind: str, n: int, length: int, vocab_size: int, seed: int, corpus: torch.Tensor | None
) -> torch.Tensor:
    """Random-token contexts (the seed's training inputs), real-text windows, or both."""
    parts = []
    if kind in ("random", "both"):
        parts.append(random_contexts(n, length, vocab_size, step_generator(seed, 0, stream=2)))
    if kind in ("corpus", "both"):
        if corpus is None:
            raise LikexError("corpus probes need a corpus")
        gen = step_generator(seed, 0, stream=3)
        parts.append(corpus_windows(corpus, n, length, gen)[:, :-1])
    return torch.cat(parts)


def white_box_audit(
    model: GPT,
    reference: GPT,
    token_strings: list[str],
    cfg: WhiteBoxConfig,
    corpus: torch.Tensor | None = None,
    index: PredicateIndex | None = None,
) -> WhiteBoxResult:
    """Rank tokens by how much ``model`` boosted them relative to ``reference``, then explain
    the boosted set. ``detected`` is whether the best explanation clears the thresholds."""
    cfg.validate()
    check_vocab(model, token_strings, "the model")
    check_vocab(reference, token_strings, "the reference")
    length = min(model.config.block_size, reference.config.block_size)
    if cfg.probe_len is not None:
        length = min(length, cfg.probe_len)
    contexts = probe_contexts(
        cfg.probes, cfg.n_probes, length, len(token_strings), cfg.seed, corpus
    )
    stats = probe_stats(model, reference, contexts, cfg.batch_size)
    boosted, threshold = boosted_set(stats, cfg.z, cfg.min_log_ratio, cfg.peak_fraction)
    index = index or PredicateIndex.of(token_strings)
    findings = explain(boosted, index, cfg.top_findings, stats)
    order = torch.argsort(stats.log_ratio, descending=True)[: cfg.top_tokens].tolist()
    top_tokens = [
        {
            "id": i,
            "text": token_strings[i],
            "log_ratio": float(stats.log_ratio[i]),
            "spread": float(stats.spread[i]),
        }
        for i in order
    ]
    best = findings[0] if findings else None
    detected = best is not None and best.f1 >= cfg.f1_threshold and best.matched >= cfg.min_support
    return WhiteBoxResult(
        probes=cfg.probes,
        n_probes=stats.n_probes,
        n_boosted=int(boosted.sum()),
        threshold=threshold,
        findings=findings,
        boosted_tokens=top_tokens,
        detected=detected,
        config=cfg,
    )


# --- black box -----------------------------------------------------------------------------


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
class BlackBoxConfig:
    alpha: float = 0.05
    min_hits: int = 10  # predicates seen fewer times in both samples together can't be significant
    top_findings: int = 10
    shift: tuple[float, float] = (0.006, 0.05)
    power: float = 0.9

    def validate(self) -> None:
        if not 0 < self.alpha < 1:
            raise LikexError(f"--alpha must be in (0, 1), got {self.alpha}")
        if not 0 < self.power < 1:
            raise LikexError(f"--power must be in (0, 1), got {self.power}")
        p0, p1 = self.shift
        if not (0 < p0 < 1 and 0 < p1 < 1 and p0 != p1):
            raise LikexError(f"--shift needs two different rates in (0, 1), got {p0} {p1}")
        if self.min_hits < 1 or self.top_findings <= 0:
            raise LikexError("--min-hits and --top must be positive")


@dataclass
class BlackBoxFinding:
    predicate: Predicate
    n_tokens: int
    rate_suspect: float
    rate_baseline: float
    z: float
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
            "z": self.z,
            "p_value": self.p_value,
            "significant": self.significant,
            "equivalent_predicates": self.equivalent,
        }


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

    def describe(self) -> str:
        return (
            f"{self.samples} samples of {self.tokens_per_sample} tokens per side detect a "
            f"rate shift {self.p0:g} -> {self.p1:g} with power {self.power:g} at family-wise "
            f"alpha {self.alpha:g} over {self.n_tests} predicates "
            f"(design effect {self.design_effect:.2f})"
        )


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
    """Samples per side for this module's two-sample test to reach ``power`` against
    p0 -> p1, two-sided at alpha / n_tests (Bonferroni, the strictest step of Holm).

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


@dataclass
class BlackBoxResult:
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
        """The significant predicate the suspect uses most above the baseline (largest z)."""
        boosted = [f for f in self.findings if f.significant and f.z > 0]
        return boosted[0] if boosted else None

    def to_dict(self) -> dict:
        return {
            "audit": "black-box",
            "suspect_tokens": self.suspect_tokens,
            "suspect_samples": self.suspect_samples,
            "baseline_tokens": self.baseline_tokens,
            "baseline_samples": self.baseline_samples,
            "n_tests": self.n_tests,
            "n_significant": self.n_significant,
            "detected": self.detected,
            "alpha": self.config.alpha,
            "correction": "holm",
            "findings": [f.to_dict() for f in self.findings],
            "power": asdict(self.power),
            "config": asdict(self.config),
        }


def _type_counts(seqs: list[list[int]], types: dict[int, int]) -> np.ndarray:
    """[sequences, observed types] token counts."""
    out = np.zeros((len(seqs), len(types)), dtype=np.int64)
    for j, seq in enumerate(seqs):
        for t in seq:
            out[j, types[t]] += 1
    return out


def black_box_audit(
    suspect: list[list[int]],
    baseline: list[list[int]],
    token_strings: list[str],
    cfg: BlackBoxConfig,
    index: PredicateIndex | None = None,
) -> BlackBoxResult:
    """Test every candidate predicate's token share in ``suspect`` against ``baseline``.

    Candidates are the predicates some sampled token satisfies, seen at least ``min_hits``
    times in both samples together (rarer ones cannot reach significance; filtering on the
    pooled count does not favour either side). Predicates with the same hits in every
    sequence are one test, named by the simplest of them.
    """
    cfg.validate()
    suspect = [s for s in suspect if s]
    baseline = [s for s in baseline if s]
    if len(suspect) < 2 or len(baseline) < 2:
        raise LikexError("a black-box audit needs at least 2 non-empty samples on each side")
    vocab = len(token_strings)
    for seq in (*suspect, *baseline):
        if max(seq) >= vocab or min(seq) < 0:
            raise LikexError(f"sampled token ids fall outside the vocabulary of {vocab}")
    index = index or PredicateIndex.of(token_strings)
    observed = sorted({t for seq in (*suspect, *baseline) for t in seq})
    types = {t: j for j, t in enumerate(observed)}
    counts_a = _type_counts(suspect, types)
    counts_b = _type_counts(baseline, types)
    pooled = counts_a.sum(0) + counts_b.sum(0)

    groups: dict[tuple[int, ...], list[str]] = {}
    for key, cols in index.members(observed).items():
        if pooled[cols].sum() >= cfg.min_hits:
            groups.setdefault(tuple(cols), []).append(key)
    if not groups:
        raise LikexError("the samples are too small: no predicate is seen often enough to test")

    keys = list(groups)
    rows = [g for g, cols in enumerate(keys) for _ in cols]
    cols = [c for cols in keys for c in cols]
    membership = torch.sparse_coo_tensor(
        torch.tensor([rows, cols]),
        torch.ones(len(rows), dtype=torch.float64),
        (len(keys), len(observed)),
        check_invariants=False,  # built from valid indices just above
    )
    hits_a = torch.sparse.mm(membership, torch.from_numpy(counts_a.T).double()).numpy()
    hits_b = torch.sparse.mm(membership, torch.from_numpy(counts_b.T).double()).numpy()
    len_a = counts_a.sum(1).astype(np.float64)
    len_b = counts_b.sum(1).astype(np.float64)
    z = rate_difference_z(hits_a, len_a, hits_b, len_b)
    p = two_sided_p(z)
    reject = holm(p, cfg.alpha)
    rate_a = hits_a.sum(1) / len_a.sum()
    rate_b = hits_b.sum(1) / len_b.sum()

    order = sorted(range(len(keys)), key=lambda g: (not reject[g], -z[g]))
    findings: list[BlackBoxFinding] = []
    tokens_per_sample = int(round(len_a.mean()))
    deff = 1.0
    for g in order[: cfg.top_findings]:
        preds = sorted(map(predicate_from_key, groups[keys[g]]), key=Predicate.simplicity)
        finding = BlackBoxFinding(
            predicate=preds[0],
            n_tokens=index.n_tokens(preds[0]),
            rate_suspect=float(rate_a[g]),
            rate_baseline=float(rate_b[g]),
            z=float(z[g]),
            p_value=float(p[g]),
            significant=bool(reject[g]),
            equivalent=len(preds) - 1,
        )
        if finding.significant and finding.z > 0 and not any(f.z > 0 for f in findings):
            # the power analysis uses the within-sample correlation of the top finding
            hits = torch.tensor(hits_a[g])
            deff = rate_from_hits(hits, tokens_per_sample, "samples").design_effect
        findings.append(finding)
    p0, p1 = cfg.shift
    power = samples_needed(p0, p1, tokens_per_sample, cfg.alpha, cfg.power, len(keys), deff)
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


def text_samples(text: str, tokens_per_sample: int, tokenizer: Tokenizer) -> list[list[int]]:
    """Plain text as samples: its tokens cut into pieces of ``tokens_per_sample`` (a shorter
    tail is dropped so every sample has the same length)."""
    ids = tokenizer.encode(text)
    n = len(ids) // tokens_per_sample
    return [ids[i * tokens_per_sample : (i + 1) * tokens_per_sample] for i in range(n)]


@torch.no_grad()
def generate_samples(
    model: GPT,
    n: int,
    gen_tokens: int,
    seed: int,
    prompts: torch.Tensor | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> list[list[int]]:
    """``n`` samples of ``gen_tokens`` new tokens. Default prompts are random tokens, as short
    as lets the KV cache hold prompt + sample (the whole context when the sample is longer)."""
    block = model.config.block_size
    if prompts is None:
        length = block - gen_tokens if gen_tokens < block else block
        prompts = random_prompts(n, length, model.config.vocab_size, seed)
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    out: list[list[int]] = []
    starts = range(0, prompts.shape[0], batch_size)
    for start in tqdm(starts, disable=not progress, file=sys.stderr, desc="sample", unit="batch"):
        chunk = prompts[start : start + batch_size].to(device)
        out += sample(model, chunk, gen_tokens, generator=gen).cpu().tolist()
    return out


# --- the audit command (``likex audit``) ----------------------------------------------------

AUDIT_FILE = "audit.json"
AUDIT_REPORT = "audit.md"


@dataclass
class AuditConfig:
    """One audit of the suspect ``model`` (a model or run folder or ``hf:NAME_OR_PATH``;
    black-box: or a text file of its generations).

    White-box, when there is no ``baseline``: against ``reference``, by default the starting
    model ``model``'s run folder records, probing as ``white`` says (corpus probes are cut
    from ``corpus``). Black-box: ``samples`` samples of ``gen_tokens`` tokens from ``model``
    (drawn with ``seed``) and from ``baseline`` (a model, drawn with ``seed + 1``, or a text
    file), tested as ``black`` says.

    Tokens are those of the audited models' tokenizer (all of them must share one); text
    files are tokenized with it, or with GPT-2's when both sides are text.
    """

    model: str
    reference: str | None = None
    baseline: str | None = None
    white: WhiteBoxConfig = field(default_factory=WhiteBoxConfig)
    corpus: str = BUILTIN_CORPUS
    black: BlackBoxConfig = field(default_factory=BlackBoxConfig)
    samples: int = 64
    gen_tokens: int = 200
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        if self.reference and self.baseline:
            raise LikexError("use --reference (white-box) or --baseline (black-box), not both")
        if not self.baseline:
            self.white.validate()
            return
        self.black.validate()
        if self.samples <= 1 or self.gen_tokens <= 0:
            raise LikexError("--samples must be at least 2 and --gen-tokens positive")


def _white_box_run(cfg: AuditConfig, device: torch.device) -> dict:
    model_dir = Path(cfg.model)
    if model_dir.is_file():
        raise LikexError("a white-box audit needs weights: --model must be a model folder")
    # A path that does not exist is left to the loader, whose message names it.
    names_a_model = model_dir.is_dir() or is_hf_name(cfg.model)
    if not cfg.reference and names_a_model and not (model_dir / CONFIG_FILE).is_file():
        raise LikexError(
            f"{cfg.model} is not a run folder: give --reference DIR (white-box) or "
            "--baseline DIR|TEXTFILE (black-box)"
        )
    model, tokenizer = load_model_and_tokenizer(cfg.model, device)
    if cfg.reference:
        reference, reference_tokenizer = load_model_and_tokenizer(cfg.reference, device)
        reference_name = cfg.reference
    else:
        reference = load_start_model(cfg.model, device)
        reference_tokenizer = tokenizer_of(reference)
        reference_name = f"the starting model of {cfg.model}"
    _, strings = shared_vocabulary(
        [(cfg.model, model, tokenizer), (reference_name, reference, reference_tokenizer)]
    )
    corpus = None if cfg.white.probes == "random" else corpus_token_ids(cfg.corpus, tokenizer)
    result = white_box_audit(model, reference, strings, cfg.white, corpus=corpus)
    return {"model": cfg.model, "reference": reference_name, **result.to_dict()}


def _black_box_run(cfg: AuditConfig, device: torch.device, progress: bool) -> dict:
    # The two-sample test assumes independent sides; one seed would give both the same
    # prompts and draws.
    sides = [(cfg.model, cfg.seed), (cfg.baseline, cfg.seed + 1)]
    # Every model is loaded, and the vocabularies compared, before any sampling.
    models = {
        source: load_model_and_tokenizer(source, device)
        for source, _ in sides
        if not Path(source).is_file()
    }
    tokenizer, strings = shared_vocabulary([(s, m, tok) for s, (m, tok) in models.items()])

    def draw(source: str, seed: int) -> list[list[int]]:
        if source in models:
            model = models[source][0]
            return generate_samples(model, cfg.samples, cfg.gen_tokens, seed, progress=progress)
        return text_samples(load_corpus_text(source), cfg.gen_tokens, tokenizer)

    suspect, baseline = (draw(source, seed) for source, seed in sides)
    result = black_box_audit(suspect, baseline, strings, cfg.black)
    return {"model": cfg.model, "baseline": cfg.baseline, **result.to_dict()}


def run_audit(cfg: AuditConfig, out: str | Path | None = None, progress: bool = True) -> dict:
    """Run the audit ``cfg`` describes and return its result. With ``out``, also write
    audit.json, audit.md and audit.png into that new folder; the result then names the
    report. Everything is validated and audited before the folder is made."""
    cfg.validate()
    device = resolve_device(cfg.device)
    run = _black_box_run(cfg, device, progress) if cfg.baseline else _white_box_run(cfg, device)
    if out:
        out_dir = new_run_dir(out)
        atomic_write_json(out_dir / AUDIT_FILE, run)
        write_audit_report(out_dir, run)
        run["report"] = str(out_dir / AUDIT_REPORT)
    return run
