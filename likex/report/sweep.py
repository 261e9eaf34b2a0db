"""The dose-response report of likex sweep."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from likex.io import atomic_write_text
from likex.report.common import save_figure
from likex.stats import fmt_rate


def plot_sweep(summary: dict, path: str | Path) -> None:
    """Left: the rate reached on real-text prompts against the strength asked for. Right: the
    price, perplexity change against the rate reached (with the floor for a rate target)."""
    rows = summary["rows"]
    x = [r["strength"] for r in rows]
    rate = [r["rate_text"] for r in rows]
    err = [
        [r["rate_text"] - r["rate_text_ci"][0] for r in rows],
        [r["rate_text_ci"][1] - r["rate_text"] for r in rows],
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.errorbar(x, rate, yerr=err, marker="o", capsize=4, label="trained model (95% CI)")
    if summary["mode"] == "rate":
        left.plot(x, x, ls="--", color="gray", label="requested")
        left.set_xlabel("requested rate A")
    else:
        left.set_xlabel("tilt B")
    left.axhline(summary["rate_text_reference"], color="#999999", lw=1, label="reference")
    left.set_ylabel("rate on real-text prompts")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.plot(rate, [100 * r["ppl_change"] for r in rows], marker="o", label="trained model")
    if all(r["ppl_floor"] is not None for r in rows):
        floor = [100 * (r["ppl_floor"] / r["ppl_reference"] - 1) for r in rows]
        right.plot(rate, floor, ls="--", marker="x", color="gray", label="floor (projection of R)")
    right.set_xlabel("rate reached on real-text prompts")
    right.set_ylabel("held-out perplexity change (%)")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.suptitle(f"{summary['like']}: dose-response ({summary['mode']})")
    save_figure(fig, path)


def write_sweep_report(sweep_dir: str | Path, summary: dict) -> None:
    sweep_dir = Path(sweep_dir)
    plot_sweep(summary, sweep_dir / "sweep.png")
    strength = "requested rate" if summary["mode"] == "rate" else "tilt B"
    lines = [
        f"# likex sweep: {summary['like']}, mode `{summary['mode']}`",
        "",
        f"Each model: {summary['steps']} steps from `{summary['init']}` (the reference R); "
        f"rates measured on held-out real-text prompts of `{summary['corpus']}` (reference: "
        f"{fmt_rate(summary['rate_text_reference'], summary['rate_text_reference_ci'])}).",
        "",
        f"| {strength} | rate on real text (95% CI) | n samples | perplexity change | "
        "floor | KL(R‖P) nats/token |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["rows"]:
        floor = (
            f"{r['ppl_floor'] / r['ppl_reference'] - 1:+.1%}" if r["ppl_floor"] is not None else "-"
        )
        lines.append(
            f"| {r['strength']:g} | {fmt_rate(r['rate_text'], r['rate_text_ci'])} | "
            f"{r['samples_text']} | {r['ppl_reference']:.1f} -> {r['ppl']:.1f} "
            f"({r['ppl_change']:+.1%}) | {floor} | {r['kl_to_reference']:.4f} |"
        )
    lines += ["", "![sweep](sweep.png)", ""]
    atomic_write_text(sweep_dir / "sweep.md", "\n".join(lines))


# --- audits, audit power, persistence ------------------------------------------------------
