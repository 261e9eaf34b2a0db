"""What ``likex zoo build`` and ``likex zoo audit`` return: typed results with ``to_json()``
and ``describe()``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from likex.audit.bench import Share
from likex.stats.intervals import fmt_rate
from likex.zoo.manifest import Manifest
from likex.zoo.scoring import DetectorScore

AUDIT_REPORT = "zoo_audit.md"
AUDIT_PLOT = "zoo_audit.png"


def _shard(shard: tuple[int, int]) -> str:
    return "" if shard == (1, 1) else f" (shard {shard[0]}/{shard[1]})"


@dataclass(frozen=True)
class ZooBuildResult:
    """One build job: the organisms it made (their manifests), those it found made before, and
    how much of the whole zoo now exists."""

    zoo: Path
    shard: tuple[int, int]
    built: list[Manifest]
    kept: list[str]
    present: int  # organisms of the whole zoo whose folders exist
    total: int  # organisms in the whole zoo
    seconds: float

    @property
    def complete(self) -> bool:
        return self.present == self.total

    def to_json(self) -> dict:
        return {
            "zoo": str(self.zoo),
            "shard": list(self.shard),
            "built": [m.to_json() for m in self.built],
            "kept": self.kept,
            "present": self.present,
            "total": self.total,
            "complete": self.complete,
            "seconds": self.seconds,
        }

    def describe(self) -> str:
        state = "complete" if self.complete else "not complete: other shards still to build"
        lines = [
            f"likex zoo build: {self.zoo}{_shard(self.shard)}: {len(self.built)} organisms "
            f"built, {len(self.kept)} kept from before, in {self.seconds:.0f} s; the zoo has "
            f"{self.present} of {self.total} ({state})"
        ]
        for m in self.built:
            reached = m.reached
            got = f"; reached {reached.describe()}" if reached is not None else ""
            floor = f" (floor {m.kl_floor:.4f})" if m.kl_floor is not None else ""
            lines.append(
                f"  {m.name}  {m.spec.role:<8} {m.spec.describe()}{got}; KL {m.kl:.4f}{floor}; "
                f"{m.steps} steps, {m.seconds:.0f} s"
            )
        if self.complete:
            lines.append(f"  next      likex zoo audit --zoo {self.zoo}")
        return "\n".join(lines)


def share_cell(s: Share) -> str:
    return f"{s.hits}/{s.n} {fmt_rate(s.rate, s.ci, digits=2)}" if s.n else "-"


def strength_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


@dataclass(frozen=True)
class ZooAuditResult:
    """One audit job: the organisms it audited, those audited before, those still waiting for
    another shard or for the build (unbuilt), and, once every organism has every verdict, the
    table."""

    zoo: Path
    shard: tuple[int, int]
    audited: list[str]
    kept: list[str]
    pending: list[str]
    organisms: int
    planted: int
    detectors: list[str]
    scores: list[DetectorScore] | None
    far: float
    sizes: tuple[int, ...]
    seconds: float
    unbuilt: list[str] = field(default_factory=list)
    report: Path | None = None

    def to_json(self) -> dict:
        return {
            "zoo": str(self.zoo),
            "shard": list(self.shard),
            "audited": self.audited,
            "kept": self.kept,
            "pending": self.pending,
            "unbuilt": self.unbuilt,
            "organisms": self.organisms,
            "planted": self.planted,
            "detectors": self.detectors,
            "far": self.far,
            "power_sizes": list(self.sizes),
            "scores": None if self.scores is None else [s.to_json() for s in self.scores],
            "seconds": self.seconds,
            "report": None if self.report is None else str(self.report),
        }

    def describe(self) -> str:
        head = (
            f"likex zoo audit: {self.zoo}{_shard(self.shard)}: {len(self.audited)} organisms "
            f"audited, {len(self.kept)} before, in {self.seconds:.0f} s"
        )
        if self.scores is None:
            waiting = ", ".join(self.pending[:8]) + (" ..." if len(self.pending) > 8 else "")
            lines = [head, f"  not scored yet: {len(self.pending)} organisms wait ({waiting})"]
            if self.unbuilt:
                lines.append(
                    f"  {len(self.unbuilt)} not built yet: run likex zoo audit again once "
                    "likex zoo build has finished"
                )
            return "\n".join(lines)
        sizes = "/".join(map(str, self.sizes))
        lines = [
            head,
            f"  {self.organisms} organisms ({self.planted} planted, "
            f"{self.organisms - self.planted} negatives); 95% Wilson intervals over organisms",
            f"  {'detector':<16} {'detected':<22} {'false alarms':<22} "
            f"{'at FAR ' + format(self.far, 'g'):<22} {'named top-1 (any case)':<22} "
            f"{'benign: domain':<22} smallest (80% power at {sizes})  s/organism",
        ]
        for s in self.scores:
            power = "/".join(strength_cell(s.smallest_at[n]) for n in self.sizes)
            named = f"{s.named.hits}/{s.named.n} ({s.named_any_case.hits} any case)"
            lines.append(
                f"  {s.detector:<16} {share_cell(s.detected):<22} {share_cell(s.false_alarms):<22} "
                f"{share_cell(s.detected_at_far):<22} {named:<22} "
                f"{share_cell(s.benign_domain):<22} {strength_cell(s.smallest)} ({power})"
                f"  {s.seconds:.1f}"
            )
        if self.report is not None:
            lines.append(f"  report    {self.report}")
        return "\n".join(lines)
