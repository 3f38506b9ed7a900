"""Keeping a command's output apart from its inputs.

``cpm corpus build --input in --output in/out`` would read its own shards on the next run;
``--output`` naming an input file would truncate it. :func:`check_separate` refuses both, and
an input inside the output directory (which ``--overwrite`` would delete), before any work.
The ``cpm`` command line applies it to every command that has ``--input`` and ``--output``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from cpm.errors import CpmError

STDIO = "-"
_GLOB_CHARS = re.compile(r"[*?\[]")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def local_base(spec: str) -> Path | None:
    """The local path an ``--input``/``--output`` value names: a glob's fixed leading directories,
    ``PATH`` of ``SOURCE=PATH``; None for stdin/stdout ("-") and remote URLs (gs://, s3://, ...)."""
    if "=" in spec and not os.path.exists(spec):
        prefix, _, rest = spec.partition("=")
        if prefix.isidentifier():
            spec = rest
    if spec in ("", STDIO) or _URL.match(spec):
        return None
    match = _GLOB_CHARS.search(spec)
    if match:
        spec = os.path.dirname(spec[: match.start()]) or "."
    return Path(spec).expanduser().resolve()


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_separate(
    inputs: Iterable[str | os.PathLike[str]], output: str | os.PathLike[str],
    input_option: str = "--input", output_option: str = "--output",
) -> None:
    """Raise :class:`CpmError` when ``output`` is an input file, lies inside an input directory
    (or a glob's directory), or holds an input; one line naming both paths."""
    out = local_base(str(output))
    if out is None:
        return
    for spec in inputs:
        base = local_base(str(spec))
        if base is None:
            continue
        if _within(out, base) and (base.is_dir() or base == out):
            where = "is" if base == out else "lies inside"
            raise CpmError(f"{output_option} {output} {where} the {input_option} {spec}; choose an {output_option} outside it")
        if _within(base, out):
            raise CpmError(f"{input_option} {spec} lies inside the {output_option} {output}; choose an {output_option} that does not hold it")
