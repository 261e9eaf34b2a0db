"""The dose-response report of likex sweep."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from likex.io import atomic_write_text
from likex.report.common import save_figure
from likex.results import SweepResult
from likex.stats.intervals import fmt_rate


def plot_sweep(summary: SweepResult, path: str | Path) -> None:
    """Left: the rate reached on real-text prompts against the strength asked for. Right: the
    price, perplexity change against the rate reached (with the floor for a rate target)."""
    rows = summary.rows
    x = [r.strength for r in rows]
    texts = [r.run.after.text for r in rows]
    scores = [r.run.after.scores for r in rows]
    rate = [t.rate for t in texts]
    err = [[t.rate - t.ci[0] for t in texts], [t.ci[1] - t.rate for t in texts]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.errorbar(x, rate, yerr=err, marker="o", capsize=4, label="trained model (95% CI)")
    objective = rows[0].run.objective
    if objective.projection() is not None:  # a requested rate: the line it should reach
        left.plot(x, x, ls="--", color="gray", label="requested")
    left.set_xlabel(objective.strength_name)
    left.axhline(summary.reference.rate, color="#999999", lw=1, label="reference")
    left.set_ylabel("rate on real-text prompts")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.plot(rate, [100 * r.ppl_change for r in rows], marker="o", label="trained model")
    if all(s.ppl_floor is not None for s in scores):
        floor = [100 * (s.ppl_floor / s.ppl_reference - 1) for s in scores]
        right.plot(rate, floor, ls="--", marker="x", color="gray", label="floor (projection of R)")
    right.set_xlabel("rate reached on real-text prompts")
    right.set_ylabel("held-out perplexity change (%)")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.suptitle(f"{summary.like}: dose-response ({summary.mode})")
    save_figure(fig, path)


def write_sweep_report(summary: SweepResult) -> None:
    """sweep.md and sweep.png in the sweep's folder."""
    sweep_dir = summary.sweep_dir
    plot_sweep(summary, sweep_dir / "sweep.png")
    strength = summary.rows[0].run.objective.strength_name
    reference = summary.reference
    lines = [
        f"# likex sweep: {summary.like}, mode `{summary.mode}`",
        "",
        f"Each model: {summary.steps} steps from `{summary.init_from}` (the reference R); "
        f"rates measured on held-out real-text prompts of `{summary.corpus}` (reference: "
        f"{fmt_rate(reference.rate, reference.ci)}).",
        "",
        f"| {strength} | rate on real text (95% CI) | n samples | perplexity change | "
        "floor | KL(R‖P) nats/token |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary.rows:
        text, s = r.run.after.text, r.run.after.scores
        floor = f"{s.ppl_floor / s.ppl_reference - 1:+.1%}" if s.ppl_floor is not None else "-"
        lines.append(
            f"| {r.strength:g} | {fmt_rate(text.rate, text.ci)} | "
            f"{text.sequences} | {s.ppl_reference:.1f} -> {s.ppl:.1f} "
            f"({r.ppl_change:+.1%}) | {floor} | {s.kl_to_reference:.4f} |"
        )
    lines += ["", "![sweep](sweep.png)", ""]
    atomic_write_text(sweep_dir / "sweep.md", "\n".join(lines))
