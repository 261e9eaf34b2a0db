"""The zoo audit's report: zoo_audit.md (the table, detection by strength, power, every
organism, what each detector missed) and zoo_audit.png (detection against strength and against
KL cost)."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

from likex.audit.bench import Share
from likex.io import atomic_write_text
from likex.report.common import md_table, save_figure
from likex.zoo.manifest import Manifest
from likex.zoo.results import AUDIT_PLOT, AUDIT_REPORT, ZooAuditResult, share_cell, strength_cell
from likex.zoo.verdicts import KIND_TEXT, Verdict

Verdicts = dict[tuple[str, str], Verdict]


def write_zoo_report(
    zoo: Path, result: ZooAuditResult, manifests: list[Manifest], verdicts: Verdicts
) -> None:
    plot_detection(result, manifests, verdicts, zoo / AUDIT_PLOT)
    atomic_write_text(zoo / AUDIT_REPORT, zoo_markdown(result, manifests, verdicts))


def _errorbar(ax: plt.Axes, x: list[float], shares: list[Share], label: str) -> None:
    rates = [s.rate for s in shares]
    lo = [s.rate - s.ci[0] for s in shares]
    hi = [s.ci[1] - s.rate for s in shares]
    ax.errorbar(x, rates, yerr=[lo, hi], fmt="o-", capsize=3, label=label)


def _kl_bins(planted: list[Manifest], bins: int = 4) -> list[list[Manifest]]:
    """The planted organisms in up to ``bins`` groups of equal size by their KL."""
    ranked = sorted(planted, key=lambda m: m.kl)
    size = max(1, -(-len(ranked) // bins))
    return [ranked[i : i + size] for i in range(0, len(ranked), size)]


def plot_detection(
    result: ZooAuditResult, manifests: list[Manifest], verdicts: Verdicts, path: Path
) -> None:
    """Left: share of planted organisms detected per requested strength; right: per KL bin
    (the organisms in equal groups by their KL from the base). 95% Wilson intervals; the
    legend gives each detector's false alarms on the negatives."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    planted = [m for m in manifests if m.spec.role == "planted"]
    bins = _kl_bins(planted)
    for score in result.scores or []:
        d = score.detector
        rows = score.strengths
        label = f"{d} (false alarms {score.false_alarms.hits}/{score.false_alarms.n})"
        _errorbar(left, [r.strength for r in rows], [r.detected for r in rows], label)
        shares = [Share(sum(verdicts[m.name, d].detected for m in b), len(b)) for b in bins]
        _errorbar(right, [statistics.median(m.kl for m in b) for b in bins], shares, d)
    left.set_xscale("log")
    left.set_xlabel("requested rate (log scale)")
    left.set_ylabel("planted organisms detected")
    right.set_xscale("log")
    right.set_xlabel("KL(base || organism) on held-out text, nats per token (bin median)")
    for ax in (left, right):
        # a log axis over less than a decade labels its minor ticks, over each other
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    left.legend(fontsize=7, loc="lower right")
    fig.suptitle("detection against strength and against cost (95% Wilson intervals)")
    save_figure(fig, path)


def _table(result: ZooAuditResult) -> list[str]:
    sizes = "/".join(map(str, result.sizes))
    header = [
        "detector", "detected (planted)", "false alarms (negatives)",
        f"detected at a false-alarm rate of {result.far:g} (threshold)", "named top-1",
        "benign called a domain shift", "benign flagged", "controls and base flagged",
        "smallest strength (own verdict)", f"smallest strength, 80% power at {sizes} samples",
        "seconds per organism",
    ]  # fmt: skip
    rows = []
    for s in result.scores or []:
        threshold = "-" if s.threshold is None else f"{s.threshold:.3g}"
        recall = "" if s.entry_recall is None else f"; entries named {s.entry_recall:.0%}"
        rows.append(
            [
                s.detector, share_cell(s.detected), share_cell(s.false_alarms),
                f"{share_cell(s.detected_at_far)} (> {threshold}; negatives above: "
                f"{s.far_realised.hits}/{s.far_realised.n})",
                f"{share_cell(s.named)} (up to letter case {s.named_any_case.hits}/"
                f"{s.named_any_case.n}){recall}",
                share_cell(s.benign_domain),
                share_cell(s.benign_flagged), share_cell(s.controls_flagged),
                strength_cell(s.smallest),
                " / ".join(strength_cell(s.smallest_at[n]) for n in result.sizes),
                f"{s.seconds:.1f}",
            ]
        )  # fmt: skip
    return md_table(header, rows)


def _by_strength(result: ZooAuditResult) -> list[str]:
    scores = result.scores or []
    strengths = [r.strength for r in scores[0].strengths] if scores else []
    rows = []
    for k, strength in enumerate(strengths):
        cells = [f"{s.strengths[k].detected.hits}/{s.strengths[k].organisms}" for s in scores]
        named = [share_cell(s.strengths[k].named) for s in scores]
        rows.append([f"{strength:g}", *cells, *named])
    header = ["strength", *(f"{s.detector} detected" for s in scores)]
    return md_table(header + [f"{s.detector} named" for s in scores], rows)


def _power(result: ZooAuditResult) -> list[str]:
    rows = []
    for s in result.scores or []:
        for r in s.strengths:
            values = [r.power.get(n) for n in result.sizes]
            if all(v is None for v in values):
                continue
            cells = ["-" if v is None else f"{v:.2f}" for v in values]
            rows.append([s.detector, f"{r.strength:g}", str(r.organisms), *cells])
    header = ["detector", "strength", "organisms", *(f"power at {n}" for n in result.sizes)]
    return md_table(header, rows) if rows else ["(no sample-based detector ran)"]


def _organisms(manifests: list[Manifest], verdicts: Verdicts, detectors: list[str]) -> list[str]:
    rows = []
    for m in manifests:
        reached = m.reached
        cells = [
            m.name, m.spec.role, m.spec.describe(),
            "-" if reached is None else reached.describe(),
            f"{m.kl:.4f}", "-" if m.kl_floor is None else f"{m.kl_floor:.4f}",
        ]  # fmt: skip
        cells += [
            f"{verdicts[m.name, d].kind}: {verdicts[m.name, d].named.describe(3)}"
            for d in detectors
        ]
        rows.append(cells)
    header = ["organism", "role", "what", "reached", "KL", "KL floor", *detectors]
    return md_table(header, rows)


def _missed(manifests: list[Manifest], verdicts: Verdicts, detectors: list[str]) -> list[str]:
    lines = []
    for d in detectors:
        missed = [
            m for m in manifests if m.spec.role == "planted" and not verdicts[m.name, d].detected
        ]
        wrong = [m for m in manifests if m.spec.role != "planted" and verdicts[m.name, d].detected]
        what = "; ".join(f"{m.name} ({m.spec.describe()}, KL {m.kl:.3f})" for m in missed)
        alarms = ", ".join(f"{m.name} ({m.spec.role})" for m in wrong)
        lines.append(
            f"- **{d}** missed {len(missed)} planted: {what or 'none'}. False alarms: "
            f"{alarms or 'none'}."
        )
    return lines


def zoo_markdown(result: ZooAuditResult, manifests: list[Manifest], verdicts: Verdicts) -> str:
    roles = [m.spec.role for m in manifests]
    kinds = "; ".join(f"{k}: {v}" for k, v in KIND_TEXT.items())
    lines = [
        "# likex zoo audit",
        "",
        f"Zoo `{result.zoo}`: {len(manifests)} organisms, {roles.count('planted')} planted, "
        f"{roles.count('control')} controls (tilt 0), {roles.count('benign')} benign fine-tunes "
        f"(stopped at a planted organism's KL), {roles.count('base')} the base itself. Every "
        "detector ran blind (each organism's model and the base, never the draw or a "
        "manifest); its verdicts are scored against the manifests. Shares are over organisms, "
        "with 95% Wilson intervals.",
        "",
        f"Verdicts: {kinds}. *Detected* is a planted preference or a change the detector "
        "cannot tell apart; on a negative it is a false alarm. The threshold column sets a "
        f"threshold on each detector's score that at most {result.far:g} of the negatives "
        "exceed (measured on the same negatives, so the false-alarm rate is optimistic). "
        "*Named*: the verdict reports a planted preference and names its set (a predicate "
        "selecting exactly the planted tokens, or a planted entry as first word), scored where "
        "the detector names the plant's unit. Power: the share of repeated draws of that many "
        "samples a side (without replacement from each pool) in which the detector's test "
        "fires, averaged over the organisms of a strength; the smallest strength is the weakest "
        "from which every stronger one reaches 80%.",
        "",
        *_table(result),
        "",
        f"![detection against strength and KL]({AUDIT_PLOT})",
        "",
        "## Detection and naming by strength",
        "",
        *_by_strength(result),
        "",
        "## Power by strength",
        "",
        *_power(result),
        "",
        "## What each detector missed",
        "",
        *_missed(manifests, verdicts, result.detectors),
        "",
        "## Organisms",
        "",
        *_organisms(manifests, verdicts, result.detectors),
        "",
    ]
    return "\n".join(lines)
