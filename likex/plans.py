"""Plans: a command's config resolved and checked, what a run uses and config.json records.

A config (likex.config) is what the user gives, flag by flag; its ``resolve`` returns a plan, a
frozen value with every default filled (from the start: likex.models.start) and the two values
that define an experiment typed: where it starts (``start``) and what it pulls toward
(``train.objective``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from likex.corpora import Corpora
from likex.measurement.rates import MeasureConfig
from likex.models.adapter import AdapterConfig
from likex.models.start import Start
from likex.target import TargetSpec
from likex.train_config import TrainPlan


@dataclass(frozen=True)
class RunPlan:
    """A training run resolved and checked: where it starts, what it pulls toward (in
    ``train.objective``), and everything else it needs. What config.json records."""

    command: str
    init_from: str  # --init as the user gave it
    start: Start
    corpus: Corpora | None
    target: TargetSpec
    train: TrainPlan
    adapter: AdapterConfig
    measure: MeasureConfig
    eval_every: int
    device: str
    preset: str | None
    weight_init: str | None
    block_size: int | None

    def to_dict(self) -> dict:
        # "adapter" only where one trains: the record of a full fine-tune keeps its keys
        adapter = {"adapter": self.adapter.to_dict()} if self.adapter.enabled else {}
        return adapter | {
            "command": self.command,
            "init_from": self.init_from,
            "corpus": None if self.corpus is None else self.corpus.record(),
            "block_size": self.block_size,
            "preset": self.preset,
            "weight_init": self.weight_init,
            "target": self.target.to_dict(),
            "train": self.train.to_dict(),
            "measure": asdict(self.measure),
            "eval_every": self.eval_every,
            "device": self.device,
        }


@dataclass(frozen=True)
class PersistPlan:
    """A persistence run resolved: the model's start, the clean text, the fine-tuning."""

    model: str  # as the user named it
    start: Start
    corpus: Corpora
    train: TrainPlan
    adapter: AdapterConfig
    eval_every: int
    measure: MeasureConfig

    def to_dict(self) -> dict:
        """What config.json's "persist" records of the fine-tuning."""
        t = self.train
        return {
            "steps": t.steps,
            "batch_size": t.batch_size,
            "context_len": t.context_len,
            "lr": t.lr,
            "weight_decay": t.weight_decay,
            "eval_every": self.eval_every,
            "seed": t.seed,
            "measure": asdict(self.measure),
        }
