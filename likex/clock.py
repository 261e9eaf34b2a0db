"""Where a command's seconds go: the age of the process, a stopwatch over named phases, and
the progress bars that show the time left.

A run's start-up is the time from the start of its process (the interpreter, the imports, the
argument parsing) to the start of its pipeline. The process's start is the kernel's record of
it (Linux: ``/proc/self/stat`` against ``/proc/uptime``, 10 ms resolution); where there is no
such record the start-up is unknown (None) and totals count from the pipeline's start.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm


def process_age() -> float | None:
    """Seconds since this process started, or None where the system does not say."""
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    # Field 22 is the start time in clock ticks since boot. The command name (field 2) may hold
    # spaces and parentheses, so the fields are counted from after its closing parenthesis.
    started = int(stat.rsplit(")", 1)[1].split()[19]) / ticks
    return max(0.0, uptime - started)


class Stopwatch:
    """Seconds per named phase of one pipeline, and its total from the process's start.

    ``startup`` is the time before the pipeline began (None: unknown, counted as 0)."""

    def __init__(self, startup: float | None) -> None:
        self.startup = startup
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def total(self) -> float:
        return (self.startup or 0.0) + time.perf_counter() - self.started


def progress_bar(
    total: int, desc: str, unit: str, shown: bool, initial: int = 0, leave: bool = True
) -> tqdm:
    """A progress bar on stderr with the time spent and the time left (tqdm's
    ``[elapsed<remaining]``); nothing unless ``shown`` (``--quiet`` hides every bar). Use it as
    a context manager, so that it closes on an exception too and no message is glued onto it.
    ``leave=False``: it vanishes when done (a step inside a longer one)."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not shown,
        file=sys.stderr,
        leave=leave,
        dynamic_ncols=True,
    )
