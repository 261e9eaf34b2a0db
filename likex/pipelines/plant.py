"""The planting flow of likex run and train: measure the start, (train), measure again, report.

Rates are measured on random-token prompts (the seed's) and, with a corpus, on held-out
real-text prompts, with the side effects against the start model R there (likex.measurement).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from likex.clock import Stopwatch
from likex.estimate import Work, measurements_during
from likex.measurement.evaluation import evaluate
from likex.measurement.rates import PromptKind, measure
from likex.models import LanguageModel
from likex.models.tokenizer import Tokenizer
from likex.pipelines.training import Prepared, timings, write_result
from likex.report.html import token_pieces, write_html_report
from likex.report.run import write_run_figures, write_run_report
from likex.run_results import Before, RunResult, TrainingRun
from likex.words import WordCounter


def _sample_text(tokens: torch.Tensor, tokenizer: Tokenizer, n: int = 60) -> str:
    return tokenizer.decode(tokens[0, :n].tolist())


def _sample_pieces(
    tokens: torch.Tensor, tokenizer: Tokenizer, mask: torch.Tensor, n: int = 60
) -> list[tuple[str, bool]]:
    """The same sample as _sample_text, token by token, each marked when it is a target."""
    return token_pieces(tokens[0, :n].tolist(), tokenizer, mask)


def measure_before(prep: Prepared, progress: bool) -> Before:
    """The start model's rates (and, with a corpus, its held-out perplexity)."""
    t0 = time.perf_counter()
    plan = prep.plan
    ev, generated = evaluate(
        prep.model,
        prep.targets,
        plan.measure,
        plan.train.seed,
        prep.heldout,
        compile=plan.train.compile,
        progress=progress,
        decode=prep.tokenizer.decode,
    )
    sample = generated[PromptKind.RANDOM]
    return Before(
        rate=ev.random,
        rate_text=ev.text,
        ppl=ev.scores.ppl if ev.scores is not None else None,
        sample_text=_sample_text(sample, prep.tokenizer),
        sample_pieces=_sample_pieces(sample, prep.tokenizer, prep.targets.mask),
        seconds=time.perf_counter() - t0,
        words_random=ev.words_random,
        words_text=ev.words_text,
        domains=ev.domains if len(ev.domains) > 1 else [],
    )


def work(prep: Prepared, steps: int, before: bool) -> Work:
    """What measuring (the start too where ``before``) and ``steps`` steps of training take:
    the rate on random-token prompts, with a corpus also on real-text prompts and the
    held-out text scored (after training against the start R too)."""
    text = prep.heldout is not None
    passes = 2 if before else 1
    during = measurements_during(steps, prep.plan.eval_every)
    scorings = (before + 2) if text else 0
    return Work(steps, passes * (1 + text) + during, scorings)


def read_before(d: dict) -> Before:
    return Before.from_json(d)


def on_step(prep: Prepared) -> Callable[[int], dict | None] | None:
    """With ``--eval-every N``: the rate on random-token prompts every N steps, logged on the
    step's metrics line."""
    plan = prep.plan
    if not plan.eval_every:
        return None

    def rate_at(step: int) -> dict | None:
        if step % plan.eval_every and step != plan.train.steps:
            return None
        mask, model = prep.targets.mask, prep.model
        estimate, _ = measure(model, mask, plan.measure, plan.train.seed, plan.train.compile)
        model.train()
        return {"rate": estimate.rate, "rate_ci": list(estimate.ci)}

    return rate_at


def _marked_sample(generated: dict[PromptKind, torch.Tensor], prep: Prepared) -> str | None:
    """A word target's first sample after training (after a real-text prompt when there is
    one), its entries marked."""
    words = prep.targets.words
    if words is None:
        return None
    kind = PromptKind.TEXT if PromptKind.TEXT in generated else PromptKind.RANDOM
    counter = WordCounter(words.entries, words.ignore_case)
    return counter.highlight(prep.tokenizer.decode(generated[kind][0].tolist()))


def finish(
    run_dir: Path,
    prep: Prepared,
    reference: LanguageModel | None,
    before: Before,
    run: TrainingRun,
    rows: list[dict],
    progress: bool,
    watch: Stopwatch,
) -> RunResult:
    """Measure the trained model against R, write result.json and the reports."""
    plan = prep.plan
    t0 = time.perf_counter()
    ev, generated = evaluate(
        prep.model,
        prep.targets,
        plan.measure,
        plan.train.seed,
        prep.heldout,
        reference,
        projection=plan.train.objective.projection(),
        text_reference=before.rate_text,
        compile=plan.train.compile,
        progress=progress,
        decode=prep.tokenizer.decode,
        domain_references=[d.text for d in before.domains],
    )
    random, text = generated[PromptKind.RANDOM], generated.get(PromptKind.TEXT)
    result = RunResult(
        run=run,
        objective=plan.train.objective,
        contexts=plan.train.contexts,
        positions=plan.train.positions,
        target=plan.target,
        n_target_tokens=prep.targets.n_tokens,
        vocab_size=prep.targets.vocab_size,
        before=before,
        after=ev,
        sample_after=_sample_text(random, prep.tokenizer),
        sample_text_after=None if text is None else _sample_text(text, prep.tokenizer),
        measure_seconds=before.seconds + time.perf_counter() - t0,
        sample_words_marked=_marked_sample(generated, prep),
    )
    watch.add("measure_after", time.perf_counter() - t0)
    with watch.phase("report"):
        write_run_figures(result, rows)
    run.timings = timings(watch)
    write_run_report(result)
    write_html_report(result, _sample_pieces(random, prep.tokenizer, prep.targets.mask))
    write_result(run_dir, prep, result)
    return result
