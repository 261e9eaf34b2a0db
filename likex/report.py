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


def write_run_report(run_dir: str | Path, result: dict, metrics: list[dict]) -> None:
    run_dir = Path(run_dir)
    plot_loss(metrics, run_dir / "loss.png")
    plot_rate(result, metrics, run_dir / "rate.png")
    r = result
    n = r["gen_tokens"]
    lines = [
        f"# likex run: {r['like']}",
        "",
        f"Preset `{r['preset']}` ({r['params']:,} parameters, init `{r['weight_init']}`), "
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
