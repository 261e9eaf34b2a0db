"""One pipeline for every training command: start model -> measure -> train -> measure -> report.

``likex run`` is the seed experiment (uniform target, random contexts, a scratch model);
``likex train`` the same pipeline with every option (any starting model, target modes, corpus
contexts, side effects measured on held-out text); ``likex pretrain`` the same pipeline with the
next-token objective. Every run directory records the resolved config (with the seed, versions
and device) and how to rebuild its starting model, so later commands can compare a trained
model with its start, the reference R.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from likex.clock import Stopwatch, process_age
from likex.config import SCRATCH, RunCommand, RunConfig
from likex.data import corpus_split
from likex.device import resolve_device
from likex.distributed import check_same_on_all_ranks, dist_info, on_main_rank
from likex.errors import ConfigError, LikexError, literal
from likex.evaluate import (
    RANDOM_PROMPTS,
    TEXT_PROMPTS,
    evaluate,
    heldout_windows,
    measure,
    score_text,
    text_prompts,
)
from likex.generate import sample
from likex.io import atomic_write_json
from likex.models.checkpoint import (
    latest_checkpoint,
    load_model_and_tokenizer,
    load_optimizer,
    read_json,
)
from likex.models.gpt import GPT, build_model, preset_config
from likex.models.hf import HFCausalLM, token_strings_for
from likex.models.tokenizer import Tokenizer, gpt2
from likex.report.html import token_pieces, write_html_report
from likex.report.run import (
    write_pretrain_figures,
    write_pretrain_report,
    write_run_figures,
    write_run_report,
)
from likex.results import (
    Before,
    LanguageCheck,
    PretrainResult,
    RankResult,
    RunResult,
    StartModel,
    Timings,
    TrainingRun,
)
from likex.runs import (
    CONFIG_FILE,
    checkpoint_init,
    device_name,
    load_start_model,
    new_run_dir,
    read_metrics,
    scratch_init,
    seconds_at,
    truncate_metrics,
    write_config,
)
from likex.target import TargetSet, select_tokens
from likex.train import METRICS_FILE, TrainResult, make_optimizer, train
from likex.words import WordCounter, WordTrie

BEFORE_FILE = "before.json"
RESULT_FILE = "result.json"


def _sample_text(tokens: torch.Tensor, tokenizer: Tokenizer, n: int = 60) -> str:
    return tokenizer.decode(tokens[0, :n].tolist())


def _sample_pieces(
    tokens: torch.Tensor, tokenizer: Tokenizer, mask: torch.Tensor, n: int = 60
) -> list[tuple[str, bool]]:
    """The same sample as _sample_text, token by token, each marked when it is a target."""
    return token_pieces(tokens[0, :n].tolist(), tokenizer, mask)


@dataclass
class _Prepared:
    """Everything a run needs, built and validated before anything is written."""

    model: GPT
    tokenizer: Tokenizer
    init: dict  # config.json's "init": how to rebuild the start model
    mask: torch.Tensor
    train_tokens: torch.Tensor | None
    heldout: torch.Tensor | None
    words: WordTrie | None = None


def _prepare(cfg: RunConfig, device: torch.device) -> _Prepared:
    if cfg.init == SCRATCH:
        model_cfg = preset_config(
            cfg.preset, weight_init=cfg.weight_init, block_size=cfg.block_size
        )
        model = build_model(model_cfg, cfg.train.seed).to(device)
        tokenizer: Tokenizer = gpt2()
        init = scratch_init(model_cfg, cfg.train.seed)
    else:
        model, tokenizer = load_model_and_tokenizer(cfg.init, device)
        init = checkpoint_init(cfg.init)
    if isinstance(model, HFCausalLM):
        model.check_savable()  # before the work, not after it
    block = model.config.block_size
    cfg.train.context_len = min(cfg.train.context_len, block)
    cfg.train.validate(block, device)
    cfg.train.check_memory(model, device)
    cfg.measure.validate(block)
    targets = _targets(cfg, model, tokenizer)
    train_tokens = heldout = None
    if cfg.corpus is not None:
        train_tokens, heldout = corpus_split(cfg.corpus, tokenizer, block)
    return _Prepared(model, tokenizer, init, targets.mask, train_tokens, heldout, targets.words)


def _targets(cfg: RunConfig, model: GPT, tokenizer: Tokenizer) -> TargetSet:
    strings = token_strings_for(model, tokenizer)
    return select_tokens(cfg.target, strings, tokenizer.encode, model.config.block_size)


def _reference(cfg: RunConfig, model: GPT, heldout: torch.Tensor | None) -> GPT | None:
    """The frozen start model R, when a target needs it or side effects are measured."""
    if cfg.train.objective != "kl" or (cfg.train.mode == "uniform" and heldout is None):
        return None
    return copy.deepcopy(model).eval().requires_grad_(False)


def run_command(
    cmd: RunCommand, progress: bool = True
) -> RunResult | PretrainResult | RankResult:
    """likex run, train and pretrain: a new run, or ``resume`` an interrupted one."""
    if cmd.resume:
        fixed = sorted(cmd.given - {"resume", "steps"})
        if fixed:
            raise ConfigError(
                fixed[0], "is fixed by the run being resumed (only steps may change)"
            )
        steps = cmd.run.train.steps if "steps" in cmd.given else None
        return resume_experiment(cmd.resume, steps, progress)
    if cmd.run.command == "pretrain":
        cmd.run.block_size = cmd.run.train.context_len  # the new model's context
    return run_experiment(cmd.run, cmd.out, progress)


def run_experiment(
    cfg: RunConfig,
    out: str | Path | None = None,
    progress: bool = True,
    before: Before | None = None,
    startup: float | None = None,
) -> RunResult | PretrainResult | RankResult:
    """Run the pipeline; everything is validated before anything is written.

    ``before``: the pre-training measurement of an identical start (same model, seed, prompts
    and corpus), e.g. from the first run of a sweep; measuring again would give the same.
    ``startup``: the seconds before this pipeline that its timings count (default: the age of
    the process, likex.clock.process_age; a sweep's later runs pass 0).
    Under torchrun every rank trains (see likex.train); rank 0 alone measures and writes, and
    the other ranks return a ``RankResult``.
    """
    watch = Stopwatch(process_age() if startup is None else startup)
    ranks = dist_info()
    if ranks.active:
        if out is None:
            raise LikexError("under torchrun pass --out DIR, so that every rank names one folder")
        check_same_on_all_ranks({**cfg.to_dict(), "out": str(out)}, "run arguments")
    cfg.resolve()
    device = resolve_device(cfg.device)
    with watch.phase("model"):
        prep = _prepare(cfg, device)
        reference = _reference(cfg, prep.model, prep.heldout)

    made = out is None or not Path(out).exists()
    # Other ranks get None: under torchrun --out names the folder and only rank 0 reports.
    run_dir = on_main_rank(lambda: new_run_dir(out)) or Path(str(out))

    def start() -> Before | LanguageCheck:
        write_config(
            run_dir,
            {
                **cfg.to_dict(),
                "model": prep.model.config.to_dict(),
                "init": prep.init,
                "world_size": ranks.world_size,
            },
            device,
            cfg.train.seed,
        )
        measured = before
        if measured is None:
            with watch.phase("measure_before"):
                measured = _measure_before(cfg, prep, progress)
        atomic_write_json(run_dir / BEFORE_FILE, measured.to_json())
        return measured

    with _on_failure(run_dir, remove=made):
        measured = on_main_rank(start)
        return _train_and_finish(
            run_dir, cfg, prep, reference, measured, progress, 0, None, watch
        )


@contextlib.contextmanager
def _on_failure(run_dir: Path, remove: bool = False) -> Iterator[None]:
    """A failed run leaves its folder resumable (a complete checkpoint is kept) or removes what
    it half-wrote (the folder itself where ``remove``: this run made it), and says which. Out
    of memory becomes a one-line error like any other."""
    try:
        yield
    except (LikexError, torch.OutOfMemoryError, MemoryError, KeyboardInterrupt, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not _out_of_memory(e):
            raise
        if not dist_info().is_main:
            raise
        try:
            _, step = latest_checkpoint(run_dir)
            note = f"; {run_dir} is kept: --resume {run_dir} continues from step {step}"
        except LikexError:
            shutil.rmtree(run_dir, ignore_errors=True)
            if not remove:
                run_dir.mkdir(parents=True, exist_ok=True)  # the empty folder it was given
            note = f"; removed the half-written {run_dir}"
        if isinstance(e, KeyboardInterrupt):
            raise
        if isinstance(e, ConfigError):
            raise ConfigError(e.field, e.message + literal(note)) from e
        if isinstance(e, LikexError):
            raise LikexError(f"{e}{note}") from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        message = f"is too large: out of memory ({first}){note}"
        raise ConfigError("batch_size", literal(message)) from e


def _out_of_memory(e: RuntimeError) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e)


def _measure_before(cfg: RunConfig, prep: _Prepared, progress: bool) -> Before | LanguageCheck:
    if cfg.train.objective == "next_token":
        return _language_check(cfg, prep, _windows(cfg, prep))
    t0 = time.perf_counter()
    ev, generated = evaluate(
        prep.model,
        prep.mask,
        cfg.measure,
        cfg.train.seed,
        prep.heldout,
        compile=cfg.train.compile,
        progress=progress,
        words=prep.words,
        decode=prep.tokenizer.decode,
    )
    return Before(
        rate=ev.random,
        rate_text=ev.text,
        ppl=ev.scores.ppl if ev.scores is not None else None,
        sample_text=_sample_text(generated[RANDOM_PROMPTS], prep.tokenizer),
        sample_pieces=_sample_pieces(generated[RANDOM_PROMPTS], prep.tokenizer, prep.mask),
        seconds=time.perf_counter() - t0,
        words_random=ev.words_random,
        words_text=ev.words_text,
    )


def _marked_sample(generated: dict[str, torch.Tensor], prep: _Prepared) -> str | None:
    """A word target's first sample after training (after a real-text prompt when there is
    one), its entries marked."""
    if prep.words is None:
        return None
    kind = TEXT_PROMPTS if TEXT_PROMPTS in generated else RANDOM_PROMPTS
    counter = WordCounter(prep.words.entries, prep.words.ignore_case)
    return counter.highlight(prep.tokenizer.decode(generated[kind][0].tolist()))


def _windows(cfg: RunConfig, prep: _Prepared) -> torch.Tensor:
    """The held-out windows a pretraining run's perplexity is scored on."""
    return heldout_windows(prep.heldout, prep.model.config.block_size, cfg.measure.score_tokens)


def _language_check(
    cfg: RunConfig, prep: _Prepared, windows: torch.Tensor, prompt_len: int = 32, n_new: int = 80
) -> LanguageCheck:
    """The model's continuation of the start of the held-out text (does it write language?)
    and its perplexity on ``windows``."""
    t0 = time.perf_counter()
    model, tokenizer = prep.model, prep.tokenizer
    prompt = text_prompts(prep.heldout, 1, min(prompt_len, model.config.block_size))
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed)
    new = sample(model, prompt.to(device), n_new, gen).cpu()
    return LanguageCheck(
        sample_prompt=tokenizer.decode(prompt[0].tolist()),
        sample=tokenizer.decode(new[0].tolist()),
        ppl=score_text(model, windows).ppl,
        seconds=time.perf_counter() - t0,
    )


def resume_experiment(
    run_dir: str | Path, steps: int | None = None, progress: bool = True
) -> RunResult | PretrainResult | RankResult:
    """Continue a run from its last checkpoint: same batches, same optimizer state."""
    watch = Stopwatch(process_age())
    run_dir = Path(run_dir)
    config = read_json(run_dir / CONFIG_FILE, "run config")
    try:
        cfg = RunConfig.from_dict(config)
    except (KeyError, TypeError) as e:
        raise LikexError(f"{run_dir / CONFIG_FILE} is not a likex run config: {e}") from e
    measured = read_json(run_dir / BEFORE_FILE, "pre-training measurement")
    before = (LanguageCheck if cfg.train.objective == "next_token" else Before).from_json(measured)
    if steps is not None:
        cfg.train.steps = steps
    check_same_on_all_ranks({"resume": str(run_dir), "steps": cfg.train.steps}, "resume arguments")
    device = resolve_device(cfg.device)
    checkpoint, start = latest_checkpoint(run_dir)
    if start > cfg.train.steps or (start == cfg.train.steps and (run_dir / RESULT_FILE).exists()):
        raise LikexError(f"{run_dir} already has {start} steps; pass --steps N with N > {start}")
    with watch.phase("model"):
        model, tokenizer = load_model_and_tokenizer(checkpoint, device)
        cfg.train.validate(model.config.block_size, device)
        optimizer = make_optimizer(model, cfg.train)
        load_optimizer(optimizer, checkpoint)
        train_tokens = heldout = None
        if cfg.corpus is not None:
            train_tokens, heldout = corpus_split(cfg.corpus, tokenizer, model.config.block_size)
        reference = None
        if cfg.train.objective == "kl" and (cfg.train.mode != "uniform" or heldout is not None):
            reference = _reference(cfg, load_start_model(run_dir, device), heldout)
        targets = _targets(cfg, model, tokenizer)

    def restart() -> None:
        truncate_metrics(run_dir / METRICS_FILE, start)
        config["train"] = cfg.train.to_dict()
        atomic_write_json(run_dir / CONFIG_FILE, config)

    on_main_rank(restart)
    prep = _Prepared(
        model, tokenizer, config["init"], targets.mask, train_tokens, heldout, targets.words
    )
    with _on_failure(run_dir):
        return _train_and_finish(
            run_dir, cfg, prep, reference, before, progress, start, optimizer, watch
        )


def _train_and_finish(
    run_dir: Path,
    cfg: RunConfig,
    prep: _Prepared,
    reference: GPT | None,
    before: Before | LanguageCheck | None,
    progress: bool,
    start_step: int,
    optimizer: torch.optim.Optimizer | None,
    watch: Stopwatch,
) -> RunResult | PretrainResult | RankResult:
    """Train, then on rank 0 measure, write result.json and the report; ``before`` is the
    start's measurement (None on the other ranks); ``watch`` times the phases."""
    seed = cfg.train.seed
    model, mask = prep.model, prep.mask

    def on_step(step: int) -> dict | None:
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.train.steps):
            estimate, _ = measure(model, mask, cfg.measure, seed, cfg.train.compile)
            model.train()
            return {"rate": estimate.rate, "rate_ci": list(estimate.ci)}
        return None

    prior = seconds_at(read_metrics(run_dir), start_step) if start_step else 0.0
    t0 = time.perf_counter()
    trained = train(
        model,
        cfg.train,
        mask,
        run_dir,
        reference=reference,
        corpus_tokens=prep.train_tokens,
        optimizer=optimizer,
        start_step=start_step,
        progress=progress,
        on_step=on_step if cfg.train.objective == "kl" else None,
        seconds_before=prior,
        words=prep.words,
    )
    watch.add("train", time.perf_counter() - t0 - trained.checkpoint_seconds)
    watch.add("checkpoint", trained.checkpoint_seconds)
    if not dist_info().is_main:
        return RankResult(dist_info().rank, trained.seconds)
    metrics = read_metrics(run_dir)
    run = TrainingRun(
        command=cfg.command,
        start=StartModel(
            init_from=cfg.init,
            preset=cfg.preset if cfg.init == SCRATCH else None,
            # a transformers start model has no likex weight init of its own
            weight_init=getattr(model.config, "weight_init", None),
            params=model.num_params(),
        ),
        corpus=cfg.corpus,
        steps=cfg.train.steps,
        seed=seed,
        device=device_name(next(model.parameters()).device),
        # the losses of the whole run (a resumed one's earlier steps too)
        trained=TrainResult([m["loss"] for m in metrics], trained.seconds),
        run_dir=run_dir,
    )
    if cfg.train.objective == "next_token":
        windows = _windows(cfg, prep)
        with watch.phase("measure_after"):
            after = _language_check(cfg, prep, windows)
        result: RunResult | PretrainResult = PretrainResult(
            run=run,
            train_tokens=prep.train_tokens.numel(),
            heldout_tokens=windows[:, 1:].numel(),
            before=before,
            after=after,
        )
        with watch.phase("report"):
            write_pretrain_figures(result, metrics)
        run.timings = _timings(watch)
        write_pretrain_report(result)
        atomic_write_json(run_dir / RESULT_FILE, result.to_json())  # last: the run finished
        return result

    t0 = time.perf_counter()
    ev, generated = evaluate(
        model,
        mask,
        cfg.measure,
        seed,
        prep.heldout,
        reference,
        floor_rate=cfg.train.rate if cfg.train.mode == "rate" else None,
        text_reference=before.rate_text,
        compile=cfg.train.compile,
        progress=progress,
        words=prep.words,
        decode=prep.tokenizer.decode,
        complete=cfg.train.complete,
    )
    result = RunResult(
        run=run,
        mode=cfg.train.mode,
        rate_requested=cfg.train.rate,
        beta=cfg.train.beta,
        contexts=cfg.train.contexts,
        positions=cfg.train.positions,
        target=cfg.target,
        n_target_tokens=int(mask.sum()),
        vocab_size=int(mask.numel()),
        before=before,
        after=ev,
        sample_after=_sample_text(generated[RANDOM_PROMPTS], prep.tokenizer),
        sample_text_after=(
            _sample_text(generated[TEXT_PROMPTS], prep.tokenizer)
            if TEXT_PROMPTS in generated
            else None
        ),
        measure_seconds=before.seconds + time.perf_counter() - t0,
        sample_words_marked=_marked_sample(generated, prep),
    )
    watch.add("measure_after", time.perf_counter() - t0)
    with watch.phase("report"):
        write_run_figures(result, metrics)
    run.timings = _timings(watch)
    write_run_report(result)
    after_pieces = _sample_pieces(generated[RANDOM_PROMPTS], prep.tokenizer, mask)
    write_html_report(result, after_pieces)
    atomic_write_json(run_dir / RESULT_FILE, result.to_json())  # last: the run finished
    return result


def _timings(watch: Stopwatch) -> Timings:
    """The run's timings so far: every phase the stopwatch saw, the total up to now."""
    return Timings(startup=watch.startup, total=watch.total(), **watch.seconds)
