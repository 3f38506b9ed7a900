"""The `cpm` command line: version, help on every command, error paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from cpm import __version__
from cpm.errors import CpmError
from cpm.cli import app, main


def all_commands() -> list[list[str]]:
    """Every command path of the app, e.g. ["shards", "inspect"]."""
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(command, prefix: list[str]) -> None:
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                walk(sub, prefix + [name])
        else:
            paths.append(prefix)

    walk(root, [])
    return paths


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cpm {__version__}"


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p))
def test_every_command_has_help_with_example(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out and "cpm " in out


def test_unknown_option_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shards", "inspect", "--no-such-option", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_debug_shows_traceback(tmp_path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(CpmError, match=str(missing)):  # main() re-raises instead of printing one line
        main(["--debug", "shards", "inspect", str(missing)])
    proc = subprocess.run([console_script(), "--debug", "shards", "inspect", str(missing)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Traceback (most recent call last):")
    assert f"cpm.errors.ShardError: {missing}: no such shard" in proc.stderr  # a CpmError, in full


def test_debug_after_the_command_is_a_one_line_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    # only the options before the command are the root's: this --debug is an unknown option of `shards inspect`
    assert main(["shards", "inspect", str(tmp_path / "missing"), "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--debug" in err and err.count("\n") == 1


def test_root_flags_take_no_value_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--debug" in out and "--version" in out
    assert "<bool>" not in "".join(line for line in out.splitlines() if "--debug" in line or "--version" in line)


def console_script() -> str:
    """The ``cpm`` executable that ``pip install`` put next to this interpreter."""
    path = Path(sys.executable).parent / "cpm"
    assert path.is_file(), f"{path}: the console script is not installed (pip install -e .)"
    return str(path)


def test_console_script_and_module_entry_points(tmp_path) -> None:
    for command in ([console_script()], [sys.executable, "-m", "cpm"]):
        out = subprocess.run([*command, "--version"], capture_output=True, text=True, check=True, cwd=tmp_path)
        assert out.stdout.strip() == f"cpm {__version__}"
        failed = subprocess.run([*command, "shards", "inspect", str(tmp_path / "missing")], capture_output=True, text=True)
        assert failed.returncode == 1 and failed.stderr.startswith("error: ") and failed.stderr.count("\n") == 1
