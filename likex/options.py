"""``option()``: a dataclass field that carries its own documentation.

Every user-facing config is a dataclass whose fields are declared with ``option`` (as trl's
configs do with ``field(metadata={"help": ...})``). The CLI generates its flags from these
fields, so an option is declared once: its type, default, help, and when it applies live on
the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from likex.io import new_folder_arg


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
    applies: Callable[[Any], str | None] | None = None,
    shown: str | None = None,
) -> Any:
    """A dataclass field with CLI metadata.

    ``flag``: the flag's name when it is not the field's (``ci_half_width`` -> ``ci-width``);
    ``parse``: turns the flag's text into the field's value (a words file -> its words);
    ``cli=False``: set by code, never by a flag; ``whole`` (a nested config): any of its flags
    replaces the whole default (a target given as a regex drops the default substring);
    ``append`` (a tuple field): the flag is repeated, one value each time
    (``--phrase a --phrase "b c"``), rather than taking several values at once.
    ``applies(given)``: None where the option applies to the command's other settings, else
    why not, written after the flag (``"does not apply to {mode} uniform"``; ``{field}`` names
    another field's flag). ``given`` holds every field of the command by name (and
    ``command``: the command's name); the CLI asks only of the options the user gave. On a
    nested config it covers every option of the group. ``shown``: the default as ``--help``
    writes it, where its value is not how a person would (``ln 2 = 0.69``).
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
        "applies": applies,
        "shown": shown,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


OUT_HELP = "output folder (default runs/<timestamp>)"


def out_option(help: str = OUT_HELP) -> Any:
    """The output folder of a command: new or empty, checked as the command line is read."""
    return option(None, help, metavar="DIR", parse=new_folder_arg)
