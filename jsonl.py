"""JSON-lines files on the command line: reading with errors that name the file and line, and
writing lines that are always valid UTF-8 JSON."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Iterator

from cpm.errors import CpmError

_SURROGATE = re.compile("[\ud800-\udfff]")


def json_line(record: Any) -> str:
    """``record`` as one line of JSON (with the newline): non-ASCII text as itself, lone surrogates
    (not encodable as UTF-8) as ``\\udXXX`` escapes, so the line is valid UTF-8 and ``json.loads``
    gives back the same string. (JSON reads a high surrogate escape followed by a low one as the
    one character they encode: a string holding such a pair as two code points reads back joined.)"""
    text = json.dumps(record, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"


def read_json_objects(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSONL file (``"-"``: stdin).

    Lines are decoded one by one (a UTF-8 BOM on the first is allowed), so an invalid byte,
    a malformed line or a non-object raises :class:`CpmError` naming ``path:line``.
    """
    try:
        handle = sys.stdin.buffer if str(path) == "-" else open(path, "rb")
    except OSError as exc:
        raise CpmError(f"{path}: cannot open ({exc.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise CpmError(f"{path}:{number}: not valid UTF-8 ({exc.reason})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CpmError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise CpmError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record
