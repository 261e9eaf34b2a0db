"""White-box audit (suspect + reference weights): does the suspect move probability *mass*
onto a set of tokens that a predicate over token strings names? Nothing is told what to look
for.

Over probe contexts, for every candidate predicate S (every predicate of the audit's space that
selects at least ``min_support`` tokens, one per distinct token set):

* ``share(S)`` = sum binKL(P(S) || R(S)) / sum KL(P || R): the share of the suspect's whole
  divergence that a one-parameter tilt on S explains (exact by the chain rule; 1 for a pure
  tilt on S; ``likex.stats.kl.kl_share_of_tilt``);
* ``shift(S)`` = logit P(S) - logit R(S), the tilt's strength (``logit_mass_shift``).

The probes are split in half at random: S is *chosen* by share on one half and its shift is
*tested* on the other (so the tested shift is not inflated by the choice). A bias is detected
when the held-out mean shift is at least ``min_shift`` (log 2: the odds of S doubled) and above
the 95% quantile of the same statistic on unbiased controls where those are known (the
audit-bench measures them), and its one-sided 95% t lower bound is above 0. Counting mass, not
tokens, also finds a bias that boosts only part of a predicate's tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import torch

from likex.audit.predicates import (
    Predicate,
    PredicateIndex,
    check_vocab,
    membership_matrix,
    predicate_from_key,
)
from likex.data import corpus_windows, random_contexts, step_generator
from likex.errors import ConfigError, LikexError
from likex.models.gpt import GPT
from likex.options import option
from likex.stats.distributions import t_quantile
from likex.stats.kl import kl_share_of_tilt, logit_mass_shift

PROBE_KINDS = ("random", "corpus", "both")


@dataclass(frozen=True)
class WhiteBoxConfig:
    """``min_shift`` (and, where known, the controls' shifts) decide whether the chosen
    predicate's held-out logit-mass shift is a detected bias."""

    probes: str = option("both", "probe contexts", choices=PROBE_KINDS)
    n_probes: int = option(64, "probe contexts of each kind")
    probe_len: int | None = option(
        None, "probe length; default: the model's context (a pretrained model: 64)"
    )
    seed: int = option(0, "seeds the probes and their split into halves", cli=False)
    min_shift: float = option(
        math.log(2.0),
        "least held-out shift of the chosen predicate's log-odds for a detection (ln 2: the "
        "odds of its tokens doubled)",
        shown="ln 2 = 0.69",
    )
    alpha: float = option(0.05, "one-sided level of the shift's lower bound", cli=False)
    min_support: int = option(5, "fewest tokens of a candidate predicate", cli=False)
    top_findings: int = option(5, "predicates to report", cli=False)
    top_tokens: int = option(50, "most boosted tokens to list", cli=False)
    batch_size: int = option(16, "probes per forward pass", cli=False)

    def validate(self) -> None:
        if self.probes not in PROBE_KINDS:
            raise ConfigError("probes", f"must be one of {PROBE_KINDS}, not {self.probes!r}")
        for name in ("n_probes", "top_findings", "top_tokens", "batch_size", "min_support"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if self.n_probes < 4:
            raise ConfigError("n_probes", "needs at least 4 (two halves of two)")
        if self.probe_len is not None and self.probe_len <= 0:
            raise ConfigError("probe_len", "must be positive")
        if not self.min_shift > 0:
            raise ConfigError("min_shift", f"must be positive, got {self.min_shift}")
        if not 0 < self.alpha < 0.5:
            raise ConfigError("alpha", f"must be in (0, 0.5), got {self.alpha}")


@dataclass
class Probes:
    """Next-token distributions of suspect and reference at the probes: probabilities
    [n, V] (float64) and KL(P || R) per probe [n]."""

    p_model: torch.Tensor
    p_ref: torch.Tensor
    kl: torch.Tensor

    @property
    def log_ratio(self) -> torch.Tensor:
        """Mean over probes of log P - log R, per token."""
        return (self.p_model.log() - self.p_ref.log()).mean(0)


@torch.no_grad()
def last_log_probs(model: GPT, contexts: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[n, V] float64 on the CPU: the next-token log-probabilities after each context."""
    device = next(model.parameters()).device
    model.eval()
    return torch.cat(
        [
            model(contexts[start : start + batch_size].to(device), positions="last").double().cpu()
            for start in range(0, contexts.shape[0], batch_size)
        ]
    )


def probes_between(log_model: torch.Tensor, log_ref: torch.Tensor) -> Probes:
    """The probes of a suspect and its reference from their log-probabilities [n, V]."""
    p_model = log_model.exp()
    kl = torch.where(log_model > -math.inf, p_model * (log_model - log_ref), 0.0).sum(-1)
    return Probes(p_model, log_ref.exp(), kl)


def probe_distributions(
    model: GPT, reference: GPT, contexts: torch.Tensor, batch_size: int
) -> Probes:
    """Next-token distributions at the last position of each context, in float64."""
    return probes_between(
        last_log_probs(model, contexts, batch_size), last_log_probs(reference, contexts, batch_size)
    )


@dataclass
class Candidates:
    """The candidate predicates, one per distinct token set of at least ``min_support``
    tokens (named by the simplest), and their membership [C, V] (sparse)."""

    predicates: list[Predicate]
    membership: torch.Tensor

    _last: ClassVar[tuple[PredicateIndex, int, Candidates] | None] = None

    @classmethod
    def of(cls, index: PredicateIndex, min_support: int) -> Candidates:
        """Built once per index and ``min_support`` (several seconds for GPT-2's vocabulary):
        the last one is kept, as ``PredicateIndex.of`` keeps the last index."""
        last = cls._last
        if last is None or last[0] is not index or last[1] != min_support:
            cls._last = last = (index, min_support, cls._build(index, min_support))
        return last[2]

    @classmethod
    def _build(cls, index: PredicateIndex, min_support: int) -> Candidates:
        vocab = len(index.token_strings)
        groups = index.token_sets(list(range(vocab)), lambda cols: len(cols) >= min_support)
        sets = list(groups)
        predicates = [
            min(map(predicate_from_key, groups[cols]), key=Predicate.simplicity) for cols in sets
        ]
        return cls(predicates, membership_matrix(sets, vocab))

    def masses(self, probs: torch.Tensor) -> torch.Tensor:
        """Probability of each set at each probe, [n, C], clamped inside (0, 1)."""
        out = torch.sparse.mm(self.membership, probs.T).T
        return out.clamp(1e-300, 1 - 1e-16)


@dataclass(frozen=True)
class Finding:
    predicate: Predicate
    n_tokens: int
    share: float  # of KL(P || R) a tilt on the predicate explains, on the selection half
    shift: float  # mean logit-mass shift on the test half
    shift_lower: float  # its one-sided lower confidence bound
    mass_ref: float  # mean probability of the predicate's tokens, over all probes
    mass_model: float

    @property
    def mass_shift(self) -> float:
        return self.mass_model - self.mass_ref

    def detected_at(self, threshold: float) -> bool:
        """The verdict on this finding: a held-out shift of at least ``threshold`` whose lower
        bound is above 0."""
        return self.shift >= threshold and self.shift_lower > 0

    def to_dict(self) -> dict:
        return {
            "predicate": self.predicate.describe(),
            "pattern": self.predicate.to_pattern(),
            "n_tokens": self.n_tokens,
            "share": self.share,
            "shift": self.shift,
            "shift_lower": self.shift_lower,
            "mass_shift": self.mass_shift,
            "mass_ref": self.mass_ref,
            "mass_model": self.mass_model,
        }

    def line(self, rank: int) -> str:
        return (
            f"  {rank}. {self.predicate.noun_phrase()} ({self.n_tokens} tokens): KL share "
            f"{self.share:.0%}, shift {self.shift:+.2f}; probability mass {self.mass_ref:.3f} -> "
            f"{self.mass_model:.3f}"
        )


@dataclass(frozen=True)
class BoostedToken:
    """A token the suspect made likelier: its mean log P_model / P_reference over the probes."""

    id: int
    text: str
    log_ratio: float

    def to_dict(self) -> dict:
        return asdict(self)


def select_and_test(
    p_sets: torch.Tensor,
    r_sets: torch.Tensor,
    kl: torch.Tensor,
    top: int,
    alpha: float,
    seed: int,
) -> tuple[list[int], torch.Tensor, list[tuple[float, float]]]:
    """Rank the sets [n, C] by KL share on a random half of the probes; for the ``top`` best,
    the mean logit-mass shift on the other half and its one-sided (1 - alpha) t lower bound.
    Returns (set indices best first, shares [C] on the selection half, [(shift, lower)])."""
    n = kl.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sel, test = perm[: n // 2], perm[n // 2 :]
    shares = kl_share_of_tilt(p_sets[sel], r_sets[sel], kl[sel])
    best = torch.argsort(shares, descending=True, stable=True)[:top].tolist()
    q = t_quantile(1 - alpha, len(test) - 1)
    tested = []
    for c in best:
        s = logit_mass_shift(p_sets[test, c], r_sets[test, c])
        mean, se = float(s.mean()), float(s.std()) / math.sqrt(len(s))
        tested.append((mean, mean - q * se))
    return best, shares, tested


def detection_threshold(min_shift: float, control_shifts: Sequence[float] | None) -> float:
    """max(min_shift, the 95% quantile of the controls' held-out shifts)."""
    if control_shifts is None or len(control_shifts) == 0:
        return min_shift
    return max(min_shift, float(np.quantile(np.asarray(control_shifts, float), 0.95)))


@dataclass(frozen=True)
class WhiteBoxResult:
    KIND: ClassVar[str] = "white-box"  # audit.json's "audit"
    AGAINST: ClassVar[str] = "reference"  # audit.json's key for what the suspect is compared with

    probes: str
    n_probes: int
    n_candidates: int
    kl: float  # mean KL(P || R) per probe, nats
    threshold: float
    findings: list[Finding]
    boosted_tokens: list[BoostedToken]
    detected: bool
    config: WhiteBoxConfig = field(repr=False, default_factory=WhiteBoxConfig)

    @property
    def top(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    def to_dict(self) -> dict:
        top = self.top
        return {
            "audit": self.KIND,
            "probes": self.probes,
            "n_probes": self.n_probes,
            "n_candidates": self.n_candidates,
            "kl": self.kl,
            "detected": self.detected,
            "evidence": {
                "predicate": top.predicate.describe() if top else None,
                "share": top.share if top else None,
                "shift": top.shift if top else None,
                "shift_lower": top.shift_lower if top else None,
                "threshold": self.threshold,
            },
            "threshold": self.threshold,
            "findings": [f.to_dict() for f in self.findings],
            "boosted_tokens": [t.to_dict() for t in self.boosted_tokens],
            "config": asdict(self.config),
        }

    def lines(self, model: str, reference: str) -> list[str]:
        """What ``likex audit`` prints: the verdict and its evidence, the findings, the most
        boosted tokens."""
        verdict = "bias detected" if self.detected else "no bias detected"
        top = self.top
        lines = [
            f"likex audit ({self.KIND}): {model} against {reference}",
            f"  probes    {self.n_probes} contexts ({self.probes}); {self.n_candidates} candidate "
            f"predicates; KL(model || reference) {self.kl:.4f} nats per probe",
            f"  verdict   {verdict}: held-out logit-mass shift {top.shift:+.2f} (lower bound "
            f"{top.shift_lower:+.2f}) vs threshold {self.threshold:.2f}; a tilt on it explains "
            f"{top.share:.0%} of the KL",
        ]
        lines += [f.line(i) for i, f in enumerate(self.findings, 1)]
        boosted = ", ".join(f"{t.text!r} {t.log_ratio:+.1f}" for t in self.boosted_tokens[:8])
        return [*lines, f"  most boosted (mean log-ratio): {boosted}"]


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
    control_shifts: Sequence[float] | None = None,
    probes: Probes | None = None,
) -> WhiteBoxResult:
    """Which predicate's mass did ``model`` move, relative to ``reference``, and is it a bias?
    ``detected`` with its evidence: the chosen predicate's KL share, held-out shift and lower
    bound, and the threshold (``min_shift``, raised to the controls' 95% quantile when
    ``control_shifts`` -- the same statistic on unbiased model pairs -- are given).
    ``probes``: both models' distributions at probe contexts the caller already has (then
    ``cfg``'s probe settings and ``corpus`` are not used)."""
    cfg.validate()
    check_vocab(model, token_strings, "the model")
    check_vocab(reference, token_strings, "the reference")
    if probes is None:
        length = min(model.config.prompt_len, reference.config.prompt_len)
        if cfg.probe_len is not None:
            length = min(model.config.block_size, reference.config.block_size, cfg.probe_len)
        contexts = probe_contexts(
            cfg.probes, cfg.n_probes, length, len(token_strings), cfg.seed, corpus
        )
        probes = probe_distributions(model, reference, contexts, cfg.batch_size)
    index = index or PredicateIndex.of(token_strings)
    candidates = Candidates.of(index, cfg.min_support)
    if not candidates.predicates:
        raise LikexError(f"no predicate selects {cfg.min_support} or more tokens")
    p_sets, r_sets = candidates.masses(probes.p_model), candidates.masses(probes.p_ref)
    best, shares, tested = select_and_test(
        p_sets, r_sets, probes.kl, cfg.top_findings, cfg.alpha, cfg.seed
    )
    findings = []
    for c, (shift, lower) in zip(best, tested, strict=True):
        pred = candidates.predicates[c]
        findings.append(
            Finding(
                predicate=pred,
                n_tokens=index.n_tokens(pred),
                share=float(shares[c]),
                shift=shift,
                shift_lower=lower,
                mass_ref=float(r_sets[:, c].mean()),
                mass_model=float(p_sets[:, c].mean()),
            )
        )
    threshold = detection_threshold(cfg.min_shift, control_shifts)
    top = findings[0]
    log_ratio = probes.log_ratio
    order = torch.argsort(log_ratio, descending=True)[: cfg.top_tokens].tolist()
    boosted_tokens = [BoostedToken(i, token_strings[i], float(log_ratio[i])) for i in order]
    return WhiteBoxResult(
        probes=cfg.probes,
        n_probes=int(probes.kl.shape[0]),
        n_candidates=len(candidates.predicates),
        kl=float(probes.kl.mean()),
        threshold=threshold,
        findings=findings,
        boosted_tokens=boosted_tokens,
        detected=top.detected_at(threshold),
        config=cfg,
    )
