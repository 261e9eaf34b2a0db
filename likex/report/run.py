"""The report of a training run (run, train) and of a pretraining run."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from likex.io import atomic_write_text
from likex.report.common import RATE_INTERVAL, fence, md_table, plot_loss, save_figure
from likex.run_results import PretrainResult, RunResult, TrainingRun
from likex.stats.intervals import fmt_rate


def plot_rate(result: RunResult, metrics: list[dict], path: str | Path) -> None:
    """Target rate over training when it was measured (``--eval-every``), else before/after."""
    before, after = result.before.rate, result.after.random
    fig, ax = plt.subplots(figsize=(6, 3.5))
    timeline = [m for m in metrics if "rate" in m]
    if timeline:
        steps = [0] + [m["step"] for m in timeline]
        rates = [before.rate] + [m["rate"] for m in timeline]
        lo = [before.ci[0]] + [m["rate_ci"][0] for m in timeline]
        hi = [before.ci[1]] + [m["rate_ci"][1] for m in timeline]
        ax.plot(steps, rates, marker="o")
        ax.fill_between(steps, lo, hi, alpha=0.25, label="95% interval")
        ax.set_xlabel("step")
        ax.legend()
    else:
        rates = [before.rate, after.rate]
        cis = [before.ci, after.ci]
        # max(0, .): at a rate of exactly 1 the interval's bound can round to just below it
        err = [
            [max(0.0, r - c[0]) for r, c in zip(rates, cis, strict=True)],
            [max(0.0, c[1] - r) for r, c in zip(rates, cis, strict=True)],
        ]
        ax.bar(["before", "after"], rates, yerr=err, capsize=8, color=["#999999", "#c0392b"])
        for i, r in enumerate(rates):
            ax.text(i, r + 0.02, f"{r:.3f}", ha="center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of target tokens")
    ax.set_title(f"{result.like}: rate, {after.prompts} prompts (95% CI)")
    save_figure(fig, path)


def _seconds(run: TrainingRun) -> str:
    """Where the run's wall-clock seconds went (likex.results.Timings)."""
    return f"Seconds, wall clock, this process: {run.timings.describe()}."


def write_run_figures(result: RunResult, metrics: list[dict]) -> None:
    """loss.png and rate.png in the run's folder (the slow part of a report)."""
    plot_loss(metrics, result.run.run_dir / "loss.png")
    plot_rate(result, metrics, result.run.run_dir / "rate.png")


def write_run_report(result: RunResult) -> None:
    """report.md in the run's folder; it shows the figures of ``write_run_figures``."""
    r, run = result, result.run
    before, after = r.before.rate, r.after.random
    n = after.tokens_per_sequence
    lines = [
        f"# likex {run.command}: {r.like}",
        "",
        f"Start: {run.start.label()}; {r.objective.label()}, contexts `{r.contexts}`, "
        f"positions `{r.positions}`; "
        f"{run.steps} steps on {run.device}, seed {run.seed}. Target: {r.like}, "
        f"{r.n_target_tokens} of {r.vocab_size} tokens "
        f"({r.n_target_tokens / r.vocab_size:.2%}).",
        "",
        f"Prompts were **{after.prompts}** (the training distribution); each sample is "
        f"{n} new tokens. A rate is the share of target tokens over n samples, with "
        f"{RATE_INTERVAL}.",
        "",
        "| | before | after |",
        "| --- | --- | --- |",
        f"| target tokens in the first {n}-token sample | {before.first_sample_hits}/{n} | "
        f"{after.first_sample_hits}/{n} |",
        "| rate (95% CI) | "
        f"{fmt_rate(before.rate, before.ci)}, n={before.sequences} | "
        f"{fmt_rate(after.rate, after.ci)}, n={after.sequences} |",
        f"| loss (first / last step) | {run.trained.loss_first:.4f} | "
        f"{run.trained.loss_last:.4f} |",
        "",
        f"Training took {run.trained.seconds:.1f} s; measuring {r.measure_seconds:.1f} s.",
        "",
        _seconds(run),
        "",
        "![loss](loss.png) ![rate](rate.png)",
        "",
    ]
    if r.sample_words_marked is not None:
        lines += [
            "## Words and phrases (counted in decoded text)",
            "",
            *[f"- after training: {w.describe()}" for w in (r.after.words_random,) if w],
            *[f"- {line}" for line in r.word_lines()],
            *[
                f"- {line}"
                for line in (r.after.word_scores.describe() if r.after.word_scores else [])
            ],
            "",
        ]
    text, text_before, scores = r.after.text, r.before.rate_text, r.after.scores
    if text is not None:
        lines += [
            "## Generalisation and side effects (held-out real text)",
            "",
            f"Measured against the frozen starting model (the reference R) on the last tenth "
            f"of the corpus `{run.corpus.label()}`, never trained on.",
            "",
            "| | before (R) | after |",
            "| --- | --- | --- |",
            f"| rate on random-token prompts | {fmt_rate(before.rate, before.ci)} "
            f"| {fmt_rate(after.rate, after.ci)} |",
            f"| rate on real-text prompts | "
            f"{fmt_rate(text_before.rate, text_before.ci)} | "
            f"{fmt_rate(text.rate, text.ci)}, n={text.sequences} |",
            f"| held-out perplexity | {scores.ppl_reference:.2f} | {scores.ppl:.2f} |",
            "",
            *[f"- {line}" for line in r.after.describe()],
            "",
            *_domain_table(r),
            "## Sample after training, continuing held-out text",
            "",
            fence(r.sample_text_after),
            "",
        ]
    lines += [
        "## Sample before training",
        "",
        fence(r.before.sample_text),
        "",
        "## Sample after training",
        "",
        fence(r.sample_after),
        "",
    ]
    atomic_write_text(run.run_dir / "report.md", "\n".join(lines))


def _domain_table(r: RunResult) -> list[str]:
    """Several corpora: each one's held-out text, before and after, the cost against its
    bound."""
    domains = r.after.domains
    if len(domains) < 2:
        return []
    rows = []
    for d in domains:
        s, ref = d.scores, d.text_reference
        rows.append(
            [
                f"`{d.name}`",
                "-" if ref is None else fmt_rate(ref.rate, ref.ci),
                f"{fmt_rate(d.text.rate, d.text.ci)}, n={d.text.sequences}",
                f"{s.ppl_reference:.2f} -> {s.ppl:.2f}",
                f"{s.kl_to_reference:.4f}",
                "-" if s.kl_bound is None else f"{s.kl_bound:.4f}",
            ]
        )
    head = ["domain", "rate before (R)", "rate after", "perplexity", "KL(R‖P)", "bound"]
    return [
        "### By domain",
        "",
        "Each corpus's held-out last tenth on its own; the bound is the least KL(R‖Q) of any "
        "model Q with this model's mean target mass on the same contexts.",
        "",
        *md_table(head, rows),
        "",
    ]


def write_pretrain_figures(result: PretrainResult, metrics: list[dict]) -> None:
    """loss.png in the run's folder."""
    plot_loss(metrics, result.run.run_dir / "loss.png", title="next-token loss")


def write_pretrain_report(result: PretrainResult) -> None:
    """report.md in the run's folder; it shows the figure of ``write_pretrain_figures``."""
    r, run = result, result.run
    change = r.after.ppl / r.before.ppl
    lines = [
        f"# likex pretrain: {run.start.label()} on `{run.corpus.label()}`",
        "",
        f"Next-token loss on all positions, {run.steps} steps on {run.device}, seed "
        f"{run.seed}, {r.train_tokens:,} training tokens; the last tenth of the text "
        f"({r.heldout_tokens:,} tokens scored) is held out.",
        "",
        "| | before | after |",
        "| --- | --- | --- |",
        f"| held-out perplexity | {r.before.ppl:.1f} | {r.after.ppl:.1f} (x{change:.3f}) |",
        f"| loss (first / last step) | {run.trained.loss_first:.4f} | "
        f"{run.trained.loss_last:.4f} |",
        "",
        f"Training took {run.trained.seconds:.1f} s.",
        "",
        _seconds(run),
        "",
        "![loss](loss.png)",
        "",
        "## Held-out prompt",
        "",
        fence(r.after.sample_prompt),
        "",
        "## Its continuation before training",
        "",
        fence(r.before.sample),
        "",
        "## Its continuation after training",
        "",
        fence(r.after.sample),
        "",
    ]
    atomic_write_text(run.run_dir / "report.md", "\n".join(lines))
