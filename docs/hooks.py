"""MkDocs hooks (mkdocs.yml ``hooks:``): two pages are generated from the code at build time.

- ``cli.md``: every command of ``likex.cli.build_parser()`` (a group's too, ``likex zoo
  build``) with every flag, its value, default and help, read off the same parser that
  ``likex`` itself runs (whose flags are generated from the config fields). Nothing is copied
  by hand, so the reference cannot drift.
- ``api.md``: one mkdocstrings block per public name of the ``likex`` package
  (``likex.__all__``), resolved to the module that defines it, so the page follows the code
  when a name moves.

Each page holds a marker comment that the generated Markdown replaces. ``cli_reference()`` and
``api_reference()`` are plain functions: tests/test_docs.py calls them as the hook does.
"""

from __future__ import annotations

import argparse
import html
import re
from collections import defaultdict

CLI_MARKER = "<!-- likex:cli-reference -->"
API_MARKER = "<!-- likex:api-reference -->"

_DEFAULT = re.compile(r"\s*\(default: (.*)\)\s*$", re.S)
_UNTITLED = {"options", "optional arguments", "positional arguments"}


def cli_parser() -> argparse.ArgumentParser:
    """The parser the ``likex`` command runs."""
    from likex.cli import build_parser

    built = build_parser()
    return built[0] if isinstance(built, tuple) else built  # (parser, flags) or a parser


def subcommands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """name -> (one-line help, parser) of every subcommand, in the CLI's order; a group's
    commands under their full names ("zoo build") in its place, the group itself runs none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            found: dict[str, tuple[str, argparse.ArgumentParser]] = {}
            for name, p in action.choices.items():
                nested = subcommands(p, f"{prefix}{name} ")
                found |= nested or {f"{prefix}{name}": (helps.get(name, ""), p)}
            return found
    return {}


def _text(s: str | None) -> str:
    """argparse help text as Markdown table text."""
    s = " ".join((s or "").replace("%%", "%").split())
    s = html.escape(s, quote=False)
    return re.sub(r"([\\`*_\[\]|])", r"\\\1", s)


def _code(s: str) -> str:
    return "`" + s.replace("|", "\\|") + "`"


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "switch"
    if action.choices:
        return " \\| ".join(_code(str(c)) for c in action.choices)
    metavar = action.metavar or action.dest.upper()
    if action.nargs == "+":
        metavar = f"{metavar} [{metavar} ...]"
    elif isinstance(action.nargs, int) and action.nargs > 1:
        metavar = " ".join([metavar] * action.nargs)
    shown = _code(metavar)
    return shown + ", repeatable" if isinstance(action, argparse._AppendAction) else shown


def _row(action: argparse.Action) -> str:
    help_text = action.help if action.help != argparse.SUPPRESS else ""
    help_text = (help_text or "").replace("%%", "%")
    default = "off" if action.nargs == 0 else ""
    found = _DEFAULT.search(help_text)
    if found:
        default, help_text = _code(found.group(1)), help_text[: found.start()]
    if action.required:
        default = "required"
    flags = ", ".join(_code(s) for s in action.option_strings) or _code(action.dest)
    return f"| {flags} | {_value(action)} | {default} | {_text(help_text)} |"


def command_reference(name: str, summary: str, parser: argparse.ArgumentParser) -> str:
    """One command's section: its summary, description and a table of flags per group."""
    lines = [f"## likex {name}", "", _text(summary), ""]
    if parser.description and parser.description.strip() != summary.strip():
        lines += [_text(parser.description), ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        if group.title and group.title not in _UNTITLED:
            lines += [f"**{_text(group.title)}**", ""]
        lines += ["| flag | value | default | what it does |", "| --- | --- | --- | --- |"]
        lines += [_row(a) for a in actions]
        lines.append("")
    return "\n".join(lines)


def cli_reference() -> str:
    """The CLI reference: every command and every flag of ``likex``."""
    parser = cli_parser()
    commands = subcommands(parser)
    lines = [
        "Every command also takes `-h`/`--help`; `likex --version` prints the version.",
        "",
        "| command | what it does |",
        "| --- | --- |",
    ]
    lines += [
        f"| [`likex {n}`](#likex-{n.replace(' ', '-')}) | {_text(h)} |"
        for n, (h, _) in commands.items()
    ]
    lines.append("")
    lines += [command_reference(n, h, p) for n, (h, p) in commands.items()]
    return "\n".join(lines)


def api_reference() -> str:
    """mkdocstrings blocks for the public API, grouped by the module that defines each name."""
    import likex

    by_module: dict[str, list[str]] = defaultdict(list)
    for name in sorted(likex.__all__):
        by_module[getattr(likex, name).__module__].append(name)
    lines = []
    for module in sorted(by_module):
        lines += [f"## From `{module}`", ""]
        for name in by_module[module]:
            lines += [
                f"::: {module}.{name}",
                "    options:",
                f'      heading: "likex.{name}"',
                "      heading_level: 3",
                "",
            ]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if API_MARKER in markdown:
        markdown = markdown.replace(API_MARKER, api_reference())
    return markdown
