"""Dose-response: one model per bias strength from the same reference, and the trade-off
between how strong a bias is and what it costs (rate reached vs perplexity and KL)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from likex.config import RunConfig, SweepCommand
from likex.errors import ConfigError, Interrupted
from likex.io import atomic_write_json, check_new_dir
from likex.objective import Rate, Tilt, dose_response
from likex.pipelines.run import run_plan
from likex.pipelines.training import OnEstimate
from likex.report.sweep import write_sweep_report
from likex.results import SweepResult, SweepRow
from likex.run_results import Before
from likex.runs import LOCK_FILE, RunLock, new_run_dir

SWEEP_FILE = "sweep.json"


def sweep_command(
    cmd: SweepCommand, progress: bool = True, on_estimate: OnEstimate | None = None
) -> SweepResult:
    """likex sweep: the strengths come from ``rates`` or ``betas``, as the mode says."""
    train = cmd.run.train
    objectives = dose_response(train.mode, cmd.rates, cmd.betas, train.complete, train.shares)
    return run_sweep(cmd.run, objectives, cmd.out, progress, on_estimate)


def run_sweep(
    base: RunConfig,
    objectives: list[Rate | Tilt],
    out: str | Path | None = None,
    progress: bool = True,
    on_estimate: OnEstimate | None = None,
) -> SweepResult:
    """Train ``base`` once per objective into ``out/<mode>-<strength>``; the starting model is
    measured once (every run starts from the same model with the same seed and prompts).
    Interrupted, the finished runs are kept and the message names the strengths to run again
    (and how to resume the one it stopped in, where that kept a checkpoint). ``on_estimate``:
    called with the cost of the whole sweep, once the first run's model is loaded."""
    if base.corpus is None:
        raise ConfigError("corpus", "is needed: a sweep measures on held-out text")
    plan = base.resolve(objective=objectives[0])  # a bad config fails before the folder exists
    if out is not None:
        check_new_dir(out)
    sweep_dir = new_run_dir(out)
    before: Before | None = None
    rows = []
    with RunLock(sweep_dir, fresh=True):
        for n, objective in enumerate(objectives):
            one = replace(plan, train=replace(plan.train, objective=objective))
            # the start-up and the estimate belong to the first run; the later ones reuse its
            # measurement
            first = before is None
            where = sweep_dir / _name(objective)
            try:
                result = run_plan(
                    one,
                    where,
                    progress,
                    before,
                    startup=None if first else 0.0,
                    on_estimate=on_estimate if first else None,
                    runs=len(objectives),
                )
            except Interrupted as e:
                raise Interrupted(_stopped(sweep_dir, objectives, n, e.message)) from e
            before = result.before
            rows.append(SweepRow(result))
        summary = SweepResult(
            init_from=base.init,
            corpus=plan.corpus.label(),
            target=base.target,
            steps=plan.train.steps,
            reference=before.rate_text,
            rows=rows,
            sweep_dir=sweep_dir,
        )
        atomic_write_json(sweep_dir / SWEEP_FILE, summary.to_json())
        write_sweep_report(summary)
    return summary


def _name(objective: Rate | Tilt) -> str:
    return f"{objective.mode}-{objective.strength:g}"


def _stopped(sweep_dir: Path, objectives: list[Rate | Tilt], n: int, inner: str) -> str:
    """What an interrupted sweep kept: the runs before the ``n``-th (finished), that one as
    its own interruption left it (``inner``), and the strengths to run again."""
    flag = "--rates" if objectives[0].mode == "rate" else "--betas"
    again = ",".join(f"{o.strength:g}" for o in objectives[n:])
    finished = [_name(o) for o in objectives[:n]]
    if not finished and not any(p.name != LOCK_FILE for p in sweep_dir.iterdir()):
        shutil.rmtree(sweep_dir, ignore_errors=True)
        return f"{inner}; nothing finished: removed {sweep_dir}"
    kept = f"finished and kept in {sweep_dir}: {', '.join(finished)}" if finished else ""
    return "; ".join(
        part
        for part in (f"{_name(objectives[n])} {inner}", kept, f"to run again: {flag} {again}")
        if part
    )
