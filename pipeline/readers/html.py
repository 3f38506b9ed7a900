"""A single saved HTML page: one record carrying ``html`` (charset from its ``<meta>`` tag)."""

from __future__ import annotations

from collections.abc import Iterator

from cpm.pipeline.readers.common import REJECTED_TEXT_CHARS, Context, derived_id
from cpm.pipeline.readers.compression import TruncatedInputError
from cpm.pipeline.readers.encoding import decode_html
from cpm.pipeline.records import RawRecord, Rejection


def read_html(context: Context, chunks: Iterator[bytes], head: bytes) -> Iterator[RawRecord | Rejection]:
    """A single saved HTML page: one record carrying ``html`` (charset from its ``<meta>`` tag)."""
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size > 4 * context.max_record_chars:
                prefix = b"".join(parts)[: 4 * REJECTED_TEXT_CHARS].decode("utf-8", "ignore")
                yield context.oversized(1, prefix, f"over {size:,} bytes")
                return
    except TruncatedInputError as error:
        yield Rejection(context.source, "truncated_file", context.origin(1), detail=str(error))
        return
    html, encoding = decode_html(b"".join(parts))
    yield RawRecord(
        source=context.source,
        origin=context.origin(1),
        html=html,
        id=derived_id(context.source, context.path, 1, html),
        meta={"charset": encoding},
    )
