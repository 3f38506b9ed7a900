"""Every code block in README.md and docs/*.md is checked, so that the docs cannot drift from the code.

* ```python blocks run, in order per page, in a folder holding the outputs they name (``out/tok``,
  ``out/packed``, ``runs/tiny``, ``hf/tiny``, ...), built here from small real inputs;
* ``>>>`` examples run as doctests;
* every ``cpm ...`` command line in a shell block must name an existing command, use only options
  that command has (Beam pipeline options for ``cpm corpus build``), and, when it is complete (no
  ``...`` or ``[optional]`` parts), parse with its values; ``make TARGET`` must be a Makefile target
  and ``bench/`` and ``tests/`` scripts must exist.
"""

from __future__ import annotations

import doctest
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tiny_gpt import REPO, save_run, tiny_model

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
SHELL_LANGS = ("", "bash", "sh", "shell", "console")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(lang_filter) -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text("utf-8")
        for match in FENCE.finditer(text):
            if lang_filter(match.group(1)):
                found.append(Block(page, text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2)))
    return found


# ------------------------------------------------------------------------------ python blocks


@pytest.fixture(scope="module")
def workspace(news_corpus, news_packed, tmp_path_factory) -> Path:
    """The outputs the docs' examples read: out/corpus, out/tok, out/packed (the bundled news), runs/tiny, hf/tiny, ..."""
    from cpm.cli import main
    from cpm.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(news_corpus, root / "out" / "corpus")
    shutil.copytree(news_packed[0], root / "out" / "packed")
    shutil.copytree(news_packed[1], root / "out" / "tok")
    tok = Tokenizer.load(root / "out" / "tok")
    save_run(root / "runs" / "tiny", tiny_model(tok.vocab_size, seed=1, n_positions=128), root / "out" / "tok")
    shutil.copytree(root / "runs" / "tiny", root / "out" / "demo" / "run")
    assert main(["-q", "export", "hf", "--checkpoint", str(root / "runs" / "tiny"), "--output", str(root / "hf" / "tiny")]) == 0
    assert main(["-q", "shards", "export", str(root / "out" / "corpus"), "--output", str(root / "out" / "corpus-parquet")]) == 0
    return root


@pytest.mark.parametrize("page", [p for p in PAGES if "```python" in p.read_text("utf-8")], ids=lambda p: p.name)
def test_python_blocks_run(page, workspace, monkeypatch, torch_one_thread, tmp_path):
    monkeypatch.chdir(workspace)
    try:
        import datasets

        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    except ImportError:
        pass
    for block in blocks(lambda lang: lang == "python"):
        if block.page == page:
            try:
                exec(compile(block.code, str(block), "exec"), {"__name__": "__docs__"})
            except Exception as exc:  # noqa: BLE001 - report which block failed
                pytest.fail(f"{block}: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("page", [p for p in PAGES if ">>> " in p.read_text("utf-8")], ids=lambda p: p.name)
def test_doctest_examples(page):
    test = doctest.DocTestParser().get_doctest(page.read_text("utf-8"), {}, page.name, str(page), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


# ------------------------------------------------------------------------------ shell blocks


def _cpm_command():
    import typer

    from cpm.cli import app

    return typer.main.get_command(app)


def _beam_options() -> set[str]:
    """The flags (not the destinations: ``--dask_client_address`` sets ``address``) of every Beam
    options class cpm's own check knows, runners' included."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    from cpm.pipeline.cli import known_beam_options

    known_beam_options()  # imports the runners' option classes
    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # as PipelineOptions.get_all_options does
    return {flag for flag in parser._option_string_actions if flag.startswith("--")}


def command_lines(block: Block) -> list[str]:
    """The command lines of a shell block ("$ " prompts stripped, "\\" continuations joined, output lines dropped)."""
    lines, current = [], ""
    prompted = any(line.startswith("$ ") for line in block.code.splitlines())
    for raw in block.code.splitlines():
        if prompted and not raw.startswith("$ ") and not current:
            continue  # output shown after a prompt
        line = raw[2:] if raw.startswith("$ ") else raw
        current += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [line for line in lines if line and not line.startswith("#")]


def _words(line: str) -> list[str]:
    line = re.sub(r"\s#\s.*$", "", line)  # a trailing comment
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def _cpm_invocations(line: str) -> list[list[str]]:
    """The argument lists given to cpm in a command line (``cpm ...``, ``... | cpm ...``, ``-m cpm.cli ...``)."""
    out = []
    for part in re.split(r"\s*(?:\||&&|;)\s*", line):
        words = _words(part)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value before the command
            words.pop(0)
        if words[:1] in (["cpm"], [".venv/bin/cpm"]):
            args = words[1:]
        elif "-m" in words and words[words.index("-m") + 1 :][:1] == ["cpm.cli"]:
            args = words[words.index("-m") + 2 :]
        else:
            continue
        kept, skip = [], False
        for word in args:  # drop redirections and their files
            if skip:
                skip = False
            elif word in ("<", ">", ">>", "2>"):
                skip = True
            elif not word.startswith(("<", ">", "2>")):
                kept.append(word)
        out.append(kept)
    return out


def _click():
    """The click typer uses (typer >= 0.2x carries its own copy)."""
    try:
        from typer import _click as click
    except ImportError:
        import click
    return click


def check_cpm_args(args: list[str], where: str) -> None:
    click = _click()
    command = _cpm_command()
    path = ["cpm"]
    rest = list(args)
    while hasattr(command, "list_commands"):
        while rest and rest[0].startswith("-"):  # root options
            rest.pop(0)
        assert rest, f"{where}: 'cpm {' '.join(args)}' names no command"
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"{where}: '{' '.join(path)} {rest[0]}' is not a command"
        path.append(rest.pop(0))
        command = sub
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
    extra = _beam_options() if path[1:] == ["corpus", "build"] else set()
    partial = any(w in ("...", "…") or w.startswith(("[", "{")) or "|" in w for w in rest)
    for word in rest:
        name = word.strip("[]{}").split("=")[0]
        if name.startswith("-") and not name.lstrip("-").isdigit() and len(name) > 1:
            assert name in known or name in extra, f"{where}: '{' '.join(path)}' has no option {name}"
    if not partial:
        context_args = [w for w in rest if w not in ("...", "…")]
        try:
            command.make_context(" ".join(path), context_args, resilient_parsing=False)
        except Exception as exc:  # noqa: BLE001 - click's usage errors, typer's value errors
            if type(exc).__name__ != "Exit":  # --help
                pytest.fail(f"{where}: 'cpm {' '.join(args)}' does not parse: {' '.join(str(exc).split())}")


SHELL_BLOCKS = blocks(lambda lang: lang in SHELL_LANGS)


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=str)
def test_shell_commands_exist_and_parse(block):
    makefile = (REPO / "Makefile").read_text("utf-8")
    for line in command_lines(block):
        for args in _cpm_invocations(line):
            check_cpm_args(args, str(block))
        words = _words(line)
        if words[:1] == ["make"]:
            for target in (word for word in words[1:] if "=" not in word):  # VAR=value: a make variable
                assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{block}: no Makefile target {target}"
        for word in words:  # the project's own scripts and tests
            if word.startswith(("bench/", "tests/")) and word.endswith(".py"):
                assert (REPO / word).is_file(), f"{block}: {word} does not exist"


def test_the_checker_finds_drift():
    """A renamed option, an unknown command and a bad value are all caught."""
    fake = Block(REPO / "README.md", 1, "bash", "cpm tokenizer train --input a --output b --vocab-size 3000\n")
    assert _cpm_invocations(command_lines(fake)[0]) == [["tokenizer", "train", "--input", "a", "--output", "b", "--vocab-size", "3000"]]
    for bad in (["tokenizer", "train", "--input", "a", "--output", "b", "--vocab", "3000"], ["tokenizer", "tran"],
                ["tokenizer", "train", "--input", "a", "--output", "b", "--vocab-size", "many"]):
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            check_cpm_args(bad, "fake")
    check_cpm_args(["corpus", "build", "--source", "all", "--output", "o", "--flink_master=host:8081"], "beam options")
