"""Dose-response: one model per bias strength from the same reference, and the trade-off
between how strong a bias is and what it costs (rate reached vs perplexity and KL)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from likex.config import RunConfig, SweepCommand
from likex.errors import ConfigError
from likex.io import atomic_write_json
from likex.objective import Rate, Tilt, dose_response
from likex.pipelines.run import run_plan
from likex.report.sweep import write_sweep_report
from likex.results import SweepResult, SweepRow
from likex.run_results import Before
from likex.runs import new_run_dir

SWEEP_FILE = "sweep.json"


def sweep_command(cmd: SweepCommand, progress: bool = True) -> SweepResult:
    """likex sweep: the strengths come from ``rates`` or ``betas``, as the mode says."""
    train = cmd.run.train
    objectives = dose_response(train.mode, cmd.rates, cmd.betas, train.complete, train.shares)
    return run_sweep(cmd.run, objectives, cmd.out, progress)


def run_sweep(
    base: RunConfig,
    objectives: list[Rate | Tilt],
    out: str | Path | None = None,
    progress: bool = True,
) -> SweepResult:
    """Train ``base`` once per objective into ``out/<mode>-<strength>``; the starting model is
    measured once (every run starts from the same model with the same seed and prompts)."""
    if base.corpus is None:
        raise ConfigError("corpus", "is needed: a sweep measures on held-out text")
    plan = base.resolve(objective=objectives[0])  # a bad config fails before the folder exists
    sweep_dir = new_run_dir(out)
    before: Before | None = None
    rows = []
    for objective in objectives:
        one = replace(plan, train=replace(plan.train, objective=objective))
        # the process's start-up belongs to the first run; the later ones reuse its measurement
        startup = None if before is None else 0.0
        where = sweep_dir / f"{objective.mode}-{objective.strength:g}"
        result = run_plan(one, where, progress, before, startup=startup)
        before = result.before
        rows.append(SweepRow(result))
    summary = SweepResult(
        init_from=base.init,
        corpus=base.corpus,
        target=base.target,
        steps=plan.train.steps,
        reference=before.rate_text,
        rows=rows,
        sweep_dir=sweep_dir,
    )
    atomic_write_json(sweep_dir / SWEEP_FILE, summary.to_json())
    write_sweep_report(summary)
    return summary
