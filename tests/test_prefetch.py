"""``graph.prefetched``: a shard's batches built by a thread ahead of the writer, in order, errors included."""

from __future__ import annotations

import threading

import pytest

from cpm.pipeline.graph import prefetched


def _threads() -> int:
    return sum(t.name == "prefetch" for t in threading.enumerate())


def test_items_come_in_order_from_another_thread():
    producers: set[int] = set()

    def items():
        for i in range(1000):
            producers.add(threading.get_ident())
            yield i

    assert list(prefetched(items(), depth=3)) == list(range(1000))
    assert producers and threading.get_ident() not in producers


def test_an_error_of_the_producer_is_raised_to_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("bad row")

    got = []
    with pytest.raises(ValueError, match="bad row"):
        for item in prefetched(items()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer():
    before = _threads()
    stream = prefetched(iter(range(10**9)), depth=2)
    assert next(stream) == 0
    stream.close()
    assert _threads() == before
