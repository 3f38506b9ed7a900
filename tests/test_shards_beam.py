"""``cpm.shards.beam.ReadShards`` on the DirectRunner: rows, batches, and open_shard's validation."""

from __future__ import annotations

import shutil

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from cpm.shards.beam import ReadShards
from cpm.shards.io import read_table


def _run(transform, collect):
    with beam.Pipeline("DirectRunner") as p:
        collect(p | transform)


def test_rows_and_batches_of_matching_shards(news_corpus):
    pattern = str(news_corpus / "shards" / "part-*.arrow")
    expected = [row for path in sorted((news_corpus / "shards").glob("*.arrow")) for row in read_table(path).to_pylist()]
    assert expected

    def check_rows(rows):
        assert_that(rows | beam.Map(lambda r: (r["id"], r["text"], tuple(r["words"]))),
                    equal_to([(r["id"], r["text"], tuple(r["words"])) for r in expected]))

    _run(ReadShards(pattern, kind="documents"), check_rows)

    def check_batches(batches):
        assert_that(batches | beam.Map(lambda b: b.num_rows) | beam.CombineGlobally(sum), equal_to([len(expected)]))

    both = [pattern, str(news_corpus / "rejected" / "*.arrow")]
    rejected = sum(read_table(p).num_rows for p in (news_corpus / "rejected").glob("*.arrow"))
    _run(ReadShards(pattern, rows=False), check_batches)

    def check_both(rows):
        assert_that(rows | beam.combiners.Count.Globally(), equal_to([len(expected) + rejected]))

    _run(ReadShards(both), check_both)


def test_wrong_kind_corrupted_shard_and_no_match_are_errors_naming_the_file(news_corpus, tmp_path):
    pattern = str(news_corpus / "shards" / "part-*.arrow")
    with pytest.raises(Exception, match="part-00000.arrow.*sequences"):
        _run(ReadShards(pattern, kind="sequences"), lambda pc: None)
    broken = tmp_path / "part-00000.arrow"
    data = sorted((news_corpus / "shards").glob("*.arrow"))[0].read_bytes()
    broken.write_bytes(data[:-64])
    with pytest.raises(Exception, match="part-00000.arrow: not a readable Arrow shard"):
        _run(ReadShards(str(broken)), lambda pc: None)
    with pytest.raises(Exception, match="nothing-here"):
        _run(ReadShards(str(tmp_path / "nothing-here-*.arrow")), lambda pc: None)


def test_corpus_build_reads_against_shards_with_it(news_corpus, tmp_path):
    """``--against`` goes through ReadShards: a second build of the same news finds every document already there."""
    from cpm.cli import main
    from cpm.schemas.manifest import read_manifest

    first = tmp_path / "first"
    shutil.copytree(news_corpus, first)
    second = tmp_path / "second"
    assert main(["-q", "corpus", "build", "--source", "news", "--output", str(second), "--against", str(first), "--no-progress"]) == 0
    assert read_manifest(second)["shards"][0]["rows"] == 0  # every document was a copy of one in the first build
    counters = read_manifest(second)["counters"]["dedup"]
    assert counters["exact_duplicates"] == read_manifest(first)["shards"][0]["rows"]  # each an exact copy of an old one
