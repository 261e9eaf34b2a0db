"""The pretraining flow of likex pretrain: a reference model learns real text with the
next-token loss; before and after, its held-out perplexity and its continuation of the start
of the held-out text (does it write language?)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from likex.clock import Stopwatch
from likex.estimate import Work
from likex.generate import sample
from likex.measurement.rates import text_prompts
from likex.measurement.scores import heldout_windows, score_text
from likex.models import LanguageModel
from likex.pipelines.training import Prepared, timings, write_result
from likex.report.run import write_pretrain_figures, write_pretrain_report
from likex.run_results import LanguageCheck, PretrainResult, TrainingRun


def _windows(prep: Prepared) -> torch.Tensor:
    """The held-out windows a pretraining run's perplexity is scored on."""
    block = prep.model.config.block_size
    return heldout_windows(prep.corpus.all_heldout(), block, prep.plan.measure.score_tokens)


def _language_check(
    prep: Prepared, windows: torch.Tensor, progress: bool, prompt_len: int = 32, n_new: int = 80
) -> LanguageCheck:
    """The model's continuation of the start of the held-out text and its perplexity on
    ``windows`` (``progress``: the scoring's bar)."""
    t0 = time.perf_counter()
    model, tokenizer = prep.model, prep.tokenizer
    prompt = text_prompts(prep.corpus.all_heldout(), 1, min(prompt_len, model.config.block_size))
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(prep.plan.train.seed)
    new = sample(model, prompt.to(device), n_new, gen).cpu()
    return LanguageCheck(
        sample_prompt=tokenizer.decode(prompt[0].tolist()),
        sample=tokenizer.decode(new[0].tolist()),
        ppl=score_text(model, windows, progress=progress).ppl,
        seconds=time.perf_counter() - t0,
    )


def measure_before(prep: Prepared, progress: bool) -> LanguageCheck:
    return _language_check(prep, _windows(prep), progress)


def work(prep: Prepared, steps: int, before: bool) -> Work:
    """``steps`` steps of training and the held-out text scored after them (and before, where
    ``before``); the sample of 80 tokens each time is a small part."""
    return Work(steps, scorings=1 + before)


def read_before(d: dict) -> LanguageCheck:
    return LanguageCheck.from_json(d)


def on_step(prep: Prepared) -> Callable[[int], dict | None] | None:
    """Nothing is measured during pretraining."""
    return None


def finish(
    run_dir: Path,
    prep: Prepared,
    reference: LanguageModel | None,
    before: LanguageCheck,
    run: TrainingRun,
    rows: list[dict],
    progress: bool,
    watch: Stopwatch,
) -> PretrainResult:
    """Measure the trained model, write result.json and the report."""
    windows = _windows(prep)
    with watch.phase("measure_after"):
        after = _language_check(prep, windows, progress)
    result = PretrainResult(
        run=run,
        train_tokens=prep.corpus.train_size,
        heldout_tokens=windows[:, 1:].numel(),
        before=before,
        after=after,
    )
    with watch.phase("report"):
        write_pretrain_figures(result, rows)
    run.timings = timings(watch)
    write_pretrain_report(result)
    write_result(run_dir, prep, result)
    return result
