"""Reading cpm shards in an Apache Beam pipeline: :class:`ReadShards`.

    import apache_beam as beam
    from cpm.shards.beam import ReadShards

    with beam.Pipeline() as p:
        docs = p | ReadShards("gs://bucket/corpus/shards/part-*.arrow", kind="documents")   # row dicts
        lengths = docs | beam.Map(lambda row: row["num_chars"])

Files are matched and opened through Beam's ``FileSystems``, so every scheme Beam has (local paths,
``gs://``, ``s3://``, ``hdfs://`` with their extras installed) works. Each shard is checked as
:func:`cpm.shards.io.open_shard` checks it: an Arrow IPC file with a cpm schema (of ``kind``, when
given), and every record batch fully validated; a bad shard is a :class:`~cpm.errors.ShardError`
naming the file. Shards are distributed over workers (one file per element after a reshuffle).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from cpm.errors import ShardError

NAMESPACE = "cpm.shards"


def read_shard_batches(path: str, kind: str | None = None) -> Iterator[pa.RecordBatch]:
    """The validated record batches of one shard, opened through Beam's ``FileSystems`` (any scheme)."""
    from cpm.shards.io import open_shard_source, read_batch

    try:
        handle = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:  # noqa: BLE001 - each file system raises its own errors
        raise ShardError(f"{path}: cannot open: {' '.join(str(exc).split())}") from None
    with handle:
        reader = open_shard_source(pa.PythonFile(handle, mode="r"), path, kind)
        for index in range(reader.num_record_batches):
            yield read_batch(reader, index, path)


class _ReadShardFn(beam.DoFn):
    """A matched shard file -> its validated record batches (or their rows)."""

    def __init__(self, kind: str | None, rows: bool) -> None:
        self.kind = kind
        self.rows = rows
        self.shards = Metrics.counter(NAMESPACE, "shards_read")
        self.batches = Metrics.counter(NAMESPACE, "record_batches_read")

    def process(self, metadata) -> Iterator:
        for batch in read_shard_batches(metadata.path, self.kind):
            self.batches.inc()
            if self.rows:
                yield from batch.to_pylist()
            else:
                yield batch
        self.shards.inc()


class ReadShards(beam.PTransform):
    """Read the cpm shards matching ``pattern`` (a glob or a list of globs, any Beam file system).

    Output: one dict per row (``rows=True``, the default) or one ``pyarrow.RecordBatch`` per record
    batch (``rows=False``, for vectorised work). ``kind`` (``documents``, ``rejected``,
    ``sequences``, ``signatures``) makes a shard of another kind an error. A pattern that matches
    nothing is an error.
    """

    def __init__(self, pattern: str | Sequence[str], kind: str | None = None, rows: bool = True) -> None:
        super().__init__()
        self.patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        if not self.patterns:
            raise ValueError("ReadShards needs at least one file pattern")
        self.kind = kind
        self.rows = rows

    def expand(self, pbegin):
        return (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll(empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
            | "SpreadFiles" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadShardFn(self.kind, self.rows))
        )
