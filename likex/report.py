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


# --- audits, audit power, persistence ------------------------------------------------------


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _md_text(s: str) -> str:
    """A token's text inside a Markdown table cell: visible spaces, no pipes or newlines."""
    return "`" + repr(s)[1:-1].replace("|", "\\|").replace("`", "'") + "`"


def plot_white_box(result: dict, path: str | Path) -> None:
    """The most boosted tokens (mean log-ratio +- spread over probes), coloured by whether
    the top finding selects them."""
    from likex.audit import Predicate

    tokens = result["boosted_tokens"][:30]
    top = Predicate.from_pattern(result["findings"][0]["pattern"]) if result["findings"] else None
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.22 * len(tokens))))
    names = [repr(t["text"]) for t in tokens][::-1]
    values = [t["log_ratio"] for t in tokens][::-1]
    spreads = [t["spread"] for t in tokens][::-1]
    colours = [
        "#c0392b" if top is not None and top.matches(t["text"]) else "#7f8c8d" for t in tokens
    ][::-1]
    ax.barh(names, values, xerr=spreads, color=colours, capsize=2)
    ax.set_xlabel("mean log P_model / P_reference over probes (bar: +- 1 sd)")
    label = f"red: {result['findings'][0]['predicate']}" if top is not None else "no finding"
    ax.set_title(f"most boosted tokens ({label})")
    ax.tick_params(axis="y", labelsize=7)
    save_figure(fig, path)


def plot_black_box(result: dict, path: str | Path) -> None:
    """Suspect vs baseline token share of the leading predicates."""
    findings = result["findings"][:10]
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.45 * len(findings))))
    y = list(range(len(findings)))[::-1]
    names = [f["predicate"] + (" *" if f["significant"] else "") for f in findings]
    ax.barh([v + 0.2 for v in y], [f["rate_suspect"] for f in findings], 0.4, label="suspect")
    ax.barh([v - 0.2 for v in y], [f["rate_baseline"] for f in findings], 0.4, label="baseline")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("share of sampled tokens")
    ax.set_title(f"black-box audit (* significant, Holm, alpha {result['alpha']:g})")
    ax.legend()
    save_figure(fig, path)


def write_audit_report(out_dir: str | Path, result: dict) -> None:
    """audit.md with a plot: white-box or black-box, from the audit's JSON result."""
    out = Path(out_dir)
    lines = [f"# likex audit ({result['audit']})", ""]
    if result["audit"] == "white-box":
        plot_white_box(result, out / "audit.png")
        lines += [
            f"Model: `{result.get('model', '')}`; reference: `{result.get('reference', '')}`.",
            "",
            f"Probes: {result['n_probes']} contexts ({result['probes']}); the next-token "
            "log-ratio of every token is averaged over them. "
            f"{result['n_boosted']} tokens are boosted beyond "
            f"{result['boost_threshold']:.2f} (centred log-ratio).",
            "",
            f"**Verdict: {'bias detected' if result['detected'] else 'no bias detected'}** "
            f"(a finding needs F1 >= {result['f1_threshold']} and >= {result['min_support']} "
            "boosted tokens).",
            "",
            "## Findings (best first)",
            "",
            *md_table(
                ["predicate", "tokens", "precision", "recall", "F1", "mass shift"],
                [
                    [
                        f["predicate"],
                        str(f["n_tokens"]),
                        f"{f['precision']:.3f}",
                        f"{f['recall']:.3f}",
                        f"{f['f1']:.3f}",
                        f"{f['mass_ref']:.4f} -> {f['mass_model']:.4f} ({f['mass_shift']:+.4f})",
                    ]
                    for f in result["findings"]
                ],
            ),
            "",
            "## Most boosted tokens",
            "",
            *md_table(
                ["token", "id", "mean log-ratio", "spread (sd)"],
                [
                    [
                        _md_text(t["text"]),
                        str(t["id"]),
                        f"{t['log_ratio']:+.3f}",
                        f"{t['spread']:.3f}",
                    ]
                    for t in result["boosted_tokens"][:20]
                ],
            ),
        ]
    else:
        plot_black_box(result, out / "audit.png")
        pw = result["power"]
        lines += [
            f"Suspect: {result['suspect_samples']} samples, {result['suspect_tokens']} tokens; "
            f"baseline: {result['baseline_samples']} samples, {result['baseline_tokens']} tokens.",
            "",
            f"{result['n_tests']} distinct predicates tested; {result['n_significant']} "
            f"significant at family-wise alpha {result['alpha']:g} (Holm). z uses the "
            "between-sample (cluster-robust) variance, never below the binomial one.",
            "",
            *md_table(
                ["predicate", "suspect", "baseline", "log ratio", "z", "p", "significant"],
                [
                    [
                        f["predicate"],
                        f"{f['rate_suspect']:.4f}",
                        f"{f['rate_baseline']:.4f}",
                        f"{f['log_rate_ratio']:+.2f}",
                        f"{f['z']:+.2f}",
                        f"{f['p_value']:.2g}",
                        "yes" if f["significant"] else "no",
                    ]
                    for f in result["findings"]
                ],
            ),
            "",
            f"Power: {pw['samples']} samples of {pw['tokens_per_sample']} tokens per side "
            f"detect {pw['p0']:g} -> {pw['p1']:g} with power {pw['power']:g} at family-wise "
            f"alpha {pw['alpha']:g} over {pw['n_tests']} predicates "
            f"(design effect {pw['design_effect']:.2f}).",
        ]
    lines += ["", "![audit](audit.png)", ""]
    atomic_write_text(out / "audit.md", "\n".join(lines))


def plot_audit_power(rows: list[dict], path: str | Path) -> None:
    """Share of planted cases whose planted predicate is the top finding, per strength and
    audit, with 95% Wilson intervals; the controls' false-alarm rate at the right."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    labels = [r["strength"] for r in rows]
    x = list(range(len(rows)))
    for offset, key, name in ((-0.12, "white", "white-box"), (0.12, "black", "black-box")):
        rates = [r[key]["rate"] for r in rows]
        lo = [r[key]["rate"] - r[key]["ci"][0] for r in rows]
        hi = [r[key]["ci"][1] - r[key]["rate"] for r in rows]
        ax.errorbar([v + offset for v in x], rates, yerr=[lo, hi], fmt="o", capsize=4, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("planted strength (controls: share falsely flagged)")
    ax.set_ylabel("planted predicate named top")
    ax.set_title("audit power (95% Wilson intervals)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


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
