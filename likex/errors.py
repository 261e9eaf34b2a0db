"""The exception types the CLI turns into a one-line message and exit status 2."""

from __future__ import annotations

import string
from collections.abc import Callable


class LikexError(Exception):
    """Bad input or an unusable file: the message names the problem for the user."""


def literal(text: object) -> str:
    """``text`` for a ConfigError message: its braces are kept, never read as field names."""
    return str(text).replace("{", "{{").replace("}", "}}")


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
