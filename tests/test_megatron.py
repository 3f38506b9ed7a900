"""``cpm data export-megatron``: read the indexed dataset back with a reader written from the spec."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cpm.schemas import sequence_schema
from cpm.shards.io import write_table

# Megatron-LM's dtype codes, from the MMIDIDX spec (not from cpm's writer).
SPEC_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}


def read_megatron(prefix: Path) -> tuple[int, list[list[int]]]:
    """An independent MMIDIDX v1 reader: returns (dtype code, sequences)."""
    idx = Path(str(prefix) + ".idx").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    (version,) = struct.unpack_from("<Q", idx, 9)
    (code,) = struct.unpack_from("<B", idx, 17)
    (count,) = struct.unpack_from("<Q", idx, 18)
    (doc_count,) = struct.unpack_from("<Q", idx, 26)
    assert version == 1
    offset = 34
    sizes = np.frombuffer(idx, dtype="<i4", count=count, offset=offset)
    offset += 4 * count
    pointers = np.frombuffer(idx, dtype="<i8", count=count, offset=offset)
    offset += 8 * count
    doc_idx = np.frombuffer(idx, dtype="<i8", count=doc_count, offset=offset)
    offset += 8 * doc_count
    assert offset == len(idx)  # nothing after the document index
    assert doc_idx[0] == 0 and doc_idx[-1] == count and (np.diff(doc_idx) >= 0).all()
    dtype = np.dtype(SPEC_DTYPES[code]).newbyteorder("<")
    data = Path(str(prefix) + ".bin").read_bytes()
    sequences = []
    expected_pointer = 0
    for size, pointer in zip(sizes.tolist(), pointers.tolist()):
        assert pointer == expected_pointer  # sequences are contiguous in .bin
        sequences.append(np.frombuffer(data, dtype=dtype, count=size, offset=pointer).tolist())
        expected_pointer += size * dtype.itemsize
    assert expected_pointer == len(data)
    return code, sequences


def write_stream_as_samples(directory: Path, stream: list[int], seq_len: int, vocab_size: int, eod: int) -> None:
    """Cut a token stream into overlapping samples (sample k = stream[k*L : k*L + L + 1]) and write them."""
    count = (len(stream) - 1) // seq_len
    rows = [stream[k * seq_len : k * seq_len + seq_len + 1] for k in range(count)]
    half = count // 2  # two shards, to cross a file boundary
    for n, part in enumerate((rows[:half], rows[half:])):
        table = pa.table(
            {
                "tokens": pa.array(part, pa.list_(pa.uint32() if vocab_size > 65536 else pa.uint16(), seq_len + 1)),
                "doc_ids": pa.array([["x"]] * len(part), pa.list_(pa.string())),
                "start_offset": pa.array([0] * len(part), pa.int32()),
            }
        )
        schema = sequence_schema(seq_len, vocab_size, {"eod_id": eod, "split": "train"})
        write_table(directory / "train" / f"part-{n:05d}.arrow", table, schema, compression=None, batch_rows=5)


def split_at_eod(stream: list[int], eod: int) -> list[list[int]]:
    docs, current = [], []
    for t in stream:
        current.append(t)
        if t == eod:
            docs.append(current)
            current = []
    return docs


@pytest.mark.parametrize("vocab_size,code", [(30000, 8), (100000, 4)])
def test_round_trip_of_a_synthetic_stream(tmp_path, vocab_size, code):
    from cpm.data.megatron import export_megatron
    from cpm.shards.sequences import split_shard_paths

    rng = np.random.default_rng(0)
    eod = 7
    docs = [[int(t) for t in rng.integers(8, vocab_size, size=int(n))] + [eod] for n in rng.integers(1, 60, size=300)]
    stream = [t for d in docs for t in d] + [123, 456]  # an unfinished document at the end
    write_stream_as_samples(tmp_path / "packed", stream, seq_len=16, vocab_size=vocab_size, eod=eod)
    counters = export_megatron(split_shard_paths(tmp_path / "packed", "train"), tmp_path / "meg" / "data", progress=False)
    got_code, sequences = read_megatron(tmp_path / "meg" / "data")
    used = stream[: ((len(stream) - 1) // 16) * 16 + 1]  # the samples hold this much of the stream
    assert got_code == code
    assert sequences == split_at_eod(used, eod) and len(sequences) >= len(docs) - 2
    assert counters["documents"] == len(sequences) and counters["tokens"] == sum(map(len, sequences))
    if vocab_size > 65536:
        assert max(max(s) for s in sequences) > 65535  # ids that need 32 bits survive


def test_round_trip_of_a_real_pack_via_the_cli(tmp_path, zh_dir, cpm1_model, capsys):
    from test_pack import documents_by_id, make_document_shards, read_samples, rejoin

    from cpm.cli import main
    from cpm.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(cpm1_model)
    corpus = make_document_shards(tmp_path / "docs", zh_dir, news=40, reviews=40)
    assert main(["data", "pack", "-i", str(corpus), "-t", str(cpm1_model), "-o", str(tmp_path / "packed"),
                 "--seq-len", "32", "--valid-fraction", "0", "--source-weights", "webpage=2", "-w", "1"]) == 0
    assert main(["data", "export-megatron", "--input", str(tmp_path / "packed"), "--output", str(tmp_path / "meg/cpm")]) == 0
    assert '"dtype_code": 8' in capsys.readouterr().out
    code, sequences = read_megatron(tmp_path / "meg" / "cpm")
    docs = documents_by_id(corpus)
    stream_ids = rejoin(read_samples(tmp_path / "packed", "train"))[1]
    # one entry per document copy in stream order, each its own tokens + <eod>; the cut last one left out
    expected = [tokenizer.encode_words(docs[i]["words"]) + [tokenizer.eod_id] for i in stream_ids]
    assert code == 8 and len(sequences) in (len(expected), len(expected) - 1)
    assert sequences == expected[: len(sequences)]
    assert len(sequences) > 100  # webpage documents were repeated twice


def test_metadata_json_beside_the_bin_and_idx(news_packed, tmp_path, capsys):
    """``PREFIX.json`` keeps what Megatron's NullTokenizer would guess wrong: cpm's <eod>, <pad> and vocabulary size."""
    import json

    from cpm.cli import main
    from cpm.tokenizer import Tokenizer

    packed, tok_dir = news_packed
    tok = Tokenizer.load(tok_dir)
    prefix = tmp_path / "导出" / "cpm_text_document"  # a Chinese directory name stays readable in the JSON
    assert main(["data", "export-megatron", "--input", str(packed), "--output", str(prefix)]) == 0
    counters = json.loads(capsys.readouterr().out)
    text = Path(counters["json"]).read_text("utf-8")
    assert "导出" in text and "\\u" not in text
    info = json.loads(text)
    assert Path(counters["json"]) == prefix.with_suffix(".json")
    assert (info["eod_id"], info["pad_id"], info["vocab_size"], info["tokenizer_fingerprint"]) == (
        tok.eod_id, tok.pad_id, tok.vocab_size, tok.fingerprint)
    assert info["eod_id"] != info["vocab_size"] - 1  # what NullTokenizer would assume
    _, sequences = read_megatron(prefix)
    assert (info["documents"], info["tokens"]) == (len(sequences), sum(map(len, sequences)))
    assert info["megatron_args"][:6] == ["--data-path", str(prefix), "--tokenizer-type", "NullTokenizer", "--vocab-size", str(tok.vocab_size)]
def test_metadata_comes_from_the_packed_directory_of_the_first_shard(news_packed, tmp_path):
    """Shards from two directories: ``pad_id`` is read from the first shard's packed directory, wherever it is."""
    import json
    import shutil

    from cpm.data.megatron import export_megatron
    from cpm.shards.sequences import split_shard_paths
    from cpm.tokenizer import Tokenizer

    packed, tok_dir = news_packed
    shard = split_shard_paths(packed, "train")[0]
    bare = tmp_path / "bare" / "train" / shard.name  # the same shard, in a directory without a manifest
    bare.parent.mkdir(parents=True)
    shutil.copy(shard, bare)
    pad_ids = {}
    for name, shards in {"packed first": [shard, bare], "bare first": [bare, shard]}.items():
        counters = export_megatron(shards, tmp_path / name / "data", progress=False)
        pad_ids[name] = json.loads(Path(counters["json"]).read_text("utf-8"))["pad_id"]
    assert pad_ids == {"packed first": Tokenizer.load(tok_dir).pad_id, "bare first": None}


def _export_stream(tmp_path: Path, stream: list[int], seq_len: int, eod: int, **options) -> tuple[list[list[int]], dict]:
    from cpm.data.megatron import export_megatron
    from cpm.shards.sequences import split_shard_paths

    packed = tmp_path / "packed"
    write_stream_as_samples(packed, stream, seq_len=seq_len, vocab_size=30000, eod=eod)
    prefix = tmp_path / "meg" / "data"
    counters = export_megatron(split_shard_paths(packed, "train"), prefix, progress=False, **options)
    return read_megatron(prefix)[1], counters


def _random_stream(seed: int, docs: int, eod: int, max_len: int = 60) -> list[int]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len, size=docs)
    return [t for n in lengths for t in [*rng.integers(8, 30000, size=int(n)).tolist(), eod]] + [123]


def test_export_across_the_default_chunk_of_4096_samples(tmp_path):
    """More than 4,096 samples: the stream is read in several chunks and rejoined exactly."""
    eod, seq_len = 7, 4
    stream = _random_stream(1, docs=1100, eod=eod)
    samples = (len(stream) - 1) // seq_len
    assert samples > 2 * 4096  # at least three chunks at the default size
    sequences, counters = _export_stream(tmp_path, stream, seq_len, eod)
    used = stream[: samples * seq_len + 1]
    assert sequences == split_at_eod(used, eod)
    assert counters["tokens"] + counters["unfinished_tail_tokens"] == len(used)


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 5, 64])
def test_export_does_not_depend_on_the_chunk_size(tmp_path, chunk_rows):
    """Chunks of a few samples put documents, <eod> tokens and chunk ends at every relative position."""
    eod, seq_len = 7, 6
    stream = _random_stream(2, docs=60, eod=eod, max_len=15)
    stream[seq_len * 3] = eod  # an <eod> that is the boundary token shared by samples 2 and 3
    sequences, counters = _export_stream(tmp_path, stream, seq_len, eod, chunk_rows=chunk_rows)
    used = stream[: ((len(stream) - 1) // seq_len) * seq_len + 1]
    assert sequences == split_at_eod(used, eod)
    assert counters["documents"] == len(sequences)
    assert counters["tokens"] + counters["unfinished_tail_tokens"] == len(used)


def test_dtype_codes_and_the_uint16_boundary():
    from cpm.data.megatron import DTYPE_CODES, megatron_dtype

    assert DTYPE_CODES == {np.dtype(t): code for code, t in SPEC_DTYPES.items()}
    assert megatron_dtype(1 << 16) == np.uint16 and megatron_dtype(40000) == np.uint16  # ids 0..65535 fit
    assert megatron_dtype((1 << 16) + 1) == np.int32


def test_eod_id_0_is_an_eod_and_a_missing_one_is_an_error(tmp_path):
    from cpm.errors import CpmError
    from cpm.data.megatron import export_megatron
    from cpm.shards.sequences import split_shard_paths

    stream = _random_stream(3, docs=20, eod=0)
    sequences, _ = _export_stream(tmp_path, stream, 8, eod=0)
    assert sequences == split_at_eod(stream[: ((len(stream) - 1) // 8) * 8 + 1], 0) and len(sequences) >= 19
    write_stream_as_samples(tmp_path / "no-eod", stream, seq_len=8, vocab_size=30000, eod=-1)
    paths = split_shard_paths(tmp_path / "no-eod", "train")
    with pytest.raises(CpmError, match=f"^{paths[0]}: the shard metadata has no eod_id"):
        export_megatron(paths, tmp_path / "meg2" / "data", progress=False)
    assert not (tmp_path / "meg2").exists() or not any((tmp_path / "meg2").iterdir())


def test_progress_bar_and_nested_output_directory(tmp_path, capsys):
    from cpm.data.megatron import export_megatron
    from cpm.shards.sequences import split_shard_paths

    write_stream_as_samples(tmp_path / "packed", _random_stream(4, docs=20, eod=7), seq_len=8, vocab_size=30000, eod=7)
    paths = split_shard_paths(tmp_path / "packed", "train")
    export_megatron(paths, tmp_path / "a" / "b" / "data", progress=False)
    assert "export" not in capsys.readouterr().err
    export_megatron(paths, tmp_path / "c" / "data")  # the bar is on by default
    assert "export" in capsys.readouterr().err
    assert read_megatron(tmp_path / "a" / "b" / "data") == read_megatron(tmp_path / "c" / "data")
    (tmp_path / "c" / "data.idx").write_bytes(b"old")  # exporting again replaces a previous export
    export_megatron(paths, tmp_path / "c" / "data", progress=False)
    assert read_megatron(tmp_path / "a" / "b" / "data") == read_megatron(tmp_path / "c" / "data")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["data.bin", "data.idx", "data.json"]


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    """A read error part-way: the error propagates, no output and no temporary file is left."""
    from cpm.data.megatron import export_megatron
    from cpm.shards.sequences import SequenceShards, split_shard_paths

    write_stream_as_samples(tmp_path / "packed", _random_stream(5, docs=40, eod=7), seq_len=4, vocab_size=30000, eod=7)
    gather = SequenceShards.gather
    calls = []

    def failing_gather(self, indices):
        calls.append(len(indices))
        if len(calls) == 2:
            raise OSError("disk read error")
        return gather(self, indices)

    monkeypatch.setattr(SequenceShards, "gather", failing_gather)
    with pytest.raises(OSError, match="disk read error"):
        export_megatron(split_shard_paths(tmp_path / "packed", "train"), tmp_path / "meg" / "data", progress=False,
                        chunk_rows=8)
    assert sorted(p.name for p in (tmp_path / "meg").iterdir()) == []


@pytest.mark.parametrize("documents", [0, 1, 2])
def test_streams_with_no_one_or_two_finished_documents(tmp_path, documents):
    """The smallest indexes: sizes, pointers and the document index of 0, 1 and 2 entries."""
    stream = list(range(100, 141))  # 5 samples of 8 tokens
    for end in (9, 30)[:documents]:
        stream[end] = 7
    sequences, counters = _export_stream(tmp_path, stream, 8, eod=7)
    assert sequences == split_at_eod(stream, 7) and len(sequences) == documents == counters["documents"]
    assert counters["tokens"] + counters["unfinished_tail_tokens"] == len(stream)


def test_a_failed_rename_leaves_no_temporary_file(tmp_path, monkeypatch):
    """The .bin is in place when renaming the .idx fails: that error propagates, nothing temporary stays."""
    from cpm.data import megatron

    replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith(".idx"):
            raise OSError("rename failed")
        return replace(src, dst)

    write_stream_as_samples(tmp_path / "packed", _random_stream(6, docs=20, eod=7), seq_len=8, vocab_size=30000, eod=7)
    from cpm.shards.sequences import split_shard_paths

    monkeypatch.setattr(megatron.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        megatron.export_megatron(split_shard_paths(tmp_path / "packed", "train"), tmp_path / "meg" / "data", progress=False)
    assert sorted(p.name for p in (tmp_path / "meg").iterdir()) == ["data.bin"]
