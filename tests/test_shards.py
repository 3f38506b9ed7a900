"""Schemas, shard IO, manifests and `cpm shards inspect` on good and broken shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from cpm.cli import main
from cpm.errors import CpmError, ShardError
from cpm.schemas import (
    SCHEMA_VERSION,
    document_schema,
    rejected_schema,
    schema_kind,
    sequence_schema,
    validate_schema,
)
from cpm.schemas.manifest import new_manifest, read_manifest, validate_manifest, write_manifest
from cpm.shards.inspect import inspect_path
from cpm.shards.io import ShardWriter, read_table, resolve_shard_paths, write_table

DOCS = [
    {
        "id": f"news-{i}",
        "source": "news" if i % 2 else "encyclopedia",
        "text": "今天天气不错。\n我们去公园散步。" * (i + 1),
        "words": ["今天", "天气", "不错", "。"],
        "title": None if i % 3 else f"标题{i}",
        "url": None,
        "date": "1998-01-01",
        "meta": json.dumps({"category": "体育"}, ensure_ascii=False),
        "num_chars": 15 * (i + 1),
        "num_words": 4,
        "cjk_ratio": 0.5,
        "dup_cluster_size": 1,
        "origin": f"news.jsonl:{i + 1}",
    }
    for i in range(10)
]


def build_output(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    table = pa.Table.from_pylist(DOCS, schema=document_schema())
    shards = [write_table(out / "shards" / "part-00000.arrow", table)]
    rejected = pa.Table.from_pylist(
        [{"id": "x", "source": "news", "rule": "too_short", "detail": "3 < 50", "duplicate_of": None, "origin": "news.jsonl:11", "text": "短"}],
        schema=rejected_schema(),
    )
    shards.append(write_table(out / "rejected" / "part-00000.arrow", rejected))
    manifest = new_manifest("documents", "corpus build", {"source": "news"})
    manifest["counters"] = {"records_read": 11, "kept": 10, "rejected": {"too_short": 1}}
    manifest["shards"] = [shards[0].entry(out, kind="documents"), shards[1].entry(out, kind="rejected")]
    write_manifest(out, manifest)
    return out


def test_schema_round_trip(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(DOCS, schema=document_schema())
    info = write_table(tmp_path / "part-00000.arrow", table)
    assert info.rows == len(DOCS) and len(info.sha256) == 64
    back = read_table(info.path, kind="documents")
    assert back.to_pylist() == DOCS
    assert schema_kind(back.schema) == "documents"
    # same rows, same bytes
    again = write_table(tmp_path / "again.arrow", table)
    assert again.sha256 == info.sha256
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.arrow", "part-00000.arrow"]


def test_readable_without_cpm(tmp_path: Path) -> None:
    import polars as pl

    table = pa.Table.from_pylist(DOCS, schema=document_schema())
    path = write_table(tmp_path / "part-00000.arrow", table).path
    with pa.memory_map(path) as source:
        plain = pa.ipc.open_file(source).read_all()
    assert plain.column("id").to_pylist() == [d["id"] for d in DOCS]
    frame = pl.read_ipc(path)
    assert frame["text"].to_list() == [d["text"] for d in DOCS]
    assert frame["words"].to_list()[0] == DOCS[0]["words"]


def test_validate_schema_rejects_wrong_files(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="expected a documents shard"):
        validate_schema(rejected_schema(), "x.arrow", kind="documents")
    with pytest.raises(ShardError, match="not a cpm shard"):
        validate_schema(pa.schema([("a", pa.int32())]).with_metadata({b"cpm.schema_version": b"1"}), "x.arrow")
    bad = pa.schema([f if f.name != "words" else pa.field("words", pa.string()) for f in document_schema()], metadata=document_schema().metadata)
    with pytest.raises(ShardError, match="column 'words' has type string"):
        validate_schema(bad, "x.arrow")
    newer = document_schema().with_metadata({**document_schema().metadata, b"cpm.schema_version": str(SCHEMA_VERSION + 1).encode()})
    with pytest.raises(ShardError, match="newer than this cpm"):
        validate_schema(newer, "x.arrow")


def test_sequence_schema_width() -> None:
    assert sequence_schema(1024, 30000).field("tokens").type == pa.list_(pa.uint16(), 1025)
    assert sequence_schema(8, 70000).field("tokens").type == pa.list_(pa.uint32(), 9)


def test_shard_writer_rolls_over(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, document_schema(), target_bytes=2000, batch_rows=2) as writer:
        writer.write_rows(DOCS)
    shards = writer.shards
    assert len(shards) > 1
    assert sum(s.rows for s in shards) == len(DOCS)
    assert [Path(p).name for p in resolve_shard_paths([tmp_path])] == [Path(s.path).name for s in shards]
    rows = [r for s in shards for r in read_table(s.path).to_pylist()]
    assert rows == DOCS


def test_manifest_validation(tmp_path: Path) -> None:
    out = build_output(tmp_path)
    manifest = read_manifest(out)
    assert manifest["counters"]["kept"] == 10
    del manifest["shards"][0]["sha256"]
    with pytest.raises(ShardError, match="sha256"):
        validate_manifest(manifest)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(ShardError, match="not valid JSON"):
        read_manifest(out)
    with pytest.raises(CpmError, match="no manifest"):
        read_manifest(tmp_path)


def test_inspect_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = build_output(tmp_path)
    report = inspect_path(out, rows=2, verify=True)
    assert all(v["ok"] for v in report["verify"])
    docs = report["shards"][0]
    assert docs["rows"] == 10 and docs["compression"] == "zstd"
    assert docs["columns"]["source"]["counts"] == {"news": 5, "encyclopedia": 5}
    assert docs["columns"]["title"]["nulls"] == 6
    assert docs["columns"]["text"]["chars"]["max"] == 160
    assert len(docs["sample_rows"]) == 2
    assert report["shards"][1]["kind"] == "rejected"

    assert main(["shards", "inspect", str(out), "--verify", "--rows", "1"]) == 0
    printed = capsys.readouterr().out
    assert "2 shard(s) match the manifest" in printed and "news: 5" in printed
    assert "10 documents, 1 rejected in 2 shard(s)" in printed  # per kind, not 11 rows of mixed kinds
    assert main(["shards", "inspect", str(out), "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["totals"] == {
        "shards": 2, "rows": 11, "rows_by_kind": {"documents": 10, "rejected": 1}, "bytes": report["totals"]["bytes"]
    }


def test_inspect_verify_detects_tampering(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = build_output(tmp_path)
    shard = out / "shards" / "part-00000.arrow"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    shutil.copy(shard, out / "shards" / "part-00001.arrow")
    assert main(["shards", "inspect", str(out), "--verify", "--rows", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fail verification" in err and "sha256" in err and "not in the manifest" in err


def test_inspect_truncated_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = build_output(tmp_path)
    shard = out / "shards" / "part-00000.arrow"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ShardError, match="part-00000.arrow"):
        inspect_path(shard)
    assert main(["shards", "inspect", str(shard)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "part-00000.arrow" in err and "Traceback" not in err
    not_arrow = tmp_path / "notes.arrow"
    not_arrow.write_text("hello")
    assert main(["shards", "inspect", str(not_arrow)]) == 1
    assert "notes.arrow" in capsys.readouterr().err


def test_inspect_missing_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shards", "inspect", "/nonexistent/dir"]) == 1
    assert "/nonexistent/dir" in capsys.readouterr().err


def _silently_corrupted_shard(tmp_path: Path) -> Path:
    """A zstd document shard with 64 bytes flipped where plain pyarrow still reads it without error.

    Such bytes decompress to garbage offsets: unvalidated, tokenizers and ``to_pylist`` crash
    (segfault) or return wrong rows. The flip position is searched from the middle outwards so
    that the test does not depend on where zstd puts its frames.
    """
    import random

    rng = random.Random(0)
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    rows = []
    for i in range(3000):
        words = ["".join(rng.choice(chars) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(5, 60))]
        rows.append({**DOCS[0], "id": f"doc-{i}", "text": "".join(words), "words": words, "origin": f"x.jsonl:{i + 1}"})
    good = write_table(tmp_path / "good" / "part-00000.arrow", pa.Table.from_pylist(rows, schema=document_schema()))
    data = Path(good.path).read_bytes()
    for shift in range(0, len(data) // 2 - 64, 4099):
        bad = bytearray(data)
        start = len(data) // 2 + shift
        bad[start : start + 64] = bytes(b ^ 0xFF for b in bad[start : start + 64])
        path = tmp_path / "bad" / "shards" / "part-00000.arrow"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(bad))
        try:
            pa.ipc.open_file(str(path)).read_all()  # no error: the damage is silent without validation
        except (pa.ArrowException, OSError):
            continue
        return path
    pytest.fail("no silent corruption found")


def test_corrupted_shard_is_a_one_line_error_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cpm.shards.io import iter_batches
    from cpm.tokenizer.train import train_tokenizer

    bad = _silently_corrupted_shard(tmp_path)
    with pytest.raises(ShardError, match="part-00000.arrow: corrupted record batch"):
        read_table(bad)
    with pytest.raises(ShardError, match="part-00000.arrow: corrupted record batch"):
        list(iter_batches(bad))
    assert main(["shards", "inspect", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and f"{bad}: corrupted" in err
    with pytest.raises(ShardError, match="corrupted record batch"):  # used to segfault in jieba/sentencepiece
        train_tokenizer([bad], tmp_path / "tok", vocab_size=100, progress=False)
    assert not (tmp_path / "tok").exists()


def test_manifest_checksums_guard_the_inputs(tmp_path: Path) -> None:
    """A shard rewritten after its manifest (valid Arrow, other rows) is refused by tokenizer train."""
    from cpm.shards.io import verify_checksums
    from cpm.tokenizer.train import train_tokenizer

    out = build_output(tmp_path)
    shard = out / "shards" / "part-00000.arrow"
    assert verify_checksums([shard, out / "rejected" / "part-00000.arrow"]) == 2
    write_table(shard, pa.Table.from_pylist(DOCS[:5], schema=document_schema()))
    with pytest.raises(ShardError, match=r"part-00000.arrow: corrupted: its size or sha256 differs from .*manifest.json"):
        train_tokenizer([out], tmp_path / "tok", vocab_size=100, progress=False)
    loose = tmp_path / "loose.arrow"
    write_table(loose, pa.Table.from_pylist(DOCS, schema=document_schema()))
    assert verify_checksums([loose]) == 0  # no manifest: nothing to compare with


def test_verify_reports_a_truncated_shard_before_inspecting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = build_output(tmp_path)
    shard = out / "shards" / "part-00000.arrow"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert main(["shards", "inspect", str(out), "--verify", "--rows", "1"]) == 1
    captured = capsys.readouterr()
    assert "1 shard(s) match the manifest, 1 do not" in captured.out
    assert "shards/part-00000.arrow: size" in captured.out
    assert "kind rejected" in captured.out  # the intact shard is still inspected
    assert captured.err.count("\n") == 1 and "1 shard(s) fail verification" in captured.err


def test_atomic_output_dir(tmp_path: Path) -> None:
    from cpm.shards.io import atomic_output_dir

    out = tmp_path / "out"
    with atomic_output_dir(out) as work:  # a new directory
        (work / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(CpmError, match="exists and is not empty.*--overwrite"):
        with atomic_output_dir(out):
            pass
    with pytest.raises(CpmError, match="holds the input"):
        with atomic_output_dir(tmp_path, overwrite=True, inputs=[out / "a.txt"]):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, overwrite=True) as work:
            (work / "b.txt").write_text("2")
            raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # a failed run leaves the old output as it was
    with atomic_output_dir(out, overwrite=True) as work:
        (work / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]  # replaced, not mixed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary directory left
    (tmp_path / "file").write_text("x")
    with pytest.raises(CpmError, match="not a directory"):
        with atomic_output_dir(tmp_path / "file", overwrite=True):
            pass


def test_inputs_named_with_glob_characters(tmp_path: Path) -> None:
    """A path that exists is taken as it is even with ``[``/``*`` in its name; otherwise it is a glob."""
    folder = tmp_path / "corpus[v2]"
    with ShardWriter(folder / "shards", document_schema(), batch_rows=2) as writer:
        writer.write_rows(DOCS)
    expected = [Path(s.path).name for s in writer.shards]
    assert [p.name for p in resolve_shard_paths([folder])] == expected
    assert [p.name for p in resolve_shard_paths([tmp_path / "corpus*"])] == expected
    with pytest.raises(ShardError, match=r"corpus\?x: no file matches"):
        resolve_shard_paths([tmp_path / "corpus?x"])
