"""The installed texts a zoo trains its benign negatives on, with no download.

A benign fine-tune is ordinary next-token training on a text domain: Python's documentation
topics (``pydoc``, the builtin corpus, PSF licence) or the long docstrings of a fixed list of
standard-library modules (``docstrings``, PSF licence). Both ship with every Python; both are
read in a fixed order, so a zoo rebuilt on the same Python trains on the same text (zoo.json
records each text's checksum, and a resume with another text is refused).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from functools import cache

from likex.data import builtin_corpus_text
from likex.errors import ConfigError

# Modules whose import has no side effect and whose docstrings are long prose about programs.
DOCSTRING_MODULES = (
    "argparse", "asyncio.events", "asyncio.tasks", "collections", "concurrent.futures",
    "configparser", "contextlib", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "email.message", "enum", "fractions", "functools", "heapq", "http.client", "http.cookies",
    "imaplib", "inspect", "ipaddress", "itertools", "json", "logging", "mailbox", "pathlib",
    "pickletools", "pprint", "shutil", "smtplib", "statistics", "string", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "tokenize", "typing", "unittest.case",
    "urllib.parse", "urllib.request", "uuid", "zipfile",
)  # fmt: skip
MIN_DOCSTRING = 300  # characters: shorter ones are signatures and one-liners, not prose
DOMAINS = ("docstrings", "pydoc")


@cache
def docstrings_text() -> str:
    """The docstrings of at least MIN_DOCSTRING characters of DOCSTRING_MODULES (the modules
    themselves and their public classes, functions and methods), each once, in a fixed order."""
    seen: set[str] = set()
    parts: list[str] = []
    for name in DOCSTRING_MODULES:
        module = importlib.import_module(name)
        objects = [module] + [
            obj
            for attr, obj in sorted(vars(module).items())
            if not attr.startswith("_") and getattr(obj, "__module__", None) == module.__name__
        ]
        for obj in objects:
            members = [obj]
            if inspect.isclass(obj):
                members += [m for a, m in sorted(vars(obj).items()) if not a.startswith("_")]
            for member in members:
                doc = inspect.getdoc(member) if callable(member) or member is obj else None
                if doc and len(doc) >= MIN_DOCSTRING and doc not in seen:
                    seen.add(doc)
                    parts.append(doc)
    return "\n\n".join(parts)


def domain_text(name: str) -> str:
    """The text of a benign domain."""
    if name == "pydoc":
        return builtin_corpus_text()
    if name == "docstrings":
        return docstrings_text()
    raise ConfigError("domains", f"{name!r} is unknown; choose from {', '.join(DOMAINS)}")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
