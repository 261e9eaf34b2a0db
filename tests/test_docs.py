"""The docs site's generated pages are complete: the CLI reference (docs/cli.md, filled in by
docs/hooks.py at build time) lists every command and every flag of the parser the ``likex``
command runs, with its default, and the API page documents every public name of ``likex``.
``mkdocs build --strict`` (run by ``make test``) checks links and references."""

import argparse
import importlib.util
import re
from pathlib import Path

import likex
from likex.cli import _table, build_parser

ROOT = Path(__file__).parents[1]


def hooks():
    spec = importlib.util.spec_from_file_location("likex_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every command of the CLI's table by its name ("zoo build" is ``likex zoo build``)."""
    built = build_parser()
    top = built[0] if isinstance(built, tuple) else built
    found = {}
    for name in _table():
        parser = top
        for word in name.split():
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = sub.choices[word]
        found[name] = parser
    return found


def sections(reference: str) -> dict[str, str]:
    """command name -> its section of the generated reference."""
    parts = reference.split("\n## likex ")[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def test_cli_reference_has_every_command_and_flag_with_its_default():
    h = hooks()
    assert h.CLI_MARKER in (ROOT / "docs" / "cli.md").read_text()  # the page is generated
    assert "docs/hooks.py" in (ROOT / "mkdocs.yml").read_text()
    found = sections(h.cli_reference())
    cmds = commands()
    assert sorted(found) == sorted(cmds)
    missing = []
    for name, parser in cmds.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                if f"`{flag}`" not in found[name]:
                    missing.append(f"likex {name} {flag}")
            default = re.search(r"\(default: (.*)\)\s*$", (action.help or "").replace("%%", "%"))
            if default and f"`{default.group(1)}`" not in found[name]:
                missing.append(f"likex {name} {action.option_strings}: default {default.group(1)}")
    assert not missing, missing


def test_api_page_documents_every_public_name():
    assert hooks().API_MARKER in (ROOT / "docs" / "api.md").read_text()
    api = hooks().api_reference()
    block = r"^::: (\S+)\n    options:\n      heading: \"likex\.(\w+)\""
    blocks = dict(re.findall(block, api, re.M))
    assert sorted(blocks.values()) == sorted(likex.__all__)
    for path, name in blocks.items():
        assert path.endswith(f".{name}")
