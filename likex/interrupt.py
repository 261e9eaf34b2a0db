"""Ctrl-C and SIGTERM: stop at a step boundary and keep the work.

Outside training both signals raise ``KeyboardInterrupt`` at once (in the CLI SIGTERM does
what Ctrl-C does: ``as_keyboard_interrupt``), and the pipeline that was interrupted keeps or
removes its folder and says which. Inside the training loop (``deferred``) the first signal
only asks training to stop: the step in flight is finished, the loop writes a checkpoint at
that step and then raises ``KeyboardInterrupt``, so no step's work is lost and none is
half-kept; a second signal abandons the step in flight at once (the newest checkpoint is what
is kept).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signals seen, newest last (the exit status names the first)


def _raise(signum: int, frame: Any) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def as_keyboard_interrupt() -> Iterator[None]:
    """Inside, SIGINT and SIGTERM raise KeyboardInterrupt (SIGTERM's default would kill the
    process before anything could be kept or cleaned up); the handlers before are restored
    after. Main thread only, as Python's signals."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise) for sig in SIGNALS}
    try:
        yield
    finally:
        _restore(previous)


def _restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def exit_status() -> int:
    """The shell's status for a command stopped by a signal: 128 + the signal's number
    (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (_received[0] if _received else signal.SIGINT)


class StopRequest:
    """Set by the first SIGINT or SIGTERM inside ``deferred``."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def deferred() -> Iterator[StopRequest]:
    """Inside, the first SIGINT or SIGTERM sets the returned request (the caller stops at
    its next step boundary); a second raises KeyboardInterrupt at once. Elsewhere than the
    main thread signals cannot be caught: the request is never set."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def note(signum: int, frame: Any) -> None:
        _received.append(signum)
        if request:
            raise KeyboardInterrupt
        request.signum = signum

    previous = {sig: signal.signal(sig, note) for sig in SIGNALS}
    try:
        yield request
    finally:
        _restore(previous)
