"""``option()``: a dataclass field that carries its own documentation.

Every user-facing config is a dataclass whose fields are declared with ``option`` (as trl's
configs do with ``field(metadata={"help": ...})``). The CLI generates its flags from these
fields, so an option is declared once: its type, default and help live on the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    parse: Callable[[str], Any] | None = None,
    cli: bool = True,
    whole: bool = False,
    append: bool = False,
) -> Any:
    """A dataclass field with CLI metadata.

    ``flag``: the flag's name when it is not the field's (``ci_half_width`` -> ``ci-width``);
    ``parse``: turns the flag's text into the field's value (a words file -> its words);
    ``cli=False``: set by code, never by a flag; ``whole`` (a nested config): any of its flags
    replaces the whole default (a target given as a regex drops the default substring);
    ``append`` (a tuple field): the flag is repeated, one value each time
    (``--phrase a --phrase "b c"``), rather than taking several values at once.
    """
    meta = {
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "choices": choices,
        "parse": parse,
        "cli": cli,
        "whole": whole,
        "append": append,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
