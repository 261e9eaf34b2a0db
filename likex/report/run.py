"""The report of a training run (run, train) and of a pretraining run."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from likex.io import atomic_write_text
from likex.report.common import fence, plot_loss, save_figure
from likex.results import model_label
from likex.stats import fmt_rate


def plot_rate(result: dict, metrics: list[dict], path: str | Path) -> None:
    """Target rate over training when it was measured (``--eval-every``), else before/after."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    timeline = [m for m in metrics if "rate" in m]
    if timeline:
        steps = [0] + [m["step"] for m in timeline]
        rates = [result["rate_before"]] + [m["rate"] for m in timeline]
        lo = [result["rate_before_ci"][0]] + [m["rate_ci"][0] for m in timeline]
        hi = [result["rate_before_ci"][1]] + [m["rate_ci"][1] for m in timeline]
        ax.plot(steps, rates, marker="o")
        ax.fill_between(steps, lo, hi, alpha=0.25, label="95% interval")
        ax.set_xlabel("step")
        ax.legend()
    else:
        rates = [result["rate_before"], result["rate_after"]]
        cis = [result["rate_before_ci"], result["rate_after_ci"]]
        # max(0, .): at a rate of exactly 1 the Wilson bound can round to just below it
        err = [
            [max(0.0, r - c[0]) for r, c in zip(rates, cis, strict=True)],
            [max(0.0, c[1] - r) for r, c in zip(rates, cis, strict=True)],
        ]
        ax.bar(["before", "after"], rates, yerr=err, capsize=8, color=["#999999", "#c0392b"])
        for i, r in enumerate(rates):
            ax.text(i, r + 0.02, f"{r:.3f}", ha="center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of target tokens")
    ax.set_title(f"{result['like']}: rate, {result['prompts']} prompts (95% CI)")
    save_figure(fig, path)


def _target_line(r: dict) -> str:
    if r.get("mode") == "rate":
        return f"mode `rate`, A = {r['rate_requested']}"
    if r.get("mode") == "tilt":
        return f"mode `tilt`, B = {r['beta']}"
    return "mode `uniform`"


def write_run_report(run_dir: str | Path, result: dict, metrics: list[dict]) -> None:
    run_dir = Path(run_dir)
    plot_loss(metrics, run_dir / "loss.png")
    plot_rate(result, metrics, run_dir / "rate.png")
    r = result
    n = r["gen_tokens"]
    lines = [
        f"# likex {r.get('command', 'run')}: {r['like']}",
        "",
        f"Start: {model_label(r)}; {_target_line(r)}, contexts `{r.get('contexts', 'random')}`, "
        f"positions `{r.get('positions', 'last')}`; "
        f"{r['steps']} steps on {r['device']}, seed {r['seed']}. Target: {r['like']}, "
        f"{r['n_target_tokens']} of {r['vocab_size']} tokens "
        f"({r['n_target_tokens'] / r['vocab_size']:.2%}).",
        "",
        f"Prompts were **{r['prompts']}** (the training distribution); each sample is "
        f"{n} new tokens. A rate is the share of target tokens over n samples, with a 95% "
        "Wilson interval at the effective sample size (tokens of one sample are correlated).",
        "",
        "| | before | after |",
        "| --- | --- | --- |",
        f"| target tokens in the first {n}-token sample | {r['x_before']}/{n} | "
        f"{r['x_after']}/{n} |",
        "| rate (95% CI) | "
        f"{fmt_rate(r['rate_before'], r['rate_before_ci'])}, n={r['samples_before']} | "
        f"{fmt_rate(r['rate_after'], r['rate_after_ci'])}, n={r['samples']} |",
        f"| loss (first / last step) | {r['loss_first']:.4f} | {r['loss_last']:.4f} |",
        "",
        f"Training took {r['train_seconds']:.1f} s; measuring {r['measure_seconds']:.1f} s.",
        "",
        "![loss](loss.png) ![rate](rate.png)",
        "",
    ]
    if "rate_text" in r:
        lines += [
            "## Generalisation and side effects (held-out real text)",
            "",
            f"Measured against the frozen starting model (the reference R) on the last tenth "
            f"of the corpus `{r['corpus']}`, never trained on.",
            "",
            "| | before (R) | after |",
            "| --- | --- | --- |",
            f"| rate on random-token prompts | {fmt_rate(r['rate_before'], r['rate_before_ci'])} "
            f"| {fmt_rate(r['rate_after'], r['rate_after_ci'])} |",
            f"| rate on real-text prompts | "
            f"{fmt_rate(r['rate_text_before'], r['rate_text_before_ci'])} | "
            f"{fmt_rate(r['rate_text'], r['rate_text_ci'])}, n={r['samples_text']} |",
            f"| held-out perplexity | {r['ppl_reference']:.2f} | {r['ppl']:.2f} |",
            "",
            *[f"- {line}" for line in r["evaluation"]],
            "",
            "## Sample after training, continuing held-out text",
            "",
            fence(r["sample_text_after"]),
            "",
        ]
    lines += [
        "## Sample before training",
        "",
        fence(r["sample_before"]),
        "",
        "## Sample after training",
        "",
        fence(r["sample_after"]),
        "",
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))


def write_pretrain_report(run_dir: str | Path, result: dict, metrics: list[dict]) -> None:
    run_dir = Path(run_dir)
    plot_loss(metrics, run_dir / "loss.png", title="next-token loss")
    r = result
    change = r["ppl_after"] / r["ppl_before"]
    lines = [
        f"# likex pretrain: {model_label(r)} on `{r['corpus']}`",
        "",
        f"Next-token loss on all positions, {r['steps']} steps on {r['device']}, seed "
        f"{r['seed']}, {r['train_tokens']:,} training tokens; the last tenth of the text "
        f"({r['heldout_tokens']:,} tokens scored) is held out.",
        "",
        "| | before | after |",
        "| --- | --- | --- |",
        f"| held-out perplexity | {r['ppl_before']:.1f} | {r['ppl_after']:.1f} (x{change:.3f}) |",
        f"| loss (first / last step) | {r['loss_first']:.4f} | {r['loss_last']:.4f} |",
        "",
        f"Training took {r['train_seconds']:.1f} s.",
        "",
        "![loss](loss.png)",
        "",
        "## Held-out prompt",
        "",
        fence(r["sample_prompt"]),
        "",
        "## Its continuation before training",
        "",
        fence(r["sample_before"]),
        "",
        "## Its continuation after training",
        "",
        fence(r["sample_after"]),
        "",
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))
