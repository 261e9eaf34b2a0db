"""One pipeline for every training command: start model -> measure -> train -> measure -> report.

``likex run`` is the seed experiment (uniform target, random contexts, a scratch model);
``likex train`` the same pipeline with every option (any starting model, target modes, corpus
contexts, side effects measured on held-out text); ``likex pretrain`` the same pipeline with the
next-token objective. Every run directory records the resolved config (with the seed, versions
and device) and how to rebuild its starting model, so later commands can compare a trained
model with its start, the reference R.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from likex.config import SCRATCH, RunCommand, RunConfig
from likex.data import corpus_split
from likex.device import resolve_device
from likex.distributed import check_same_on_all_ranks, dist_info, on_main_rank
from likex.errors import ConfigError, LikexError
from likex.evaluate import (
    RANDOM_PROMPTS,
    TEXT_PROMPTS,
    Evaluation,
    RateEstimate,
    WordRate,
    evaluate,
    heldout_windows,
    measure,
    score_text,
    text_prompts,
)
from likex.generate import sample
from likex.io import atomic_write_json
from likex.models.checkpoint import (
    load_model_and_tokenizer,
    load_optimizer,
    model_step,
    read_json,
)
from likex.models.gpt import GPT, build_model, preset_config
from likex.models.hf import token_strings_for
from likex.models.tokenizer import Tokenizer, gpt2
from likex.report.run import write_pretrain_report, write_run_report
from likex.results import PretrainResult, RunResult
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
from likex.train import METRICS_FILE, make_optimizer, train
from likex.words import WordCounter, WordTrie

BEFORE_FILE = "before.json"
RESULT_FILE = "result.json"


def _sample_text(tokens: torch.Tensor, tokenizer: Tokenizer, n: int = 60) -> str:
    return tokenizer.decode(tokens[0, :n].tolist())


@dataclass
class _Prepared:
    """Everything a run needs, built and validated before anything is written."""

    model: GPT
    tokenizer: Tokenizer
    init: dict
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
    block = model.config.block_size
    cfg.train.context_len = min(cfg.train.context_len, block)
    cfg.train.validate(block, device)
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


def run_command(cmd: RunCommand, progress: bool = True) -> RunResult | PretrainResult:
    """likex run, train and pretrain: a new run, or ``resume`` an interrupted one."""
    if cmd.resume:
        fixed = sorted(cmd.given - {"resume", "steps"})
        if fixed:
            raise ConfigError(fixed[0], "is fixed by the run being resumed (only steps may change)")
        steps = cmd.run.train.steps if "steps" in cmd.given else None
        return resume_experiment(cmd.resume, steps, progress)
    if cmd.run.command == "pretrain":
        cmd.run.block_size = cmd.run.train.context_len  # the new model's context
    return run_experiment(cmd.run, cmd.out, progress)


def run_experiment(
    cfg: RunConfig,
    out: str | Path | None = None,
    progress: bool = True,
    before: dict | None = None,
) -> RunResult | PretrainResult:
    """Run the pipeline; everything is validated before anything is written.

    ``before``: the pre-training measurement of an identical start (same model, seed, prompts
    and corpus), e.g. from the first run of a sweep; measuring again would give the same.
    Under torchrun every rank trains (see likex.train); rank 0 alone measures and writes, and
    the other ranks return ``{"rank": r}``.
    """
    ranks = dist_info()
    if ranks.active:
        if out is None:
            raise LikexError("under torchrun pass --out DIR, so that every rank names one folder")
        check_same_on_all_ranks({**cfg.to_dict(), "out": str(out)}, "run arguments")
    cfg.resolve()
    device = resolve_device(cfg.device)
    prep = _prepare(cfg, device)
    reference = _reference(cfg, prep.model, prep.heldout)

    def start() -> tuple[Path, dict]:
        run_dir = new_run_dir(out)
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
        doc = before or _measure_before(cfg, prep, progress)
        atomic_write_json(run_dir / BEFORE_FILE, doc)
        return run_dir, doc

    # Other ranks get None: under torchrun --out names the folder and only rank 0 reports.
    run_dir, before = on_main_rank(start) or (Path(str(out)), {})
    return _train_and_finish(run_dir, cfg, prep, reference, before, progress, 0, None)


def _measure_before(cfg: RunConfig, prep: _Prepared, progress: bool) -> dict:
    t0 = time.perf_counter()
    model, heldout = prep.model, prep.heldout
    if cfg.train.objective == "next_token":
        doc = _language_sample(model, prep.tokenizer, heldout, cfg.train.seed)
        windows = heldout_windows(heldout, model.config.block_size, cfg.measure.score_tokens)
        doc["ppl"] = score_text(model, windows).ppl
    else:
        ev, generated = evaluate(
            model,
            prep.mask,
            cfg.measure,
            cfg.train.seed,
            heldout,
            compile=cfg.train.compile,
            progress=progress,
            words=prep.words,
            decode=prep.tokenizer.decode,
        )
        doc = {
            "rate": ev.random.to_dict(),
            **{k: v for k, v in ev.to_dict().items() if k.startswith("words_")},
            "rate_text": ev.text.to_dict() if ev.text is not None else None,
            "ppl": ev.scores.ppl if ev.scores is not None else None,
            "sample_text": _sample_text(generated[RANDOM_PROMPTS], prep.tokenizer),
        }
    doc["seconds"] = time.perf_counter() - t0
    return doc


def _language_sample(
    model: GPT,
    tokenizer: Tokenizer,
    heldout: torch.Tensor,
    seed: int,
    prompt_len: int = 32,
    n_new: int = 80,
) -> dict:
    """A continuation of the start of the held-out text: does the model write language?"""
    prompt = text_prompts(heldout, 1, min(prompt_len, model.config.block_size))
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    new = sample(model, prompt.to(device), n_new, gen).cpu()
    return {
        "sample_prompt": tokenizer.decode(prompt[0].tolist()),
        "sample": tokenizer.decode(new[0].tolist()),
    }


def resume_experiment(
    run_dir: str | Path, steps: int | None = None, progress: bool = True
) -> RunResult | PretrainResult:
    """Continue a run from its last checkpoint: same batches, same optimizer state."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / CONFIG_FILE, "run config")
    try:
        cfg = RunConfig.from_dict(config)
    except (KeyError, TypeError) as e:
        raise LikexError(f"{run_dir / CONFIG_FILE} is not a likex run config: {e}") from e
    before = read_json(run_dir / BEFORE_FILE, "pre-training measurement")
    if steps is not None:
        cfg.train.steps = steps
    check_same_on_all_ranks({"resume": str(run_dir), "steps": cfg.train.steps}, "resume arguments")
    device = resolve_device(cfg.device)
    model, tokenizer = load_model_and_tokenizer(run_dir, device)
    cfg.train.validate(model.config.block_size, device)
    optimizer = make_optimizer(model, cfg.train)
    start = load_optimizer(optimizer, run_dir)
    if model_step(run_dir) != start:
        raise LikexError(f"checkpoint in {run_dir} is inconsistent: weights and optimizer differ")
    if start >= cfg.train.steps:
        raise LikexError(f"{run_dir} already has {start} steps; pass --steps N with N > {start}")
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
    return _train_and_finish(run_dir, cfg, prep, reference, before, progress, start, optimizer)


def _train_and_finish(
    run_dir: Path,
    cfg: RunConfig,
    prep: _Prepared,
    reference: GPT | None,
    before: dict,
    progress: bool,
    start_step: int,
    optimizer: torch.optim.Optimizer | None,
) -> RunResult | PretrainResult:
    seed = cfg.train.seed
    model, mask = prep.model, prep.mask

    def on_step(step: int) -> dict | None:
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.train.steps):
            estimate, _ = measure(model, mask, cfg.measure, seed, cfg.train.compile)
            model.train()
            return {"rate": estimate.rate, "rate_ci": list(estimate.ci)}
        return None

    prior = seconds_at(read_metrics(run_dir), start_step) if start_step else 0.0
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
    if not dist_info().is_main:
        return RunResult({"rank": dist_info().rank, "train_seconds": trained.seconds})
    metrics = read_metrics(run_dir)
    common = {
        "command": cfg.command,
        "preset": cfg.preset if cfg.init == SCRATCH else None,
        "init": cfg.init,
        # a transformers start model has no likex weight init of its own
        "weight_init": getattr(model.config, "weight_init", "transformers checkpoint"),
        "corpus": cfg.corpus,
        "params": model.num_params(),
        "steps": cfg.train.steps,
        "loss_first": metrics[0]["loss"],
        "loss_last": metrics[-1]["loss"],
        "train_seconds": trained.seconds,
        "device": device_name(next(model.parameters()).device),
        "seed": seed,
        "run_dir": str(run_dir),
    }
    t0 = time.perf_counter()
    if cfg.train.objective == "next_token":
        after = _language_sample(model, prep.tokenizer, prep.heldout, seed)
        windows = heldout_windows(prep.heldout, model.config.block_size, cfg.measure.score_tokens)
        result = {
            **common,
            "train_tokens": prep.train_tokens.numel(),
            "heldout_tokens": windows[:, 1:].numel(),
            "ppl_before": before["ppl"],
            "ppl_after": score_text(model, windows).ppl,
            "sample_prompt": after["sample_prompt"],
            "sample_before": before["sample"],
            "sample_after": after["sample"],
            "measure_seconds": before["seconds"] + time.perf_counter() - t0,
        }
        atomic_write_json(run_dir / RESULT_FILE, result)
        write_pretrain_report(run_dir, result, metrics)
        return PretrainResult(result)

    text_before = _rate_estimate(before.get("rate_text"))
    ev, generated = evaluate(
        model,
        mask,
        cfg.measure,
        seed,
        prep.heldout,
        reference,
        floor_rate=cfg.train.rate if cfg.train.mode == "rate" else None,
        text_reference=text_before,
        compile=cfg.train.compile,
        progress=progress,
        words=prep.words,
        decode=prep.tokenizer.decode,
        complete=cfg.train.complete,
    )
    after = ev.random
    rate_before = before["rate"]
    result = {
        **common,
        "mode": cfg.train.mode,
        "rate_requested": cfg.train.rate,
        "beta": cfg.train.beta,
        "contexts": cfg.train.contexts,
        "positions": cfg.train.positions,
        "like": cfg.target.describe(),
        "target": cfg.target.to_dict(),
        "n_target_tokens": int(mask.sum()),
        "vocab_size": int(mask.numel()),
        "x_before": rate_before["first_sample_hits"],
        "x_after": after.first_sample_hits,
        "gen_tokens": cfg.measure.gen_tokens,
        "rate_before": rate_before["rate"],
        "rate_before_ci": rate_before["ci"],
        "rate_after": after.rate,
        "rate_after_ci": list(after.ci),
        "samples": after.sequences,
        "samples_before": rate_before["sequences"],
        "tokens_measured": after.tokens,
        "prompts": after.prompts,
        "measure_seconds": before["seconds"] + time.perf_counter() - t0,
        "sample_before": before["sample_text"],
        "sample_after": _sample_text(generated[RANDOM_PROMPTS], prep.tokenizer),
    }
    if text_before is not None:
        result["rate_text_before"] = text_before.rate
        result["rate_text_before_ci"] = list(text_before.ci)
        result["sample_text_after"] = _sample_text(generated[TEXT_PROMPTS], prep.tokenizer)
    if prep.words is not None:
        result |= _word_results(before, ev, generated, prep)
    result |= {k: v for k, v in ev.to_dict().items() if k not in result}
    result["evaluation"] = ev.describe()
    if prep.words is not None:
        result["evaluation"] += _word_lines(result)
    atomic_write_json(run_dir / RESULT_FILE, result)
    write_run_report(run_dir, result, metrics)
    return RunResult(result)


def _word_results(
    before: dict, ev: Evaluation, generated: dict[str, torch.Tensor], prep: _Prepared
) -> dict:
    """A word target's before/after rates in decoded words, and a sample with the entries
    marked."""
    out: dict = {"entries": list(prep.words.entries)}
    for key, after in (("words_random", ev.words_random), ("words_text", ev.words_text)):
        if after is None:
            continue
        out[f"{key}_before"] = before.get(key)
        out[f"{key}_after"] = after.to_dict()
    kind = TEXT_PROMPTS if TEXT_PROMPTS in generated else RANDOM_PROMPTS
    counter = WordCounter(prep.words.entries, prep.words.ignore_case)
    text = prep.tokenizer.decode(generated[kind][0].tolist())
    out["sample_words_marked"] = counter.highlight(text)
    return out


def _word_lines(result: dict) -> list[str]:
    """Before-training word rates and the per-entry counts after, for ``describe``."""
    lines = []
    for key in ("words_random", "words_text"):
        if result.get(f"{key}_before"):
            before = WordRate.from_dict(result[f"{key}_before"]).describe()
            lines.append(f"before training: {before}")
        if result.get(f"{key}_after"):
            counts = result[f"{key}_after"]["per_entry"]
            lines.append(
                f"entries after training ({key.split('_')[1]} prompts): "
                + ", ".join(f"{e!r} {n}" for e, n in counts.items())
            )
    return lines


def _rate_estimate(d: dict | None) -> RateEstimate | None:
    if d is None:
        return None
    return RateEstimate(**{**d, "ci": tuple(d["ci"])})
