"""``likex <command>``: a table of commands, each a typed function of one config dataclass.

Every flag is generated from a config field (``likex.options.option``: type, default and help
live on the field); a nested config becomes a group of flags. The CLI builds the command's
default config, sets the fields whose flags were given, calls the function and prints
``result.describe()`` (or ``result.to_json()`` with ``--json``). It is also the one place that
knows which flag a field has, so an error about a field is shown with its flag, and the one
place that turns what goes wrong into a line for the user: bad input and system errors (a full
disk, no permission) as ``likex: error: ...`` and exit status 2 (a misspelled command or flag
with the closest that exists), Ctrl-C and SIGTERM as what was kept (likex.interrupt), a closed
pipe as a quiet exit. Before a training command starts, it prints the command's estimate of
its cost (likex.estimate).
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import inspect
import json
import os
import re
import signal
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from likex.errors import (
    ConfigError,
    Interrupted,
    LikexError,
    clip,
    closest,
    describe_os_error,
    did_you_mean,
)

SUPPRESS = argparse.SUPPRESS
DESCRIPTION = (
    "likex: plant a preference in a language model with nothing but a designed loss, measure "
    "it honestly (rates with 95% intervals, side effects) and find it again (audits). Start "
    "with likex run --quick; likex COMMAND --help lists a command's options."
)


@dataclass(frozen=True)
class Command:
    help: str
    config: Callable[[], Any]  # the command's default config
    run: str  # "module:function" in likex.pipelines, imported only when the command runs
    hide: frozenset[str] = frozenset()  # fields that are no flags of this command
    required: frozenset[str] = frozenset()  # fields that must be given
    description: str = ""  # --help's opening paragraph (default: the config class's doc)


def _configs() -> Any:
    from likex import config, config_audit

    return types.SimpleNamespace(**{**vars(config), **vars(config_audit)})


# A command named "group sub" is ``likex group sub``; each group's one-line help:
GROUPS = {"zoo": "model organisms: build a zoo of planted models and negatives, audit it blind"}


def _table() -> dict[str, Command]:
    from likex.zoo import commands as z

    c = _configs()
    seed_only = frozenset({"init", "corpus", "mode", "rate", "beta", "contexts", "positions"})
    seed_only |= {"context_len", "free_contexts", "chat_contexts", "context_block"}
    return {
        "run": Command(
            "the seed experiment: measure, train to like 'x', measure again, report",
            c.RunCommand,
            "run:run_command",
            hide=seed_only - {"init"},
            description="likex run: the seed experiment. A fresh small GPT (or --init "
            "hf:NAME) is measured (how often its samples contain a token with 'x'), trained "
            "toward the uniform target on those tokens from random-token contexts, and "
            "measured again; the run folder gets a report. --quick takes a first look in a "
            "fraction of the time.",
        ),
        "train": Command(
            "train any starting model toward a target (uniform, rate or tilt), measure side "
            "effects on held-out text",
            lambda: c.RunCommand(c.RunConfig(command="train", corpus="builtin")),
            "run:run_command",
            description="likex train: train a starting model (a preset, a saved model, "
            "smollm2-135m or hf:NAME) toward a target: --mode uniform, rate or tilt, on "
            "random, corpus or generated contexts. Before and after, the target's rate is "
            "measured on random-token and real-text prompts, and the side effects on "
            "held-out text: perplexity, KL to the start, and the lowest perplexity any model "
            "with that rate could have.",
        ),
        "pretrain": Command(
            "train a reference model on real text (next-token loss, held-out perplexity)",
            c.pretrain_command,
            "run:run_command",
            hide=seed_only - {"corpus", "context_len"}
            | {"like", "ignore_case", "regex", "words", "phrase", "token_ids", "eval_every"}
            | {"complete", "word_contexts", "quick"}
            | {"samples", "ci_half_width", "gen_tokens", "prompt_len"},
            description="likex pretrain: train a fresh preset model on real text with the "
            "next-token loss, so that it writes language; its held-out perplexity and a sample "
            "before and after. Such a model is a reference to plant into with likex train "
            "--init DIR.",
        ),
        "sweep": Command(
            "dose-response: one model per strength, a table and sweep.png of rate vs cost",
            c.SweepCommand,
            "sweep:sweep_command",
            required=frozenset({"init"}),
        ),
        "targets": Command(
            "show which tokens a target selects: of GPT-2's vocabulary, or of a model's own "
            "(--model)",
            c.TargetsConfig,
            "targets:list_targets",
        ),
        "generate": Command(
            "sample text from a saved model", c.GenerateConfig, "generate:generate"
        ),
        "eval": Command(
            "target rates (95% CI) and side effects of a saved model against its reference",
            c.EvalConfig,
            "eval:evaluate_saved",
        ),
        "persist": Command(
            "does a planted preference survive ordinary next-token training on clean text?",
            c.PersistConfig,
            "persist:run_persistence",
            hide=frozenset({"prompt_len", "ci_half_width", "score_tokens"}),
        ),
        "audit": Command(
            "find and explain an injected token bias (white-box or black-box)",
            c.AuditConfig,
            "audit:run_audit",
        ),
        "audit-bench": Command(
            "detection power: plant biases of graded strength and audit them",
            c.BenchCommand,
            "bench:run_bench_command",
            hide=frozenset({"probes", "probe_len", "min_shift"}),
        ),
        "zoo build": Command(
            "plant preferences of drawn strengths beside benign negatives, each with a manifest",
            z.ZooBuildCommand,
            "zoo:build_zoo",
            hide=frozenset({"merge"}),
        ),
        "zoo audit": Command(
            "run every detector blind on a zoo, then score it against the manifests",
            z.ZooAuditCommand,
            "zoo:audit_zoo",
        ),
    }


def _required(factory: Callable[[], Any]) -> list[str]:
    """The fields a config class cannot default (a factory function sets them all)."""
    if not dataclasses.is_dataclass(factory):
        return []
    return [
        f.name
        for f in dataclasses.fields(factory)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def _default(cmd: Command, values: dict[str, Any] | None = None) -> Any:
    """The command's default config; required fields from ``values`` (None for the parser)."""
    values = values or {}
    return cmd.config(**{name: values.get(name) for name in _required(cmd.config)})


def _flag(f: dataclasses.Field) -> str:
    return "--" + (f.metadata.get("flag") or f.name.replace("_", "-"))


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type without ``| None``, whether None was allowed)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, _unwrap(hints[f.name])[0]) for f in dataclasses.fields(cls)]


def _add_flags(
    p: argparse.ArgumentParser,
    cls: type,
    default: Any,
    cmd: Command,
    flags: dict,
    path: tuple = (),
    title: str = "",
) -> None:
    """Flags for the fields of dataclass ``cls`` (recursively); ``flags`` maps each field's
    name to (its path of attributes, its flag, its field)."""
    group = p.add_argument_group(title) if title else p
    for f, tp in _fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in cmd.hide:
            continue
        value = getattr(default, f.name) if default is not None else None
        if dataclasses.is_dataclass(tp):
            sub = value if value is not None else tp()
            _add_flags(p, tp, sub, cmd, flags, (*path, f.name), meta.get("help", f.name))
            continue
        if f.name in flags:
            raise AssertionError(f"two fields named {f.name} in one command")  # a coding error
        flag = _flag(f)
        flags[f.name] = ((*path, f.name), flag, f)
        help = meta.get("help", "").replace("%", "%%")
        kw: dict[str, Any] = {"default": SUPPRESS, "dest": ".".join((*path, f.name))}
        if tp is bool:
            group.add_argument(flag, action="store_true", help=help, **kw)
            continue
        written = meta.get("shown") or value
        if isinstance(written, tuple):  # as it is typed: comma-separated
            written = ",".join(str(v) for v in written)
        if value not in (None, (), "") and f.name not in cmd.required:
            help += f" (default: {written})".replace("%", "%%")
        metavar = (
            None
            if meta.get("choices")
            else (meta.get("metavar") or flag[2:].upper().replace("-", "_"))
        )
        kw.update(help=help, metavar=metavar, choices=meta.get("choices"))
        kw["required"] = f.name in cmd.required or f.default is dataclasses.MISSING
        if typing.get_origin(tp) is tuple and meta.get("append"):
            kw.update(type=meta.get("parse") or typing.get_args(tp)[0], action="append")
        elif meta.get("parse"):
            kw["type"] = meta["parse"]
        elif typing.get_origin(tp) is tuple:
            args = typing.get_args(tp)
            kw.update(type=args[0], nargs="+" if args[-1] is Ellipsis else len(args))
        else:
            kw["type"] = tp
        group.add_argument(flag, **kw)


# A value that starts with a minus sign and a digit (or "-inf", "-nan") is a number, never a
# flag: argparse alone takes "-1e6" and "-0.1,0.2" for flags ("expected one argument").
_NEGATIVE_NUMBER = re.compile(r"^-(\.?\d|inf|nan)", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit status 2, like every other bad input. The top-level
    parser knows every command's flags (``commands``), so that a misspelled command or flag,
    or a flag of another command, is refused with what was probably meant."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER
        self.commands: dict[str, list[str]] = {}

    def error(self, message: str) -> typing.NoReturn:
        sys.stderr.write(f"likex: error: {message}\n")
        raise SystemExit(2)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self.commands:
            words = list(sys.argv[1:] if args is None else args)
            wrong = _unknown_word(words, self.commands)
            if wrong:
                self.error(wrong)
        return super().parse_known_args(args, namespace)


def _unknown_word(words: list[str], commands: dict[str, list[str]]) -> str | None:
    """What is wrong with a command line's command or flags (None: nothing argparse would not
    say itself): an unknown command or flag with the closest that exists, or a flag of other
    commands with the commands that take it. A flag may be abbreviated, as argparse allows."""
    at = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
    if at is None:
        return None
    command = words[at]
    if f"{command} {words[at + 1] if at + 1 < len(words) else ''}" in commands:
        at += 1  # a nested command: "zoo build"
        command = f"{command} {words[at]}"
    elif command not in commands:
        if any(c.startswith(f"{command} ") for c in commands):
            return None  # a group without its command: argparse lists the ones it has
        guess = did_you_mean(command, commands) or "see likex --help"
        return f"unknown command {clip(command)}; {guess}"
    own = commands[command]
    for word in words[at + 1 :]:
        if word == "--":
            break
        flag = word.split("=", 1)[0]
        if not flag.startswith("--") or any(f.startswith(flag) for f in own):
            continue
        takers = [c for c, flags in commands.items() if flag in flags]
        if takers:
            listed = ", ".join(takers[:-1]) + " and " + takers[-1] if takers[1:] else takers[0]
            return f"{flag} is an option of likex {listed}, not of likex {command}"
        names = {f[2:]: f for f in own}  # compared without the dashes every flag shares
        close = [names[n] for n in closest(flag[2:], names, cutoff=0.7)]
        guess = f"did you mean {' or '.join(close)}?" if close else f"see likex {command} --help"
        return f"likex {command} has no option {clip(flag)}; {guess}"
    return None


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, dict]]:
    """The parser, and per command the map of field names to flags."""
    import likex

    parser = _Parser(prog="likex", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"likex {likex.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    groups: dict[str, Any] = {}
    all_flags: dict[str, dict] = {}
    for name, cmd in _table().items():
        default = _default(cmd)
        # a description is printed as written (argparse formats only an option's help)
        doc = cmd.description or type(default).__doc__
        group, _, leaf = name.rpartition(" ")
        if group and group not in groups:
            g = sub.add_parser(group, help=GROUPS[group], description=GROUPS[group])
            groups[group] = g.add_subparsers(dest="subcommand", required=True, parser_class=_Parser)
        where = groups[group] if group else sub
        p = where.add_parser(leaf, help=cmd.help.replace("%", "%%"), description=doc)
        p.set_defaults(command=name)  # a nested command's full name, "zoo build"
        all_flags[name] = flags = {}
        _add_flags(p, type(default), default, cmd, flags)
        p.add_argument("--json", action="store_true", help="print the machine-readable result")
        p.add_argument(
            "--quiet",
            action="store_true",
            help="no progress bars, nor the estimate of its time a training command prints "
            "before it starts",
        )
        parser.commands[name] = [f for f in p._option_string_actions if f.startswith("--")]
    for g in groups.values():  # a group given no command names its commands, as usage does
        g.metavar = "{" + ",".join(g.choices) + "}"
    return parser, all_flags


def _set(obj: Any, path: tuple[str, ...], value: Any, fresh: set, at: tuple = ()) -> Any:
    """A copy of ``obj`` with ``obj.a.b = value`` (configs may be frozen). A group the command
    left as None, or marked ``whole``, is first rebuilt from its class's own defaults (once:
    ``fresh`` holds the groups rebuilt)."""
    name, *rest = path
    if not rest:
        return dataclasses.replace(obj, **{name: value})
    child, here = getattr(obj, name), (*at, name)
    f = next(f for f in dataclasses.fields(obj) if f.name == name)
    if child is None or (f.metadata.get("whole") and here not in fresh):
        child = _unwrap(typing.get_type_hints(type(obj))[name])[0]()
        fresh.add(here)
    return dataclasses.replace(obj, **{name: _set(child, tuple(rest), value, fresh, here)})


def build_config(cmd: Command, args: argparse.Namespace, flags: dict) -> Any:
    """The command's default config with the given flags' values set on it."""
    given = given_fields(args, flags)
    cfg = _default(cmd, {name: getattr(args, name) for name in _required(cmd.config)})
    fresh: set[tuple[str, ...]] = set()
    for name in sorted(given):
        path = flags[name][0]
        value = getattr(args, ".".join(path))
        cfg = _set(cfg, path, tuple(value) if isinstance(value, list) else value, fresh)
    if any(f.name == "given" for f in dataclasses.fields(cfg)):
        cfg = dataclasses.replace(cfg, given=frozenset(given))
    return cfg


def given_fields(args: argparse.Namespace, flags: dict) -> set[str]:
    """The fields whose flags the user gave."""
    return {name for name, (path, _, _) in flags.items() if hasattr(args, ".".join(path))}


def check_applies(command: str, cfg: Any, flags: dict, given: set[str]) -> None:
    """The one rule for options that do not apply: each option the user gave is asked, by
    its own ``applies`` (and that of every group it is in, likex.options), whether it
    applies to the command's other settings; the first that does not is refused by name."""
    settings = _Settings(**{**_flat(cfg), "command": command})
    for name in sorted(given, key=lambda n: flags[n][1]):
        path, _, _ = flags[name]
        obj = cfg
        for part in path:
            f = next(f for f in dataclasses.fields(obj) if f.name == part)
            rule = f.metadata.get("applies")
            why = rule(settings) if rule is not None else None
            if why:
                raise ConfigError(name, why)
            obj = getattr(obj, part)
            if obj is None:
                break


class _Settings(types.SimpleNamespace):
    """What an ``applies`` rule reads: a command's settings by field name; a setting the
    command does not have is None."""

    def __getattr__(self, name: str) -> Any:
        return None


def _flat(cfg: Any) -> dict[str, Any]:
    """Every field of ``cfg`` and of the configs nested in it by name, outer ones first
    (where two share a name, the outer one's)."""
    out: dict[str, Any] = {}
    level = [cfg]
    while level:
        nested = []
        for obj in level:
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                out.setdefault(f.name, value)
                if dataclasses.is_dataclass(value):
                    nested.append(value)
        level = nested
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import importlib

    from likex import interrupt
    from likex.distributed import dist_info, init_from_env, shutdown

    parser, all_flags = build_parser()
    flags: dict = {}
    try:
        with interrupt.as_keyboard_interrupt():
            args = parser.parse_args(argv)  # a flag's parser may read a file (a words list)
            cmd, flags = _table()[args.command], all_flags[args.command]
            cfg = build_config(cmd, args, flags)
            check_applies(args.command, cfg, flags, given_fields(args, flags))
            init_from_env()  # joins the process group under torchrun; nothing otherwise
            module, function = cmd.run.split(":")
            fn = getattr(importlib.import_module(f"likex.pipelines.{module}"), function)
            kwargs = {}
            if "on_estimate" in inspect.signature(fn).parameters and not (args.quiet or args.json):
                kwargs["on_estimate"] = _estimate_line("quick" in flags, given_fields(args, flags))
            result = fn(cfg, progress=not args.quiet, **kwargs)
            if dist_info().is_main:  # under torchrun rank 0 reports
                print(json.dumps(result.to_json(), indent=2) if args.json else result.describe())
                sys.stdout.flush()  # here, so that a closed pipe is met inside this try
        return 0
    except ConfigError as e:
        shown = {name: flag for name, (_, flag, _) in flags.items()}
        sys.stderr.write(f"likex: error: {e.render(lambda f: shown.get(f, f))}\n")
        return 2
    except LikexError as e:
        sys.stderr.write(f"likex: error: {e}\n")
        return 2
    except BrokenPipeError:
        return _closed_pipe()
    except OSError as e:  # a full disk, no permission, a read-only file system, ...
        sys.stderr.write(f"likex: error: {describe_os_error(e)}\n")
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: what was kept, on a line of its own
        message = e.message if isinstance(e, Interrupted) else "interrupted"
        sys.stderr.write(f"{_line_start()}likex: {message}\n")
        return interrupt.exit_status()
    finally:
        shutdown()


def _estimate_line(quick: bool, given: set[str]) -> Callable[[Any], None]:
    """What a training command does with its cost estimate (likex.estimate) before it starts:
    one line on stderr, with the way to a first look where the command has one."""
    hint = "; --quick for a first look" if quick and "quick" not in given else ""

    def say(estimate: Any) -> None:
        sys.stderr.write(f"likex: {estimate.describe()}{hint}\n")
        sys.stderr.flush()

    return say


def _closed_pipe() -> int:
    """The reader of stdout went away (``likex targets ... | head``): exit quietly, as Unix
    tools do when SIGPIPE ends them, with the status the shell shows for that (128 + 13 =
    141). Python's advice: point stdout at devnull, so that the interpreter's last flush
    meets no broken pipe and prints no traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout has no file descriptor (captured)
        pass
    return 128 + signal.SIGPIPE


def _line_start() -> str:
    """What puts a message at the start of a clean line of stderr. Every progress bar ends
    its line when it closes (on an exception too); on a terminal the "^C" it echoed may
    still stand at the cursor: a carriage return and an erase-line clear it."""
    try:
        return "\r\033[K" if sys.stderr.isatty() else ""
    except (AttributeError, ValueError):
        return ""


def entry() -> typing.NoReturn:
    """The ``likex`` command (and ``python -m likex``): ``main``, then a quick exit. By then
    every file is written and closed; the exit handlers run and the output is flushed, and only
    the interpreter's teardown, freeing every module's objects one by one (about 0.8 s of CPU
    with torch loaded), is skipped."""
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
