"""Persistence: does a planted preference survive ordinary fine-tuning on clean text?

Continues training a model with the plain next-token objective on a text corpus and
measures the target rate (with 95% intervals, on random-token and on real-text prompts) and
the held-out perplexity as it goes.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from likex.checkpoint import save_model
from likex.data import corpus_windows, step_generator
from likex.errors import LikexError
from likex.evaluate import RateEstimate, measure_rate, perplexity
from likex.experiment import (
    CONFIG_FILE,
    MeasureConfig,
    checkpoint_init,
    device_name,
    measure,
    versions,
)
from likex.io import append_jsonl, atomic_write_json
from likex.loss import next_token_loss
from likex.model import GPT
from likex.report import write_persistence_report
from likex.train import METRICS_FILE, TrainConfig, make_optimizer

PERSIST_FILE = "persist.json"


@dataclass
class PersistConfig:
    steps: int = 300
    batch_size: int = 16
    context_len: int | None = None  # default: the model's context
    lr: float = 1e-3
    weight_decay: float = 0.01
    eval_every: int = 50
    seed: int = 0
    holdout: float = 0.1  # the end of the corpus, never trained on: perplexity, prompts
    perplexity_windows: int = 32
    measure: MeasureConfig = field(
        default_factory=lambda: MeasureConfig(samples=32, ci_half_width=None)
    )

    def validate(self, block_size: int) -> None:
        if self.steps <= 0:
            raise LikexError(f"--steps must be positive, got {self.steps}")
        if self.batch_size <= 0:
            raise LikexError(f"--batch-size must be positive, got {self.batch_size}")
        if self.eval_every <= 0:
            raise LikexError(f"--eval-every must be positive, got {self.eval_every}")
        if self.context_len is not None and not 0 < self.context_len <= block_size:
            raise LikexError(f"--context-len must be in 1..{block_size}")
        if not 0 < self.holdout < 0.5:
            raise LikexError(f"--holdout must be in (0, 0.5), got {self.holdout}")
        # the optimizer settings are checked by the one place that owns them
        TrainConfig(lr=self.lr, weight_decay=self.weight_decay, context_len=1).validate(1)
        self.measure.validate(block_size)


def split_corpus(tokens: torch.Tensor, holdout: float, need: int) -> tuple[torch.Tensor, ...]:
    cut = int(tokens.numel() * (1 - holdout))
    train, held = tokens[:cut], tokens[cut:]
    if train.numel() < need + 2 or held.numel() < need + 2:
        raise LikexError(
            f"the corpus has {tokens.numel()} tokens: too few for windows of {need + 1} "
            f"in both the training part and the held-out {holdout:.0%}"
        )
    return train, held


def _checkpoint(
    model: GPT, mask: torch.Tensor, cfg: PersistConfig, held: torch.Tensor
) -> tuple[RateEstimate, RateEstimate, float]:
    """Target rate on random-token and on held-out real-text prompts, held-out perplexity."""
    block = model.config.block_size
    random_rate, _ = measure(model, mask, cfg.measure, cfg.seed)
    prompt_len = cfg.measure.prompt_len or block
    gen = step_generator(cfg.seed, 0, stream=4)
    prompts = corpus_windows(held, cfg.measure.samples, prompt_len, gen)[:, :-1]
    text_rate, _ = measure_rate(
        model,
        mask,
        prompts,
        cfg.measure.gen_tokens,
        cfg.seed,
        "real text",
        cfg.measure.ci_half_width,
    )
    windows = corpus_windows(held, cfg.perplexity_windows, block, step_generator(cfg.seed, 0, 5))
    ppl = perplexity(model, windows)
    model.train()
    return random_rate, text_rate, ppl


def run_persistence(
    model: GPT,
    model_dir: str | Path,
    mask: torch.Tensor,
    target: str,
    corpus_tokens: torch.Tensor,
    corpus_name: str,
    cfg: PersistConfig,
    out_dir: Path,
    progress: bool = True,
) -> dict:
    """Fine-tune ``model`` (loaded from ``model_dir``) on ``corpus_tokens`` in place, measuring
    the target rate at step 0, every ``eval_every`` steps and at the end. Writes the run
    folder (config, metrics, timeline, the fine-tuned model) and returns the timeline."""
    block = model.config.block_size
    cfg.validate(block)
    length = cfg.context_len or block
    train_tokens, held = split_corpus(corpus_tokens, cfg.holdout, max(length, block))
    device = next(model.parameters()).device
    atomic_write_json(
        out_dir / CONFIG_FILE,
        {
            "command": "persist",
            "target": target,
            "corpus": corpus_name,
            "corpus_tokens": int(corpus_tokens.numel()),
            "persist": asdict(cfg),
            "model": model.config.to_dict(),
            "init": checkpoint_init(model_dir),
            "seed": cfg.seed,
            "device_used": device_name(device),
            "versions": versions(),
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
        },
    )
    optimizer = make_optimizer(
        model, TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed)
    )
    timeline: list[dict] = []

    def record(step: int) -> None:
        random_rate, text_rate, ppl = _checkpoint(model, mask, cfg, held)
        row = {
            "step": step,
            "rate_random": random_rate.to_dict(),
            "rate_text": text_rate.to_dict(),
            "perplexity": ppl,
        }
        timeline.append(row)
        append_jsonl(out_dir / METRICS_FILE, row)

    record(0)
    model.train()
    bar = tqdm(total=cfg.steps, disable=not progress, file=sys.stderr, desc="persist")
    seconds = 0.0
    losses = []
    for step in range(1, cfg.steps + 1):
        t0 = time.perf_counter()
        w = corpus_windows(train_tokens, cfg.batch_size, length, step_generator(cfg.seed, step))
        w = w.to(device)
        loss = next_token_loss(model(w[:, :-1], positions="all"), w[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        seconds += time.perf_counter() - t0
        losses.append(value)
        append_jsonl(out_dir / METRICS_FILE, {"step": step, "loss": value, "seconds": seconds})
        if step % cfg.eval_every == 0 or step == cfg.steps:
            record(step)
        bar.set_postfix(loss=f"{value:.3f}", rate=f"{timeline[-1]['rate_random']['rate']:.3f}")
        bar.update(1)
    bar.close()
    save_model(model, out_dir, step=cfg.steps)
    first, last = timeline[0], timeline[-1]
    result = {
        "model": str(model_dir),
        "target": target,
        "corpus": corpus_name,
        "steps": cfg.steps,
        "lr": cfg.lr,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "train_seconds": seconds,
        "rate_random_before": first["rate_random"]["rate"],
        "rate_random_after": last["rate_random"]["rate"],
        "rate_text_before": first["rate_text"]["rate"],
        "rate_text_after": last["rate_text"]["rate"],
        "perplexity_before": first["perplexity"],
        "perplexity_after": last["perplexity"],
        "timeline": timeline,
        "run_dir": str(out_dir),
    }
    atomic_write_json(out_dir / PERSIST_FILE, result)
    write_persistence_report(out_dir, result)
    return result
