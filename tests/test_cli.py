"""The `cpm` command line: version, help on every command, error paths."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer

from cpm import __version__
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
    for given, message in [("--resume", "no such option: --resume: neither cpm nor Beam knows it"),
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
    with pytest.raises(Exception):
        main(["--debug", "shards", "inspect", str(tmp_path / "missing")])


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


def test_console_script_and_module_entry_points() -> None:
    out = subprocess.run([sys.executable, "-m", "cpm", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"cpm {__version__}"


# -- no output inside an input (and no input inside the output) ----------------------------------


def _click_command(path: list[str]):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def io_commands() -> list[list[str]]:
    """Every command with both --input and --output."""
    found = []
    for path in all_commands():
        opts = {opt for param in _click_command(path).params for opt in getattr(param, "opts", ())}
        if {"--input", "--output"} <= opts:
            found.append(path)
    return found


def _dummy_required(path: list[str]) -> list[str]:
    """Plausible values for a command's other required parameters (the check runs before they are used)."""
    args: list[str] = []
    for param in _click_command(path).params:
        if not param.required or set(getattr(param, "opts", ())) & {"--input", "--output"}:
            continue
        value = "1"  # reads as a number or a text
        args += [value] if param.param_type_name == "argument" else [param.opts[0], value]
    return args


def test_the_io_commands_are_found() -> None:
    names = {" ".join(p) for p in io_commands()}
    assert {"corpus build", "tokenizer train", "tokenizer encode", "data pack", "data export-megatron", "train"} <= names


@pytest.mark.parametrize("path", io_commands(), ids=lambda p: " ".join(p))
def test_output_inside_an_input_is_refused(path: list[str], tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text('{"text": "x"}\n', encoding="utf-8")
    cases = [
        (str(inputs), str(inputs / "out"), "lies inside the --input"),  # output inside an input directory
        (str(inputs / "*.jsonl"), str(inputs / "out"), "lies inside the --input"),  # ... a glob's directory
        (str(inputs / "a.jsonl"), str(inputs / "a.jsonl"), "is the --input"),  # the input file itself
        (str(inputs / "a.jsonl"), str(tmp_path), "lies inside the --output"),  # an input inside the output
    ]
    for given, output, message in cases:
        assert main([*path, *_dummy_required(path), "--input", given, "--output", output]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (given, output, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"] and sorted(p.name for p in inputs.iterdir()) == ["a.jsonl"]


def test_paths_beside_each_other_are_accepted(tmp_path) -> None:
    from cpm.paths import check_separate

    (tmp_path / "in").mkdir()
    (tmp_path / "data.jsonl").write_text("{}\n")
    check_separate([str(tmp_path / "in"), f"news={tmp_path / 'data.jsonl'}"], tmp_path / "out")
    check_separate([str(tmp_path / "data.jsonl")], tmp_path / "data-out")  # beside an input file
    check_separate(["-", "gs://bucket/in"], "-")
    with pytest.raises(Exception, match="lies inside the --input news="):
        check_separate([f"news={tmp_path / 'in'}"], tmp_path / "in" / "out")


def test_train_defaults_shown_are_the_real_ones() -> None:
    from cpm.trainer.train import TRAIN_DEFAULTS, TrainConfig

    train = typer.main.get_command(app).commands["train"]
    config = TrainConfig()
    for param in train.params:
        shown = param.show_default
        if isinstance(shown, str) and re.fullmatch(r"[\d.e-]+", shown) and hasattr(config, param.name):
            assert float(shown) == float(getattr(config, param.name)), param.name
        if isinstance(shown, str) and shown.startswith("by --size: tiny "):
            assert float(shown.split()[3].rstrip(",")) == TRAIN_DEFAULTS["tiny"][param.name], param.name
