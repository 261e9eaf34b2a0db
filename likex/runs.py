"""Run folders: naming, config.json (written with a common header, read back as one typed
``RunRecord``), metrics I/O.

Every command that writes results writes them into a fresh run folder whose ``config.json``
starts with the same header (``write_config``): the resolved config, the seed, the versions and
the device, so any result can be traced to what made it.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from likex.config import COMMANDS, RunConfig
from likex.corpora import Corpora
from likex.errors import ConfigError, LikexError
from likex.io import atomic_write_json, atomic_write_text
from likex.models import LanguageModel
from likex.models.checkpoint import read_json
from likex.models.start import Start, start_from_record
from likex.plans import RunPlan
from likex.target import NO_TARGET, TargetSpec
from likex.throughput import sampling_batch
from likex.train import METRICS_FILE
from likex.train_config import TrainPlan

CONFIG_FILE = "config.json"


def versions() -> dict[str, str]:
    import numpy
    import safetensors
    import tokenizers

    from likex import __version__

    return {
        "likex": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return (
            f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        )
    return str(device)


def new_run_dir(out: str | Path | None) -> Path:
    """A fresh output folder. An existing non-empty folder is refused rather than mixed into."""
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / stamp
        n = 1
        while out.exists():
            out = Path("runs") / f"{stamp}-{n}"
            n += 1
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise LikexError(f"output folder {path} already exists and is not empty")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a parent is a file, no permission, ...
        raise LikexError(f"cannot create output folder {path}: {e.strerror}") from e
    return path


def record_run(
    run_dir: Path, plan: RunPlan, model: LanguageModel, device: torch.device, world_size: int
) -> None:
    """config.json of a training run: its plan, the model's shape, how to rebuild its start
    (``RunRecord`` reads it back), and the sampling batch its draws depend on."""
    doc = {
        **plan.to_dict(),
        "model": model.config.to_dict(),
        "init": plan.start.record(),
        "world_size": world_size,
        "sample_batch": sampling_batch(model),
    }
    write_config(run_dir, doc, device, plan.train.seed)


@dataclass(frozen=True)
class RunRecord:
    """A run folder's config.json, read and checked in one place: what resume, eval, persist,
    audit and sweep read of a run. ``plan``: a training run's whole plan (run, train,
    pretrain), what resuming it needs; ``doc``: every key as written, so rewriting the record
    keeps what this type does not read (the header, persist's own keys)."""

    command: str
    start: Start
    target: TargetSpec | None  # None: the folder records no target spec
    corpus: Corpora | None
    train: TrainPlan
    plan: RunPlan | None
    doc: dict

    @classmethod
    def load(cls, run_dir: str | Path) -> RunRecord:
        path = Path(run_dir) / CONFIG_FILE
        doc = read_json(path, "run config")
        if not isinstance(doc, dict):
            raise LikexError(f"{path} is not a likex run config")
        command = doc.get("command")
        try:
            start = start_from_record(doc.get("init"), str(run_dir))
            if command in COMMANDS:
                plan = RunConfig.from_dict(doc).resolve(start)
                return cls(command, start, plan.target, plan.corpus, plan.train, plan, doc)
            if command == "persist":
                target = doc.get("target")
                spec = TargetSpec.from_dict(target) if isinstance(target, dict) else None
                train = TrainPlan.from_dict(doc["train"])
                corpus = Corpora.of(doc.get("corpus"))
                return cls(command, start, spec, corpus, train, None, doc)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LikexError(f"{path} is not a likex run config: {e}") from e
        except ConfigError as e:  # a setting no run could have: the file, not a flag
            raise LikexError(f"{path} is not a likex run config: {e}") from e
        raise LikexError(f"{path} records no training run (command {command!r})")

    @classmethod
    def read(cls, folder: str | Path) -> RunRecord | None:
        """The record of a run folder; None for anything else (a model folder, a model's
        name)."""
        return cls.load(folder) if (Path(folder) / CONFIG_FILE).is_file() else None

    def with_plan(self, plan: RunPlan) -> RunRecord:
        """The record of a training run whose plan changed (only its steps may)."""
        doc = {**self.doc, "train": plan.train.to_dict()}
        return replace(self, train=plan.train, plan=plan, doc=doc)

    def save(self, run_dir: str | Path) -> None:
        atomic_write_json(Path(run_dir) / CONFIG_FILE, self.doc)

    def target_spec(self, given: TargetSpec | None) -> TargetSpec:
        """``given``, else the run's own target."""
        if given is not None:
            return given
        if self.target is None:
            raise LikexError(f"no target given: {NO_TARGET}")
        return self.target


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics logged after the checkpoint being resumed, so no step appears twice."""
    if not path.exists():
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= last_step)
    atomic_write_text(path, kept)


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def seconds_at(metrics: list[dict], step: int) -> float:
    rows = [m for m in metrics if m["step"] == step]
    return rows[0]["seconds"] if rows else 0.0


def write_config(run_dir: Path, doc: dict, device: torch.device, seed: int) -> None:
    """``config.json``: ``doc`` (the command's resolved config) plus the common header."""
    atomic_write_json(
        run_dir / CONFIG_FILE,
        {
            **doc,
            "seed": seed,
            "device_used": device_name(device),
            "versions": versions(),
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
        },
    )
