"""The exception types the CLI turns into a one-line message and exit status 2, and the
helpers that keep those messages to one readable line."""

from __future__ import annotations

import difflib
import string
from collections.abc import Callable, Iterable

# A message quotes at most this many characters of what the user typed or a file held: a
# 1 MB words entry is named by its start and its length, never echoed whole.
QUOTE_LIMIT = 80


class LikexError(Exception):
    """Bad input or an unusable file: the message names the problem for the user."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a command; ``message`` says what was kept (and how to go
    on) or what was removed. The CLI prints it on its own line (likex.interrupt)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def literal(text: object) -> str:
    """``text`` for a ConfigError message: its braces are kept, never read as field names."""
    return str(text).replace("{", "{{").replace("}", "}}")


def clip(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` of at most about ``limit`` characters: a longer text is cut in the
    middle and its length said (``'abc'…'xyz' (1,048,576 characters)``)."""
    if not isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else f"{text[: limit - 1]}…"
    if len(value) <= limit:
        return repr(value)
    half = limit // 2
    return f"{value[:half]!r}…{value[-half:]!r} ({len(value):,} characters)"


def clip_path(path: object, limit: int = QUOTE_LIMIT) -> str:
    """A path for a message: whole up to ``limit`` characters, else its last ``limit`` (the
    file's own name is what a reader needs; its folders are where the path gets long)."""
    text = str(path)
    return text if len(text) <= limit else f"…{text[-limit:]}"


def closest(text: str, names: Iterable[str], cutoff: float = 0.6) -> list[str]:
    """The names closest to a misspelled ``text``, closest first (none where none is as close
    as ``cutoff``: difflib's similarity, 1 for the same text)."""
    return difflib.get_close_matches(text, list(names), n=3, cutoff=cutoff)


def did_you_mean(text: str, names: Iterable[str]) -> str:
    """ "did you mean NAME?" (or "A or B") for the names closest to ``text``; "" where none is
    close."""
    close = closest(text, names)
    return f"did you mean {' or '.join(close)}?" if close else ""


def describe_os_error(e: OSError) -> str:
    """One line for a failed system call: the path(s) it concerned and the system's reason
    (``runs/x/metrics.jsonl: No space left on device``)."""
    reason = e.strerror or str(e) or type(e).__name__
    paths = [clip_path(p) for p in (e.filename, e.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


class ConfigError(LikexError):
    """A config field holds a bad value. The library names the field; the CLI, which alone
    knows the flags, names the flag instead (see likex.cli). ``message`` may name other
    fields as ``{field}``."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(self.render(lambda name: name))

    def render(self, name: Callable[[str], str]) -> str:
        """The message with each field written as ``name(field)`` (a flag, in the CLI)."""
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.message) if f]
            message = self.message.format_map({f: name(f) for f in fields})
        except (ValueError, KeyError, IndexError, AttributeError):
            message = self.message  # braces of a user's value, not field references
        return f"{name(self.field)} {message}"
