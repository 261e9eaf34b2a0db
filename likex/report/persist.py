"""The report of likex persist: does a planted preference survive clean training?"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from likex.io import atomic_write_text
from likex.report.common import RATE_INTERVAL, md_table, save_figure
from likex.results import PersistResult
from likex.stats.intervals import fmt_rate


def plot_persistence(result: PersistResult, path: str | Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    steps = [p.step for p in result.timeline]
    evaluations = [p.evaluation for p in result.timeline]
    for name, estimates in (
        ("random-token prompts", [ev.random for ev in evaluations]),
        ("real-text prompts", [ev.text for ev in evaluations]),
    ):
        ax.plot(steps, [e.rate for e in estimates], marker="o", label=name)
        lo, hi = [e.ci[0] for e in estimates], [e.ci[1] for e in estimates]
        ax.fill_between(steps, lo, hi, alpha=0.2)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("next-token training step")
    ax.set_ylabel("target rate (95% CI)")
    ax.set_title(f"persistence of {result.target.describe()} ({result.corpus})")
    ax2 = ax.twinx()
    ax2.plot(steps, [ev.scores.ppl for ev in evaluations], "k--", lw=1)
    ax2.set_yscale("log")
    ax2.set_ylabel("held-out perplexity (dashed)")
    ax.legend(loc="center right")
    save_figure(fig, path)


def write_persistence_report(result: PersistResult) -> None:
    """persist.md and persistence.png in the run's folder."""
    out = result.run_dir
    plot_persistence(result, out / "persistence.png")
    rows = []
    for p in result.timeline:
        rr, rt = p.evaluation.random, p.evaluation.text
        rows.append(
            [
                str(p.step),
                f"{fmt_rate(rr.rate, rr.ci)} (n={rr.sequences})",
                f"{fmt_rate(rt.rate, rt.ci)} (n={rt.sequences})",
                f"{p.evaluation.scores.ppl:.1f}",
            ]
        )
    trained = result.trained
    lines = [
        "# likex persist",
        "",
        f"Model `{result.model}`, target: {result.target.describe()}. Ordinary next-token "
        f"training on {result.corpus} for {result.steps} steps (lr {result.lr:g}); loss "
        f"{trained.loss_first:.3f} -> {trained.loss_last:.3f} in {trained.seconds:.1f} s.",
        "",
        "Rates are shares of target tokens in samples of new tokens (n = samples), each with "
        f"{RATE_INTERVAL}; prompts are random tokens (the seed's training distribution) or "
        "windows of held-out corpus text.",
        "",
        *md_table(["step", "rate, random prompts", "rate, real-text prompts", "perplexity"], rows),
        "",
        *[line.strip() + "  " for line in result.domain_lines()],
        "",
        "![persistence](persistence.png)",
        "",
    ]
    atomic_write_text(out / "persist.md", "\n".join(lines))
