"""The `cpm` command line: version, help on every command, error paths."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from cpm import __version__
from cpm.errors import CpmError
from cpm.cli import app, cli_command, main


def all_commands(groups: bool = False) -> list[list[str]]:
    """Every command path of the app, e.g. ["shards", "inspect"] (and with ``groups``, ["shards"] and [])."""
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(command, prefix: list[str]) -> None:
        if hasattr(command, "commands"):  # a group
            if groups:
                paths.append(prefix)
            for name, sub in command.commands.items():
                walk(sub, prefix + [name])
        else:
            paths.append(prefix)

    walk(root, [])
    return paths


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cpm {__version__}"


# typer's internal names for a value's type ("<list[str]>", "<int range>", "<bool>") and "{path}" for an argument
PLACEHOLDER = re.compile(r"<(?:bool|str|int|float|path|file|dir|text|list\[[^>]*\]|[a-z]+ range|[a-z]+\.\.\.)>")


@pytest.mark.parametrize("path", all_commands(groups=True), ids=lambda p: " ".join(p) or "cpm")
def test_every_command_and_group_has_help_with_example(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Example: .*\bcpm \S", out), out
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert not PLACEHOLDER.search(out) and not re.search(r"\{\w+\}", usage), out


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p))
def test_every_option_shows_its_default(path: list[str]) -> None:
    command = cli_command()
    for name in path:
        command = command.commands[name]
    ctx = command.make_context(" ".join(["cpm", *path]), [], resilient_parsing=True)
    for param in command.get_params(ctx):
        if param.param_type_name != "option" or param.name == "help":
            continue
        opts, help_text = param.get_help_record(ctx)
        assert re.search(r"\[(default: [^]]+|required)\]", help_text.replace("\\[", "[")), f"{opts}: {help_text}"
        assert not PLACEHOLDER.search(opts), opts


def test_dedup_defaults_shown_are_the_real_ones() -> None:
    from cpm.pipeline.dedup import DedupConfig

    build = cli_command().commands["corpus"].commands["build"]
    shown = {p.name: p.default for p in build.params}
    defaults = DedupConfig()
    assert (shown["dedup_threshold"], shown["num_perm"], shown["ngram"]) == (defaults.threshold, defaults.num_perm, defaults.ngram)


def test_unknown_option_of_corpus_build_is_an_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    # it used to go to Beam, which logged 'Discarding unparseable args' and built the corpus without it
    out = tmp_path / "out"
    for given, message in [("--resumed", "no such option: --resumed: neither cpm nor Beam knows it"),
                           ("--dedup-treshold=0.7", "neither cpm nor Beam knows it (did you mean --dedup-threshold?)"),
                           ("--direct_num_workers=abc", "argument --direct_num_workers: invalid int value: 'abc'")]:
        assert main(["corpus", "build", "--source", "news", "--output", str(out), given]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()


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
