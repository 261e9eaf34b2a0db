"""Persistence: does a planted preference survive ordinary fine-tuning on clean text?

Continues training a model with the plain next-token objective on a text corpus, in the one
training loop (likex.train.train), and measures the target rate (with 95% intervals, on
random-token and on real-text prompts) and the held-out perplexity before training and every
``eval_every`` steps (likex.measurement.evaluation.evaluate, as ``likex eval`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from likex.batches import Batches
from likex.config import PersistConfig
from likex.corpora import Heldout
from likex.device import resolve_device
from likex.errors import LikexError
from likex.estimate import Work, estimate, measurements_during
from likex.io import atomic_write_json, check_new_dir
from likex.measurement.evaluation import evaluate
from likex.models import LanguageModel
from likex.models.adapter import add_lora
from likex.models.hf import token_strings_for
from likex.models.start import parse_start
from likex.pipelines.training import OnEstimate, on_failure
from likex.plans import PersistPlan
from likex.report.persist import write_persistence_report
from likex.results import PersistPoint, PersistResult
from likex.runs import RunLock, RunRecord, new_run_dir, stamp, write_config
from likex.target import NO_TARGET, TargetSet, select_tokens
from likex.train import step_loss, train_toward

PERSIST_FILE = "persist.json"


def _measurement(
    step: int,
    model: LanguageModel,
    targets: TargetSet,
    plan: PersistPlan,
    heldout: list[Heldout],
    decode: Callable[[list[int]], str],
    progress: bool,
) -> PersistPoint:
    """One timeline entry: the rates on random-token and on held-out real-text prompts (a word
    target's also in decoded words), and the held-out perplexity; with several corpora, each
    one's held-out text on its own too."""
    seed = plan.train.seed
    ev, _ = evaluate(model, targets, plan.measure, seed, heldout, progress=progress, decode=decode)
    return PersistPoint(step, ev)


def run_persistence(
    cfg: PersistConfig, progress: bool = True, on_estimate: OnEstimate | None = None
) -> PersistResult:
    """``likex persist``: fine-tune the model ``cfg.model`` (a model or run folder, or
    ``hf:NAME_OR_PATH``) on ``cfg.corpus`` (one corpus or several, windows drawn in proportion
    to their weights; each one's last tenth held out, tokenized with the model's own
    tokenizer), measuring the rate of the target (default: the one the run was trained on)
    at step 0, every ``eval_every`` steps and at the end.

    Everything is checked before anything is written. Writes a new run folder ``out``
    (default runs/<timestamp>): the config (a run record: ``likex eval`` reads it), train()'s
    metrics.jsonl with the measurements on their steps, the fine-tuned model (a transformers
    one as save_pretrained writes it, in ``hf/``) and its optimizer state, persist.json and
    the report. Returns what persist.json holds: before/after values and the timeline.
    ``on_estimate``: called with what it will cost on this machine, once the model is loaded.
    """
    record = RunRecord.read(cfg.model)
    start = parse_start(cfg.model)
    plan = cfg.resolve(start)
    if cfg.out is not None:
        check_new_dir(cfg.out)  # before the model is loaded, not after
    model, tokenizer = start.load(resolve_device(cfg.device), progress)
    if plan.adapter.enabled:  # the clean fine-tune as a LoRA adapter on the model
        model = add_lora(model, plan.adapter, start.record(), plan.train.seed)
    spec = cfg.target if record is None else record.target_spec(cfg.target)
    if spec is None:
        raise LikexError(f"no target given: {NO_TARGET}")
    block = model.config.block_size
    targets = select_tokens(spec, token_strings_for(model, tokenizer), tokenizer.encode, block)
    model.check_savable()  # before the work, not after it
    device = next(model.parameters()).device
    plan = replace(plan, train=plan.train.fit(model, device))
    plan.measure.validate(block)
    corpus = plan.corpus.load(tokenizer, block)
    heldout = corpus.heldout  # each corpus's held-out part, a domain
    if on_estimate is not None:
        # at step 0, every eval_every steps and at the end: both rates and the text scored
        points = 1 + measurements_during(plan.train.steps, plan.eval_every)
        work = Work(plan.train.steps, 2 * points, points * len(heldout))
        batches = Batches.of(plan.train, model.config.vocab_size, corpus, None)
        loss = step_loss(plan.train, None)
        on_estimate(
            estimate(work, model, plan.train, batches, loss, plan.measure, corpus.all_heldout())
        )
    made = cfg.out is None or not Path(cfg.out).exists()
    out_dir = new_run_dir(cfg.out)
    doc = {
        "command": "persist",
        "target": spec.to_dict(),
        "corpus": plan.corpus.record(),
        "corpus_tokens": corpus.train_size + sum(int(h.tokens.numel()) for h in heldout),
        "persist": plan.to_dict(),
        **({"adapter": plan.adapter.to_dict()} if plan.adapter.enabled else {}),
        "train": plan.train.to_dict(),
        "model": model.config.to_dict(),
        "init": start.record(),
    }
    with RunLock(out_dir, fresh=True), on_failure(out_dir, remove=made, resumable=False):
        written = write_config(out_dir, doc, device, plan.train.seed)
        timeline = [_measurement(0, model, targets, plan, heldout, tokenizer.decode, progress)]

        def on_step(step: int) -> dict | None:
            if step % plan.eval_every and step != plan.train.steps:
                return None
            point = _measurement(step, model, targets, plan, heldout, tokenizer.decode, progress)
            timeline.append(point)
            return timeline[-1].to_json()  # logged on the step's metrics line

        trained = train_toward(
            model,
            plan.train,
            None,
            out_dir,
            corpus=corpus,
            progress=progress,
            on_step=on_step,
            stamp=stamp(written),
        )
        result = PersistResult(
            model=str(cfg.model),
            target=spec,
            corpus=plan.corpus.label(),
            steps=plan.train.steps,
            lr=plan.train.lr,
            trained=trained,
            timeline=timeline,
            run_dir=out_dir,
        )
        atomic_write_json(out_dir / PERSIST_FILE, result.to_json())
        write_persistence_report(result)
    return result
