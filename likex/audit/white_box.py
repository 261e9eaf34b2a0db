"""White-box audit (suspect + reference weights): compare the two next-token distributions
over probe contexts, rank every vocabulary token by its mean log-ratio, take the tokens
boosted far beyond the rest, and *explain* that set with the predicate over token strings
that matches it best (F1). Nothing is told what to look for."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from likex.audit.predicates import Predicate, PredicateIndex, check_vocab, predicate_from_key
from likex.data import corpus_windows, random_contexts, step_generator
from likex.errors import ConfigError, LikexError
from likex.models.gpt import GPT
from likex.models.hf import default_prompt_len
from likex.options import option

PROBE_KINDS = ("random", "corpus", "both")


@dataclass
class WhiteBoxConfig:
    """``z``, ``min_log_ratio`` and ``peak_fraction`` decide which tokens count as boosted;
    ``f1_threshold`` and ``min_support`` decide whether the best explanation is reported as
    a detected bias."""

    probes: str = option("both", "probe contexts", choices=PROBE_KINDS)
    n_probes: int = option(64, "probe contexts of each kind")
    probe_len: int | None = option(
        None, "probe length; default: the model's context (a pretrained model: 64)"
    )
    seed: int = option(0, "seeds the probes", cli=False)
    z: float = option(5.0, "robust z-score of a boosted token")
    min_log_ratio: float = option(
        math.log(2.0), "least mean log-ratio of a boosted token", cli=False
    )
    peak_fraction: float = option(
        0.5, "share of the largest boost a boosted token needs", cli=False
    )
    f1_threshold: float = option(0.5, "least F1 of the best explanation for a detection")
    min_support: int = option(5, "least boosted tokens an explanation must cover", cli=False)
    top_findings: int = option(5, "explanations to report", cli=False)
    top_tokens: int = option(50, "boosted tokens to list", cli=False)
    batch_size: int = option(16, "probes per forward pass", cli=False)

    def validate(self) -> None:
        if self.probes not in PROBE_KINDS:
            raise ConfigError("probes", f"must be one of {PROBE_KINDS}, not {self.probes!r}")
        for name in ("n_probes", "top_findings", "top_tokens", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if self.probe_len is not None and self.probe_len <= 0:
            raise ConfigError("probe_len", "must be positive")
        if not 0 < self.f1_threshold <= 1:
            raise ConfigError("f1_threshold", f"must be in (0, 1], got {self.f1_threshold}")


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
    length = min(default_prompt_len(model), default_prompt_len(reference))
    if cfg.probe_len is not None:
        length = min(model.config.block_size, reference.config.block_size, cfg.probe_len)
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
