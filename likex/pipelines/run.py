"""likex run, train and pretrain: start model -> measure -> train -> measure -> report.

``likex run`` is the seed experiment (uniform target, random contexts, a scratch model);
``likex train`` the same pipeline with every option (any starting model, target modes, corpus
contexts, side effects measured on held-out text); ``likex pretrain`` the same pipeline with the
next-token objective. What is measured and reported is the flow's: likex.pipelines.plant for a
designed target, likex.pipelines.pretrain for next-token training. Every run folder records its
resolved plan (with the seed, versions and device) and how to rebuild its starting model, so
later commands can compare a trained model with its start, the reference R.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import torch

from likex.clock import Stopwatch, process_age
from likex.config import RunCommand, RunConfig
from likex.device import resolve_device
from likex.distributed import check_same_on_all_ranks, dist_info, on_main_rank
from likex.errors import ConfigError, LikexError
from likex.io import atomic_write_json, check_new_dir
from likex.models import LanguageModel
from likex.models.adapter import own_base
from likex.models.checkpoint import load_contexts, load_optimizer
from likex.models.start import load_model_and_tokenizer
from likex.pipelines import plant, pretrain
from likex.pipelines.training import (
    RESULT_FILE,
    OnEstimate,
    Prepared,
    estimate_run,
    needs_reference,
    on_failure,
    prepare,
    reference_for,
    train_run,
    training_run,
)
from likex.plans import RunPlan
from likex.run_results import Before, LanguageCheck, PretrainResult, RankResult, RunResult
from likex.runs import (
    BEFORE_FILE,
    RunLock,
    RunRecord,
    new_run_dir,
    read_before,
    read_metrics,
    record_run,
    seconds_at,
    stamp,
    truncate_metrics,
)
from likex.train import METRICS_FILE, TrainState, make_optimizer


def _flow(plan: RunPlan) -> ModuleType:
    """What a run measures and reports: next-token pretraining's, or a designed target's."""
    return pretrain if plan.train.objective.next_token else plant


def run_command(
    cmd: RunCommand, progress: bool = True, on_estimate: OnEstimate | None = None
) -> RunResult | PretrainResult | RankResult:
    """likex run, train and pretrain: a new run, or ``resume`` an interrupted one.
    ``on_estimate``: called with what the run will cost, before it starts (``run_plan``)."""
    if cmd.resume:
        fixed = sorted(cmd.given - {"resume", "steps"})
        if fixed:
            raise ConfigError(fixed[0], "is fixed by the run being resumed (only steps may change)")
        steps = cmd.run.train.steps if "steps" in cmd.given else None
        return resume_experiment(cmd.resume, steps, progress, on_estimate)
    cfg = cmd.config()
    if cfg.command == "pretrain":  # the training window is the new model's context
        cfg = replace(cfg, block_size=cfg.train.context_len)
    return run_experiment(cfg, cmd.out, progress, on_estimate=on_estimate)


def run_experiment(
    cfg: RunConfig,
    out: str | Path | None = None,
    progress: bool = True,
    before: Before | None = None,
    startup: float | None = None,
    on_estimate: OnEstimate | None = None,
) -> RunResult | PretrainResult | RankResult:
    """Resolve ``cfg`` and run it (``run_plan``)."""
    return run_plan(cfg.resolve(), out, progress, before, startup, on_estimate)


def run_plan(
    plan: RunPlan,
    out: str | Path | None = None,
    progress: bool = True,
    before: Before | None = None,
    startup: float | None = None,
    on_estimate: OnEstimate | None = None,
    runs: int = 1,
) -> RunResult | PretrainResult | RankResult:
    """Run the pipeline; everything is checked before anything is written.

    ``before``: the pre-training measurement of an identical start (same model, seed, prompts
    and corpus), e.g. from the first run of a sweep; measuring again would give the same.
    ``startup``: the seconds before this pipeline that its timings count (default: the age of
    the process, likex.clock.process_age; a sweep's later runs pass 0).
    ``on_estimate``: called, once the model is loaded and before anything is measured, with
    what the run will cost on this machine (likex.estimate), and that of ``runs - 1`` more
    like it that reuse its ``before`` (a sweep's other strengths).
    Under torchrun every rank trains (see likex.train); rank 0 alone measures and writes, and
    the other ranks return a ``RankResult``.
    """
    watch = Stopwatch(process_age() if startup is None else startup)
    ranks = dist_info()
    if ranks.active:
        if out is None:
            raise LikexError("under torchrun pass --out DIR, so that every rank names one folder")
        check_same_on_all_ranks({**plan.to_dict(), "out": str(out)}, "run arguments")
    if out is not None and ranks.is_main:
        check_new_dir(out)  # before the model is loaded, not after
    device = resolve_device(plan.device)
    with watch.phase("model"):
        prep = prepare(plan, device, progress=progress)
        reference = reference_for(prep)
    flow = _flow(plan)
    _announce(prep, reference, on_estimate, plan.train.steps, before is None, runs)
    made = out is None or not Path(out).exists()
    # Other ranks get None: under torchrun --out names the folder and only rank 0 reports.
    run_dir = on_main_rank(lambda: new_run_dir(out)) or Path(str(out))
    doc: dict = {}

    def start() -> Before | LanguageCheck:
        doc.update(record_run(run_dir, prep.plan, prep.model, device, ranks.world_size))
        measured = before
        if measured is None:
            with watch.phase("measure_before"):
                measured = flow.measure_before(prep, progress)
        atomic_write_json(run_dir / BEFORE_FILE, measured.to_json())
        return measured

    lock = RunLock(run_dir, fresh=True) if ranks.is_main else contextlib.nullcontext()
    with lock, on_failure(run_dir, remove=made):
        measured = on_main_rank(start)
        state = TrainState.start(prep.model, prep.plan.train)
        return _train_and_finish(
            run_dir, prep, reference, measured, state, progress, watch, stamp(doc) if doc else None
        )


def resume_experiment(
    run_dir: str | Path,
    steps: int | None = None,
    progress: bool = True,
    on_estimate: OnEstimate | None = None,
) -> RunResult | PretrainResult | RankResult:
    """Continue a run from its last checkpoint: same batches, same optimizer state. The run
    folder is locked first, then every file it is resumed from is checked. ``on_estimate``:
    as ``run_plan``'s, for the steps left."""
    watch = Stopwatch(process_age())
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LikexError(f"run folder not found: {run_dir}")
    lock = RunLock(run_dir) if dist_info().is_main else contextlib.nullcontext()
    with lock:
        return _resume(run_dir, steps, progress, watch, on_estimate)


def _resume(
    run_dir: Path,
    steps: int | None,
    progress: bool,
    watch: Stopwatch,
    on_estimate: OnEstimate | None,
) -> RunResult | PretrainResult | RankResult:
    record = RunRecord.load(run_dir)
    if record.plan is None:
        raise LikexError(f"{run_dir} is a likex {record.command} run: only training runs resume")
    plan = record.plan
    if steps is not None:
        plan = replace(plan, train=plan.train.with_steps(steps))
    flow = _flow(plan)
    before = read_before(run_dir, flow.read_before)
    rows = read_metrics(run_dir)  # checked before anything is changed
    check_same_on_all_ranks({"resume": str(run_dir), "steps": plan.train.steps}, "resume arguments")
    device = resolve_device(plan.device)
    checkpoint, start = record.checkpoint(run_dir)
    if start > plan.train.steps or (start == plan.train.steps and (run_dir / RESULT_FILE).exists()):
        raise LikexError(f"{run_dir} already has {start} steps; pass --steps N with N > {start}")
    resumed = record.with_plan(plan)
    rows = [m for m in rows if m["step"] <= start]
    with on_failure(run_dir, resumed=True):
        with watch.phase("model"):
            prep = prepare(plan, device, load_model_and_tokenizer(checkpoint, device))
            optimizer = make_optimizer(prep.model, prep.plan.train)
            load_optimizer(optimizer, checkpoint)
            reference = _start_reference(record, prep, device)
        _announce(prep, reference, on_estimate, plan.train.steps - start, before=False)

        def restart() -> None:
            truncate_metrics(run_dir / METRICS_FILE, start)
            resumed.save(run_dir)

        on_main_rank(restart)
        contexts = load_contexts(checkpoint)
        state = TrainState(prep.model, optimizer, start, seconds_at(rows, start), rows, contexts)
        return _train_and_finish(
            run_dir, prep, reference, before, state, progress, watch, stamp(resumed.doc)
        )


def _announce(
    prep: Prepared,
    reference: LanguageModel | None,
    on_estimate: OnEstimate | None,
    steps: int,
    before: bool,
    runs: int = 1,
) -> None:
    """Call ``on_estimate`` (where given, on rank 0) with what ``runs`` runs of ``steps``
    steps will cost, the start measured first where ``before``."""
    if on_estimate is None or not dist_info().is_main:
        return
    flow = _flow(prep.plan)
    work = flow.work(prep, steps, before) + flow.work(prep, steps, False) * (runs - 1)
    on_estimate(estimate_run(prep, reference, work))


def _start_reference(
    record: RunRecord, prep: Prepared, device: torch.device
) -> LanguageModel | None:
    """R of a resumed run: its recorded start, where the objective needs it or side effects
    are measured (the checkpoint is no longer the start)."""
    if not needs_reference(prep):
        return None
    own = own_base(prep.model)  # an adapter's checkpoint holds its base unchanged
    reference = own if own is not None else record.start.load(device)[0]
    return reference.eval().requires_grad_(False)


def _train_and_finish(
    run_dir: Path,
    prep: Prepared,
    reference: LanguageModel | None,
    before: Before | LanguageCheck | None,
    state: TrainState,
    progress: bool,
    watch: Stopwatch,
    run_stamp: dict | None,
) -> RunResult | PretrainResult | RankResult:
    """Train, then on rank 0 measure, write result.json and the report; ``before`` is the
    start's measurement (None on the other ranks); ``watch`` times the phases; ``run_stamp``
    goes into each checkpoint's manifest (likex.runs.stamp)."""
    flow = _flow(prep.plan)
    on_step = flow.on_step(prep)
    trained = train_run(run_dir, prep, reference, state, progress, watch, on_step, run_stamp)
    if not dist_info().is_main:
        return RankResult(dist_info().rank, trained.seconds)
    run = training_run(prep, trained, run_dir)
    return flow.finish(run_dir, prep, reference, before, run, state.rows, progress, watch)
