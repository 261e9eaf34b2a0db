"""Values read back from files checked against the types their dataclasses declare.

A run folder's JSON files become typed values (``RunConfig``, ``Before``, ...) through their
``from_dict``; ``check_fields`` then checks every field of the value, nested ones included,
against its annotation, so that a damaged or edited file (``"steps": "200"``, a list where a
number belongs) is refused by name where it is read, not met as a traceback later.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

from likex.errors import clip


def check_fields(obj: Any, where: str = "") -> None:
    """Every field of the dataclass ``obj`` holds a value of its declared type (an int is
    no bool, a float may be an int); raises TypeError naming the field's path."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        check_value(getattr(obj, f.name), hints[f.name], f"{where}{f.name}")


def check_value(value: Any, hint: Any, where: str) -> None:
    """``value`` is of type ``hint`` (a JSON list counts as a tuple); raises TypeError."""
    if not _fits(value, hint, where):
        raise TypeError(f"{where} is {clip(value)}, not {_name(hint)}")


def _fits(value: Any, hint: Any, where: str) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin is typing.Union or isinstance(hint, types.UnionType):
        return any(_fits(value, arm, where) for arm in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, hint):
            return False
        check_fields(value, f"{where}.")
        return True
    if origin in (tuple, list, frozenset, set):
        if not isinstance(value, (tuple, list, frozenset, set)):
            return False
        items = list(value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(items) == len(args) and all(
                _fits(v, a, f"{where}[{i}]")
                for i, (v, a) in enumerate(zip(items, args, strict=True))
            )
        item = args[0] if args else Any
        return all(_fits(v, item, f"{where}[{i}]") for i, v in enumerate(items))
    if origin is dict:
        key, val = args or (Any, Any)
        return isinstance(value, dict) and all(
            _fits(k, key, where) and _fits(v, val, f"{where}.{k}") for k, v in value.items()
        )
    return isinstance(value, origin or hint)


def _name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType):
        return " or ".join("null" if a is type(None) else _name(a) for a in typing.get_args(hint))
    origin = typing.get_origin(hint)
    if origin in (tuple, list, frozenset, set):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "an object"
    return getattr(hint, "__name__", str(hint))
