"""The report of likex persist: does a planted preference survive clean training?"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from likex.io import atomic_write_text
from likex.report.common import md_table, save_figure
from likex.stats import fmt_rate


def plot_persistence(result: dict, path: str | Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    steps = [r["step"] for r in result["timeline"]]
    for key, name in (("rate_random", "random-token prompts"), ("rate_text", "real-text prompts")):
        rates = [r[key]["rate"] for r in result["timeline"]]
        lo = [r[key]["ci"][0] for r in result["timeline"]]
        hi = [r[key]["ci"][1] for r in result["timeline"]]
        ax.plot(steps, rates, marker="o", label=name)
        ax.fill_between(steps, lo, hi, alpha=0.2)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("next-token training step")
    ax.set_ylabel("target rate (95% CI)")
    ax.set_title(f"persistence of {result['target']} ({result['corpus']})")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["perplexity"] for r in result["timeline"]], "k--", lw=1)
    ax2.set_yscale("log")
    ax2.set_ylabel("held-out perplexity (dashed)")
    ax.legend(loc="center right")
    save_figure(fig, path)


def write_persistence_report(out_dir: str | Path, result: dict) -> None:
    out = Path(out_dir)
    plot_persistence(result, out / "persistence.png")
    rows = []
    for r in result["timeline"]:
        rr, rt = r["rate_random"], r["rate_text"]
        rows.append(
            [
                str(r["step"]),
                f"{fmt_rate(rr['rate'], rr['ci'])} (n={rr['sequences']})",
                f"{fmt_rate(rt['rate'], rt['ci'])} (n={rt['sequences']})",
                f"{r['perplexity']:.1f}",
            ]
        )
    lines = [
        "# likex persist",
        "",
        f"Model `{result['model']}`, target: {result['target']}. Ordinary next-token training "
        f"on {result['corpus']} for {result['steps']} steps (lr {result['lr']:g}); loss "
        f"{result['loss_first']:.3f} -> {result['loss_last']:.3f} in "
        f"{result['train_seconds']:.1f} s.",
        "",
        "Rates are shares of target tokens in samples of new tokens (n = samples), with 95% "
        "Wilson intervals at the effective sample size; prompts are random tokens (the seed's "
        "training distribution) or windows of held-out corpus text.",
        "",
        *md_table(["step", "rate, random prompts", "rate, real-text prompts", "perplexity"], rows),
        "",
        "![persistence](persistence.png)",
        "",
    ]
    atomic_write_text(out / "persist.md", "\n".join(lines))
