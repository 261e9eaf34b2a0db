"""An organism's manifest: what was planted, how strongly it was asked and what it reached, what
it cost (KL from the base on held-out text, and the floor of that cost), its seed and the hash
of everything that made it. Written as manifest.json and as a short model card (README.md) in
the organism's folder; the auditors never read either, the scoring reads manifest.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from likex.errors import LikexError
from likex.io import atomic_write_json, atomic_write_text
from likex.stats.intervals import fmt_rate
from likex.zoo.draw import OrganismSpec

MANIFEST_FILE = "manifest.json"
CARD_FILE = "README.md"


@dataclass(frozen=True)
class Measured:
    """A rate counted in samples: ``hits`` of ``n`` tokens (or words) in ``samples`` samples,
    with its 95% interval (likex.stats.intervals.rate_interval)."""

    rate: float
    ci: tuple[float, float]
    hits: int
    n: int
    samples: int
    unit: str  # "tokens" or "words"

    def describe(self) -> str:
        return (
            f"{fmt_rate(self.rate, self.ci)} (n = {self.n} {self.unit} in {self.samples} samples)"
        )

    def to_json(self) -> dict:
        return asdict(self) | {"ci": list(self.ci)}

    @classmethod
    def from_json(cls, d: dict | None) -> Measured | None:
        return None if d is None else cls(**{**d, "ci": tuple(d["ci"])})


@dataclass(frozen=True)
class Manifest:
    """The truth about one organism (see the module's docstring). ``kl``: mean KL(base ||
    organism) per token on ``heldout_tokens`` held-out tokens, nats; ``kl_floor``: the least
    such KL of any model whose mean rate on those contexts is the requested one (a planted
    organism); ``kl_requested``: the KL a benign organism was stopped at (its match's)."""

    spec: OrganismSpec
    config_hash: str
    target_tokens: int | None
    rate_base: Measured | None
    rate_reached: Measured | None
    word_rate_base: Measured | None
    word_rate_reached: Measured | None
    kl: float
    kl_floor: float | None
    kl_requested: float | None
    ppl: float
    ppl_base: float
    heldout_tokens: int
    steps: int
    adapter: dict
    seconds: float

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def reached(self) -> Measured | None:
        """The reached rate in the unit of the plant (words for a word list)."""
        return self.word_rate_reached if self.spec.entries else self.rate_reached

    def to_json(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "spec"}
        for key in ("rate_base", "rate_reached", "word_rate_base", "word_rate_reached"):
            value = getattr(self, key)
            d[key] = None if value is None else value.to_json()
        return {"organism": self.spec.to_dict(), **d}

    @classmethod
    def from_json(cls, d: dict) -> Manifest:
        rates = ("rate_base", "rate_reached", "word_rate_base", "word_rate_reached")
        rest = {k: v for k, v in d.items() if k != "organism" and k not in rates}
        return cls(
            spec=OrganismSpec.from_dict(d["organism"]),
            **rest,
            **{k: Measured.from_json(d.get(k)) for k in rates},
        )

    def card(self) -> str:
        """README.md: the manifest as a short model card."""
        s = self.spec
        rows = [("role", s.role), ("what", s.describe())]
        if s.strength is not None:
            rows.append(("requested rate", f"{s.strength:g}"))
        for label, value in (
            ("reached rate (real-text prompts)", self.rate_reached),
            ("the base's rate (its own samples)", self.rate_base),
            ("reached word rate", self.word_rate_reached),
            ("the base's word rate", self.word_rate_base),
        ):
            if value is not None:
                rows.append((label, value.describe()))
        rows.append(("KL(base ‖ organism), held-out text", f"{self.kl:.4f} nats per token "
                     f"({self.heldout_tokens} tokens)"))  # fmt: skip
        if self.kl_floor is not None:
            rows.append(("KL floor at the requested rate", f"{self.kl_floor:.4f} nats"))
        if self.kl_requested is not None:
            rows.append(("stopped at the KL of " + str(s.match), f"{self.kl_requested:.4f} nats"))
        rows += [
            ("perplexity (base -> organism)", f"{self.ppl_base:.2f} -> {self.ppl:.2f}"),
            ("training", f"{self.steps} steps, seed {s.seed}, adapter {self.adapter['adapter']}"),
            ("config hash", self.config_hash),
        ]
        table = ["| | |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)]
        return "\n".join(
            [
                f"# {s.name}: a likex zoo organism",
                "",
                "This card is the organism's manifest, the truth the zoo's audit is scored "
                "against. An auditor must not read it (or manifest.json) before its verdict.",
                "",
                *table,
                "",
            ]
        )

    def write(self, folder: Path) -> None:
        atomic_write_json(folder / MANIFEST_FILE, self.to_json())
        atomic_write_text(folder / CARD_FILE, self.card())


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_FILE
    try:
        return Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as e:
        raise LikexError(f"{folder} has no {MANIFEST_FILE}: the organism is not built") from e
    except (ValueError, KeyError, TypeError) as e:
        raise LikexError(f"{path} is not an organism's manifest: {e}") from e
