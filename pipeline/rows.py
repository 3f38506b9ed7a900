"""Rows of the corpus build: document and rejected rows, their shard keys, counters and tables."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from itertools import chain
from typing import Any, Iterator, NamedTuple

from cpm.hashing import stable_hash
from cpm.pipeline.clean import cjk_ratio
from cpm.pipeline.records import RawRecord, Rejection

log = logging.getLogger(__name__)

DUPLICATE_RULES = ("exact_duplicate", "near_duplicate")
MAX_REJECTED_TEXT_CHARS = 1_000_000  # rejected rows keep at most this much of a record's text


def default_id(source: str, origin: str) -> str:
    return f"{source}-{hashlib.blake2b(origin.encode('utf-8'), digest_size=8).hexdigest()}"


def origin_key(origin: str) -> tuple[str, int, str]:
    """Sort key of an ``"path:line"`` origin: path, then line number as an integer."""
    path, _, line = origin.rpartition(":")
    return (path, int(line), origin) if line.isdigit() else (origin, -1, origin)


def valid_utf8(value: str | None) -> str | None:
    """``value`` with lone surrogates (from JSON ``\\udxxx`` escapes) replaced, so Arrow can store it."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")


def rejection_row(rejection: Rejection) -> dict[str, Any]:
    row = {k: valid_utf8(v) for k, v in rejection.row().items()}
    if row["text"] is not None and len(row["text"]) > MAX_REJECTED_TEXT_CHARS:
        row["text"] = row["text"][:MAX_REJECTED_TEXT_CHARS]
    return row


def document_row(record: RawRecord) -> dict[str, Any]:
    """A cleaned record as a document row (without ``words``, ``num_words``, ``dup_cluster_size``)."""
    text = record.text or ""
    return {
        "id": valid_utf8(record.id),
        "source": record.source,
        "text": text,
        "title": valid_utf8(record.title),
        "url": valid_utf8(record.url),
        "date": valid_utf8(record.date),
        "meta": valid_utf8(json.dumps(record.meta or {}, ensure_ascii=False, sort_keys=True, default=str)),
        "num_chars": len(text),
        "cjk_ratio": cjk_ratio(text),
        "origin": valid_utf8(record.origin),
    }


def row_bytes(row: dict[str, Any]) -> int:
    """Estimated uncompressed bytes of a row in its shard (text, words and the small fields)."""
    return len(row.get("text") or "") * 5 + 200


class SplitWords(NamedTuple):
    """A document's words laid out as Arrow stores them: their UTF-8 bytes end to end, and each
    word's end in those bytes (native int32). A shard's ``words`` column is then a concatenation."""

    utf8: bytes
    ends: bytes


def layout_words(texts: list[str], words: list[list[str]]) -> list[SplitWords | list[str]]:
    """Each document's words (its text cut into pieces) as :class:`SplitWords`, from its text.

    The words of a text end to end are the text, so their UTF-8 bytes are the text's, and each
    word's end in bytes is its end in characters mapped through the text's UTF-8 lengths: one
    numpy pass over a batch, with no string per word made or joined. A document whose word lengths
    do not add up to its text's length keeps its list (:func:`documents_table` stores lists too).
    """
    import numpy as np

    counts = np.fromiter(map(len, words), np.int64, len(words))
    lengths = np.fromiter(map(len, chain.from_iterable(words)), np.int64, int(counts.sum()))
    char_ends = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=char_ends[1:])  # word ends in the texts' characters, end to end
    word_bounds = np.zeros(len(words) + 1, np.int64)
    np.cumsum(counts, out=word_bounds[1:])
    text_bounds = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)), out=text_bounds[1:])
    fits = (char_ends[word_bounds[1:]] - char_ends[word_bounds[:-1]]) == np.diff(text_bounds)
    if not fits.all():  # some document's words are not its text: lay out the others one by one
        result: list[SplitWords | list[str]] = list(words)
        good = np.flatnonzero(fits).tolist()
        for i, split in zip(good, layout_words([texts[i] for i in good], [words[i] for i in good])):
            result[i] = split
        return result
    codes = np.frombuffer("".join(texts).encode("utf-32-le"), np.uint32)
    utf8_sizes = 1 + (codes >= 0x80).astype(np.int64) + (codes >= 0x800) + (codes >= 0x10000)
    byte_at = np.zeros(len(codes) + 1, np.int64)  # byte offset of each character in the texts' UTF-8
    np.cumsum(utf8_sizes, out=byte_at[1:])
    doc_start = np.repeat(byte_at[text_bounds[:-1]], counts)
    ends = (byte_at[char_ends[1:]] - doc_start).astype(np.int32)
    bounds = word_bounds.tolist()
    return [SplitWords(text.encode("utf-8"), ends[bounds[i] : bounds[i + 1]].tobytes()) for i, text in enumerate(texts)]


def unpack_words(words: list[str] | SplitWords) -> list[str]:
    if isinstance(words, list):
        return words
    import numpy as np

    ends = np.frombuffer(words.ends, np.int32).tolist()
    return [words.utf8[a:b].decode("utf-8") for a, b in zip([0, *ends], ends)]


def rejected_counts(row: dict[str, Any]) -> Iterator[tuple[tuple, int]]:
    kind = "duplicates" if row["rule"] in DUPLICATE_RULES else "rejected"
    yield (kind, row["source"], row["rule"]), 1


def num_shards(total_bytes: int, shard_bytes: int) -> int:
    return max(1, math.ceil(total_bytes / shard_bytes))


def documents_table(rows: list[dict[str, Any]], schema):
    """The document rows as an Arrow table, column by column.

    When every row's ``words`` are :class:`SplitWords` (as the apply stage lays them out), the
    column is their bytes and word ends concatenated, with no Python string per word (millions per
    shard); otherwise (a document whose words are not its text) Arrow builds it from lists.
    """
    import pyarrow as pa

    columns = {name: [row.get(name) for row in rows] for name in schema.names if name != "words"}
    laid_out = [row["words"] for row in rows]
    if all(isinstance(words, SplitWords) for words in laid_out):
        words = _words_array(laid_out, schema.field("words").type)
    else:
        words = pa.array([unpack_words(w) for w in laid_out], schema.field("words").type)
    arrays = [words if name == "words" else pa.array(columns[name], schema.field(name).type) for name in schema.names]
    return pa.Table.from_arrays(arrays, schema=schema)


def _words_array(split: list[SplitWords], words_type):
    """The ``words`` column of documents' :class:`SplitWords`: their bytes and word ends, concatenated."""
    import numpy as np
    import pyarrow as pa

    values = b"".join(words.utf8 for words in split)
    if len(values) >= 1 << 31:
        raise ValueError(f"a record batch of {len(split)} documents holds {len(values)} bytes of words (over 2 GiB)")
    sizes = np.fromiter((len(words.utf8) for words in split), np.int64, len(split))
    counts = np.fromiter((len(words.ends) // 4 for words in split), np.int64, len(split))
    ends = np.frombuffer(b"".join(words.ends for words in split), np.int32)
    word_offsets = np.zeros(len(ends) + 1, np.int32)
    word_offsets[1:] = ends + np.repeat(np.cumsum(sizes) - sizes, counts)
    list_offsets = np.zeros(len(split) + 1, np.int32)
    np.cumsum(counts, out=list_offsets[1:])
    flat = pa.StringArray.from_buffers(len(ends), pa.py_buffer(word_offsets), pa.py_buffer(values))
    return pa.ListArray.from_arrays(pa.array(list_offsets, pa.int32()), flat).cast(words_type)


def _open_uncompressed(path: str):
    if "://" not in path:
        return open(path, "rb")
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def input_entry(path: str, source: str, size: int | None) -> dict[str, Any]:
    """Manifest entry of an input file: path, bytes and sha256 (a URL read through Beam's file systems)."""
    entry: dict[str, Any] = {"path": path, "kind": source}
    if size is not None:
        entry["bytes"] = size
    digest = hashlib.sha256()
    try:
        with _open_uncompressed(path) as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        entry["sha256"] = digest.hexdigest()
    except Exception as exc:  # noqa: BLE001 - recorded, the job's own counters say what was read
        log.warning("%s: cannot checksum (%s)", path, exc)
    return entry


def assemble_counters(counts: dict[tuple, int], sources: list[str]) -> dict[str, Any]:
    """Nested manifest counters from the flat ``(kind, source[, rule]) -> n`` sums."""
    def empty() -> dict[str, Any]:
        return {
            "records_read": 0, "kept": 0, "rejected": 0, "duplicates": 0,
            "bytes_read": 0, "chars_kept": 0, "bytes_kept": 0, "words_kept": 0,
            "rejected_by_rule": {}, "duplicates_by_rule": {},
        }

    total = empty()
    by_source = {s: empty() for s in sources}
    names = {"read": "records_read", "bytes_read": "bytes_read", "kept": "kept", "chars_kept": "chars_kept",
             "bytes_kept": "bytes_kept", "words_kept": "words_kept"}
    for key, amount in sorted(counts.items()):
        kind, source = key[0], key[1]
        targets = [total, by_source.setdefault(source, empty())]
        for target in targets:
            if kind in names:
                target[names[kind]] += amount
            else:  # rejected / duplicates by rule
                rule = key[2]
                target[kind] += amount
                bucket = target[f"{kind}_by_rule"]
                bucket[rule] = bucket.get(rule, 0) + amount
    for target in [total, *by_source.values()]:
        target["rejected_by_rule"] = dict(sorted(target["rejected_by_rule"].items()))
        target["duplicates_by_rule"] = dict(sorted(target["duplicates_by_rule"].items()))
    return {**total, "by_source": by_source}


# --------------------------------------------------------------------------- shards

def document_shard(row: dict[str, Any], n_shards: int) -> int:
    """The document shard of a kept row: ``stable_hash(id) % n``."""
    return stable_hash(row["id"]) % n_shards


def rejected_shard(row: dict[str, Any], n_shards: int) -> int:
    """The rejected shard of a rejected row: a hash of its origin and rule."""
    return stable_hash(f"{row['origin']}\0{row['rule']}") % n_shards


def document_sort_key(row: dict[str, Any]) -> str:
    """Rows of a document shard are sorted by id (ids are unique in a build)."""
    return row["id"]


def rejected_sort_key(row: dict[str, Any]) -> tuple:
    """Rows of a rejected shard are sorted by input position, then rule and id."""
    return (origin_key(row["origin"]), row["rule"], row["id"] or "")


def shard_batches(rows: Iterator[dict[str, Any]], kind: str, batch_rows: int = 1024):
    """Sorted rows -> the record batches of a ``kind`` shard (``documents`` or ``rejected``).

    Written a batch at a time, the bytes of slicing one table of the whole shard into ``batch_rows``-row
    batches: each batch is the head of a table of its rows and the next batch's, because Arrow's IPC
    writer pads a sliced string buffer with up to 7 of the bytes that follow it in memory.
    """
    import pyarrow as pa

    from cpm.schemas import document_schema, rejected_schema

    schema = document_schema() if kind == "documents" else rejected_schema()

    def table(rows_of_batches):
        if kind == "documents":
            return documents_table(rows_of_batches, schema)
        return pa.Table.from_pylist(rows_of_batches, schema=schema)

    columns = schema.names if kind == "rejected" else [n for n in schema.names if n not in ("num_chars", "cjk_ratio", "num_words", "dup_cluster_size")]
    yield from lookahead_batches(rows, table, batch_rows, tuple(columns))


WRITER_PADDING = 64  # Arrow's IPC writer copies a sliced buffer up to this alignment


def lookahead_batches(rows: Iterator[Any], table_of, batch_rows: int = 1024, columns: tuple[str, ...] = ()):
    """Record batches of ``batch_rows`` rows, each sliced from a table of it and the rows after it.

    Arrow's IPC writer copies a sliced buffer up to a 64-byte boundary, so a batch sliced from a
    whole shard's table carries bytes of the rows after it. The table of a batch holds the next rows
    until each of ``columns`` (string, or packed ``words``) has 64 bytes after the batch (and at
    least 16 rows, for the offsets), as far as the next batch goes: the bytes of slicing the whole
    shard, unless a column has fewer than 64 bytes in the next ``batch_rows`` rows but more later
    (then only those few bytes of padding differ, never the rows).
    """
    current: list[Any] = []
    following: list[Any] = []
    for row in rows:
        (following if len(current) == batch_rows else current).append(row)
        if len(following) == batch_rows:
            extra = _lookahead(following, columns)
            yield table_of(current + following[:extra]).slice(0, batch_rows).to_batches()[0]
            current, following = following, []
    if current:
        whole = table_of(current + following)
        yield from whole.to_batches(max_chunksize=batch_rows)


def _value_bytes(value: Any) -> int:
    """At least min(:data:`WRITER_PADDING`, bytes) of a row's value in its column's data buffer."""
    if value is None:
        return 0
    if isinstance(value, list):  # words as a list
        return sum(len(word.encode("utf-8")) for word in value[:WRITER_PADDING])
    if isinstance(value, SplitWords):
        return len(value.utf8)
    return WRITER_PADDING if len(value) >= WRITER_PADDING else len(value.encode("utf-8"))


def _lookahead(following: list[dict[str, Any]], columns: tuple[str, ...]) -> int:
    """How many of ``following`` rows hold the bytes the writer copies past the batch before them."""
    if not columns:
        return len(following)
    needed = min(len(following), WRITER_PADDING // 4)  # 4-byte offsets up to the boundary
    for column in columns:
        total, last = 0, -1
        for index, row in enumerate(following):
            size = _value_bytes(row.get(column))
            if size:
                total, last = total + size, index
                if total >= WRITER_PADDING:
                    break
        needed = max(needed, last + 1)
    return needed
