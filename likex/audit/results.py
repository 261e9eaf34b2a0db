"""What ``likex audit`` and ``likex audit-bench`` return: the typed audit or benchmark, with
``to_json()`` (audit.json, audit_bench.json, ``--json``) and ``describe()`` (what is printed).
The command results of the training commands are in likex.results; these sit in the audit
layer because the reports (one layer up) take them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from likex.audit.bench import BenchConfig, BenchSummary
from likex.audit.black_box import BlackBoxResult
from likex.audit.white_box import WhiteBoxResult
from likex.audit.words import WordBlackBoxResult, WordWhiteBoxResult
from likex.stats.intervals import fmt_rate

Audit = WhiteBoxResult | BlackBoxResult | WordWhiteBoxResult | WordBlackBoxResult
BENCH_REPORT = "audit_bench.md"


@dataclass(frozen=True)
class AuditResult:
    """One audit of ``model``: against a reference (white-box) or a baseline (black-box)."""

    model: str  # as the user named it
    against: str  # the reference or the baseline, as named (or "the starting model of ...")
    audit: Audit
    report: Path | None = None  # audit.md, once written

    def to_json(self) -> dict:
        """audit.json (written before the report, so without "report"), and ``--json``."""
        d = {"model": self.model, self.audit.AGAINST: self.against, **self.audit.to_dict()}
        return d if self.report is None else d | {"report": str(self.report)}

    def lines(self) -> list[str]:
        return self.audit.lines(self.model, self.against)

    def describe(self) -> str:
        report = [] if self.report is None else [f"  report    {self.report}"]
        return "\n".join(self.lines() + report)


@dataclass(frozen=True)
class BenchResult:
    """likex audit-bench: the summary of its cases, what it cost, where it is."""

    summary: BenchSummary
    seconds: float
    run_dir: Path
    config: BenchConfig

    def to_json(self) -> dict:
        """audit_bench.json (its cases are in cases.jsonl)."""
        return self.summary.to_json() | {
            "seconds": self.seconds,
            "run_dir": str(self.run_dir),
            "config": self.config.to_dict(),
        }

    def describe(self) -> str:
        s = self.summary
        lines = [
            f"likex audit-bench: planted {', '.join(p.describe() for p in s.planted)}",
            "  strength   cases  white-box named            black-box named",
        ]
        for row in s.table:
            w, b = row.white, row.black
            lines.append(
                f"  {row.strength:<9} {row.cases:>5}  {w.hits:>3}/{w.n:<3} "
                f"{fmt_rate(w.rate, w.ci, digits=2)}  {b.hits:>3}/{b.n:<3} "
                f"{fmt_rate(b.rate, b.ci, digits=2)}"
            )
        lines += [
            "  (control rows: controls falsely flagged)",
            f"  power     {s.power.describe(s.simulated_power)}",
            f"  report    {self.run_dir / BENCH_REPORT}",
        ]
        return "\n".join(lines)
