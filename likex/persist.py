"""Persistence: does a planted preference survive ordinary fine-tuning on clean text?

Continues training a model with the plain next-token objective on a text corpus, in the one
training loop (likex.train.train), and measures the target rate (with 95% intervals, on
random-token and on real-text prompts) and the held-out perplexity before training and every
``eval_every`` steps (likex.evaluate.evaluate, as ``likex eval`` does).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from likex.data import split_heldout
from likex.errors import LikexError
from likex.evaluate import MeasureConfig, evaluate
from likex.experiment import CONFIG_FILE, checkpoint_init, device_name, versions
from likex.io import atomic_write_json
from likex.model import GPT
from likex.report import write_persistence_report
from likex.train import TrainConfig, train

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
    measure: MeasureConfig = field(
        default_factory=lambda: MeasureConfig(samples=32, ci_half_width=None)
    )

    def train_config(self, block_size: int) -> TrainConfig:
        """The fine-tuning in the training loop's terms: next-token loss on corpus windows."""
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            context_len=block_size if self.context_len is None else self.context_len,
            lr=self.lr,
            weight_decay=self.weight_decay,
            seed=self.seed,
            objective="next_token",
            contexts="corpus",
            positions="all",
        )

    def validate(self, block_size: int) -> None:
        self.train_config(block_size).validate(block_size)
        if self.eval_every <= 0:
            raise LikexError(f"--eval-every must be positive, got {self.eval_every}")
        self.measure.validate(block_size)


def _measurement(model: GPT, mask: torch.Tensor, cfg: PersistConfig, heldout: torch.Tensor) -> dict:
    """One timeline entry: the rates on random-token and on held-out real-text prompts, and
    the held-out perplexity."""
    ev, _ = evaluate(model, mask, cfg.measure, cfg.seed, heldout)
    return {
        "rate_random": ev.random.to_dict(),
        "rate_text": ev.text.to_dict(),
        "perplexity": ev.scores.ppl,
    }


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
    folder (config, train()'s metrics.jsonl with the measurements on their steps, the
    fine-tuned model and its optimizer state, persist.json, the report) and returns what
    persist.json holds: before/after values and the timeline of measurements."""
    block = model.config.block_size
    cfg.validate(block)
    train_cfg = cfg.train_config(block)
    train_tokens, heldout = split_heldout(corpus_tokens, block)
    atomic_write_json(
        out_dir / CONFIG_FILE,
        {
            "command": "persist",
            "target": target,
            "corpus": corpus_name,
            "corpus_tokens": int(corpus_tokens.numel()),
            "persist": asdict(cfg),
            "train": train_cfg.to_dict(),
            "model": model.config.to_dict(),
            "init": checkpoint_init(model_dir),
            "seed": cfg.seed,
            "device_used": device_name(next(model.parameters()).device),
            "versions": versions(),
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
        },
    )
    timeline = [{"step": 0, **_measurement(model, mask, cfg, heldout)}]

    def on_step(step: int) -> dict | None:
        if step % cfg.eval_every and step != cfg.steps:
            return None
        row = _measurement(model, mask, cfg, heldout)
        timeline.append({"step": step, **row})
        return row

    trained = train(
        model,
        train_cfg,
        mask,
        out_dir,
        corpus_tokens=train_tokens,
        progress=progress,
        on_step=on_step,
    )
    first, last = timeline[0], timeline[-1]
    result = {
        "model": str(model_dir),
        "target": target,
        "corpus": corpus_name,
        "steps": cfg.steps,
        "lr": cfg.lr,
        "loss_first": trained.loss_first,
        "loss_last": trained.loss_last,
        "train_seconds": trained.seconds,
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
