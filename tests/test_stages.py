"""The staged build's pieces: spill files, and the Beam graph of a stage (what every runner supports)."""

from __future__ import annotations

import os

import apache_beam as beam
import pytest

from cpm.pipeline import graph, spill
from cpm.pipeline.graph import BuildJob


def test_partitioned_spill_files_round_trip_by_partition_and_frame(tmp_path):
    path = str(tmp_path / "sub" / "parts")
    rows = {3: [("a", i) for i in range(600)], 0: [{"x": b"\x00" * 10}], 7: []}
    assert spill.write_partitioned(path, rows) == 601
    assert list(spill.read_partition(path, 3)) == rows[3]  # three frames, in order
    assert list(spill.read_partition(path, 0)) == rows[0]
    assert list(spill.read_partition(path, 7)) == [] and list(spill.read_partition(path, 5)) == []
    assert spill.partitions_of(path) == [0, 3]  # the partitions with rows
    assert os.listdir(tmp_path / "sub") == ["parts"]  # no temporary file left


def test_a_failed_write_leaves_no_file(tmp_path):
    def rows():
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        spill.write_rows(str(tmp_path / "f"), rows())
    assert os.listdir(tmp_path) == []


def _job(tmp_path) -> BuildJob:
    return BuildJob(["news"], [], str(tmp_path / "out"), str(tmp_path / "work"), {})


def test_a_stage_is_create_reshuffle_and_one_single_output_pardo_without_side_inputs(tmp_path):
    """The features Beam's Dask runner mishandles (multi-output ParDo, side inputs) stay out of the graph."""
    pipeline = beam.Pipeline()
    graph.add_stage(pipeline, _job(tmp_path), "ids", [0, 1, 2], {"num_chunks": 0})
    proto = pipeline.to_runner_api()
    pardos = [t for t in proto.components.transforms.values() if t.spec.urn == "beam:transform:pardo:v1"]
    from apache_beam.portability.api import beam_runner_api_pb2

    for transform in pardos:
        payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
        assert not payload.side_inputs, transform.unique_name
        assert len(transform.outputs) <= 1, transform.unique_name
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"idsTasks", "idsSpread", "idsRun"} <= names


def test_a_stage_runs_its_tasks_and_leaves_their_markers(tmp_path):
    job = _job(tmp_path)
    for chunk in range(2):  # two chunks' id entries, one repeated id across them
        spill.write_partitioned(job.path("clean", f"{graph.chunk_name(chunk)}.ids"),
                                {0: [("same", ("f", chunk + 1, f"f:{chunk + 1}"), 0)]})
    with beam.Pipeline() as pipeline:
        graph.add_stage(pipeline, job, "ids", [0], {"num_chunks": 2})
    assert graph.task_done(job, "ids", 0)
    assert graph.task_result(job, "ids", 0) == {1: {0: "f:1"}}  # the later copy loses to f:1


def test_shards_written_batch_by_batch_have_the_bytes_of_one_whole_table(tmp_path):
    """Titles on some rows, a url on every row but in runs of nulls, short texts; a column sparser
    than 64 bytes per 1,024 rows changes only padding bytes, never rows."""
    import random

    from cpm.pipeline.rows import documents_table, layout_words, shard_batches
    from cpm.schemas import document_schema
    from cpm.shards.io import write_table

    rng = random.Random(3)
    rows = []
    for i in range(3000):
        words = ["中文", "词", "x"] * rng.randint(1, 5)
        text = "".join(words)
        rows.append({
            "id": f"d{i:05d}", "source": "news", "text": text, "words": layout_words([text], [words])[0], "num_words": len(words),
            "title": f"标题{i}" if rng.random() < 0.3 else None, "url": None if 1000 < i % 1500 < 1400 else "http://a.b/c",
            "date": None, "meta": "{}", "num_chars": len(text), "cjk_ratio": 0.5, "dup_cluster_size": 1, "origin": f"f:{i}",
        })
    schema = document_schema()
    whole = write_table(tmp_path / "whole.arrow", documents_table(rows, schema), schema)
    batched = write_table(tmp_path / "batched.arrow", shard_batches(iter(rows), "documents"), schema)
    assert whole.sha256 == batched.sha256
    for i, row in enumerate(rows):
        row["url"] = "http://a.b/c" if i % 700 == 699 else None
    sparse = write_table(tmp_path / "sparse.arrow", shard_batches(iter(rows), "documents"), schema)
    from cpm.shards.io import read_table

    assert read_table(sparse.path).equals(documents_table(rows, schema))


def test_words_laid_out_by_the_apply_stage_give_the_bytes_of_plain_word_lists(tmp_path):
    """The apply stage hands a shard each document's words as :class:`SplitWords`; the shard has the
    bytes Arrow writes from plain lists of words (multi-byte words; a document without words), batch
    by batch and as one table, and the words read back are the words."""
    import random

    from cpm.pipeline.rows import SplitWords, documents_table, layout_words, shard_batches, unpack_words
    from cpm.schemas import document_schema
    from cpm.shards.io import read_table, write_table

    rng = random.Random(5)
    vocabulary = ["中文", "词", "x", "𠀀字", "é", "  ", "。", "\n"]  # 1- to 4-byte UTF-8 characters
    word_lists = [[rng.choice(vocabulary) for _ in range(rng.randint(1, 40))] for _ in range(2500)]
    word_lists[7] = []
    texts = ["".join(words) for words in word_lists]
    split = [s for start in range(0, len(word_lists), 256) for s in layout_words(texts[start : start + 256], word_lists[start : start + 256])]
    assert isinstance(split[0], SplitWords) and split[7] == SplitWords(b"", b"")
    assert split[3] == SplitWords(texts[3].encode(), b"".join(
        len("".join(word_lists[3][: k + 1]).encode()).to_bytes(4, "little") for k in range(len(word_lists[3]))))
    assert [unpack_words(s) for s in split] == word_lists
    # words that are not their text (never from the segmenter) stay a list; the others are laid out
    mixed = layout_words(["中文词", "xé", "词"], [["中文", "词"], ["x"], ["词"]])
    assert mixed[1] == ["x"] and [unpack_words(s) for s in mixed] == [["中文", "词"], ["x"], ["词"]]
    assert isinstance(mixed[0], SplitWords) and isinstance(mixed[2], SplitWords)
    split[7] = []  # as a list, the document without words goes the plain way in its batch

    def rows(words_of):
        return [{"id": f"d{i:05d}", "source": "news", "text": "".join(words), "words": words_of[i], "num_words": len(words),
                 "title": None, "url": None, "date": None, "meta": "{}", "num_chars": len("".join(words)), "cjk_ratio": 0.5,
                 "dup_cluster_size": 1, "origin": f"f:{i}"} for i, words in enumerate(word_lists)]

    schema = document_schema()
    plain = [list(words) for words in word_lists]
    expected = write_table(tmp_path / "plain.arrow", shard_batches(iter(rows(plain)), "documents"), schema)
    batched = write_table(tmp_path / "split.arrow", shard_batches(iter(rows(split)), "documents"), schema)
    assert batched.sha256 == expected.sha256
    whole = documents_table(rows(split)[2048:], schema)  # every row SplitWords: one concatenation
    assert whole["words"].to_pylist() == word_lists[2048:]
    assert read_table(batched.path)["words"].to_pylist() == word_lists


def test_small_inputs_are_cut_into_balanced_chunks():
    from cpm.pipeline.graph import BALANCE_CHUNKS, MIN_PARTITION_BYTES, balanced_partition_bytes

    mb = 1 << 20
    # 40 MB at --partition-size 32MB would be two unequal chunks (32 + 8): ~16 equal ones instead
    assert balanced_partition_bytes(32 * mb, 40 * mb) == 40 * mb // BALANCE_CHUNKS
    assert balanced_partition_bytes(32 * mb, 100 << 30) == 32 * mb  # large inputs: --partition-size itself
    assert balanced_partition_bytes(32 * mb, 3 * mb) == MIN_PARTITION_BYTES  # never below 1 MiB ...
    assert balanced_partition_bytes(64 << 10, 3 * mb) == 64 << 10  # ... unless asked for smaller


_RELEASE_SCRIPT = """
import json
from cpm.pipeline.graph import release_memory, resident_bytes

blocks = [bytearray(4000) for _ in range(40_000)]  # ~160 MB on the C heap (over pymalloc's size)
keep = blocks[-1]  # the heap's top stays in use: freeing the rest leaves free pages inside the heap
del blocks
before = resident_bytes()
kept = release_memory(above=before + (1 << 30))  # under the bound: the freed memory stays for the next task
middle = resident_bytes()
released = release_memory(above=0)
print(json.dumps([before, kept, middle, released, resident_bytes()]))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="resident size from Linux /proc")
def test_finished_tasks_return_freed_memory_only_above_the_bound():
    """Returning freed memory after every task made the next task fault every page in again; it is
    returned when the worker's resident size is over the bound, and then the resident size drops."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _RELEASE_SCRIPT], capture_output=True, text=True, check=True).stdout
    before, kept, middle, released, after = json.loads(out)
    assert not kept and middle > before - (16 << 20)
    assert released and after < middle - (100 << 20)


def test_the_pool_loads_each_stages_tables_once_and_before_that_stage(tmp_path):
    """The launcher loads the cleaning tables while the first stage runs and the segmenter while the
    next one does; a resumed build that starts at a later stage loads what it needs first."""
    from cpm.pipeline.launcher import LocalPool
    from cpm.tokenizer import segment

    job = BuildJob(["news"], [], str(tmp_path), str(tmp_path), {}, None)
    pool = LocalPool(2, job)
    try:
        assert [stage for stage, _ in pool.to_load] == ["clean", "apply"]
        assert not pool._load_due(job, "read")  # reading needs no table
        assert pool._load_next(job) and [stage for stage, _ in pool.to_load] == ["apply"]
        assert not pool._load_due(job, "lsh")
        assert pool._load_due(job, "shards") and pool.to_load == [] and segment._MODEL is not None
        assert not pool._load_next(job) and not pool._load_due(job, "apply")
    finally:
        pool.close()
