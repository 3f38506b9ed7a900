"""``cpm shards export --format parquet``: DuckDB reads the result directly, with cpm's metadata."""

from __future__ import annotations

import json

import pytest

from cpm.cli import main
from cpm.schemas.manifest import read_manifest
from cpm.shards.io import read_table

duckdb = pytest.importorskip("duckdb")


def test_corpus_as_parquet_queried_with_duckdb(news_corpus, tmp_path):
    out = tmp_path / "parquet"
    assert main(["-q", "shards", "export", str(news_corpus), "--format", "parquet", "--output", str(out)]) == 0
    docs = read_table(sorted((news_corpus / "shards").glob("*.arrow"))[0])
    con = duckdb.connect()
    pattern = str(out / "shards" / "*.parquet")
    rows = con.execute(f"SELECT id, text, words, cjk_ratio FROM read_parquet('{pattern}') ORDER BY id").fetchall()
    expected = sorted(zip(*(docs.column(c).to_pylist() for c in ("id", "text", "words", "cjk_ratio"))))
    assert [(r[0], r[1], r[2]) for r in rows] == [(e[0], e[1], e[2]) for e in expected]
    counters = read_manifest(news_corpus)["counters"]
    rules = dict(con.execute(f"SELECT rule, count(*) FROM read_parquet('{out / 'rejected' / '*.parquet'}') GROUP BY rule").fetchall())
    assert sum(rules.values()) == sum(s["rows"] for s in read_manifest(news_corpus)["shards"] if s["path"].startswith("rejected/"))
    meta = dict(con.execute(f"SELECT decode(key), decode(value) FROM parquet_kv_metadata('{pattern}')").fetchall())
    assert meta["cpm.kind"] == "documents" and meta["cpm.schema_version"] == "1"
    compression = {r[0] for r in con.execute(f"SELECT compression FROM parquet_metadata('{pattern}')").fetchall()}
    assert compression == {"ZSTD"}
    manifest = read_manifest(out)
    assert manifest["kind"] == "parquet" and manifest["counters"] == counters
    assert sorted(s["path"] for s in manifest["shards"]) == ["rejected/part-00000.parquet", "shards/part-00000.parquet"]


def test_sequences_keep_their_special_ids(news_packed, tmp_path):
    packed, _ = news_packed
    shard = sorted((packed / "train").glob("*.arrow"))[0]
    out = tmp_path / "one"
    assert main(["-q", "shards", "export", str(shard), "--output", str(out)]) == 0
    path = out / "part-00000.parquet"
    meta = dict(duckdb.execute(f"SELECT decode(key), decode(value) FROM parquet_kv_metadata('{path}')").fetchall())
    source = read_manifest(packed)["config"]
    assert (int(meta["cpm.eod_id"]), int(meta["cpm.vocab_size"]), meta["cpm.tokenizer_fingerprint"]) == (
        source["eod_id"], source["vocab_size"], source["tokenizer_fingerprint"])
    first = duckdb.execute(f"SELECT tokens FROM '{path}' LIMIT 1").fetchone()[0]
    assert list(first) == read_table(shard).column("tokens")[0].as_py()


def test_bad_input_and_existing_output_are_one_line_errors(news_corpus, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main(["shards", "export", str(news_corpus), "--output", str(tmp_path / "out")]) == 1
    assert main(["shards", "export", str(news_corpus), "--format", "csv", "--output", str(tmp_path / "o2")]) == 1
    broken = tmp_path / "broken.arrow"
    broken.write_bytes(sorted((news_corpus / "shards").glob("*.arrow"))[0].read_bytes()[:-100])
    assert main(["shards", "export", str(broken), "--output", str(tmp_path / "o3")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "exists and is not empty" in err[0] and "--format 'csv'" in err[1] and "broken.arrow" in err[2]
    assert not (tmp_path / "o3").exists() and json.loads((news_corpus / "manifest.json").read_text())["kind"] == "documents"
