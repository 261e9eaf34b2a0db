"""Audits in words: which words and phrases did a model learn to prefer?

* Black-box (samples only): every word and two-word phrase seen often enough in the decoded
  samples of the suspect and a baseline is tested (its share of each sample's words, Welch's t
  over samples as the token audit tests predicates, Holm's correction over everything tested);
  the boosted ones are named.
* White-box (weights): every candidate word (the words of a corpus plus a list) is scored by
  the change of its whole-sequence log-probability after probe contexts, model minus
  reference, and the top ones are named.

Neither is told what was planted.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch

from likex.audit.black_box import TEST_METHOD, welch_text
from likex.audit.sampling import generate_samples
from likex.errors import ConfigError, LikexError
from likex.models import LanguageModel
from likex.models.prefix import sequence_log_probs
from likex.options import option
from likex.stats.significance import holm, min_samples_per_side, welch_t_test
from likex.target import read_words

WRITTEN_TOKENS = 100  # new tokens per sample whose words become white-box candidates

# A word: letters/digits, with inner hyphens, apostrophes or dots ("Coca-Cola", "don't").
UNIT_RE = re.compile(r"\w+(?:[-'’.]\w+)*")


def text_units(text: str) -> list[str]:
    return UNIT_RE.findall(text)


@dataclass(frozen=True)
class WordAuditConfig:
    min_hits: int = option(10, "least occurrences (both sides) of a tested word", cli=False)
    phrase_share: float = option(
        0.5, "a two-word phrase is named when it holds this share of its words", cli=False
    )
    rescore: int = option(64, "white-box words: candidates rescored on the whole sequence")
    rescore_probes: int = option(
        16, "white-box words: probes the rescored candidates are scored after (spread evenly)"
    )
    candidates: tuple[str, ...] = option(
        (),
        "white-box words: a file of extra candidate words or phrases, one a line",
        metavar="FILE",
        parse=lambda p: read_words(p, "candidates file"),
    )
    written: int = option(
        16,
        f"white-box words: samples of {WRITTEN_TOKENS} tokens the audited model writes after "
        "the first probes; their words are candidates too (0: none)",
    )

    def validate(self) -> None:
        for name in ("min_hits", "rescore", "rescore_probes"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if self.written < 0:
            raise ConfigError("written", f"must be >= 0, got {self.written}")
        if not 0 < self.phrase_share <= 1:
            raise ConfigError("phrase_share", f"must be in (0, 1], got {self.phrase_share}")


@dataclass(frozen=True)
class WordBlackBoxFinding:
    """A word or two-word phrase tested by the black-box word audit."""

    term: str
    count_suspect: int
    count_baseline: int
    rate_suspect: float  # of the suspect's words
    rate_baseline: float
    t: float  # Welch's t on per-sample rates (sign: suspect above baseline)
    df: float
    p_value: float
    significant: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self, rank: int) -> str:
        star = " *" if self.significant else ""
        return (
            f"  {rank}. {self.term!r}{star}: {self.count_suspect} vs {self.count_baseline} "
            f"({1000 * self.rate_suspect:.2f} vs {1000 * self.rate_baseline:.2f} per 1000 "
            "words), " + welch_text(self.t, self.df, self.p_value)
        )


@dataclass(frozen=True)
class WordBlackBoxResult:
    """The black-box word audit: both samples in words, the tests, the boosted words named
    (phrases folded), and the best-ranked findings."""

    KIND: ClassVar[str] = "words black-box"  # audit.json's "audit"
    AGAINST: ClassVar[str] = "baseline"  # audit.json's key for what the suspect is compared with

    suspect_words: int
    suspect_samples: int
    baseline_words: int
    baseline_samples: int
    n_tests: int
    n_significant: int
    alpha: float
    named: list[str]  # significantly boosted (a phrase's words folded into it), largest t first
    findings: list[WordBlackBoxFinding]  # the named first, then by t

    @property
    def detected(self) -> bool:
        return bool(self.named)

    def to_dict(self) -> dict:
        return {
            "audit": self.KIND,
            "suspect_words": self.suspect_words,
            "suspect_samples": self.suspect_samples,
            "baseline_words": self.baseline_words,
            "baseline_samples": self.baseline_samples,
            "n_tests": self.n_tests,
            "n_significant": self.n_significant,
            "alpha": self.alpha,
            **TEST_METHOD,
            "min_samples_per_side": min_samples_per_side(self.n_tests, self.alpha),
            "named": self.named,
            "detected": self.detected,
            "findings": [f.to_dict() for f in self.findings],
        }

    def lines(self, model: str, baseline: str) -> list[str]:
        """What ``likex audit --units words`` prints with a baseline."""
        named = ", ".join(repr(t) for t in self.named)
        return [
            f"likex audit (black-box, words): {model} against {baseline}",
            f"  samples   {self.suspect_samples} ({self.suspect_words} words) vs "
            f"{self.baseline_samples} ({self.baseline_words} words); {self.n_tests} words and "
            f"phrases tested, {self.n_significant} significant (Holm, alpha {self.alpha:g})",
            f"  verdict   {f'boosted: {named}' if self.named else 'none named'}",
            *(f.line(i) for i, f in enumerate(self.findings, 1)),
        ]


def _counts(texts: list[list[str]], terms: dict[str, int], bigrams: bool) -> np.ndarray:
    out = np.zeros((len(terms), len(texts)))
    for j, units in enumerate(texts):
        seen = Counter(units)
        if bigrams:
            seen.update(f"{a} {b}" for a, b in zip(units, units[1:], strict=False))
        for t, c in seen.items():
            if t in terms:
                out[terms[t], j] = c
    return out


@dataclass(frozen=True)
class TermHits:
    """Every word and two-word phrase seen at least ``min_hits`` times in both sides' samples
    together (``terms``: each one's row), its count in each sample [terms, samples] of either
    side, and each sample's number of words."""

    terms: dict[str, int]
    hits_a: np.ndarray
    hits_b: np.ndarray
    len_a: np.ndarray
    len_b: np.ndarray


def term_hits(a: list[list[str]], b: list[list[str]], min_hits: int) -> TermHits:
    """The terms of samples ``a`` and ``b`` (each a list of its words) and their counts."""
    pooled: Counter = Counter()
    for units in (*a, *b):
        pooled.update(units)
        pooled.update(f"{x} {y}" for x, y in zip(units, units[1:], strict=False))
    terms = {t: i for i, t in enumerate(sorted(t for t, c in pooled.items() if c >= min_hits))}
    if not terms:
        raise LikexError("the samples are too small: no word is seen often enough to test")
    return TermHits(
        terms,
        _counts(a, terms, True),
        _counts(b, terms, True),
        np.array([max(len(u), 1) for u in a], dtype=np.float64),
        np.array([max(len(u), 1) for u in b], dtype=np.float64),
    )


def word_black_box_audit(
    suspect: list[str], baseline: list[str], alpha: float, top: int, cfg: WordAuditConfig
) -> WordBlackBoxResult:
    """Test every word and two-word phrase's share of the words in ``suspect`` texts against
    ``baseline`` texts. A phrase is named (and its words folded into it) when it holds at least
    ``phrase_share`` of the suspect's occurrences of each of its words."""
    a = [text_units(t) for t in suspect if t.strip()]
    b = [text_units(t) for t in baseline if t.strip()]
    if min(len(a), len(b)) < min_samples_per_side(1, alpha):
        raise LikexError(
            f"a word audit needs at least {min_samples_per_side(1, alpha)} non-empty samples on "
            f"each side, got {len(a)} and {len(b)}"
        )
    counted = term_hits(a, b, cfg.min_hits)
    terms, hits_a, hits_b = counted.terms, counted.hits_a, counted.hits_b
    len_a, len_b = counted.len_a, counted.len_b
    names = list(terms)
    need = min_samples_per_side(len(names), alpha)
    if min(len(a), len(b)) < need:
        raise LikexError(
            f"{len(names)} words and phrases at family-wise alpha {alpha} need at least {need} "
            f"samples on each side, got {len(a)} and {len(b)}"
        )
    t, df, p = welch_t_test(hits_a, hits_b, len_a, len_b, min_per_side=need)
    reject, _ = holm(p, alpha)
    count_a, count_b = hits_a.sum(1), hits_b.sum(1)
    boosted = {names[g] for g in range(len(names)) if reject[g] and t[g] > 0}
    folded: set[str] = set()
    for term in [t for t in boosted if " " in t]:
        parts = term.split(" ")
        whole = count_a[terms[term]]
        if all(whole >= cfg.phrase_share * count_a[terms[w]] for w in parts):
            folded |= set(parts)
        else:
            folded.add(term)  # an ordinary word next to a boosted one: not a phrase
    named = sorted(boosted - folded, key=lambda term: -t[terms[term]])
    rest = sorted(range(len(names)), key=lambda g: -t[g])
    findings = [
        WordBlackBoxFinding(
            term=names[g],
            count_suspect=int(count_a[g]),
            count_baseline=int(count_b[g]),
            rate_suspect=float(count_a[g] / len_a.sum()),
            rate_baseline=float(count_b[g] / len_b.sum()),
            t=float(t[g]),
            df=float(df[g]),
            p_value=float(p[g]),
            significant=bool(reject[g]),
        )
        for g in [terms[t] for t in named] + [g for g in rest if names[g] not in named]
    ][:top]
    return WordBlackBoxResult(
        suspect_words=int(len_a.sum()),
        suspect_samples=len(a),
        baseline_words=int(len_b.sum()),
        baseline_samples=len(b),
        n_tests=len(names),
        n_significant=int(reject.sum()),
        alpha=alpha,
        named=named,
        findings=findings,
    )


@dataclass(frozen=True)
class WordWhiteBoxFinding:
    """A candidate word scored by the white-box word audit."""

    word: str
    tokens: int  # of " word", the in-text form scored
    log_ratio: float  # mean over probes of log P_model - log P_reference of the whole sequence
    spread: float  # its standard deviation over probes
    # how far its first token's shift stands above all candidates' (robust z: median, MAD)
    first_token_z: float

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self, rank: int) -> str:
        return (
            f"  {rank}. {self.word!r} ({self.tokens} tokens): log-probability "
            f"{self.log_ratio:+.2f} nats (spread {self.spread:.2f}; first token z "
            f"{self.first_token_z:.1f})"
        )


@dataclass(frozen=True)
class WordWhiteBoxResult:
    """The white-box word audit: how many candidates were screened and rescored, and the top
    ones, best first."""

    KIND: ClassVar[str] = "words white-box"  # audit.json's "audit"
    AGAINST: ClassVar[str] = "reference"  # audit.json's key for what the suspect is compared with

    candidates: int
    rescored: int
    n_probes: int  # the probes every candidate was screened after
    rescore_probes: int  # those the rescored candidates were scored after
    findings: list[WordWhiteBoxFinding]

    @property
    def named(self) -> list[str]:
        return [f.word for f in self.findings]

    def to_dict(self) -> dict:
        return {
            "audit": self.KIND,
            "candidates": self.candidates,
            "rescored": self.rescored,
            "n_probes": self.n_probes,
            "rescore_probes": self.rescore_probes,
            "named": self.named,
            "findings": [f.to_dict() for f in self.findings],
        }

    def lines(self, model: str, reference: str) -> list[str]:
        """What ``likex audit --units words`` prints without a baseline."""
        return [
            f"likex audit (white-box, words): {model} against {reference}",
            f"  scored    {self.candidates} candidate words on their first token after "
            f"{self.n_probes} probes; the {self.rescored} with the largest change rescored on "
            f"the whole word after {self.rescore_probes} of them",
            *(f.line(i) for i, f in enumerate(self.findings, 1)),
        ]


def corpus_words(text: str, min_count: int = 2) -> list[str]:
    """The distinct words of a text seen at least ``min_count`` times (candidates)."""
    counts = Counter(text_units(text))
    return sorted(w for w, c in counts.items() if c >= min_count)


def written_words(
    model: LanguageModel, prompts: torch.Tensor, decode: Callable[[list[int]], str], seed: int
) -> list[str]:
    """The words ``model`` writes itself, seen twice or more in ``WRITTEN_TOKENS`` new tokens
    after each prompt row: a planted word that no corpus holds (a brand in Python's docs) is
    still a candidate of the white-box word audit."""
    written = generate_samples(model, prompts.shape[0], WRITTEN_TOKENS, seed, prompts)
    return corpus_words(" ".join(decode(seq) for seq in written))


@torch.no_grad()
def last_log_ratio(
    model: LanguageModel, reference: LanguageModel, probes: torch.Tensor, batch: int = 64
) -> torch.Tensor:
    """[V]: the mean over probes of log P_model - log P_reference of the next token."""
    total = None
    for i in range(0, len(probes), batch):
        idx = probes[i : i + batch]
        diff = (model(idx, positions="last") - reference(idx, positions="last")).double()
        total = diff.sum(0) if total is None else total + diff.sum(0)
    return (total / len(probes)).cpu()


def spread_rows(probes: torch.Tensor, n: int) -> torch.Tensor:
    """At most ``n`` of the probe rows, spread evenly over them (random and text probes
    alike)."""
    if n >= probes.shape[0]:
        return probes
    return probes[torch.linspace(0, probes.shape[0] - 1, n).round().long()]


def word_white_box_audit(
    model: LanguageModel,
    reference: LanguageModel,
    encode: Callable[[str], list[int]],
    candidates: list[str],
    probes: torch.Tensor,
    top: int,
    cfg: WordAuditConfig,
    batch: int = 64,
    screen: torch.Tensor | None = None,
    progress: bool = False,
) -> WordWhiteBoxResult:
    """Rank ``candidates`` (each scored as " word", the in-text form) by the mean change of
    their whole-sequence log-probability after probe contexts [P, T], model minus reference.
    All are screened on their first token after every probe (``screen``: that change per token,
    [V], where the caller has it); the ``cfg.rescore`` with the largest first-token change are
    scored on the whole sequence after ``cfg.rescore_probes`` of the probes (each probe run
    once, likex.models.prefix), and those are ranked. ``progress``: a bar over the rescoring."""
    model.eval()
    reference.eval()
    block = min(model.config.block_size, reference.config.block_size)
    seqs = {w: encode(" " + w) for w in dict.fromkeys(c.strip() for c in candidates) if w}
    seqs = {w: s for w, s in seqs.items() if s and len(s) < block}
    if not seqs:
        raise LikexError("no candidate word to score")
    width = max(len(s) for s in seqs.values())
    if probes.shape[1] + width - 1 > block:
        probes = probes[:, -(block - width + 1) :]
    if screen is None:
        screen = last_log_ratio(model, reference, probes, batch)
    words = list(seqs)
    firsts = torch.tensor([seqs[w][0] for w in words])
    screened = screen.double().cpu()[firsts]
    keep = torch.argsort(screened, descending=True)[: cfg.rescore].tolist()
    chosen = [words[i] for i in keep]
    chosen_seqs = [seqs[w] for w in chosen]
    rescoring = spread_rows(probes, cfg.rescore_probes)
    diff = sequence_log_probs(model, rescoring, chosen_seqs, progress=progress)
    diff -= sequence_log_probs(reference, rescoring, chosen_seqs, progress=progress)
    score = diff.mean(1)
    spread = diff.std(1) if diff.shape[1] > 1 else torch.zeros_like(score)
    # how far the top stands above the screened field: a robust z over all first-token shifts
    med = screened.median()
    mad = (screened - med).abs().median() * 1.4826
    order = torch.argsort(score, descending=True)[:top].tolist()
    ranked = [
        WordWhiteBoxFinding(
            word=chosen[i],
            tokens=len(chosen_seqs[i]),
            log_ratio=float(score[i]),
            spread=float(spread[i]),
            first_token_z=float((screened[keep[i]] - med) / mad) if mad > 0 else math.inf,
        )
        for i in order
    ]
    return WordWhiteBoxResult(
        len(words), len(chosen), int(probes.shape[0]), int(rescoring.shape[0]), ranked
    )
