"""What every report shares: headless matplotlib, atomic figure files, Markdown pieces."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt  # noqa: E402

from likex.io import atomic_write  # noqa: E402

# How a rate's interval is made (likex.stats.intervals.rate_interval), in the reports' words
RATE_INTERVAL = (
    "a 95% interval that allows for tokens of one sample being correlated: the hull of a Wilson "
    "interval at the effective sample size and a skew-corrected t interval over samples (an "
    "exact bound over samples where no token, or every token, is a target)"
)


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


def fence(text: str) -> str:
    return "```text\n" + text.replace("```", "'''") + "\n```"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def md_text(s: str) -> str:
    """A token's text inside a Markdown table cell: visible spaces, no pipes or newlines."""
    return "`" + repr(s)[1:-1].replace("|", "\\|").replace("`", "'") + "`"
