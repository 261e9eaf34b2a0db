"""What every training command shares: the start model and its data made ready and checked
before anything is written, the training call, and the cleanup of a run that failed.

The commands themselves: likex.pipelines.run (run, train, resume; it picks the flow),
likex.pipelines.plant (training toward a target) and likex.pipelines.pretrain (next-token
pretraining).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from likex.batches import Batches
from likex.clock import Stopwatch
from likex.corpora import CorpusMix, Heldout
from likex.distributed import dist_info
from likex.errors import ConfigError, Interrupted, LikexError, describe_os_error, literal
from likex.estimate import Estimate, Work, estimate
from likex.io import atomic_write_json
from likex.models import LanguageModel
from likex.models.adapter import ADAPTER_DIR, AdaptedLM, add_lora, frozen_start
from likex.models.checkpoint import latest_checkpoint, save_model
from likex.models.hf import token_strings_for
from likex.models.tokenizer import Tokenizer
from likex.plans import RunPlan
from likex.run_results import (
    AdapterSummary,
    PretrainResult,
    RunResult,
    StartModel,
    Timings,
    TrainingRun,
)
from likex.runs import device_name
from likex.target import TargetSet, select_tokens
from likex.train import TrainResult, TrainState, step_loss, train

RESULT_FILE = "result.json"
# what a training command calls with its cost, before it starts (the CLI prints it)
OnEstimate = Callable[[Estimate], None]
MERGED_DIR = "merged"  # --merge: the adapter folded into its base


@dataclass(frozen=True)
class Prepared:
    """Everything a run needs, built and checked before anything is written: the plan fitted
    to the loaded model, the model, its tokenizer, the target set, and the corpus split."""

    plan: RunPlan
    model: LanguageModel
    tokenizer: Tokenizer
    targets: TargetSet
    corpus: CorpusMix | None
    batches: Batches

    @property
    def heldout(self) -> list[Heldout] | None:
        """The held-out part of each corpus (a domain each), where the run has a corpus."""
        return None if self.corpus is None else self.corpus.heldout


def prepare(
    plan: RunPlan,
    device: torch.device,
    loaded: tuple[LanguageModel, Tokenizer] | None = None,
    progress: bool = False,
) -> Prepared:
    """Load the start (or take ``loaded``: a resumed run's checkpoint and its tokenizer) and
    check the plan against it; ``progress``: as ``Start.load``."""
    if plan.corpus is not None:
        plan.corpus.check()  # a bad file is refused before the model loads
    model, tokenizer = plan.start.load(device, progress) if loaded is None else loaded
    if loaded is None and plan.adapter.enabled:
        model = add_lora(model, plan.adapter, plan.start.record(), plan.train.seed)
    model.check_savable()  # before the work, not after it
    block = model.config.block_size
    strings = token_strings_for(model, tokenizer)
    targets = select_tokens(plan.target, strings, tokenizer.encode, block)
    plan = replace(plan, train=plan.train.fit(model, device, targets.words))
    plan.measure.validate(block)
    corpus = None if plan.corpus is None else plan.corpus.load(tokenizer, block)
    train = plan.train
    batches = Batches.of(
        train,
        model.config.vocab_size,
        corpus,
        targets.words,
        start_id=tokenizer.start_id if train.free_contexts else None,
        user_turn=tokenizer.user_turn() if train.chat_contexts else None,
    )
    return Prepared(plan, model, tokenizer, targets, corpus, batches)


def needs_reference(prep: Prepared) -> bool:
    """Whether a run keeps the start model R: its objective's target needs it, or side
    effects are measured (on held-out text) against it."""
    objective = prep.plan.train.objective
    return not objective.next_token and (objective.needs_reference or prep.heldout is not None)


def reference_for(prep: Prepared) -> LanguageModel | None:
    """The frozen start model R where the run needs it, taken before any step: an adapter's
    own base, or a copy of a model that trains whole."""
    return frozen_start(prep.model) if needs_reference(prep) else None


def estimate_run(prep: Prepared, reference: LanguageModel | None, work: Work) -> Estimate:
    """What ``work`` will take for the run ``prep``, timed on its model (likex.estimate); each
    domain's held-out text is scored on its own."""
    plan = prep.plan
    heldout = None if prep.corpus is None else prep.corpus.all_heldout()
    domains = 1 if prep.heldout is None else len(prep.heldout)
    work = Work(work.steps, work.measurements, work.scorings * domains)
    loss = step_loss(plan.train, prep.targets, reference)
    return estimate(work, prep.model, plan.train, prep.batches, loss, plan.measure, heldout)


def train_run(
    run_dir: Path,
    prep: Prepared,
    reference: LanguageModel | None,
    state: TrainState,
    progress: bool,
    watch: Stopwatch,
    on_step: Callable[[int], dict | None] | None = None,
    stamp: Mapping | None = None,
) -> TrainResult:
    """Train ``state`` to the plan's last step, its time split between training and
    checkpoints on ``watch``; ``stamp``: the run's, for each checkpoint (likex.runs.stamp)."""
    plan = prep.plan.train
    loss = step_loss(plan, prep.targets, reference)
    t0 = time.perf_counter()
    trained = train(state, plan, prep.batches, loss, run_dir, progress, on_step, stamp)
    spent = time.perf_counter() - t0
    watch.add("contexts", trained.batch_seconds)
    watch.add("train", spent - trained.checkpoint_seconds - trained.batch_seconds)
    watch.add("checkpoint", trained.checkpoint_seconds)
    return trained


def training_run(prep: Prepared, trained: TrainResult, run_dir: Path) -> TrainingRun:
    """What the run did, for its result: the model trained, how, and where."""
    plan, model = prep.plan, prep.model
    return TrainingRun(
        command=plan.command,
        start=StartModel(
            init_from=plan.init_from,
            preset=plan.preset,
            # a transformers start model has no likex weight init of its own
            weight_init=getattr(model.config, "weight_init", None),
            params=model.num_params(),
        ),
        corpus=plan.corpus,
        steps=plan.train.steps,
        seed=plan.train.seed,
        device=device_name(next(model.parameters()).device),
        trained=trained,
        run_dir=run_dir,
    )


def write_result(run_dir: Path, prep: Prepared, result: RunResult | PretrainResult) -> None:
    """result.json, last: the run finished. Before it, an adapter run records its adapter and
    (``--merge``) writes the base with the adapter folded in, a full model in ``merged/``."""
    if isinstance(prep.model, AdaptedLM):
        folder = run_dir / ADAPTER_DIR
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        summary = AdapterSummary(
            prep.plan.adapter.to_dict(), prep.model.trainable_params(), folder, size
        )
        if prep.plan.adapter.merge:
            save_model(prep.model.merged(), run_dir / MERGED_DIR)
            summary.merged = run_dir / MERGED_DIR
        result.run.adapter = summary
    atomic_write_json(run_dir / RESULT_FILE, result.to_json())


def timings(watch: Stopwatch) -> Timings:
    """The run's timings so far: every phase the stopwatch saw, the total up to now."""
    return Timings(startup=watch.startup, total=watch.total(), **watch.seconds)


@contextlib.contextmanager
def on_failure(
    run_dir: Path, remove: bool = False, resumed: bool = False, resumable: bool = True
) -> Iterator[None]:
    """A failed or interrupted run leaves its folder resumable (a complete checkpoint is
    kept) or removes what it half-wrote (the folder itself where ``remove``: this run made
    it), and says which. A resumed run's folder is never removed; a run that cannot be
    resumed (``resumable`` False: persist) keeps its model at the step it reached. Out of
    memory and system errors (a full disk) become a one-line error like any other; Ctrl-C or
    SIGTERM (likex.interrupt) an ``Interrupted`` that says what was kept or removed."""
    try:
        yield
    except (
        LikexError,
        torch.OutOfMemoryError,
        MemoryError,
        KeyboardInterrupt,
        RuntimeError,
        OSError,
    ) as e:
        if isinstance(e, RuntimeError) and not _out_of_memory(e):
            raise
        if not dist_info().is_main or isinstance(e, Interrupted):
            raise
        kept = _kept_step(run_dir)
        if kept is not None and resumable:
            note = f"{run_dir} is kept: --resume {run_dir} continues from step {kept}"
        elif kept is not None:
            note = f"{run_dir} keeps the model of step {kept} (this command does not resume)"
        elif resumed:
            note = f"{run_dir} is left as it was"
        else:
            trained = (run_dir / "metrics.jsonl").exists()
            shutil.rmtree(run_dir, ignore_errors=True)
            if not remove:
                run_dir.mkdir(parents=True, exist_ok=True)  # the empty folder it was given
            note = f"removed the half-written {run_dir}"
            if isinstance(e, KeyboardInterrupt):
                what = "" if trained else " before training (nothing was trained)"
                raise Interrupted(f"interrupted{what}; {note}") from e
        if isinstance(e, KeyboardInterrupt):
            if kept is not None and resumable:
                note = f"--resume {run_dir} continues from step {kept}"
            raise Interrupted(
                f"interrupted at step {kept}; {note}"
                if kept is not None
                else f"interrupted; {note}"
            ) from e
        if isinstance(e, ConfigError):
            raise ConfigError(e.field, e.message + literal(f"; {note}")) from e
        if isinstance(e, LikexError):
            raise LikexError(f"{e}; {note}") from e
        if isinstance(e, OSError):  # a full disk, no permission, ...
            raise LikexError(f"{describe_os_error(e)}; {note}") from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        message = f"is too large: out of memory ({first}); {note}"
        raise ConfigError("batch_size", literal(message)) from e


def _kept_step(run_dir: Path) -> int | None:
    """The step of the run's newest complete checkpoint; None where it has none."""
    try:
        return latest_checkpoint(run_dir)[1]
    except LikexError:
        return None


def _out_of_memory(e: RuntimeError) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e)
