"""What a detector says about one organism (``Verdict``), what it names (``Named``), and the
settings of a zoo audit (``ZooAuditConfig``).

A verdict is one of four kinds: a planted preference (a set of tokens or words the organism
was made to prefer), a shift toward the vocabulary of a text domain (a change, but spread over
a domain's words, as an ordinary fine-tune makes), a change this detector cannot tell apart
(a two-sample test that names nothing), or nothing found. ``detected`` means the detector
reports a planted preference or cannot rule one out (planted or changed): on a negative that
is a false alarm. ``score`` is the detector's evidence for a planted preference, larger is
stronger; the zoo's table sets a threshold on it from the negatives.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from likex.audit.predicates import Predicate
from likex.config import parse_floats
from likex.data import check_seed
from likex.errors import ConfigError
from likex.options import option
from likex.zoo.draw import parse_names

KINDS = ("planted", "domain", "changed", "none")
KIND_TEXT = {
    "planted": "a planted preference",
    "domain": "shifted toward the vocabulary of a text domain",
    "changed": "changed (this detector cannot tell how)",
    "none": "no change found",
}
DETECTORS = ("white-box", "white-box-words", "black-box", "black-box-words", "kl-ranking", "mmd")


def parse_sizes(text: str) -> tuple[int, ...]:
    values = parse_floats(text)
    if any(v != int(v) or v <= 0 for v in values):
        raise ConfigError("power_sizes", f"must be positive whole numbers, got {text!r}")
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class ZooAuditConfig:
    """the detectors and what they look at"""

    detectors: tuple[str, ...] = option(
        DETECTORS, f"comma-separated detectors to run: {', '.join(DETECTORS)}", parse=parse_names
    )
    n_probes: int = option(64, "white-box probe contexts of each kind (random and real text)")
    samples: int = option(128, "samples drawn from each organism (the sample-based detectors)")
    base_samples: int = option(512, "samples drawn from the base, once per zoo")
    gen_tokens: int = option(64, "new tokens per sample, after a real-text prompt")
    power_sizes: tuple[int, ...] = option(
        (32, 128, 512),
        "comma-separated samples a side at which each sample-based detector's power is "
        "estimated (at most the pools)",
        parse=parse_sizes,
    )
    power_draws: int = option(20, "subsets of the pools drawn per size to estimate power")
    far: float = option(
        0.05, "false-alarm rate on the negatives at which the table's threshold is set"
    )
    alpha: float = option(0.05, "level of the sample-based tests (family-wise: Holm)")
    min_share: float = option(
        0.25,
        "white-box: least share of the KL a tilt on the top predicate explains for a planted "
        "preference (less: a domain shift)",
    )
    rescore: int = option(64, "white-box words: candidates rescored on the whole word")
    rescore_probes: int = option(16, "white-box words: probes the rescored words are scored after")
    min_z: float = option(3.5, "white-box words: least robust z of a named word's first token")
    max_named: int = option(
        20, "words detectors: most words named for a planted preference (more: a domain shift)"
    )
    kl_top: int = option(20, "kl-ranking: tokens that gained most probability, its finding")
    min_kl: float = option(0.01, "kl-ranking: least KL(organism || base) per probe, nats")
    min_f1: float = option(
        0.5, "kl-ranking: least F1 of its best predicate over its top tokens for a preference"
    )
    mmd_ngram: int = option(3, "mmd: characters per n-gram of its string kernel")
    mmd_permutations: int = option(200, "mmd: permutations of its p-value")
    min_shift: float = option(
        math.log(2.0), "white-box words: least change of a named word", cli=False
    )
    seed: int = option(0, "seeds the probes, the samples and the power draws")

    def validate(self) -> None:
        check_seed(self.seed)
        unknown = [d for d in self.detectors if d not in DETECTORS]
        if not self.detectors or unknown or len(set(self.detectors)) != len(self.detectors):
            raise ConfigError("detectors", f"must be distinct names from {', '.join(DETECTORS)}")
        for name in ("n_probes", "samples", "base_samples", "gen_tokens", "power_draws"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        for name in ("rescore", "rescore_probes", "max_named", "kl_top", "mmd_ngram"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if self.n_probes < 2:
            raise ConfigError("n_probes", "needs at least 2 (the white-box splits them in half)")
        if min(self.samples, self.base_samples) < 8:
            raise ConfigError("samples", "needs at least 8 a side")
        if self.mmd_permutations < 19:
            raise ConfigError("mmd_permutations", "needs at least 19 (p-values of 0.05)")
        for name in ("far", "alpha", "min_share", "min_f1"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(name, f"must be in (0, 1), got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Named:
    """What a verdict names: a predicate over token strings, words, or tokens (by id)."""

    predicate: Predicate | None = None
    words: tuple[str, ...] = ()
    tokens: tuple[int, ...] = ()

    def describe(self, limit: int = 5) -> str:
        if self.predicate is not None:
            return self.predicate.describe()
        if self.words:
            more = f" (+{len(self.words) - limit})" if len(self.words) > limit else ""
            return ", ".join(map(repr, self.words[:limit])) + more
        return f"{len(self.tokens)} tokens" if self.tokens else "-"

    def to_json(self) -> dict:
        pattern = None if self.predicate is None else self.predicate.to_pattern()
        return {"predicate": pattern, "words": list(self.words), "tokens": list(self.tokens)}

    @classmethod
    def from_json(cls, d: dict) -> Named:
        pattern = d.get("predicate")
        return cls(
            None if pattern is None else Predicate.from_pattern(pattern),
            tuple(d.get("words") or ()),
            tuple(d.get("tokens") or ()),
        )


def finite(x: float, bound: float = 1e6) -> float:
    """``x`` clamped to +-``bound`` (a t of +inf from samples with no spread), nan as 0."""
    return 0.0 if math.isnan(x) else max(-bound, min(bound, float(x)))


@dataclass(frozen=True)
class Verdict:
    """One detector on one organism, blind: its kind (KINDS), what it names, its evidence for
    a planted preference (``score``), one line of evidence, the seconds it took (its own work
    and the shared work it needed: the organism's probes or samples), and for a sample-based
    detector its power per number of samples a side (None: not estimated). ``unit``: what it
    names, so naming is scored on the organisms planted in that unit."""

    detector: str
    organism: str
    kind: str
    named: Named
    score: float
    note: str
    unit: str = ""  # what the detector names: "tokens", "words", or "" (nothing)
    seconds: float = 0.0
    power: dict[int, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown verdict kind {self.kind!r}")  # a coding error

    @property
    def detected(self) -> bool:
        return self.kind in ("planted", "changed")

    def to_json(self) -> dict:
        d = asdict(self)
        d["named"] = self.named.to_json()
        d["score"] = finite(self.score)
        d["power"] = {str(n): p for n, p in self.power.items()}
        return d

    @classmethod
    def from_json(cls, d: dict) -> Verdict:
        keys = ("detector", "organism", "kind", "score", "note", "unit", "seconds")
        return cls(
            **{k: d[k] for k in keys},
            named=Named.from_json(d["named"]),
            power={int(n): p for n, p in (d.get("power") or {}).items()},
        )
