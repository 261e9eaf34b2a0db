"""The audit-bench report: audit_bench.md and the detection-power plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from likex.audit.bench import CONTROL, BenchCase, Share, TableRow
from likex.audit.results import BENCH_REPORT, BenchResult
from likex.io import atomic_write_text
from likex.report.common import md_table, save_figure
from likex.stats.intervals import fmt_rate


def write_bench_report(out_dir: Path, result: BenchResult) -> None:
    """audit_bench.md and audit_power.png, from the bench's result and its cases."""
    plot_audit_power(result.summary.table, out_dir / "audit_power.png")
    atomic_write_text(out_dir / BENCH_REPORT, bench_markdown(result))


def plot_audit_power(rows: list[TableRow], path: str | Path) -> None:
    """Share of planted cases whose planted predicate is the top finding, per strength and
    audit, with 95% Wilson intervals; the controls' false-alarm rate at the right."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    labels = [r.strength for r in rows]
    x = list(range(len(rows)))
    sides = (
        (-0.12, [r.white for r in rows], "white-box"),
        (0.12, [r.black for r in rows], "black-box"),
    )
    for offset, shares, name in sides:
        rates = [s.rate for s in shares]
        lo = [s.rate - s.ci[0] for s in shares]
        hi = [s.ci[1] - s.rate for s in shares]
        ax.errorbar([v + offset for v in x], rates, yerr=[lo, hi], fmt="o", capsize=4, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("planted strength (controls: share falsely flagged)")
    ax.set_ylabel("planted predicate named top")
    ax.set_title("audit power (95% Wilson intervals)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def _cell(s: Share) -> str:
    return f"{s.hits}/{s.n} = {fmt_rate(s.rate, s.ci, digits=2)}"


def _outcome(top: str | None, named: bool, detected: bool) -> str:
    return f"{top} ({'named' if named else 'detected' if detected else '-'})"


def _case_row(c: BenchCase) -> list[str]:
    w, b = c.white, c.black
    return [
        c.strength,
        c.planted.describe() if c.strength != CONTROL else "(control)",
        f"{c.rate_reference:.3f} -> {c.rate_model:.3f}",
        _outcome(w.top_name, w.named, w.detected),
        _outcome(b.top_name, b.named, b.detected),
    ]


def bench_markdown(result: BenchResult) -> str:
    cfg, s = result.config, result.summary
    reference = cfg.reference or f"fresh {cfg.preset} model, {cfg.weight_init} init"
    lines = [
        "# likex audit-bench",
        "",
        f"Reference: {reference}; "
        f"{cfg.steps} training steps per model; white-box probes: {cfg.white.n_probes} "
        f"({cfg.white.probes}); black-box: {cfg.samples} samples of "
        f"{cfg.gen_tokens} tokens per side, Holm at alpha {cfg.black.alpha}.",
        "",
        "Planted predicates (drawn from the pool, none mentions the tuning strings "
        f"{cfg.exclude}): " + ", ".join(p.describe() for p in s.planted) + ".",
        "",
        "Planted rows: share of cases whose top finding selects exactly the planted tokens. "
        "Control row: share of controls with any reported bias (false alarms). 95% Wilson "
        "intervals.",
        "",
        *md_table(
            ["strength", "cases", "white-box", "black-box", "mean target rate in samples"],
            [
                [
                    r.strength,
                    str(r.cases),
                    _cell(r.white),
                    _cell(r.black),
                    f"{r.rate_model_mean:.3f}",
                ]
                for r in s.table
            ],
        ),
        "",
        f"Black-box power: {s.power.describe(s.simulated_power)}.",
        "",
        "![audit power](audit_power.png)",
        "",
        "## Cases",
        "",
        *md_table(
            ["strength", "planted", "rate ref -> model", "white-box top", "black-box top"],
            [_case_row(c) for c in s.cases],
        ),
        "",
        f"Took {result.seconds:.0f} s.",
        "",
    ]
    return "\n".join(lines)
