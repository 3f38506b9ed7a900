"""cpm.pipeline.batching: batched shuffles give what GroupByKey / CoGroupByKey give, on Beam's runner."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from cpm.pipeline.batching import (
    BatchedCoGroupByKey,
    BatchedGroupByKey,
    BucketBatches,
    FixedBatches,
    bucket_of,
    shuffle_buckets,
)

PAIRS = [(f"k{i % 37}", i) for i in range(500)] + [(("tuple", 1), "t"), (3, "int")]


def _sorted_groups(item):
    key, values = item
    return key, sorted(values, key=repr)


def test_batched_group_by_key_equals_group_by_key():
    expected = {}
    for key, value in PAIRS:
        expected.setdefault(key, []).append(value)
    for buckets, limit in ((1, 2048), (4, 7), (None, 3)):
        with beam.Pipeline() as p:
            grouped = (
                p | beam.Create(PAIRS, reshuffle=False) | BatchedGroupByKey(buckets, limit) | beam.Map(_sorted_groups)
            )
            assert_that(grouped, equal_to([(k, sorted(v, key=repr)) for k, v in expected.items()]))


def test_batched_cogroup_by_key_equals_cogroup_by_key():
    left = [(f"k{i}", i) for i in range(50)] + [("k1", "again")]
    right = [(f"k{i}", -i) for i in range(25, 80)]
    with beam.Pipeline() as p:
        inputs = {"left": p | "L" >> beam.Create(left), "right": p | "R" >> beam.Create(right)}
        ours = inputs | "Ours" >> BatchedCoGroupByKey(3, limit=5) | "SortOurs" >> beam.Map(
            lambda kv: (kv[0], {t: sorted(v, key=repr) for t, v in kv[1].items()})
        )
        beams = inputs | "Beam" >> beam.CoGroupByKey() | "SortBeam" >> beam.Map(
            lambda kv: (kv[0], {t: sorted(v, key=repr) for t, v in kv[1].items()})
        )
        assert_that(ours, equal_to(sorted_pairs(left, right)), label="ours")
        assert_that(beams, equal_to(sorted_pairs(left, right)), label="beam")


def sorted_pairs(left, right):
    keys = {k for k, _ in left} | {k for k, _ in right}
    return [
        (k, {"left": sorted([v for kk, v in left if kk == k], key=repr), "right": sorted([v for kk, v in right if kk == k], key=repr)})
        for k in keys
    ]


def test_bucket_batches_bounds_what_it_buffers_and_loses_nothing():
    fn = BucketBatches(4, tag="t", limit=10)
    fn.start_bundle()
    out = [element for pair in PAIRS for element in fn.process(pair)]
    assert all(len(pairs) <= 10 for _, (_, pairs) in out)
    rest = [wv.value for wv in fn.finish_bundle()]
    seen = [pair for _, (tag, pairs) in out + rest for pair in pairs]
    assert sorted(seen, key=repr) == sorted(PAIRS, key=repr)
    assert all(tag == "t" and all(bucket_of(k, 4) == bucket for k, _ in pairs) for bucket, (tag, pairs) in out + rest)


def test_fixed_batches_and_bucket_counts():
    fn = FixedBatches(3)
    fn.start_bundle()
    batches = [b for x in range(7) for b in fn.process(x)] + [wv.value for wv in fn.finish_bundle()]
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert shuffle_buckets(0) == 16 and shuffle_buckets(10 * 2**30) == 320


BUCKET_KEYS = ["中文", "doc-1", b"\x00\xff", 12345, ("news", 3)]


def test_bucket_of_is_the_same_in_every_process():
    """Other interpreters with other hash salts (``PYTHONHASHSEED``) put every key in the same bucket."""
    here = [bucket_of(key, 1000) for key in BUCKET_KEYS]
    assert len(set(here)) >= 4  # spread, not all in one bucket
    code = "from cpm.pipeline.batching import bucket_of; import sys; " \
           f"print([bucket_of(k, 1000) for k in {BUCKET_KEYS!r}])"
    for salt in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=salt)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert ast.literal_eval(out.stdout.strip()) == here, salt
    assert all(0 <= b < 7 for b in (bucket_of(key, 7) for key in BUCKET_KEYS))
