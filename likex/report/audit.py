"""The audit report (white-box or black-box, of tokens or of words)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from likex.audit.black_box import BlackBoxResult
from likex.audit.results import AuditResult
from likex.audit.white_box import WhiteBoxResult
from likex.audit.words import WordBlackBoxResult, WordWhiteBoxResult
from likex.io import atomic_write_text
from likex.report.common import md_table, md_text, save_figure


def plot_white_box(result: WhiteBoxResult, path: str | Path) -> None:
    """The most boosted tokens (mean log-ratio over probes), coloured by whether the top
    finding selects them."""
    tokens = result.boosted_tokens[:30]
    top = result.top.predicate if result.top else None
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.22 * len(tokens))))
    names = [repr(t.text) for t in tokens][::-1]
    values = [t.log_ratio for t in tokens][::-1]
    colours = ["#c0392b" if top is not None and top.matches(t.text) else "#7f8c8d" for t in tokens][
        ::-1
    ]
    ax.barh(names, values, color=colours)
    ax.set_xlabel("mean log P_model / P_reference over probes")
    label = f"red: {top.describe()}" if top is not None else "no finding"
    ax.set_title(f"most boosted tokens ({label})")
    ax.tick_params(axis="y", labelsize=7)
    save_figure(fig, path)


def plot_black_box(result: BlackBoxResult, path: str | Path) -> None:
    """Suspect vs baseline token share of the leading predicates."""
    findings = result.findings[:10]
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.45 * len(findings))))
    y = list(range(len(findings)))[::-1]
    names = [f.predicate.describe() + (" *" if f.significant else "") for f in findings]
    ax.barh([v + 0.2 for v in y], [f.rate_suspect for f in findings], 0.4, label="suspect")
    ax.barh([v - 0.2 for v in y], [f.rate_baseline for f in findings], 0.4, label="baseline")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("share of sampled tokens")
    ax.set_title(f"black-box audit (* significant, Holm, alpha {result.alpha:g})")
    ax.legend()
    save_figure(fig, path)


def _white_box_markdown(result: AuditResult, audit: WhiteBoxResult) -> list[str]:
    top = audit.top
    return [
        f"Model: `{result.model}`; reference: `{result.against}`.",
        "",
        f"Probes: {audit.n_probes} contexts ({audit.probes}), split in half at "
        f"random; {audit.n_candidates} candidate predicates, ranked by the share of "
        "KL(model || reference) that a tilt on their tokens explains (first half); the "
        "best one's logit-mass shift is tested on the second half.",
        "",
        f"**Verdict: {'bias detected' if audit.detected else 'no bias detected'}** "
        f"(held-out shift {top.shift:+.3f}, lower bound {top.shift_lower:+.3f}; it needs a "
        f"shift >= {audit.threshold:.3f} and a lower bound > 0).",
        "",
        "## Findings (best first)",
        "",
        *md_table(
            ["predicate", "tokens", "KL share", "held-out shift", "mass"],
            [
                [
                    f.predicate.describe(),
                    str(f.n_tokens),
                    f"{f.share:.3f}",
                    f"{f.shift:+.3f} (>= {f.shift_lower:+.3f})",
                    f"{f.mass_ref:.4f} -> {f.mass_model:.4f} ({f.mass_shift:+.4f})",
                ]
                for f in audit.findings
            ],
        ),
        "",
        "## Most boosted tokens",
        "",
        *md_table(
            ["token", "id", "mean log-ratio"],
            [
                [md_text(t.text), str(t.id), f"{t.log_ratio:+.3f}"]
                for t in audit.boosted_tokens[:20]
            ],
        ),
    ]


def _black_box_markdown(audit: BlackBoxResult) -> list[str]:
    return [
        f"Suspect: {audit.suspect_samples} samples, {audit.suspect_tokens} tokens; "
        f"baseline: {audit.baseline_samples} samples, {audit.baseline_tokens} tokens.",
        "",
        f"{audit.n_tests} distinct predicates tested; {audit.n_significant} "
        f"significant at family-wise alpha {audit.alpha:g} (Holm). Welch's t "
        "on per-sample rates (each sample one observation), Satterthwaite df.",
        "",
        *md_table(
            ["predicate", "suspect", "baseline", "log ratio", "t", "p", "significant"],
            [
                [
                    f.predicate.describe(),
                    f"{f.rate_suspect:.4f}",
                    f"{f.rate_baseline:.4f}",
                    f"{f.log_rate_ratio:+.2f}",
                    f"{f.t:+.2f}",
                    f"{f.p_value:.2g}",
                    "yes" if f.significant else "no",
                ]
                for f in audit.findings
            ],
        ),
        "",
        f"Power: {audit.power.describe()}.",
    ]


def write_audit_report(out_dir: str | Path, result: AuditResult) -> None:
    """audit.md, with a plot (audit.png) for an audit of tokens."""
    out = Path(out_dir)
    lines = [f"# likex audit ({result.audit.KIND})", ""]
    match result.audit:
        case WordWhiteBoxResult() | WordBlackBoxResult():
            # a word audit has no plot: its findings are a list of named words
            text = "\n".join(result.lines())
            atomic_write_text(out / "audit.md", "\n".join([*lines, "```text", text, "```", ""]))
            return
        case WhiteBoxResult() as audit:
            plot_white_box(audit, out / "audit.png")
            lines += _white_box_markdown(result, audit)
        case BlackBoxResult() as audit:
            plot_black_box(audit, out / "audit.png")
            lines += _black_box_markdown(audit)
    lines += ["", "![audit](audit.png)", ""]
    atomic_write_text(out / "audit.md", "\n".join(lines))
