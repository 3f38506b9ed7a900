"""The ``cpm`` command line.

Each part of the toolkit contributes its commands through a ``register(app)`` function in
its own ``cli`` module (``cpm.shards.cli``, ``cpm.pipeline.cli``, ...). Those modules stay
light at import time: heavy libraries (Beam, torch, SentencePiece) are imported inside the
commands, so ``cpm --help`` is instant.

User errors (:class:`cpm.errors.CpmError`, bad options) print one line and exit 1; a
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from typing import Any, Callable

import typer

try:  # typer >= 0.24 vendors its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on plain click
    from click import exceptions as click_exceptions

from cpm import __version__
from cpm.errors import CpmError

app = typer.Typer(
    name="cpm",
    help="Raw Chinese text to a trained CPM-style GPT.\n\nExample: cpm shards inspect out/news --rows 3",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Modules whose ``register(app)`` adds commands; a module is listed once its feature works.
# In pipeline order: corpus, shards, tokenizer, data, train, generate/eval/export/import.
COMMAND_MODULES = [
    "cpm.pipeline.cli",
    "cpm.shards.cli",
    "cpm.tokenizer.cli",
    "cpm.data.cli",
    "cpm.trainer.cli",
    "cpm.trainer.gen_cli",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cpm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    # metavar="": these are flags; without it typer 0.29's help shows them as "--debug <bool>"
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, metavar="", help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", metavar="", help="Show full tracebacks on errors (before the command: cpm --debug train ...)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", metavar="", help="Log debug messages."),
    quiet: bool = typer.Option(False, "--quiet", "-q", metavar="", help="Log warnings and errors only."),
) -> None:
    """Raw Chinese text to a trained CPM-style GPT."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    # cpm's own messages at the chosen level; libraries (Beam, torch, ...) at warnings only
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("cpm").setLevel(level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_library_noise)


def _drop_library_noise(record: logging.LogRecord) -> bool:
    """Hide import-time warnings of optional Beam connectors cpm does not use."""
    return not (record.name == "root" and "apitools" in str(record.msg))


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def _leading_options(args: list[str]) -> list[str]:
    """The root options, before the first subcommand name (``cpm --debug train ...``): a
    ``--debug`` after the subcommand is that command's (unknown) option, not the root's."""
    leading = []
    for arg in args:
        if not arg.startswith("-"):
            break
        leading.append(arg)
    return leading


def _keep_output_apart(callback: Callable[..., Any], input_name: str, output_name: str) -> Callable[..., Any]:
    """``callback`` that first refuses an ``--output`` inside an ``--input`` (and the reverse)."""
    from cpm.paths import check_separate

    @functools.wraps(callback)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        inputs, output = kwargs.get(input_name), kwargs.get(output_name)
        if inputs is not None and output is not None:
            check_separate(inputs if isinstance(inputs, (list, tuple)) else [inputs], output)
        return callback(*args, **kwargs)

    return guarded


# where typer renders help text as rich markup (its app's rich_markup_mode), a literal "[" is escaped
_OPEN = "\\[" if getattr(app, "rich_markup_mode", None) in ("rich", "markdown") else "["


def _with_note(help_text: str | None, note: str) -> str:
    """``help_text`` followed by ``[note]``, the way typer shows ``[default: 1]``."""
    return f"{help_text or ''} {_OPEN}{note}]".strip()


def _present(param: Any) -> None:
    """Help of one parameter in cpm's style, whatever typer renders by default: a value is named
    in capitals (``--seq-len SEQ_LEN``, never ``<int>`` or ``{path}``); a default given as text
    (``show_default="cuda when available"``) reads ``[default: cuda when available]``; a flag takes
    no value and says that it is off unless given."""
    if isinstance(getattr(param, "show_default", None), str):
        param.help = _with_note(param.help, f"default: {param.show_default}")
        param.show_default = False
    if getattr(param, "is_flag", False) or param.name == "help":
        param.metavar = ""
        if param.name != "help" and not getattr(param, "secondary_opts", None) and param.default is False:
            param.help = _with_note(param.help, "default: off")
        return
    if param.metavar is None:  # the long option's name (--seq-len SEQ_LEN), else the parameter's
        longs = [opt for opt in getattr(param, "opts", ()) if opt.startswith("--")]
        param.metavar = (longs[0][2:] if longs else param.name).upper().replace("-", "_")
    if param.param_type_name == "argument":  # in the usage line as itself, not as {PATH}; no "<path>" beside it
        metavar = param.metavar + ("..." if param.nargs != 1 else "")
        param.get_usage_pieces = lambda ctx: [metavar]
        param.display_type_rich = lambda ctx: None


def _finish_commands(command: Any) -> Any:
    """Give every command of the tree (in place) cpm's help style and, where it has both
    ``--input`` and ``--output``, the check that keeps them apart."""
    for sub in getattr(command, "commands", {}).values():
        _finish_commands(sub)
    for param in command.params:
        _present(param)
    original_help_option = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = original_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    names = {opt: param.name for param in command.params for opt in getattr(param, "opts", ())}
    if command.callback is not None and "--input" in names and "--output" in names:
        command.callback = _keep_output_apart(command.callback, names["--input"], names["--output"])
    return command


@functools.lru_cache(maxsize=None)
def cli_command() -> Any:
    """The click command tree of ``app``, with what every command shares (see :func:`_finish_commands`)."""
    return _finish_commands(typer.main.get_command(app))


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run ``cpm`` and map errors to exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in _leading_options(args)
    try:
        cli_command().main(args=args, prog_name="cpm", standalone_mode=False)
    except CpmError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 1
    except click_exceptions.NoArgsIsHelpError:
        # a bare group: its help has been printed, which is not an error for the user
        return 0
    except click_exceptions.UsageError as exc:
        if debug:
            raise
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        typer.echo(f"error: {exc.format_message()}{where}", err=True)
        return 1
    except click_exceptions.ClickException as exc:
        if debug:
            raise
        typer.echo(f"error: {exc.format_message()}", err=True)
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
