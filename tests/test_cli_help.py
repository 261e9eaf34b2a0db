"""``--help`` works for the top level and every command, and every flag says what it does."""

import re

import pytest

import likex
from likex.cli import _table, build_parser, main


def test_top_level_help(capsys):
    for flag in ("--help", "-h"):
        with pytest.raises(SystemExit) as e:
            main([flag])
        assert e.value.code == 0
        out = capsys.readouterr().out
        groups = {name.split()[0] for name in _table()}  # "zoo build" is listed as "zoo"
        assert out.startswith("usage: likex") and all(name in out for name in groups)


def test_a_group_without_its_command_names_its_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["zoo"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("required: {build,audit}") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("command", list(_table()))
def test_command_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command.split(), "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: likex {command}")


def _help(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*args, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [None, *_table()])
def test_help_is_written_for_users(command, capsys):
    """No argparse escape shows (95%%), no raw float (0.6931471805599453), no class repr
    (Rate(rate=0.1, ...)), no pointer elsewhere for what a flag does."""
    text = _help([] if command is None else command.split(), capsys)
    assert "%%" not in text
    assert not re.search(r"\d\.\d{5,}", text), re.search(r".*\d\.\d{5,}.*", text).group()
    assert not re.search(r"\w+\(\w+=", text) and not re.search(r"README(?!\.md)", text)


def test_defaults_read_as_a_person_writes_them(capsys):
    audit = " ".join(_help(["audit"], capsys).split())
    assert "(default: ln 2 = 0.69)" in audit and "(default: 0.006 -> 0.05)" in audit
    bench = " ".join(_help(["audit-bench"], capsys).split())
    assert "(default: uniform,0.1,0.03)" in bench


def test_help_says_what_options_do_without_the_readme(capsys):
    train = " ".join(_help(["train"], capsys).split())
    assert train.split("--quiet] ", 1)[1].startswith("likex train: train a starting model")
    for mode in ("uniform puts it all on", "rate keeps", "tilt multiplies"):
        assert mode in train
    assert "e^B" in train.split("--beta BETA", 2)[2].split("--complete")[0]
    assert "finishing it" in train and "cut off in the middle of an entry" in train
    assert "last tenth" in " ".join(_help(["eval"], capsys).split())
    top = " ".join(_help([], capsys).split())
    assert "show which tokens a target selects: of GPT-2's vocabulary, or of a model's" in top
    assert "GPT-2 tokens" not in top
    run = " ".join(_help(["run"], capsys).split())
    assert "--quick a first look in a fraction of the time: 60 steps" in run


def test_every_flag_has_help_and_a_field():
    _, all_flags = build_parser()
    for command, flags in all_flags.items():
        for name, (path, flag, field) in flags.items():
            assert field.metadata["help"], f"likex {command} {flag} has no help"
            assert path[-1] == name


def test_an_error_names_the_flag_of_its_field(capsys, tmp_path):
    """The library says ``ci_half_width``; the CLI says ``--ci-width``, the flag that exists."""
    out = tmp_path / "out"
    assert main(["run", "--preset", "tiny", "--ci-width", "0.7", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--ci-width must be in (0, 0.5)" in err
    assert not out.exists()
    assert main(["train", "--preset", "tiny", "--mode", "tilt", "--out", str(out)]) == 2
    assert "--mode tilt needs --beta B" in capsys.readouterr().err


def test_the_public_api_is_importable_from_the_package():
    for name in likex.__all__:
        assert getattr(likex, name) is not None
    with pytest.raises(AttributeError):
        likex.no_such_name  # noqa: B018
