"""The audit-bench report: audit_bench.md and the detection-power plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from likex.io import atomic_write_text
from likex.report.common import md_table, save_figure
from likex.stats.intervals import fmt_rate
from likex.stats.power import PowerAnalysis

BENCH_REPORT = "audit_bench.md"


def write_bench_report(out_dir: Path, result: dict, rows: list[dict]) -> None:
    """audit_bench.md and audit_power.png, from the bench's JSON result and its cases."""
    plot_audit_power(result["table"], out_dir / "audit_power.png")
    atomic_write_text(out_dir / BENCH_REPORT, bench_markdown(result, rows))


def plot_audit_power(rows: list[dict], path: str | Path) -> None:
    """Share of planted cases whose planted predicate is the top finding, per strength and
    audit, with 95% Wilson intervals; the controls' false-alarm rate at the right."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    labels = [r["strength"] for r in rows]
    x = list(range(len(rows)))
    for offset, key, name in ((-0.12, "white", "white-box"), (0.12, "black", "black-box")):
        rates = [r[key]["rate"] for r in rows]
        lo = [r[key]["rate"] - r[key]["ci"][0] for r in rows]
        hi = [r[key]["ci"][1] - r[key]["rate"] for r in rows]
        ax.errorbar([v + offset for v in x], rates, yerr=[lo, hi], fmt="o", capsize=4, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("planted strength (controls: share falsely flagged)")
    ax.set_ylabel("planted predicate named top")
    ax.set_title("audit power (95% Wilson intervals)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def bench_markdown(result: dict, rows: list[dict]) -> str:
    cfg = result["config"]
    pw = result["power_0.006_to_0.05"]

    def cell(s: dict) -> str:
        return f"{s['hits']}/{s['n']} = {fmt_rate(s['rate'], s['ci'], digits=2)}"

    reference = cfg["reference"] or f"fresh {cfg['preset']} model, {cfg['weight_init']} init"

    def outcome(r: dict, side: str) -> str:
        word = "named" if r[f"{side}_named"] else "detected" if r[f"{side}_detected"] else "-"
        return f"{r[f'{side}_top']} ({word})"

    lines = [
        "# likex audit-bench",
        "",
        f"Reference: {reference}; "
        f"{cfg['steps']} training steps per model; white-box probes: {cfg['white']['n_probes']} "
        f"({cfg['white']['probes']}); black-box: {cfg['samples']} samples of "
        f"{cfg['gen_tokens']} tokens per side, Holm at alpha {cfg['black']['alpha']}.",
        "",
        "Planted predicates (drawn from the pool, none mentions the tuning strings "
        f"{cfg['exclude']}): " + ", ".join(result["planted"]) + ".",
        "",
        "Planted rows: share of cases whose top finding selects exactly the planted tokens. "
        "Control row: share of controls with any reported bias (false alarms). 95% Wilson "
        "intervals.",
        "",
        *md_table(
            ["strength", "cases", "white-box", "black-box", "mean target rate in samples"],
            [
                [
                    r["strength"],
                    str(r["cases"]),
                    cell(r["white"]),
                    cell(r["black"]),
                    f"{r['rate_model_mean']:.3f}",
                ]
                for r in result["table"]
            ],
        ),
        "",
        "Black-box power: "
        + PowerAnalysis.from_dict(pw).describe((pw["simulated_power"], pw["simulated_power_ci"]))
        + ".",
        "",
        "![audit power](audit_power.png)",
        "",
        "## Cases",
        "",
        *md_table(
            ["strength", "planted", "rate ref -> model", "white-box top", "black-box top"],
            [
                [
                    r["strength"],
                    r["planted"] if r["strength"] != "control" else "(control)",
                    f"{r['rate_reference']:.3f} -> {r['rate_model']:.3f}",
                    outcome(r, "white"),
                    outcome(r, "black"),
                ]
                for r in rows
            ],
        ),
        "",
        f"Took {result['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)
