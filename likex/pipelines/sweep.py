"""Dose-response: one model per bias strength from the same reference, and the trade-off
between how strong a bias is and what it costs (rate reached vs perplexity and KL)."""

from __future__ import annotations

import copy
from pathlib import Path

from likex.config import SweepCommand
from likex.errors import ConfigError, LikexError
from likex.io import atomic_write_json
from likex.pipelines.run import RunConfig, run_experiment
from likex.report.sweep import write_sweep_report
from likex.results import Before, SweepResult, SweepRow
from likex.runs import new_run_dir
from likex.target import check_beta, check_rate

SWEEP_FILE = "sweep.json"


def parse_strengths(text: str, mode: str) -> list[float]:
    """ "0.02,0.05,0.1" -> [0.02, 0.05, 0.1], each checked for the mode (A in (0,1), B finite)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise LikexError(f"strengths must be comma-separated numbers, got {text!r}") from e
    if not values:
        raise LikexError("no strengths given")
    if len(set(values)) != len(values):
        raise LikexError(f"repeated strengths in {text!r}")
    check = {"rate": check_rate, "tilt": check_beta}.get(mode)
    if check is None:
        raise ConfigError("mode", f"of a sweep is rate or tilt, not {mode!r}")
    return [check(v) for v in values]


def sweep_command(cmd: SweepCommand, progress: bool = True) -> SweepResult:
    """likex sweep: the strengths come from ``rates`` or ``betas``, as the mode says."""
    name = "rates" if cmd.run.train.mode == "rate" else "betas"
    text = getattr(cmd, name)
    if text is None:
        raise ConfigError("mode", f"{cmd.run.train.mode} needs {{{name}}}")
    return run_sweep(cmd.run, parse_strengths(text, cmd.run.train.mode), cmd.out, progress)


def run_sweep(
    base: RunConfig, strengths: list[float], out: str | Path | None = None, progress: bool = True
) -> SweepResult:
    """Train ``base`` once per strength into ``out/<mode>-<strength>``; the starting model is
    measured once (every run starts from the same model with the same seed and prompts)."""
    mode = base.train.mode
    if base.corpus is None:
        raise ConfigError("corpus", "is needed: a sweep measures on held-out text")
    strengths = parse_strengths(",".join(map(str, strengths)), mode)
    base.resolve()  # a bad config fails before the sweep's folder exists
    sweep_dir = new_run_dir(out)
    before: Before | None = None
    rows = []
    for strength in strengths:
        cfg = copy.deepcopy(base)
        if mode == "rate":
            cfg.train.rate = strength
        else:
            cfg.train.beta = strength
        result = run_experiment(cfg, sweep_dir / f"{mode}-{strength:g}", progress, before)
        before = result.before
        rows.append(SweepRow(strength, result))
    summary = SweepResult(
        mode=mode,
        init_from=base.init,
        corpus=base.corpus,
        target=base.target,
        steps=base.train.steps,
        reference=before.rate_text,
        rows=rows,
        sweep_dir=sweep_dir,
    )
    atomic_write_json(sweep_dir / SWEEP_FILE, summary.to_json())
    write_sweep_report(summary)
    return summary
