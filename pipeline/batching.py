"""Shuffles of few, large elements: batches per bundle, grouped by bucket, regrouped per key.

A runner pays for every element that crosses from one fused stage to the next (encoding, the data
plane, decoding: ~25 us per element on the FnApiRunner, whatever its size). Per-document shuffles
(``GroupByKey``/``CoGroupByKey`` keyed by document, or a side-input consumer reading documents) made
those crossings most of the corpus job's runner cost. The transforms here keep the per-key semantics
but ship lists:

* :class:`FixedBatches` — elements -> lists of consecutive elements of a bundle.
* :class:`BatchedGroupByKey` — ``GroupByKey`` whose shuffle carries ``(bucket, [(key, value), ...])``,
  one element per bucket per ~2,000 input elements of a bundle; the values of each key are regrouped
  after the shuffle. ``buckets=None`` uses the key itself as the bucket (few keys, e.g. shard numbers).
* :class:`BatchedCoGroupByKey` — the same for ``CoGroupByKey``: ``{tag: PCollection of (key, value)}``
  -> ``(key, {tag: [values]})`` for every key present in any input.

A bucket's elements meet in one worker after the shuffle, so ``buckets`` should grow with the data
(see :func:`shuffle_buckets`); buffering before the shuffle is bounded by ``limit`` elements.
Output order within a key, like Beam's, is unspecified. Global window only.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Iterable

import apache_beam as beam

BUCKET_BYTES = 32 * 1024 * 1024  # input bytes per shuffle bucket (bounds a bucket's memory after a shuffle)
MIN_BUCKETS = 16  # at least this many buckets, so a small job still spreads over workers


def shuffle_buckets(input_bytes: int) -> int:
    """How many buckets per-document shuffles of a job over ``input_bytes`` of input use."""
    return max(MIN_BUCKETS, math.ceil(input_bytes / BUCKET_BYTES))


def bucket_of(key: Any, buckets: int) -> int:
    """A bucket in ``range(buckets)`` for ``key``, the same in every process (unlike ``hash``)."""
    if isinstance(key, str):
        data = key.encode("utf-8", "surrogatepass")
    elif isinstance(key, bytes):
        data = key
    else:
        data = repr(key).encode("utf-8", "surrogatepass")
    return zlib.crc32(data) % buckets


def global_window_value(value: Any):
    """``value`` as an element of the global window (what ``finish_bundle`` must yield)."""
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import MIN_TIMESTAMP
    from apache_beam.utils.windowed_value import WindowedValue

    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


class FixedBatches(beam.DoFn):
    """Elements -> lists of ``size`` consecutive elements of a bundle (the last one of a bundle shorter).

    What ``beam.BatchElements`` does for these pipelines, without its per-element timing and
    adaptive sizing (measured: a tenth of its cost per element). Global window only.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def start_bundle(self) -> None:
        self.batch: list = []

    def process(self, element):
        self.batch.append(element)
        if len(self.batch) >= self.size:
            batch, self.batch = self.batch, []
            yield batch

    def finish_bundle(self):
        if self.batch:
            batch, self.batch = self.batch, []
            yield global_window_value(batch)


class BucketBatches(beam.DoFn):
    """``(key, value)`` -> ``(bucket, (tag, [(key, value), ...]))``, a bundle's pairs batched per bucket.

    All buffers are emitted once ``limit`` pairs are buffered, and at the end of the bundle.
    """

    def __init__(self, buckets: int | None, tag: str = "", limit: int = 2048) -> None:
        self.buckets = buckets
        self.tag = tag
        self.limit = limit

    def start_bundle(self) -> None:
        self.buffers: dict[Any, list] = {}
        self.buffered = 0

    def process(self, pair):
        bucket = pair[0] if self.buckets is None else bucket_of(pair[0], self.buckets)
        buffer = self.buffers.get(bucket)
        if buffer is None:
            buffer = self.buffers[bucket] = []
        buffer.append(pair)
        self.buffered += 1
        if self.buffered >= self.limit:
            yield from self._drain()

    def _drain(self) -> Iterable[tuple]:
        buffers, self.buffers, self.buffered = self.buffers, {}, 0
        for bucket, pairs in buffers.items():
            yield bucket, (self.tag, pairs)

    def finish_bundle(self):
        for element in self._drain():
            yield global_window_value(element)


def _regroup(tags: list[str]):
    """``(bucket, [(tag, pairs), ...])`` -> ``(key, {tag: [values]})`` for every key of the bucket."""

    def regroup(item) -> Iterable[tuple[Any, dict[str, list]]]:
        _, tagged = item
        grouped: dict[Any, dict[str, list]] = {}
        for tag, pairs in tagged:
            for key, value in pairs:
                groups = grouped.get(key)
                if groups is None:
                    groups = grouped[key] = {t: [] for t in tags}
                groups[tag].append(value)
        return grouped.items()

    return regroup


_REGROUP_UNTAGGED = _regroup([""])


def _regroup_untagged(item) -> Iterable[tuple[Any, list]]:
    return ((key, groups[""]) for key, groups in _REGROUP_UNTAGGED(item))


class BatchedGroupByKey(beam.PTransform):
    """``GroupByKey`` that shuffles per-bundle batches (see the module docstring)."""

    def __init__(self, buckets: int | None, limit: int = 2048) -> None:
        super().__init__()
        self.buckets = buckets
        self.limit = limit

    def expand(self, pairs):
        return (
            pairs
            | "BucketBatches" >> beam.ParDo(BucketBatches(self.buckets, limit=self.limit))
            | "Shuffle" >> beam.GroupByKey()
            | "Regroup" >> beam.FlatMap(_regroup_untagged)
        )


class BatchedCoGroupByKey(beam.PTransform):
    """``CoGroupByKey`` of ``{tag: PCollection of (key, value)}`` that shuffles per-bundle batches."""

    def __init__(self, buckets: int, limit: int = 2048) -> None:
        super().__init__()
        self.buckets = buckets
        self.limit = limit

    def expand(self, inputs):  # no annotation: Beam reads expand's as a PCollection type hint and warns on a dict
        tags = sorted(inputs)
        batches = [
            inputs[tag] | f"BucketBatches[{tag}]" >> beam.ParDo(BucketBatches(self.buckets, tag, self.limit))
            for tag in tags
        ]
        return (
            batches
            | "Flatten" >> beam.Flatten()
            | "Shuffle" >> beam.GroupByKey()
            | "Regroup" >> beam.FlatMap(_regroup(tags))
        )
