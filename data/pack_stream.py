"""The split streams of ``cpm data pack`` in bounded memory: an external (bucket) sort, then a streaming cut.

Every tokenized work unit leaves on disk its tokens (``unit-N.tok``, raw) and its documents
(``unit-N.meta.arrow``: id, source code, length). Nothing per document stays in RAM:

1. :func:`survey`: per unit, the split of each document (saved next to it) and the train
   tokens per source (for ``--source-mix``); ``(split hash, id)`` pairs go to id buckets that
   :func:`count_duplicate_ids` reads one at a time.
2. :func:`distribute`: every document copy of a split becomes an entry (order key, document
   number, copy number, where its tokens are, id) in the bucket of its key's range. Keys are
   64-bit hashes, so buckets of ``BUCKET_ROWS`` entries on average are about equal.
3. :func:`ordered_copies`: bucket after bucket, its entries sorted by (key, document, copy):
   the same order as sorting all of them at once, which is what packing always did.
4. :func:`cut_stream`: the ``<eod>``-joined stream cut into record batches of samples while it
   is read, holding only the documents that the current batch spans.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from cpm.data.rules import SPLITS, copies_of, numpy_token_dtype, order_key, split_hash
from cpm.schemas import SOURCES, schema_metadata

BUCKET_ROWS = 1 << 16  # average entries per bucket: bounds the memory of one sort (~60 bytes an entry)
CHUNK_ROWS = 8192  # entries turned into Python objects at a time
META_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.int8()), ("length", pa.int64())])
ENTRY_SCHEMA = pa.schema(
    [("key", pa.uint64()), ("doc", pa.int64()), ("copy", pa.int64()), ("unit", pa.int32()),
     ("offset", pa.int64()), ("length", pa.int64()), ("id", pa.string())]
)
ID_SCHEMA = pa.schema([("id", pa.string())])


def write_meta(path: str, ids: list[str], sources: list[str], lengths: np.ndarray) -> None:
    code = {s: n for n, s in enumerate(SOURCES)}
    table = pa.table(
        [pa.array(ids, pa.string()), pa.array([code[s] for s in sources], pa.int8()), pa.array(lengths, pa.int64())],
        schema=META_SCHEMA,
    )
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, META_SCHEMA) as writer:
        writer.write_table(table)


def read_meta(path: str) -> pa.Table:
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).read_all()


class Buckets:
    """``n`` Arrow stream files of one schema; rows are appended by bucket number and read back per bucket."""

    def __init__(self, folder: Path, n: int, schema: pa.Schema) -> None:
        self.folder, self.n, self.schema = folder, n, schema
        folder.mkdir(parents=True, exist_ok=True)
        self.writers: dict[int, Any] = {}
        allow_open_files(n + 128)

    def path(self, bucket: int) -> Path:
        return self.folder / f"bucket-{bucket:06d}.arrow"

    def add(self, buckets: np.ndarray, table: pa.Table) -> None:
        order = np.argsort(buckets, kind="stable")
        ordered, table = buckets[order], table.take(pa.array(order))
        cuts = np.flatnonzero(np.diff(ordered)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(ordered)]):
            if hi > lo:
                self._writer(int(ordered[lo])).write_table(table.slice(lo, hi - lo))

    def _writer(self, bucket: int):
        writer = self.writers.get(bucket)
        if writer is None:
            writer = self.writers[bucket] = pa.ipc.new_stream(str(self.path(bucket)), self.schema)
        return writer

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}

    def read(self, bucket: int) -> pa.Table:
        path = self.path(bucket)
        if not path.exists():
            return self.schema.empty_table()
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_stream(source).read_all()


def allow_open_files(count: int) -> None:
    """Raise the soft limit on open files to ``count`` (up to the hard limit): one writer per bucket is open."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count if hard == resource.RLIM_INFINITY else min(count, hard), hard))


def bucket_count(rows: float) -> int:
    return max(1, math.ceil(rows / BUCKET_ROWS))


def bucket_of(hashes: np.ndarray, n: int) -> np.ndarray:
    """The bucket of each 64-bit hash: ``floor(hash * n / 2**64)`` (monotone in the hash)."""
    return ((hashes >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32)


# --------------------------------------------------------------------------- pass 1: splits and totals

@dataclass
class Survey:
    """Per split, documents per source; train tokens per source; where the id buckets are."""

    documents: dict[str, np.ndarray] = field(default_factory=dict)  # split -> counts per source code
    train_tokens: dict[str, int] = field(default_factory=dict)
    ids: Buckets | None = None


def split_path(meta_path: str) -> str:
    return meta_path.replace(".meta.arrow", ".valid.npy")


def survey(meta_paths: Sequence[str], valid_fraction: float, total_docs: int, tmp_dir: Path) -> Survey:
    """Splits of every document (saved per unit), document and token totals, id buckets."""
    result = Survey({s: np.zeros(len(SOURCES), np.int64) for s in SPLITS})
    result.ids = Buckets(tmp_dir / "ids", bucket_count(total_docs), ID_SCHEMA)
    tokens = np.zeros(len(SOURCES), np.int64)
    limit = valid_fraction * 2.0**64
    for path in meta_paths:
        meta = read_meta(path)
        ids = meta.column("id").to_pylist()
        hashes = np.fromiter((split_hash(i) for i in ids), np.uint64, len(ids))
        valid = np.fromiter((h < limit for h in hashes.tolist()), bool, len(ids))
        np.save(split_path(path), valid)
        sources = meta.column("source").to_numpy()
        lengths = meta.column("length").to_numpy()
        result.documents["valid"] += np.bincount(sources[valid], minlength=len(SOURCES))
        result.documents["train"] += np.bincount(sources[~valid], minlength=len(SOURCES))
        tokens += np.bincount(sources[~valid], weights=lengths[~valid], minlength=len(SOURCES)).astype(np.int64)
        result.ids.add(bucket_of(hashes, result.ids.n), meta.select(["id"]))
    result.ids.close()
    result.train_tokens = {s: int(tokens[n]) for n, s in enumerate(SOURCES) if tokens[n]}
    return result


def count_duplicate_ids(ids: Buckets) -> int:
    """Documents whose id another document has too (every copy of an id counted but one)."""
    duplicates = 0
    for bucket in range(ids.n):
        column = ids.read(bucket).column("id").to_pylist()
        duplicates += len(column) - len(set(column))
    return duplicates


# --------------------------------------------------------------------------- pass 2: entries by key range

@dataclass
class SplitTotals:
    """What the manifest says of a split's stream, summed while its entries are written."""

    documents: np.ndarray = field(default_factory=lambda: np.zeros(len(SOURCES), np.int64))  # copies counted
    distinct: np.ndarray = field(default_factory=lambda: np.zeros(len(SOURCES), np.int64))
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(len(SOURCES), np.int64))

    def counters(self, seq_len: int) -> dict[str, Any]:
        total = int(self.tokens.sum())
        num_samples = max(0, (total - 1) // seq_len)
        used = num_samples * seq_len + 1 if num_samples else 0

        def by_source(values):
            return {s: int(values[n]) for n, s in enumerate(SOURCES) if values[n]}

        return {
            "documents": by_source(self.documents),
            "distinct_documents": by_source(self.distinct),
            "tokens": by_source(self.tokens),
            "stream_tokens": total,
            "samples": num_samples,
            "dropped_tail_tokens": total - used,
        }


def distribute(
    meta_paths: Sequence[str], survey_: Survey, weights: dict[str, float], seed: int, tmp_dir: Path
) -> tuple[dict[str, Buckets], dict[str, SplitTotals]]:
    """Write every document copy of each split into the bucket of its order key's range."""
    factor = [weights.get(s, 1.0) for s in SOURCES]  # Python floats: copies_of compares them with 64-bit ints exactly
    expected = {"valid": survey_.documents["valid"].sum(), "train": (survey_.documents["train"] * np.ceil(factor)).sum()}
    buckets = {s: Buckets(tmp_dir / s, bucket_count(expected[s]), ENTRY_SCHEMA) for s in SPLITS}
    totals = {s: SplitTotals() for s in SPLITS}
    first_doc = 0
    for unit, path in enumerate(meta_paths):
        meta = read_meta(path)
        valid = np.load(split_path(path))
        ids = meta.column("id").to_pylist()
        sources = meta.column("source").to_numpy()
        lengths = meta.column("length").to_numpy()
        offsets = np.cumsum(lengths) - lengths
        for split in SPLITS:
            docs = np.flatnonzero(valid if split == "valid" else ~valid)
            if split == "valid":
                copies = np.ones(len(docs), np.int64)
            else:
                copies = np.fromiter((copies_of(ids[d], factor[sources[d]], seed) for d in docs.tolist()), np.int64, len(docs))
            _add_totals(totals[split], sources[docs], lengths[docs], copies)
            doc_of_copy = np.repeat(docs, copies)
            if not len(doc_of_copy):
                continue
            copy_number = np.arange(len(doc_of_copy), dtype=np.int64) - np.repeat(np.cumsum(copies) - copies, copies)
            keys = np.fromiter(
                (order_key(ids[d], c, seed) for d, c in zip(doc_of_copy.tolist(), copy_number.tolist())), np.uint64, len(doc_of_copy)
            )
            table = pa.table(
                [pa.array(keys), pa.array(doc_of_copy + first_doc), pa.array(copy_number),
                 pa.array(np.full(len(keys), unit, np.int32)), pa.array(offsets[doc_of_copy]), pa.array(lengths[doc_of_copy]),
                 meta.column("id").take(pa.array(doc_of_copy))],
                schema=ENTRY_SCHEMA,
            )
            buckets[split].add(bucket_of(keys, buckets[split].n), table)
        first_doc += len(ids)
    for split_buckets in buckets.values():
        split_buckets.close()
    return buckets, totals


def _add_totals(totals: SplitTotals, sources: np.ndarray, lengths: np.ndarray, copies: np.ndarray) -> None:
    n = len(SOURCES)
    totals.documents += np.bincount(sources, weights=copies, minlength=n).astype(np.int64)
    totals.distinct += np.bincount(sources[copies > 0], minlength=n)
    totals.tokens += np.bincount(sources, weights=lengths * copies, minlength=n).astype(np.int64)


# --------------------------------------------------------------------------- pass 3: the ordered stream

@dataclass
class Copy:
    """One document copy in stream order: its id and where its tokens are."""

    id: str
    unit: int
    offset: int
    length: int


def ordered_copies(buckets: Buckets) -> Iterator[Copy]:
    """Every entry of ``buckets`` in (key, document, copy) order, one bucket in memory at a time."""
    for bucket in range(buckets.n):
        table = buckets.read(bucket)
        if not table.num_rows:
            continue
        order = np.lexsort(
            (table.column("copy").to_numpy(), table.column("doc").to_numpy(), table.column("key").to_numpy())
        )
        table = table.take(pa.array(order)).select(["id", "unit", "offset", "length"])
        for start in range(0, table.num_rows, CHUNK_ROWS):
            chunk = table.slice(start, CHUNK_ROWS)
            yield from map(Copy, *(chunk.column(name).to_pylist() for name in ("id", "unit", "offset", "length")))
        del table


class TokenFiles:
    """Reads a document's tokens from the raw unit files with ``pread`` (nothing memory-mapped stays resident)."""

    def __init__(self, paths: Sequence[str], dtype: np.dtype, max_open: int = 64) -> None:
        self.paths, self.dtype, self.max_open = paths, np.dtype(dtype), max_open
        self.open: OrderedDict[int, int] = OrderedDict()

    def read(self, unit: int, offset: int, length: int) -> np.ndarray:
        fd = self.open.pop(unit, None)
        if fd is None:
            fd = os.open(self.paths[unit], os.O_RDONLY)
            if len(self.open) >= self.max_open:
                os.close(self.open.popitem(last=False)[1])
        self.open[unit] = fd
        size = self.dtype.itemsize
        return np.frombuffer(os.pread(fd, length * size, offset * size), dtype=self.dtype)

    def close(self) -> None:
        for fd in self.open.values():
            os.close(fd)
        self.open.clear()


def cut_stream(
    docs: Iterable[tuple[str, np.ndarray]], total: int, seq_len: int, schema: pa.Schema, samples_per_batch: int
) -> Iterator[pa.RecordBatch]:
    """Cut the ``<eod>``-joined stream of ``docs`` (id, tokens) into batches of samples of ``seq_len + 1`` tokens.

    Sample ``k`` is ``stream[k*seq_len : k*seq_len + seq_len + 1]``; ``doc_ids`` are the documents it spans and
    ``start_offset`` where it starts in the first of them. ``total`` is the stream's length.
    """
    num_samples = max(0, (total - 1) // seq_len)
    dtype = numpy_token_dtype(int(schema_metadata(schema)["vocab_size"]))
    width = seq_len + 1
    source = iter(docs)
    window: deque[tuple[int, str, np.ndarray]] = deque()  # (stream start, id, tokens) of the documents in reach
    end = 0
    for first in range(0, num_samples, samples_per_batch):
        count = min(samples_per_batch, num_samples - first)
        lo, hi = first * seq_len, (first + count - 1) * seq_len + width  # stream range of this batch
        while end < hi:
            doc_id, tokens = next(source)
            window.append((end, doc_id, tokens))
            end += len(tokens)
        while window[0][0] + len(window[0][2]) <= lo:
            window.popleft()
        starts = np.array([start for start, _, _ in window] + [end], dtype=np.int64)
        segment = np.concatenate([tokens for _, _, tokens in window]).astype(dtype, copy=False)
        segment = segment[lo - int(starts[0]) : hi - int(starts[0])]
        rows = np.lib.stride_tricks.as_strided(segment, (count, width), (seq_len * segment.itemsize, segment.itemsize))
        flat = np.ascontiguousarray(rows).reshape(-1)
        sample_starts = np.arange(first, first + count, dtype=np.int64) * seq_len
        first_doc = np.searchsorted(starts, sample_starts, side="right") - 1
        last_doc = np.searchsorted(starts, sample_starts + seq_len, side="right") - 1
        ids = [window[d][1] for a, b in zip(first_doc.tolist(), last_doc.tolist()) for d in range(a, b + 1)]
        offsets = np.zeros(count + 1, dtype=np.int32)
        np.cumsum(last_doc - first_doc + 1, out=offsets[1:])
        yield pa.RecordBatch.from_arrays(
            [
                pa.FixedSizeListArray.from_arrays(pa.array(flat), width),
                pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids, pa.string())),
                pa.array((sample_starts - starts[first_doc]).astype(np.int32)),
            ],
            schema=schema,
        )
