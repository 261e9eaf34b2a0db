"""Persistence: does a planted preference survive ordinary fine-tuning on clean text?

Continues training a model with the plain next-token objective on a text corpus, in the one
training loop (likex.train.train), and measures the target rate (with 95% intervals, on
random-token and on real-text prompts) and the held-out perplexity before training and every
``eval_every`` steps (likex.evaluate.evaluate, as ``likex eval`` does).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from likex.config import PersistConfig
from likex.data import corpus_token_ids, split_heldout
from likex.device import resolve_device
from likex.evaluate import evaluate
from likex.io import atomic_write_json
from likex.models.checkpoint import load_model_and_tokenizer
from likex.models.gpt import GPT
from likex.models.hf import HFCausalLM, token_strings_for
from likex.report.persist import write_persistence_report
from likex.results import PersistPoint, PersistResult
from likex.runs import checkpoint_init, new_run_dir, run_target, write_config
from likex.target import TargetSet, select_tokens
from likex.train import train

PERSIST_FILE = "persist.json"


def _measurement(
    step: int,
    model: GPT,
    targets: TargetSet,
    cfg: PersistConfig,
    heldout: torch.Tensor,
    decode: Callable[[list[int]], str],
) -> PersistPoint:
    """One timeline entry: the rates on random-token and on held-out real-text prompts (a word
    target's also in decoded words), and the held-out perplexity."""
    ev, _ = evaluate(
        model, targets.mask, cfg.measure, cfg.seed, heldout, words=targets.words, decode=decode
    )
    return PersistPoint(step, ev)


def run_persistence(cfg: PersistConfig, progress: bool = True) -> PersistResult:
    """``likex persist``: fine-tune the model ``model_dir`` (a model or run folder, or
    ``hf:NAME_OR_PATH``) on ``corpus`` (its last tenth held out, tokenized with the model's
    own tokenizer), measuring the rate of target ``spec`` (default: the one the run was
    trained on) at step 0, every ``eval_every`` steps and at the end.

    Everything is validated before anything is written. Writes a new run folder ``out``
    (default runs/<timestamp>): the config, train()'s metrics.jsonl with the measurements on
    their steps, the fine-tuned model (a transformers one as save_pretrained writes it, in
    ``hf/``) and its optimizer state, persist.json and the report.
    Returns what persist.json holds: before/after values and the timeline of measurements.
    """
    model_dir, corpus = cfg.model, cfg.corpus
    model, tokenizer = load_model_and_tokenizer(model_dir, resolve_device(cfg.device))
    spec = cfg.target if cfg.target is not None else run_target(model_dir)
    block = model.config.block_size
    targets = select_tokens(spec, token_strings_for(model, tokenizer), tokenizer.encode, block)
    pretrained = isinstance(model, HFCausalLM)
    if pretrained:
        model.check_savable()  # before the work, not after it
    cfg.resolve(block, pretrained)
    cfg.validate(block)
    train_cfg = cfg.train_config()
    corpus_tokens = corpus_token_ids(corpus, tokenizer)
    train_tokens, heldout = split_heldout(corpus_tokens, block)
    out_dir = new_run_dir(cfg.out)
    write_config(
        out_dir,
        {
            "command": "persist",
            "target": spec.describe(),
            "corpus": corpus,
            "corpus_tokens": int(corpus_tokens.numel()),
            "persist": cfg.to_dict(),
            "train": train_cfg.to_dict(),
            "model": model.config.to_dict(),
            "init": checkpoint_init(model_dir),
        },
        next(model.parameters()).device,
        cfg.seed,
    )
    timeline = [_measurement(0, model, targets, cfg, heldout, tokenizer.decode)]

    def on_step(step: int) -> dict | None:
        if step % cfg.eval_every and step != cfg.steps:
            return None
        timeline.append(_measurement(step, model, targets, cfg, heldout, tokenizer.decode))
        return timeline[-1].to_json()  # logged on the step's metrics line

    trained = train(
        model,
        train_cfg,
        targets.mask,
        out_dir,
        corpus_tokens=train_tokens,
        progress=progress,
        on_step=on_step,
    )
    result = PersistResult(
        model=str(model_dir),
        target=spec,
        corpus=corpus,
        steps=cfg.steps,
        lr=cfg.lr,
        trained=trained,
        timeline=timeline,
        run_dir=out_dir,
    )
    atomic_write_json(out_dir / PERSIST_FILE, result.to_json())
    write_persistence_report(result)
    return result
