"""WARC, WET and ARC files, read record by record through warcio's ``ArchiveIterator``.

Every ``response``, ``resource`` and ``conversion`` record (an ARC record is a response) yields
exactly one :class:`RawRecord` or :class:`Rejection`; ``warcinfo``, ``request``, ``metadata``
and ``revisit`` records are not documents and are skipped. The checks apply to each record
alone, so one bad record never costs its neighbours:

* content type: ``text/html`` (or no type and a body starting with ``<``) becomes a record
  carrying ``html``; ``text/plain`` and WET ``conversion`` records carry ``text``; anything
  else (images, PDFs, scripts) is ``unsupported_content_type``;
* size: a body over ``4 * max_record_chars`` bytes is ``oversized_record``;
* binary content: a body that is not text (a NUL byte, a binary magic, control bytes) although
  its type says text is ``binary_record``;
* a body that cannot be read (broken chunked or gzip transfer encoding) is ``malformed_record``;
  WET text that is not UTF-8 is ``invalid_utf8``.

Records are ids from ``WARC-Record-ID`` (ARC records have none: a derived id), url from
``WARC-Target-URI``, date from ``WARC-Date``; the charset of a page comes from the HTTP header,
then its ``<meta>`` tag, then detection. A record whose headers cannot be parsed, or a
compressed stream that breaks, ends the file: one ``malformed_record`` or ``truncated_file``
rejection after every record before it, and one warning line in the log.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cpm.pipeline.readers.common import REJECTED_TEXT_CHARS, Context, derived_id
from cpm.pipeline.readers.compression import READ_CHUNK, ChunkStream, TruncatedInputError
from cpm.pipeline.readers.encoding import decode_html, looks_binary
from cpm.pipeline.records import RawRecord, Rejection

logger = logging.getLogger(__name__)

DOCUMENT_TYPES = ("response", "resource", "conversion")


_RECORD_START = (b"WARC/", b"filedesc://")


def _archive_iterator(stream: Any) -> Any:
    """warcio's ``ArchiveIterator``, more forgiving where a record is not followed by blank lines.

    warcio takes the first non-blank line after a record for junk (a wrong Content-Length) and
    skips it; when that line is the next record's ``WARC/1.0`` header, the next record is lost
    and everything after it with it. Here such a line starts the next record. The count of
    records not followed by blank lines is kept (``err_count``) instead of printed to stderr.
    """
    from warcio.archiveiterator import ArchiveIterator

    class ForgivingArchiveIterator(ArchiveIterator):  # type: ignore[misc]
        def _consume_blanklines(self) -> tuple[bytes | None, int]:
            empty_size = 0
            first_line = True
            while True:
                line = self.reader.readline()
                if not line:
                    return None, empty_size
                if line.strip() and not first_line:
                    return line, empty_size
                if line.strip():  # the first line after a record is not blank
                    self.err_count += 1
                    if line.startswith(_RECORD_START):
                        return line, empty_size
                empty_size += len(line)
                first_line = False

    return ForgivingArchiveIterator(stream, arc2warc=True)


def _content_type(record: Any) -> str:
    if record.rec_type == "response" and record.http_headers is not None:
        return record.http_headers.get_header("Content-Type") or ""
    return record.rec_headers.get_header("Content-Type") or ""


def _kind(record: Any, content_type: str) -> str | None:
    """``"text"``, ``"html"``, ``"sniff"`` (no type: HTML if the body starts with ``<``) or None."""
    lowered = content_type.lower()
    if record.rec_type == "conversion" or lowered.startswith("text/plain"):
        return "text"
    if "html" in lowered:
        return "html"
    if not lowered:
        return "sniff"
    return None


def _read_body(record: Any, max_bytes: int) -> tuple[bytes, int]:
    """The record's decoded body (at most ``max_bytes + 1`` bytes kept) and its full length."""
    stream = record.content_stream()
    content = stream.read(max_bytes + 1)
    size = len(content)
    if size > max_bytes:
        while piece := stream.read(READ_CHUNK):
            size += len(piece)
    return content, size


@dataclass
class _Header:
    """What a document takes from its WARC headers."""

    record_id: str | None
    url: str | None
    date: str | None
    content_type: str


def _header(record: Any, from_arc: bool) -> _Header:
    headers = record.rec_headers
    record_id = None if from_arc else (headers.get_header("WARC-Record-ID") or "").strip("<>") or None
    url, date = headers.get_header("WARC-Target-URI"), headers.get_header("WARC-Date")
    return _Header(record_id, url, date, _content_type(record))


def _body(record: Any, header: _Header, context: Context, where: str) -> bytes | Rejection:
    """The record's body, or the rejection of a body that is unreadable, oversized or binary."""
    source, origin, record_id = context.source, context.origin(where), header.record_id
    max_bytes = 4 * context.max_record_chars
    try:
        content, size = _read_body(record, max_bytes)
    except TruncatedInputError:
        raise  # the file ends here: not this record's fault alone
    except Exception as error:  # broken chunked / content encoding: this record only
        detail = f"unreadable body: {type(error).__name__}: {error} ({header.url})"
        return Rejection(source, "malformed_record", origin, id=record_id, detail=detail)
    if size > max_bytes:
        prefix = content[: 4 * REJECTED_TEXT_CHARS].decode("utf-8", "ignore")
        return context.oversized(where, prefix, f"{size:,} bytes", record_id)
    if looks_binary(content[:8192]):
        typed = header.content_type or "nothing"
        detail = f"not text although typed {typed} (starts with {content[:8]!r}; {header.url})"
        return Rejection(source, "binary_record", origin, id=record_id, detail=detail)
    return content


def _document(record: Any, ordinal: int, context: Context, from_arc: bool) -> RawRecord | Rejection:
    """One response/resource/conversion record -> one record or rejection."""
    source, where = context.source, f"record {ordinal}"
    origin = context.origin(where)
    header = _header(record, from_arc)
    kind = _kind(record, header.content_type)
    if kind is None:
        detail = f"{header.content_type} ({header.url})"
        return Rejection(source, "unsupported_content_type", origin, id=header.record_id, detail=detail)
    content = _body(record, header, context, where)
    if isinstance(content, Rejection):
        return content
    record_id = header.record_id or derived_id(source, context.path, ordinal, content.decode("utf-8", "replace"))
    fields = {"source": source, "origin": origin, "id": record_id, "url": header.url, "date": header.date}
    if kind == "text":
        try:
            return RawRecord(text=content.decode("utf-8"), meta={"warc_type": record.rec_type}, **fields)
        except UnicodeDecodeError as error:
            sample = content.decode("utf-8", "replace")[:REJECTED_TEXT_CHARS]
            return Rejection(source, "invalid_utf8", origin, id=record_id, detail=str(error), text=sample)
    if kind == "sniff" and content.lstrip()[:1] != b"<":
        return Rejection(source, "unsupported_content_type", origin, id=record_id, detail=f"no content type ({header.url})")
    html, encoding = decode_html(content, header.content_type)
    return RawRecord(html=html, meta={"warc_type": record.rec_type, "charset": encoding}, **fields)


def read_warc(context: Context, chunks: Iterator[bytes], head: bytes) -> Iterator[RawRecord | Rejection]:
    """Records of a WARC, WET or ARC file (decompressed chunks; gzip members already joined)."""
    stream = io.BufferedReader(ChunkStream(chunks), buffer_size=READ_CHUNK)
    ordinal = 0  # documents yielded so far
    from_arc = not head.lstrip().startswith(b"WARC/")  # warcio gives ARC records a random WARC-Record-ID
    records = _archive_iterator(stream)
    try:
        for record in records:
            if record.rec_type in DOCUMENT_TYPES:
                document = _document(record, ordinal + 1, context, from_arc)
                ordinal += 1
                yield document
    except TruncatedInputError as error:
        logger.warning("%s: truncated after %d records: %s", context.path, ordinal, error)
        yield Rejection(
            context.source,
            "truncated_file",
            context.origin(f"record {ordinal + 1}"),
            detail=f"{error}; {ordinal} records before it were kept",
        )
    except Exception as error:  # warcio on a corrupt header: the rest of the file cannot be framed
        logger.warning("%s: unreadable after %d records: %s: %s", context.path, ordinal, type(error).__name__, error)
        yield Rejection(
            context.source,
            "malformed_record",
            context.origin(f"record {ordinal + 1}"),
            detail=f"{type(error).__name__}: {error}; {ordinal} records before it were kept, the rest is unreadable",
        )
    if records.err_count:
        logger.info("%s: %d records not followed by blank lines", context.path, records.err_count)
