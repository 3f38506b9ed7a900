"""What every reader shares: its context, line splitting with a size bound, derived ids."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cpm.pipeline.records import Rejection

DEFAULT_MAX_RECORD_CHARS = 5_000_000
DEFAULT_MAX_CHAPTER_CHARS = 20_000
REJECTED_TEXT_CHARS = 1000  # how much of an oversized or broken record a Rejection keeps
HEAD_BYTES = 64 * 1024  # what format and encoding detection look at


@dataclass
class Context:
    """The file a reader reads and the limits it applies."""

    path: str
    source: str
    max_record_chars: int
    max_chapter_chars: int
    first_line: int = 1  # the number of the first line read (a range of a file starts later)

    def origin(self, where: int | str) -> str:
        return f"{self.path}:{where}"

    def oversized(self, where: int | str, prefix: str, size: str, record_id: str | None = None) -> Rejection:
        return Rejection(
            self.source,
            "oversized_record",
            self.origin(where),
            id=record_id,
            detail=f"record of {size} is over max_record_chars={self.max_record_chars}; "
            f"text keeps its first {REJECTED_TEXT_CHARS} characters",
            text=prefix[:REJECTED_TEXT_CHARS],
        )


def derived_id(source: str, path: str, ordinal: int, text: str) -> str:
    """A stable id for a record that has none: ``<source>-<16 hex digits>``.

    It hashes the input file's name with its parent directory's name (not the full path, so
    the same file read from a local copy or from ``gs://`` gets the same ids; the parent keeps
    THUCNews' ``体育/0.txt`` and ``财经/0.txt`` apart), the record's ordinal in its file (so two
    records with identical text still get different ids) and a hash of its text (so an edited
    input does not silently reuse the ids of the old one). Nothing depends on the runner, the
    worker count or the order in which files are processed.
    """
    parts = path.replace("\\", "/").rstrip("/").split("/")
    name = "/".join(parts[-2:])
    content = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()
    key = f"{source}\x1f{name}\x1f{ordinal}\x1f{content}".encode()
    return f"{source}-{hashlib.sha1(key).hexdigest()[:16]}"


@dataclass
class Line:
    number: int  # 1-based
    data: bytes  # without the line break; for an oversized line only its first bytes
    oversized_bytes: int = 0  # > 0: the line was this long and was not kept


def iter_lines(chunks: Iterable[bytes], max_bytes: int, first_line: int = 1) -> Iterator[Line]:
    """Lines of a byte stream (numbered from ``first_line``), never holding more than ``max_bytes`` of one line."""
    buffer = bytearray()
    number = first_line
    skipped = 0  # > 0 while discarding the rest of an oversized line
    prefix = b""
    for chunk in chunks:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            piece = chunk[start:] if newline < 0 else chunk[start:newline]
            if skipped:
                skipped += len(piece)
            else:
                buffer += piece
                if len(buffer) > max_bytes:
                    prefix = bytes(buffer[: 4 * REJECTED_TEXT_CHARS])
                    skipped = len(buffer)
                    buffer = bytearray()
            if newline < 0:
                break
            if skipped:
                yield Line(number, prefix, skipped)
                skipped = 0
            else:
                yield Line(number, bytes(buffer).rstrip(b"\r"))
                buffer.clear()
            number += 1
            start = newline + 1
    if skipped:
        yield Line(number, prefix, skipped)
    elif buffer:
        yield Line(number, bytes(buffer).rstrip(b"\r"))
