"""Readers for ``cpm corpus build``: raw input files -> :class:`RawRecord` / :class:`Rejection`.

:func:`read_input` opens one file through Beam's file systems (local paths, ``gs://``,
``s3://``, ``hdfs://`` alike), decompresses ``.gz`` / ``.bz2`` / ``.zst`` itself in streaming
fashion (:mod:`.compression`), detects the format (:mod:`.detect`) and hands the bytes to the
reader of that format, which yields exactly one record or rejection per input record. It never
raises on bad input; only a missing file is a :class:`CpmError`.

One module per format:

* :mod:`.jsonl`: JSONL for every source (``text``/``content``/``html``, Q&A, dialogs);
* :mod:`.mediawiki`: MediaWiki XML dumps, wikitext rendered by :mod:`.wikitext`;
* :mod:`.warc`: WARC, WET and ARC, record by record;
* :mod:`.html`: single saved ``.html`` pages;
* :mod:`.text`: novels split at chapter headings, THUCNews ``<category>/<n>.txt`` articles;

with :mod:`.encoding` (binary detection, the encoding of Chinese text and of HTML) and
:mod:`.common` (limits, derived ids, line splitting) shared by all.

Rejection rules raised here: ``empty_file``, ``binary_file``, ``truncated_file``,
``invalid_utf8``, ``malformed_json``, ``missing_text``, ``oversized_record``, ``malformed_xml``,
``redirect``, ``disambiguation``, ``non_article_namespace``, ``unsupported_content_type``,
``binary_record``, ``malformed_record``, ``unsupported_format``, ``read_error`` (an unexpected
error; the rest of that file is lost, one warning line in the log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from cpm.errors import CpmError
from cpm.pipeline.readers.common import (
    DEFAULT_MAX_CHAPTER_CHARS,
    DEFAULT_MAX_RECORD_CHARS,
    HEAD_BYTES,
    REJECTED_TEXT_CHARS,
    Context,
    derived_id,
)
from cpm.pipeline.readers.compression import (
    TruncatedInputError,
    compression_of,
    decompressed_chunks,
    open_raw,
    peek,
)
from cpm.pipeline.readers.detect import ARCHIVE_FORMATS, ARCHIVE_MAGIC, FORMATS, detect_format
from cpm.pipeline.readers.encoding import decode_html, detect_encoding, looks_binary
from cpm.pipeline.readers.html import read_html
from cpm.pipeline.readers.jsonl import join_cjk_tokens, read_jsonl, render_dialog, render_qa
from cpm.pipeline.readers.mediawiki import read_mediawiki
from cpm.pipeline.readers.ranges import ByteRange, input_ranges, range_chunks
from cpm.pipeline.readers.samples import sample_inputs
from cpm.pipeline.readers.text import is_chapter_heading, novel_title, read_novel, read_thucnews
from cpm.pipeline.readers.warc import read_warc
from cpm.pipeline.records import RawRecord, Rejection
from cpm.schemas import SOURCES

__all__ = [
    "ByteRange",
    "DEFAULT_MAX_CHAPTER_CHARS",
    "DEFAULT_MAX_RECORD_CHARS",
    "FORMATS",
    "HEAD_BYTES",
    "REJECTED_TEXT_CHARS",
    "TruncatedInputError",
    "compression_of",
    "decode_html",
    "derived_id",
    "detect_encoding",
    "detect_format",
    "input_ranges",
    "is_chapter_heading",
    "join_cjk_tokens",
    "looks_binary",
    "novel_title",
    "read_input",
    "render_dialog",
    "render_qa",
    "sample_inputs",
]

logger = logging.getLogger(__name__)

Reader = Callable[[Context, Iterator[bytes], bytes], Iterator[RawRecord | Rejection]]
_READERS: dict[str, Reader] = {
    "html": read_html,
    "jsonl": read_jsonl,
    "mediawiki_xml": read_mediawiki,
    "warc": read_warc,
    "wet": read_warc,
    "arc": read_warc,
    "text_novel": read_novel,
    "thucnews_txt": read_thucnews,
}


def read_input(
    path: str,
    source: str,
    *,
    max_record_chars: int = DEFAULT_MAX_RECORD_CHARS,
    max_chapter_chars: int = DEFAULT_MAX_CHAPTER_CHARS,
    byte_range: ByteRange | None = None,
) -> Iterator[RawRecord | Rejection]:
    """Open one input file through Beam's file systems and yield its records, detecting the format.

    Yields exactly one :class:`RawRecord` or :class:`Rejection` per input record and never
    raises on bad input (a broken file costs the records from the break on, as one rejection).
    A missing file raises :class:`CpmError`. ``max_record_chars`` bounds one record (a longer
    one is rejected as ``oversized_record`` without being held in memory twice);
    ``max_chapter_chars`` bounds the documents a novel's chapters are cut into. ``byte_range``
    reads only those lines of a local JSONL file (:func:`.ranges.input_ranges`).
    """
    if source not in SOURCES:
        raise CpmError(f"{path}: unknown source {source!r} (expected one of {', '.join(SOURCES)})")
    raw = open_raw(path)
    try:
        if byte_range is not None and byte_range.start > 0:  # a later range of a JSONL file checked whole
            context = Context(path, source, max_record_chars, max_chapter_chars, byte_range.first_line)
            yield from _guarded(read_jsonl(context, range_chunks(raw, byte_range), b""), context)
            return
        chunks = range_chunks(raw, byte_range) if byte_range is not None else decompressed_chunks(path, raw)[1]
        try:
            head, chunks = peek(chunks, HEAD_BYTES)
        except TruncatedInputError as error:
            yield Rejection(source, "truncated_file", f"{path}:1", detail=str(error))
            return
        if not head.strip():
            yield Rejection(source, "empty_file", f"{path}:1", detail="the file has no content")
            return
        fmt = detect_format(path, head, source)
        if looks_binary(head) and not (fmt in ARCHIVE_FORMATS and head.lstrip().startswith(ARCHIVE_MAGIC)):
            yield Rejection(source, "binary_file", f"{path}:1", detail=f"not a text file (starts with {head[:8]!r})")
            return
        reader = _READERS.get(fmt)
        if reader is None:
            yield Rejection(
                source,
                "unsupported_format",
                f"{path}:1",
                detail=f"plain text is not an input format of source {source}; use JSONL with a 'text' field",
            )
            return
        context = Context(path, source, max_record_chars, max_chapter_chars)
        yield from _guarded(reader(context, chunks, head), context)
    finally:
        raw.close()


def _guarded(records: Iterator[RawRecord | Rejection], context: Context) -> Iterator[RawRecord | Rejection]:
    """Turn an unexpected reader error into one ``read_error`` rejection and one log line."""
    last = "1"
    try:
        for record in records:
            last = record.origin.rsplit(":", 1)[-1]
            yield record
    except Exception as error:  # a bug or an input shape nobody foresaw: never kill the job
        logger.warning("%s: reading failed after %s: %s: %s", context.path, last, type(error).__name__, error)
        yield Rejection(context.source, "read_error", context.origin(last), detail=f"{type(error).__name__}: {error}")
