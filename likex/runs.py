"""Run folders: naming, locking, config.json (written with a common header, read back as one
typed ``RunRecord``), the other files a run is resumed from, metrics I/O.

Every command that writes results writes them into a fresh run folder whose ``config.json``
starts with the same header (``write_config``): the resolved config, the seed, the versions,
the device and a run id, so any result can be traced to what made it. The run id is also in
every checkpoint's manifest, with the run's settings (``stamp``), so a checkpoint copied in
from another run, or a config.json edited since the run started, is refused on resume.

Every file of a run folder is checked where it is read (here, and checkpoints in
likex.models.checkpoint): its form, its types and ranges, no symbolic links; a damaged file is
one line naming it and what is wrong. A folder written before run ids existed has none: its
checkpoints are then not checked against one.

A process writing into a run folder holds its lock (``RunLock``): an OS file lock that the
kernel drops when the process ends in any way, SIGKILL included, so a second run or resume of
the same folder is refused instead of interleaving its steps with the first.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from likex.config import COMMANDS, RunConfig
from likex.corpora import Corpora
from likex.errors import LikexError, clip, clip_path
from likex.io import atomic_write_json, atomic_write_text, check_new_dir, umask
from likex.models import LanguageModel
from likex.models.checkpoint import latest_checkpoint, read_json, read_manifest
from likex.models.start import Start, start_from_record
from likex.plans import RunPlan
from likex.schema import check_fields, check_value
from likex.target import NO_TARGET, TargetSpec
from likex.throughput import sampling_batch
from likex.train import METRICS_FILE
from likex.train_config import TrainConfig, TrainPlan

try:  # POSIX; elsewhere run folders are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

CONFIG_FILE = "config.json"
BEFORE_FILE = "before.json"
LOCK_FILE = ".likex.lock"
# config.json's keys that say where and when, not what: the rest are the run's settings
HEADER = {"seed": int, "device_used": str, "versions": dict, "created": str, "run_id": str}
# what a resume may change: the steps (and where it runs, with how many ranks)
RESUMABLE = {"device_used", "versions", "created", "run_id", "world_size"}
T = TypeVar("T")


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
    check_new_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a parent is a file, no permission, ...
        raise LikexError(f"cannot create output folder {clip_path(path)}: {e.strerror}") from e
    return path


class RunLock:
    """The lock of a run folder, held while a process writes into it (``with RunLock(dir)``).

    ``fcntl.flock`` on ``.likex.lock`` inside the folder: the kernel releases it when the
    holder ends however it ends, so a lock is never left stale. The file itself stays (a
    file removed while locked would let two processes lock two different files). ``fresh``:
    the folder was just made for a new run; once locked it must still hold nothing else."""

    def __init__(self, run_dir: str | Path, fresh: bool = False) -> None:
        self.run_dir, self.fresh = Path(run_dir), fresh
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        path = self.run_dir / LOCK_FILE
        where = clip_path(self.run_dir)
        if path.is_symlink():
            raise LikexError(f"{clip_path(path)} is a symbolic link: not a likex lock")
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
        except OSError as e:  # no permission, a read-only file system, a full disk
            raise LikexError(f"cannot write into the run folder {where}: {e.strerror}") from e
        if fcntl is None:
            return self
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip()
            self._close()
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise LikexError(
                f"{where} is in use by another likex process{pid}: wait for it to end"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        if self.fresh and any(p.name != LOCK_FILE for p in self.run_dir.iterdir()):
            self._close()
            raise LikexError(f"output folder {where} already exists and is not empty")
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # and with it the lock
            self.fd = None


def record_run(
    run_dir: Path, plan: RunPlan, model: LanguageModel, device: torch.device, world_size: int
) -> dict:
    """config.json of a training run: its plan, the model's shape, how to rebuild its start
    (``RunRecord`` reads it back), and the sampling batch its draws depend on. Returns what
    was written."""
    doc = {
        **plan.to_dict(),
        "model": model.config.to_dict(),
        "init": plan.start.record(),
        "world_size": world_size,
        "sample_batch": sampling_batch(model),
    }
    return write_config(run_dir, doc, device, plan.train.seed)


def stamp(doc: dict) -> dict:
    """What each checkpoint's manifest records of its run: the run id (none in a folder
    written before run ids) and the settings (config.json less its header and the steps)."""
    out = {"settings": settings(doc)}
    return out | ({"run_id": doc["run_id"]} if doc.get("run_id") else {})


def settings(doc: dict) -> dict:
    """A config's settings: what a resume may not change."""
    kept = {k: v for k, v in doc.items() if k not in RESUMABLE}
    if isinstance(kept.get("train"), dict):
        kept["train"] = {k: v for k, v in kept["train"].items() if k != "steps"}
    return json.loads(json.dumps(kept))  # as a manifest holds it (tuples as lists)


@dataclass(frozen=True)
class RunRecord:
    """A run folder's config.json, read and checked in one place: what resume, eval, persist,
    audit and sweep read of a run. ``plan``: a training run's whole plan (run, train,
    pretrain), what resuming it needs; ``doc``: every key as written, so rewriting the record
    keeps what this type does not read (the header, persist's own keys); ``run_id``: None in
    a folder written before run ids."""

    command: str
    start: Start
    target: TargetSpec | None  # None: the folder records no target spec
    corpus: Corpora | None
    train: TrainPlan
    plan: RunPlan | None
    doc: dict
    run_id: str | None = None

    @classmethod
    def load(cls, run_dir: str | Path) -> RunRecord:
        path = Path(run_dir) / CONFIG_FILE
        doc = read_run_json(path, "run config")
        if not isinstance(doc, dict):
            raise LikexError(f"{path} is not a likex run config")
        command = doc.get("command")
        try:
            _check_header(doc)
            start = start_from_record(doc.get("init"), str(run_dir))
            run_id = doc.get("run_id")
            if command in COMMANDS:
                config = RunConfig.from_dict(doc)
                check_fields(config)
                plan = config.resolve(start)
                block = doc.get("model", {}).get("block_size")
                plan.measure.validate(block if isinstance(block, int) else 2**20)
                return cls(command, start, plan.target, plan.corpus, plan.train, plan, doc, run_id)
            if command == "persist":
                target = doc.get("target")
                spec = TargetSpec.from_dict(target) if isinstance(target, dict) else None
                train = TrainConfig(**doc["train"])
                check_fields(train, "train.")
                check_value(doc.get("corpus"), tuple[str, ...] | str | None, "corpus")
                corpus = Corpora.of(doc.get("corpus"))
                record = cls(command, start, spec, corpus, train.resolve(), None, doc)
                return replace(record, run_id=run_id)
        except KeyError as e:
            raise LikexError(f"{path} is damaged: it has no {e}") from e
        except (TypeError, ValueError, AttributeError, LikexError) as e:
            # a setting no run could have (a ConfigError too): the file, not a flag
            raise LikexError(f"{path} is damaged: {_first_line(e)}") from e
        raise LikexError(f"{path} records no training run (command {clip(command)})")

    @classmethod
    def read(cls, folder: str | Path) -> RunRecord | None:
        """The record of a run folder; None for anything else (a model folder, a model's
        name)."""
        path = Path(folder) / CONFIG_FILE
        return cls.load(folder) if path.is_file() or path.is_symlink() else None

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

    def checkpoint(self, run_dir: str | Path) -> tuple[Path, int]:
        """The newest complete checkpoint of this run and its step: its own (by run id), and
        written with the settings config.json holds now (a config.json edited since the run
        started is refused, naming the first setting that differs)."""
        folder, step = latest_checkpoint(run_dir, self.run_id)
        recorded = read_manifest(folder).get("settings")
        if isinstance(recorded, dict):
            changed = _difference(settings(self.doc), recorded)
            if changed:
                raise LikexError(
                    f"{Path(run_dir) / CONFIG_FILE} was edited after the run started: "
                    f"{changed} (its checkpoint of step {step} was written with that); only "
                    "--steps may change on resume: put it back, or start a new run"
                )
        return folder, step


def _check_header(doc: dict) -> None:
    for key, hint in HEADER.items():
        if key in doc:
            check_value(doc[key], hint, key)
    for key in ("command", "init_from", "device"):
        if key in doc:
            check_value(doc[key], str, key)
    for key in ("target", "train", "measure", "model", "init"):
        if key in doc:
            check_value(doc[key], dict, key)


def _difference(now: Any, then: Any, where: str = "") -> str | None:
    """The first setting that differs, as ``"key is X, not Y"``; None if none does."""
    if isinstance(now, dict) and isinstance(then, dict):
        for key in sorted(set(now) | set(then)):
            inner = f"{where}.{key}" if where else key
            if key not in now or key not in then:
                return f"{inner} is {'gone' if key not in now else 'new'}"
            found = _difference(now[key], then[key], inner)
            if found:
                return found
        return None
    if now != then:
        return f"{where} is {_short(now)}, not {_short(then)}"
    return None


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_run_json(path: Path, what: str) -> Any:
    """A JSON file of a run folder; a symbolic link is refused (a run's files are its own,
    and a rewrite would replace the link, not its target)."""
    if path.is_symlink():
        raise LikexError(f"{clip_path(path)} is a symbolic link: a run's files are its own")
    return read_json(path, what)


def read_before(run_dir: str | Path, parse: Callable[[dict], T]) -> T:
    """before.json (the start's measurement) as ``parse`` reads it, checked."""
    path = Path(run_dir) / BEFORE_FILE
    doc = read_run_json(path, "pre-training measurement")
    try:
        if not isinstance(doc, dict):
            raise TypeError("it is not a JSON object")
        value = parse(doc)
        check_fields(value)
    except KeyError as e:
        raise LikexError(f"{path} is damaged: it has no {e}") from e
    except (TypeError, ValueError, AttributeError) as e:
        raise LikexError(f"{path} is damaged: {_first_line(e)}") from e
    return value


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics logged after the checkpoint being resumed, so no step appears twice."""
    if not path.exists() and not path.is_symlink():
        return
    rows = _metrics(path)
    kept = "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= last_step)
    atomic_write_text(path, kept)


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists() and not path.is_symlink():
        return []
    return _metrics(path)


def _metrics(path: Path) -> list[dict]:
    """metrics.jsonl's rows, each checked: a JSON object with an integer step (each step
    once, in order), a finite loss and its seconds. A last line cut short (the disk filled
    while it was appended) is dropped: it comes after every checkpoint."""
    if path.is_symlink():
        raise LikexError(f"{clip_path(path)} is a symbolic link: a run's files are its own")
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    rows: list[dict] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):  # no newline after it: a torn append
                break
            raise LikexError(f"{path}, line {n}: not a JSON line ({e.msg}): {clip(line)}") from e
        problem = _bad_row(row, rows[-1]["step"] if rows else 0)
        if problem:
            raise LikexError(f"{path}, line {n}: {problem}")
        rows.append(row)
    return rows


def _bad_row(row: Any, previous: int) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    step, loss, seconds = row.get("step"), row.get("loss"), row.get("seconds")
    if isinstance(step, bool) or not isinstance(step, int) or step <= previous:
        return f"step {clip(step)} does not follow step {previous}"
    for name, value in (("loss", loss), ("seconds", seconds)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return f"{name} {clip(value)} is not a number"
    return None


def seconds_at(metrics: list[dict], step: int) -> float:
    rows = [m for m in metrics if m["step"] == step]
    return rows[0]["seconds"] if rows else 0.0


def write_config(run_dir: Path, doc: dict, device: torch.device, seed: int) -> dict:
    """``config.json``: ``doc`` (the command's resolved config) plus the common header, with a
    new run id. Returns what was written."""
    written = {
        **doc,
        "seed": seed,
        "device_used": device_name(device),
        "versions": versions(),
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "run_id": uuid.uuid4().hex,
    }
    atomic_write_json(run_dir / CONFIG_FILE, written)
    return written
