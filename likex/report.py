"""Plots (matplotlib, no display needed) and a Markdown report for each run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt  # noqa: E402

from likex.io import atomic_write, atomic_write_text  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def plot_loss(metrics: list[dict], path: str | Path, title: str = "training loss") -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [m["step"] for m in metrics]
    ax.plot(steps, [max(m["loss"], 1e-12) for m in metrics], lw=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (log scale)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    save_figure(fig, path)


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


def fmt_rate(rate: float, ci: list[float] | tuple[float, float]) -> str:
    return f"{rate:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _fence(text: str) -> str:
    return "```text\n" + text.replace("```", "'''") + "\n```"


def model_label(r: dict) -> str:
    """ "preset `cpu` (... parameters, init `course`)" or "the model in DIR (...)"."""
    start = f"preset `{r['preset']}`" if r.get("preset") else f"the model in `{r['init']}`"
    return f"{start} ({r['params']:,} parameters, init `{r['weight_init']}`)"


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
            _fence(r["sample_text_after"]),
            "",
        ]
    lines += [
        "## Sample before training",
        "",
        _fence(r["sample_before"]),
        "",
        "## Sample after training",
        "",
        _fence(r["sample_after"]),
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
        _fence(r["sample_prompt"]),
        "",
        "## Its continuation before training",
        "",
        _fence(r["sample_before"]),
        "",
        "## Its continuation after training",
        "",
        _fence(r["sample_after"]),
        "",
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))


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
