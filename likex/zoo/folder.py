"""A zoo folder, shared by independent jobs: shards, files written once, organism folders that
appear whole, and a progress line per organism with the time left.

* ``zoo.json`` (the settings and the draw) is published by the first job to get there; every
  other job reads it and uses that draw (``publish_once``), so jobs started together agree.
* Each organism is built in a hidden temporary folder and renamed into place when complete
  (``organism_folder``): a folder named after an organism is always a whole one. An organism
  belongs to exactly one shard, so two jobs never build the same one.
* A shard is ``I/N`` (1-based, as a Slurm array ``--array=1-N`` numbers its tasks).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from likex.errors import ConfigError, LikexError

ZOO_FILE = "zoo.json"
MODEL_DIR = "model"
AUDIT_DIR = "audit"


def parse_shard(text: str | None) -> tuple[int, int]:
    """ "2/8" -> (2, 8); None -> (1, 1), the whole zoo."""
    if text is None:
        return (1, 1)
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError("shard", f"must be I/N, e.g. 2/8, not {text!r}") from None
    if not 1 <= i <= n:
        raise ConfigError("shard", f"must be I/N with 1 <= I <= N, not {text!r}")
    return (i, n)


def read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LikexError(f"cannot read {path}: {e}") from e
    if not isinstance(doc, dict):
        raise LikexError(f"{path} is not a likex zoo file")
    return doc


def publish_once(path: Path, doc: dict) -> dict:
    """Write ``doc`` to ``path`` unless a file is there already (another job was first), and
    return what the file holds: every job then works from the same document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the zoo is read by other jobs and users
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic, and refused where the file exists
    finally:
        os.unlink(tmp)
    return read_json(path)


def _temporary_prefix(final: Path) -> str:
    return f".{final.name}.tmp-"


def clear_stale(final: Path) -> None:
    """Remove what an interrupted build of ``final`` left (only its own shard builds it)."""
    for stale in final.parent.glob(_temporary_prefix(final) + "*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def organism_folder(final: Path) -> Iterator[Path]:
    """A temporary folder to build ``final`` in, renamed to ``final`` when the block ends
    without error (removed otherwise)."""
    if final.exists():
        raise LikexError(f"{final} exists already")
    final.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{socket.gethostname()}-{os.getpid()}"
    tmp = final.parent / f"{_temporary_prefix(final)}{tag}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Progress:
    """One line per organism on stderr: which, how long it took, what it is, and the time left
    at the mean pace so far."""

    def __init__(self, label: str, total: int, enabled: bool = True) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.done = 0
        self.spent = 0.0

    def step(self, name: str, seconds: float, note: str = "") -> None:
        self.done += 1
        self.spent += seconds
        if not self.enabled:
            return
        left = (self.total - self.done) * self.spent / self.done
        tail = f"; about {_duration(left)} left" if self.done < self.total else "; done"
        note = f" {note}" if note else ""
        sys.stderr.write(
            f"{self.label} [{self.done}/{self.total}] {name}:{note} ({seconds:.0f} s){tail}\n"
        )
        sys.stderr.flush()

    def skip(self, name: str, why: str = "done before, kept") -> None:
        """An organism this job spends no time on (done before, or not built yet)."""
        self.total -= 1
        if self.enabled:
            sys.stderr.write(f"{self.label} {name}: {why}\n")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def elapsed_since(t0: float) -> float:
    return time.perf_counter() - t0
