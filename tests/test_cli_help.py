"""``--help`` works for the top level and every command, and every flag says what it does."""

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


@pytest.mark.parametrize("command", list(_table()))
def test_command_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command.split(), "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: likex {command}")


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
