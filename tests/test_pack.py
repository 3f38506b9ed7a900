"""``cpm data pack``: no token lost or duplicated, determinism, stable split, source mixing."""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import read_zst_lines
from cpm.cli import main
from cpm.errors import CpmError
from cpm.schemas import document_schema, schema_metadata
from cpm.shards.io import write_table

EOD = 7  # <eod> of the CPM-1 vocabulary


def make_document_shards(directory: Path, zh_dir: Path, *, news: int = 120, reviews: int = 120, skip: int = 0) -> Path:
    """Real People's Daily paragraphs (news) and product reviews (webpage) as two document shards."""
    import jieba

    rows_by_shard = []
    for name, source, count, prefix in (
        ("people_daily_1998_paragraphs.txt.zst", "news", news, "pd"),
        ("product_reviews.txt.zst", "webpage", reviews, "rv"),
    ):
        texts = [t for t in read_zst_lines(zh_dir / name, skip + count + 50) if t.strip()][skip : skip + count]
        rows = []
        for i, text in enumerate(texts):
            words = list(jieba.cut(text))
            rows.append(
                {
                    "id": f"{prefix}-{skip + i}",
                    "source": source,
                    "text": text,
                    "words": words,
                    "meta": "{}",
                    "num_chars": len(text),
                    "num_words": len(words),
                    "cjk_ratio": 1.0,
                    "dup_cluster_size": 1,
                    "origin": f"{name}:{skip + i + 1}",
                }
            )
        rows_by_shard.append(rows)
    for n, rows in enumerate(rows_by_shard):
        write_table(directory / "shards" / f"part-{n:05d}.arrow", pa.Table.from_pylist(rows, schema=document_schema()))
    return directory


def documents_by_id(directory: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((directory / "shards").glob("*.arrow")):
        for row in pa.ipc.open_file(str(path)).read_all().to_pylist():
            out[row["id"]] = row
    return out


def read_samples(out: Path, split: str) -> list[dict]:
    rows = []
    for path in sorted((out / split).glob("part-*.arrow")):
        rows.extend(pa.ipc.open_file(str(path)).read_all().to_pylist())
    return rows


def rejoin(samples: list[dict]) -> tuple[list[int], list[str]]:
    """The token stream and the documents in stream order, rebuilt from overlapping samples."""
    stream: list[int] = []
    ids: list[str] = []
    for k, s in enumerate(samples):
        stream.extend(s["tokens"] if k == 0 else s["tokens"][1:])
        ids.extend(s["doc_ids"] if k == 0 else s["doc_ids"][1:])  # a sample's first document ends the previous sample
    return stream, ids


def spec_is_valid(doc_id: str, fraction: float) -> bool:
    """The documented split rule, written from the docs: blake2b-64 of "cpm-split:" + id, little-endian."""
    h = int.from_bytes(hashlib.blake2b(("cpm-split:" + doc_id).encode(), digest_size=8).digest(), "little")
    return h / 2**64 < fraction


@pytest.fixture(scope="module")
def tokenizer(cpm1_model):
    from cpm.tokenizer import Tokenizer

    return Tokenizer.load(cpm1_model)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, zh_dir) -> Path:
    return make_document_shards(tmp_path_factory.mktemp("docs"), zh_dir)


def run_pack(corpus, tokenizer, out, **kwargs):
    from cpm.data.pack import pack

    kwargs.setdefault("workers", 1)
    return pack([corpus], tokenizer.path, out, progress=False, **kwargs)


def test_samples_rejoin_to_the_eod_joined_stream(tmp_path, corpus, tokenizer):
    seq_len = 64
    manifest = run_pack(corpus, tokenizer, tmp_path / "out", seq_len=seq_len, valid_fraction=0.2)
    docs = documents_by_id(corpus)
    for split in ("train", "valid"):
        samples = read_samples(tmp_path / "out", split)
        counters = manifest["counters"][split]
        assert len(samples) == counters["samples"] > 0
        assert all(len(s["tokens"]) == seq_len + 1 for s in samples)
        stream, ids = rejoin(samples)
        assert len(stream) == seq_len * len(samples) + 1
        split_docs = {i for i in docs if spec_is_valid(i, 0.2) == (split == "valid")}
        assert set(ids) <= split_docs and max(collections.Counter(ids).values()) == 1  # no duplicate documents
        # the stream is exactly the documents' tokens, each followed by <eod>, in the order of doc_ids
        expected = [t for i in ids for t in tokenizer.encode_words(docs[i]["words"]) + [EOD]]
        assert stream == expected[: len(stream)]
        assert len(expected) - len(stream) < len(tokenizer.encode_words(docs[ids[-1]]["words"])) + 1
        # every token of the split is in a sample or counted in the dropped tail
        total = sum(len(tokenizer.encode_words(docs[i]["words"])) + 1 for i in split_docs)
        assert counters["stream_tokens"] == total == len(stream) + counters["dropped_tail_tokens"]
        assert sum(counters["documents"].values()) == len(split_docs)
        # start_offset: the sample's first token inside its first document
        starts, pos = {}, 0
        for i in ids:
            starts[i] = pos
            pos += len(tokenizer.encode_words(docs[i]["words"])) + 1
        for k, s in enumerate(samples):
            assert starts[s["doc_ids"][0]] + s["start_offset"] == k * seq_len
    meta = schema_metadata(pa.ipc.open_file(str(tmp_path / "out/train/part-00000.arrow")).schema)
    assert meta["seq_len"] == "64" and meta["eod_id"] == str(EOD) and meta["split"] == "train"
    assert meta["tokenizer_fingerprint"] == tokenizer.fingerprint
    assert pa.ipc.open_file(str(tmp_path / "out/train/part-00000.arrow")).schema.field("tokens").type.value_type == pa.uint16()
    on_disk = json.loads((tmp_path / "out/manifest.json").read_text())
    assert on_disk["kind"] == "sequences" and {s["split"] for s in on_disk["shards"]} == {"train", "valid"}


def test_same_input_gives_byte_identical_shards_with_any_worker_count(tmp_path, corpus, tokenizer):
    a = run_pack(corpus, tokenizer, tmp_path / "a", seq_len=32, workers=1, source_weights={"news": 1.5})
    b = run_pack(corpus, tokenizer, tmp_path / "b", seq_len=32, workers=2, source_weights={"news": 1.5})
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    for entry in a["shards"]:
        assert (tmp_path / "a" / entry["path"]).read_bytes() == (tmp_path / "b" / entry["path"]).read_bytes()
    c = run_pack(corpus, tokenizer, tmp_path / "c", seq_len=32, seed=99, source_weights={"news": 1.5})
    assert [s["sha256"] for s in a["shards"]] != [s["sha256"] for s in c["shards"]]  # the seed matters


def split_ids(out: Path) -> dict[str, set[str]]:
    return {split: set(rejoin(read_samples(out, split))[1]) for split in ("train", "valid")}


def test_split_is_stable_when_the_corpus_grows(tmp_path, zh_dir, tokenizer):
    small = make_document_shards(tmp_path / "small", zh_dir, news=60, reviews=60)
    grown = make_document_shards(tmp_path / "grown", zh_dir, news=60, reviews=60)
    make_document_shards(tmp_path / "extra", zh_dir, news=60, reviews=60, skip=60)
    from cpm.data.pack import pack

    # seq_len 1 drops no token, so every document shows up in doc_ids
    pack([small], tokenizer.path, tmp_path / "p1", seq_len=1, valid_fraction=0.25, workers=1, progress=False)
    pack([grown, tmp_path / "extra"], tokenizer.path, tmp_path / "p2", seq_len=1, valid_fraction=0.25, workers=1, progress=False)
    before, after = split_ids(tmp_path / "p1"), split_ids(tmp_path / "p2")
    old = set(documents_by_id(small))
    assert before["valid"] and before["train"] and not before["valid"] & before["train"]
    assert before["valid"] | before["train"] == old
    assert after["valid"] & old == before["valid"] and after["train"] & old == before["train"]
    assert after["valid"] - old  # the new documents were split too


def test_source_weights_repeat_and_subsample_documents(tmp_path, corpus, tokenizer):
    manifest = run_pack(
        corpus, tokenizer, tmp_path / "out", seq_len=1, valid_fraction=0.0, source_weights={"news": 2.5, "webpage": 0.5}
    )
    ids = rejoin(read_samples(tmp_path / "out", "train"))[1]
    # count copies: a document's copies are separate documents in the stream
    stream = np.array(rejoin(read_samples(tmp_path / "out", "train"))[0])
    assert int((stream == EOD).sum()) == sum(manifest["counters"]["train"]["documents"].values())
    counts = collections.Counter(ids)  # copies of a document are separate entries of the stream
    docs = documents_by_id(corpus)
    news = [i for i in docs if docs[i]["source"] == "news"]
    reviews = [i for i in docs if docs[i]["source"] == "webpage"]
    n_news = manifest["counters"]["train"]["documents"]["news"]
    n_web = manifest["counters"]["train"]["documents"].get("webpage", 0)
    assert all(counts[i] in (2, 3) for i in news) and all(counts[i] in (0, 1) for i in reviews)
    assert sum(counts[i] for i in news) == n_news and sum(counts[i] for i in reviews) == n_web
    # binomial(120, 0.5): mean 60, sd 5.5
    assert abs(n_news - 2.5 * len(news)) < 4 * 5.5 and abs(n_web - 0.5 * len(reviews)) < 4 * 5.5
    assert 0 < len(set(reviews) & set(counts)) < len(reviews)
    assert manifest["counters"]["source_weights"]["news"] == 2.5
    assert manifest["counters"]["train"]["distinct_documents"]["news"] == len(news)


def test_source_mix_reaches_the_target_shares(tmp_path, corpus, tokenizer, caplog):
    # the paper's mix over a corpus with only news and webpage: 10 : 39 between them
    manifest = run_pack(corpus, tokenizer, tmp_path / "out", seq_len=8, valid_fraction=0.0, source_mix={"news": 3, "webpage": 1})
    tokens = manifest["counters"]["train"]["tokens"]
    assert 0.65 < tokens["news"] / (tokens["news"] + tokens["webpage"]) < 0.85
    from cpm.data.rules import PAPER_MIX

    manifest = run_pack(corpus, tokenizer, tmp_path / "paper", seq_len=8, valid_fraction=0.0, source_mix=PAPER_MIX)
    tokens = manifest["counters"]["train"]["tokens"]
    assert 10 / 49 - 0.08 < tokens["news"] / (tokens["news"] + tokens["webpage"]) < 10 / 49 + 0.08
    assert "no dialog, encyclopedia, story documents" in caplog.text


def test_bad_options_are_clear_errors(tmp_path, corpus, tokenizer, capsys):
    from cpm.data.rules import parse_weights

    with pytest.raises(CpmError, match="novels"):
        parse_weights("novels=2")
    with pytest.raises(CpmError, match="not a number"):
        parse_weights("news=lots")
    with pytest.raises(CpmError, match="no source with a share"):
        run_pack(corpus, tokenizer, tmp_path / "out", source_mix={"dialog": 1})
    with pytest.raises(CpmError, match="no such"):
        run_pack(tmp_path / "missing", tokenizer, tmp_path / "out")
    # a --seq-len longer than the corpus: an error, not an empty train split
    with pytest.raises(CpmError, match=r"the train split has no sample: its [\d,]+ tokens .* --seq-len 100000"):
        run_pack(corpus, tokenizer, tmp_path / "out", seq_len=100000)
    assert not (tmp_path / "out").exists()
    for option, value in (("--seq-len", "0"), ("--workers", "0"), ("--shard-mb", "-1"), ("--valid-fraction", "1")):
        assert main(["data", "pack", "-i", str(corpus), "-t", tokenizer.path, "-o", str(tmp_path / "out"), option, value]) == 1
        assert option in capsys.readouterr().err
    assert main(["corpus", "build", "--source", "news", "-i", str(corpus), "-o", str(tmp_path / "c"), "--runner", "NoSuchRunner"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--runner 'NoSuchRunner': unknown Beam runner" in err


def test_corrupted_input_shard_is_a_one_line_error(tmp_path, tokenizer, capsys):
    from test_shards import _silently_corrupted_shard

    bad = _silently_corrupted_shard(tmp_path)
    for workers in ("1", "2"):
        assert main(["data", "pack", "-i", str(bad), "-t", tokenizer.path, "-o", str(tmp_path / "out"), "-w", workers]) == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
        assert err.startswith("error: ") and f"{bad}: corrupted record batch" in err
    assert not (tmp_path / "out").exists()


def test_sequence_stats_and_cli(tmp_path, corpus, tokenizer, capsys):
    from cpm.cli import main
    from cpm.shards.sequences import sequence_stats

    code = main(
        ["data", "pack", "--input", str(corpus), "--tokenizer", tokenizer.path, "--output", str(tmp_path / "out"),
         "--seq-len", "48", "--valid-fraction", "0.1", "--workers", "1"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "train:" in printed and "news" in printed
    stats = sequence_stats(sorted((tmp_path / "out/train").glob("*.arrow")), tokenizer, rows=12)
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert stats["samples"] == manifest["counters"]["train"]["samples"] and stats["tokens"] == 49 * stats["samples"]
    assert 0 < stats["eod_share"] < 0.2 and stats["docs_per_sample_max"] >= stats["docs_per_sample_mean"] >= 1
    assert len(stats["samples_shown"]) == 12 and "⟨eod⟩" in "".join(s["text"] for s in stats["samples_shown"])
    assert main(["data", "pack", "--input", str(corpus), "--tokenizer", tokenizer.path, "--output", str(tmp_path / "x"),
                 "--source-weights", "news=two"]) == 1
    assert "not a number" in capsys.readouterr().err

    # an existing output is refused, or with --overwrite replaced as a whole
    (tmp_path / "out" / "notes.txt").write_text("mine")
    again = ["data", "pack", "--input", str(corpus), "--tokenizer", tokenizer.path, "--output", str(tmp_path / "out"), "--seq-len", "64", "--valid-fraction", "0.1", "-w", "1"]
    assert main(again) == 1
    assert "exists and is not empty (use --overwrite" in capsys.readouterr().err
    assert json.loads((tmp_path / "out/manifest.json").read_text()) == manifest and (tmp_path / "out/train").is_dir()
    assert main([*again, "--overwrite"]) == 0
    assert json.loads((tmp_path / "out/manifest.json").read_text())["config"]["seq_len"] == 64
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "manifest.json", "train", "valid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary directory left
    assert main(["data", "pack", "--input", str(corpus), "--tokenizer", tokenizer.path, "--output", str(corpus), "--overwrite"]) == 1
    assert "is the --input" in capsys.readouterr().err


def test_pack_after_tokenizer_train_round_trips_the_text(tmp_path, corpus, tokenizer, capsys):
    """The demo's path: a lossless vocabulary trained with cpm, then pack; every document decodes back exactly."""
    from cpm.data.pack import pack
    from cpm.tokenizer import Tokenizer
    from cpm.tokenizer.train import train_tokenizer

    tokdir = train_tokenizer([corpus], tmp_path / "tok", vocab_size=1500, progress=False)
    cpm1, tokenizer = tokenizer, Tokenizer.load(tokdir)
    assert tokenizer.mode == "lossless"
    pack([corpus], tokdir, tmp_path / "out", seq_len=40, valid_fraction=0.1, workers=1, progress=False)
    docs = documents_by_id(corpus)
    for split in ("train", "valid"):
        samples = read_samples(tmp_path / "out", split)
        stream, ids = rejoin(samples)
        pieces, current = [], []
        for t in stream:
            if t == tokenizer.eod_id:
                pieces.append(current)
                current = []
            else:
                current.append(t)
        assert len(pieces) >= len(ids) - 1 and pieces
        for doc_id, tokens in zip(ids, pieces):
            assert tokenizer.decode(tokens) == docs[doc_id]["text"]
    meta = schema_metadata(pa.ipc.open_file(str(tmp_path / "out/train/part-00000.arrow")).schema)
    assert int(meta["eod_id"]) == tokenizer.eod_id and int(meta["vocab_size"]) == 1500

    # decoding with another tokenizer than the one the data was packed with is refused, naming both
    from cpm.shards.sequences import sequence_stats

    with pytest.raises(CpmError, match=f"packed with tokenizer fingerprint {tokenizer.fingerprint}.*{cpm1.fingerprint}"):
        sequence_stats([tmp_path / "out/train/part-00000.arrow"], cpm1)
    assert main(["shards", "inspect", str(tmp_path / "out"), "--tokenizer", cpm1.path]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["shards", "inspect", str(tmp_path / "out"), "--tokenizer", str(tokdir), "--rows", "1"]) == 0


def test_external_sort_gives_the_same_bytes_with_any_bucket_size(tmp_path, corpus, tokenizer, monkeypatch):
    """Packing sorts document copies bucket by bucket on disk; bucket size never changes the output."""
    import cpm.data.pack_stream as stream
    from cpm.data.rules import copies_of, order_key, split_of

    weights = {"news": 2.5, "webpage": 0.5}
    one = run_pack(corpus, tokenizer, tmp_path / "one", seq_len=32, valid_fraction=0.1, source_weights=weights)
    monkeypatch.setattr(stream, "BUCKET_ROWS", 7)  # dozens of buckets and open bucket files
    monkeypatch.setattr(stream, "CHUNK_ROWS", 3)
    many = run_pack(corpus, tokenizer, tmp_path / "many", seq_len=32, valid_fraction=0.1, source_weights=weights)
    assert [(s["path"], s["sha256"]) for s in many["shards"]] == [(s["path"], s["sha256"]) for s in one["shards"]]
    assert many["counters"] == one["counters"]
    assert len(list((tmp_path / "many").glob("**/bucket-*"))) == 0  # temporary files are gone
    # the documented order: copies sorted by hash(seed, copy, id), ties by input position
    docs = list(documents_by_id(corpus).values())
    copies = [
        (order_key(d["id"], c, 1234), n, c, d["id"])
        for n, d in enumerate(docs)
        if split_of(d["id"], 0.1) == "train"
        for c in range(copies_of(d["id"], weights[d["source"]], 1234))
    ]
    _, ids = rejoin(read_samples(tmp_path / "many", "train"))
    assert ids == [doc_id for *_, doc_id in sorted(copies)][: len(ids)]


def test_one_stable_hash_for_the_corpus_build_and_the_packing_rules():
    """The split rule is blake2b("cpm-split:" + id), 8 bytes read little-endian (the documented rule), with the
    same function as the corpus build's shard key."""
    import struct

    from cpm.data.rules import split_hash, split_of
    from cpm.hashing import stable_hash
    from cpm.pipeline import rows

    assert rows.stable_hash is stable_hash
    for doc_id in ("news-0", "百科-12", ""):
        (expected,) = struct.unpack("<Q", hashlib.blake2b(f"cpm-split:{doc_id}".encode(), digest_size=8).digest())
        assert split_hash(doc_id) == expected
        assert split_of(doc_id, expected / 2.0**64 + 1e-9) == "valid" and split_of(doc_id, 0.0) == "train"
