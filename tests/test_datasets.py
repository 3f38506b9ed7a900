"""cpm outputs load by folder with Hugging Face ``datasets`` (dataset card with ``configs:``)."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pytest

from cpm.schemas.manifest import read_manifest
from cpm.shards.io import read_table

datasets = pytest.importorskip("datasets")


def _card(directory) -> dict:
    import yaml

    text = (directory / "README.md").read_text("utf-8")
    return yaml.safe_load(text.split("---\n")[1])


def test_corpus_directory_loads_by_folder(news_corpus, tmp_path):
    docs = datasets.load_dataset(str(news_corpus), cache_dir=str(tmp_path))
    manifest = read_manifest(news_corpus)
    doc_rows = sum(s["rows"] for s in manifest["shards"] if s["path"].startswith("shards/"))
    assert list(docs) == ["train"] and docs["train"].num_rows == doc_rows > 0
    first = read_table(sorted((news_corpus / "shards").glob("*.arrow"))[0]).slice(0, 1).to_pylist()[0]
    assert docs["train"][0] == first
    rejected = datasets.load_dataset(str(news_corpus), "rejected", cache_dir=str(tmp_path))["train"]
    assert rejected.num_rows == sum(s["rows"] for s in manifest["shards"] if s["path"].startswith("rejected/")) > 0
    assert set(rejected.column_names) >= {"rule", "origin", "text"}
    # the dedup index is not mistaken for data: its own extension
    assert [p.suffix for p in (news_corpus / "dedup").iterdir() if p.name.startswith("signatures-")] == [".minhash"]
    assert [c["config_name"] for c in _card(news_corpus)["configs"]] == ["documents", "rejected"]


def test_packed_directory_loads_by_folder_and_the_card_keeps_the_special_ids(news_packed, tmp_path):
    from cpm.tokenizer import Tokenizer

    packed, tok_dir = news_packed
    tok = Tokenizer.load(tok_dir)
    ds = datasets.load_dataset(str(packed), cache_dir=str(tmp_path))
    assert sorted(ds) == ["train", "validation"]
    train = read_table(sorted((packed / "train").glob("*.arrow"))[0])
    assert ds["train"][0]["tokens"] == train.column("tokens")[0].as_py()
    info = _card(packed)["cpm"]
    assert (info["eod_id"], info["pad_id"], info["vocab_size"], info["tokenizer_fingerprint"]) == (
        tok.eod_id, tok.pad_id, tok.vocab_size, tok.fingerprint)


def test_one_shard_as_a_dataset(news_packed):
    """The documented call for one shard: ``Dataset(pa.ipc.open_file(pa.memory_map(path)).read_all())``."""
    path = sorted((news_packed[0] / "train").glob("*.arrow"))[0]
    ds = datasets.Dataset(pa.ipc.open_file(pa.memory_map(str(path))).read_all())
    assert ds.num_rows == read_table(path).num_rows and ds.features["tokens"].length == 33


def test_against_reads_an_index_with_the_old_extension(news_corpus, tmp_path):
    """Outputs written before the index had its own extension (``signatures-*.arrow``) still serve ``--against``."""
    from cpm.pipeline.dedup_index import index_paths

    old = tmp_path / "old"
    shutil.copytree(news_corpus, old)
    for path in (old / "dedup").glob("signatures-*.minhash"):
        path.rename(path.with_suffix(".arrow"))
    assert [p.endswith(".arrow") for p in index_paths(str(old))] == [True]
