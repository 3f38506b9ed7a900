"""cpm.tokenizer: CPM-1 exactness, lossless round trips, training, bad input, CLI."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpm.cli import main
from cpm.errors import CpmError
from cpm.tokenizer import Tokenizer
from cpm.tokenizer.evaluate import chars_per_token, write_document_shard
from cpm.tokenizer.segment import cut
from cpm.tokenizer.train import train_tokenizer

from conftest import read_zst_lines

VOCAB = 6000
PUBLIC_VECTORS = [
    ("Hugging Face大法好，谁用谁知道。", [13789, 13283, 1421, 8, 10, 1164, 13608, 16528, 63, 8, 9, 440, 108, 440, 121, 90, 8, 12], "Hugging Face大法好,谁用谁知道。"),
    ("今天天气不错", [837, 259, 497, 788], "今天天气不错"),
    ("Hello World!", [25624, 8, 10, 15157, 45], "Hello World!"),
    ("你好，世界！", [6756, 8, 9, 278, 45], "你好,世界!"),
]
# Characters CPM-1 loses or that could collide with the lossless encoding.
TRICKY = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u3000", "Ａ", "ｚ", "，", "！", "（", "\u2581", "\u2582", "\u2583",
          "<eod>", "<pad>", "<unk>", "😀", "👍🏽", "\U00020000", "\U0002a6d6", "\x00", "\x1b", "\x1f", "\x7f", "\u200b", "\ufeff",
          "e\u0301", "\u0301", "ﬁ", "①", "㏂", "¨", "\ufdfa", "中国", "人民", "的", "abc", "123", "-", "%", "."]


@pytest.fixture(scope="module")
def corpus_lines(zh_dir: Path) -> dict[str, list[str]]:
    return {
        "news": read_zst_lines(zh_dir / "people_daily_1998_paragraphs.txt.zst"),
        "reviews": read_zst_lines(zh_dir / "product_reviews.txt.zst"),
    }


@pytest.fixture(scope="module")
def train_dir(corpus_lines, tmp_path_factory) -> Path:
    """A small real corpus directory (news + reviews) with a manifest, as ``cpm corpus build`` writes."""
    from cpm.schemas.manifest import new_manifest, write_manifest

    root = tmp_path_factory.mktemp("corpus")
    info = write_document_shard(root / "shards" / "part-00000.arrow", corpus_lines["news"][:1500], "news", "news")
    info2 = write_document_shard(root / "shards" / "part-00001.arrow", corpus_lines["reviews"][:3000], "dialog", "reviews")
    manifest = new_manifest("documents", "corpus build", {})
    manifest["shards"] = [info.entry(root), info2.entry(root)]
    write_manifest(root, manifest)
    return root


@pytest.fixture(scope="module")
def heldout(corpus_lines) -> list[str]:
    return corpus_lines["news"][-600:] + corpus_lines["reviews"][-1200:]


@pytest.fixture(scope="module")
def lossless(train_dir, tmp_path_factory) -> Tokenizer:
    out = train_tokenizer([train_dir], tmp_path_factory.mktemp("tok") / "lossless", vocab_size=VOCAB, mode="lossless", progress=False)
    return Tokenizer.load(out)


@pytest.fixture(scope="module")
def cpm_trained(train_dir, tmp_path_factory) -> Tokenizer:
    out = train_tokenizer([train_dir], tmp_path_factory.mktemp("tok") / "cpm", vocab_size=VOCAB, mode="cpm", progress=False)
    return Tokenizer.load(out)


@pytest.fixture(scope="module")
def cpm1(cpm1_model) -> Tokenizer:
    return Tokenizer.load(cpm1_model)


@pytest.fixture(scope="module")
def original(cpm1_model):
    """The original CPM-1 algorithm, written out independently of cpm.tokenizer."""
    import jieba
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(cpm1_model))
    table = str.maketrans(" \n", "\u2582\u2583")

    def encode(text: str) -> list[int]:
        return sp.encode(" ".join(w.translate(table) for w in jieba.cut(text, cut_all=False)))

    def decode(ids: list[int]) -> str:
        return sp.decode(ids).replace(" ", "").replace("\u2582", " ").replace("\u2583", "\n")

    return encode, decode


# -- cpm mode: the original CPM-1 vocabulary ----------------------------------------------


def test_public_vectors(cpm1):
    assert cpm1.mode == "cpm" and cpm1.vocab_size == 30000
    assert (cpm1.eod_id, cpm1.pad_id, cpm1.sep_id, cpm1.mask_id, cpm1.unk_id) == (7, 5, 4, 6, 0)
    for text, ids, decoded in PUBLIC_VECTORS:
        assert cpm1.encode(text) == ids
        assert cpm1.decode(ids) == decoded
    assert cpm1.encode_batch([t for t, _, _ in PUBLIC_VECTORS], threads=2) == [ids for _, ids, _ in PUBLIC_VECTORS]
    assert cpm1.tokenize("今天天气不错") == ["▁今天", "天", "气", "▁不错"]


def test_cpm_mode_equals_original_on_real_lines(cpm1, original, corpus_lines):
    encode, decode = original
    rng = random.Random(0)
    lines = rng.sample(corpus_lines["news"], 400) + rng.sample(corpus_lines["reviews"], 800)
    expected = [encode(line) for line in lines]
    assert [cpm1.encode(line) for line in lines] == expected
    assert cpm1.encode_batch(lines, threads=3) == expected
    assert cpm1.encode_words_batch([cut(line) for line in lines], threads=2) == expected
    assert cpm1.decode_batch(expected) == [decode(ids) for ids in expected]
    # equal-score segmentations: "15XXX" alone is ▁15 XX X, after "想必当初" it is ▁15 X XX
    for text in ("想必当初15XXX的售价", "想到4xxx能买到这个配置也超值了， 没想到一开机竟然自带vista"):
        assert cpm1.encode(text) == encode(text)
        assert cpm1.encode_words(cut(text)) == encode(text)
    # several documents in one text, with newlines, as the corpus stores them
    text = "\n".join(lines[:50])
    assert cpm1.encode(text) == encode(text)


cpm_alphabet = st.sampled_from(TRICKY[:-4] + list("今天天气不错我们的中国人民大法好谁用知道Hello World!,.;:?\"'()[]{}0123456789"))
cpm_text = st.lists(cpm_alphabet, max_size=40).map("".join) | st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=cpm_text)
def test_cpm_mode_equals_original_hypothesis(cpm1, original, text):
    encode, decode = original
    ids = cpm1.encode(text)
    assert ids == encode(text)
    assert cpm1.decode(ids) == decode(ids)
    assert cpm1.encode_words(cut(text)) == ids


def test_cpm_mode_eod(cpm1):
    # CPM-1 behaviour, kept in cpm mode: jieba splits "<eod>" in text (no EOD id), the EOD id decodes as "<eod>"
    assert cpm1.eod_id not in cpm1.encode("a<eod>b")
    assert cpm1.decode([cpm1.eod_id]) == "<eod>"
    assert cpm1.decode(cpm1.encode("a<eod>b")) == "a<eod>b"


# -- lossless mode ------------------------------------------------------------------------


def _assert_lossless(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.unk_id not in ids
    assert tok.eod_id not in ids
    assert tok.encode_words(cut(text)) == ids


tricky_text = st.lists(st.sampled_from(TRICKY) | st.characters(), max_size=30).map("".join)
any_text = st.text(st.characters(blacklist_categories=()), max_size=60)  # every code point, lone surrogates included


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=tricky_text | any_text)
def test_lossless_roundtrip_hypothesis(lossless, text):
    _assert_lossless(lossless, text)


def test_lossless_examples(lossless):
    for text in TRICKY + ["".join(TRICKY), "<eod>" * 3, "\u2582\u2583 \n", "Ｈｅｌｌｏ，　ｗｏｒｌｄ！\r\n", "𠀀𪛖🀄️\t\t"]:
        _assert_lossless(lossless, text)
    assert lossless.decode([lossless.eod_id, lossless.pad_id]) == ""
    assert lossless.tokenize(" ") == ["\u2582"] and lossless.tokenize("\n") == ["\u2583"]
    assert len(lossless.encode("\u2582")) == 3  # a literal marker is written as its three UTF-8 bytes
    words = ["x\u2582y", "a b", "\n\n", "<eod>", "\ud800"]  # any word list decodes to its concatenation
    assert lossless.decode(lossless.encode_words(words)) == "".join(words)


@pytest.mark.slow
def test_lossless_roundtrip_every_shared_line(lossless, zh_dir):
    for name in sorted(p.name for p in zh_dir.glob("*.txt.zst")):
        lines = read_zst_lines(zh_dir / name)
        encoded = lossless.encode_batch(lines, threads=2)
        bad = [i for i, (ids, line) in enumerate(zip(encoded, lines)) if lossless.decode(ids) != line]
        assert not bad, f"{name}: lines {bad[:5]} do not round-trip"
        assert not any(lossless.unk_id in ids for ids in encoded)


def test_lossless_at_least_as_compact_as_cpm(lossless, cpm_trained, heldout):
    a = chars_per_token(lossless, heldout)
    b = chars_per_token(cpm_trained, heldout)
    assert a["roundtrip"] == 1.0 and a["unk"] == 0
    assert b["roundtrip"] < 1.0  # cpm mode folds full-width punctuation
    assert a["chars_per_token"] >= b["chars_per_token"], (a, b)


# -- training -----------------------------------------------------------------------------


def test_trained_directory(lossless, cpm_trained, train_dir):
    from cpm.schemas.manifest import read_manifest, sha256_file

    for tok in (lossless, cpm_trained):
        directory = Path(tok.path)
        config = json.loads((directory / "cpm_tokenizer.json").read_text("utf-8"))
        assert config["mode"] == tok.mode and config["vocab_size"] == VOCAB == tok.vocab_size
        assert config["special_ids"]["eod"] == tok.eod_id and config["special_ids"]["pad"] == tok.pad_id
        assert config["corpus"]["manifests"][0]["sha256"] == sha256_file(train_dir / "manifest.json")
        assert config["corpus"]["documents"] == 4500
        assert tok.fingerprint == sha256_file(directory / "tokenizer.model") == config["model_sha256"]
        manifest = read_manifest(directory)
        assert manifest["kind"] == "tokenizer" and manifest["counters"]["documents"] == 4500
        listing = (directory / "vocab.tsv").read_text("utf-8").splitlines()
        assert len(listing) == VOCAB + 1 and listing[tok.eod_id + 1].split("\t")[:3] == [str(tok.eod_id), "<eod>", "control" if tok.mode == "lossless" else "normal"]
    assert lossless.piece_to_id("<0xE2>") != lossless.unk_id


def test_training_is_deterministic(train_dir, tmp_path):
    outs = [train_tokenizer([train_dir / "shards" / "part-00000.arrow"], tmp_path / f"t{i}", vocab_size=4000, threads=1, progress=False) for i in range(2)]
    for name in ("tokenizer.model", "cpm_tokenizer.json", "vocab.tsv", "manifest.json"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_sample_sentences(train_dir, tmp_path):
    out = train_tokenizer([train_dir], tmp_path / "s", vocab_size=3000, sample_sentences=2000, seed=1, character_coverage=0.99, progress=False)
    config = json.loads((out / "cpm_tokenizer.json").read_text("utf-8"))
    assert config["corpus"]["documents"] == 2000 and config["corpus"]["documents_total"] == 4500


def test_vocab_size_too_large_names_the_maximum(train_dir, tmp_path):
    with pytest.raises(CpmError, match=r"--vocab-size 500000 is larger than this corpus supports: SentencePiece accepts at most \d+"):
        train_tokenizer([train_dir], tmp_path / "big", vocab_size=500000, progress=False)
    with pytest.raises(CpmError, match=r"--vocab-size 1000 is too small.*>= \d+"):
        train_tokenizer([train_dir], tmp_path / "small", vocab_size=1000, character_coverage=0.9995, progress=False)
    assert not (tmp_path / "big" / "cpm_tokenizer.json").exists()


@pytest.mark.parametrize("mode", ["lossless", "cpm"])
def test_small_vocab_keeps_the_frequent_characters(train_dir, tmp_path, caplog, mode, heldout):
    out = train_tokenizer([train_dir], tmp_path / "small", vocab_size=2000, mode=mode, progress=False)
    config = json.loads((out / "cpm_tokenizer.json").read_text("utf-8"))
    assert config["vocab_size"] == 2000 and config["trainer"]["max_characters"] < 2000
    assert "cannot hold" in caplog.text
    if mode == "lossless":
        assert chars_per_token(Tokenizer.load(out), heldout[:200])["roundtrip"] == 1.0


def test_empty_corpus_fails_before_sentencepiece(tmp_path):
    write_document_shard(tmp_path / "empty" / "shards" / "part-00000.arrow", [])
    write_document_shard(tmp_path / "blank" / "shards" / "part-00000.arrow", ["", ""])
    for name in ("empty", "blank"):
        with pytest.raises(CpmError, match="no words to train on"):
            train_tokenizer([tmp_path / name], tmp_path / "out", vocab_size=100, progress=False)
    with pytest.raises(CpmError, match="no such file"):
        train_tokenizer([tmp_path / "missing"], tmp_path / "out", progress=False)


# -- bad input ------------------------------------------------------------------------------


def test_bad_tokenizer_paths(tmp_path, lossless):
    with pytest.raises(CpmError, match="no such tokenizer"):
        Tokenizer.load(tmp_path / "nope.model")
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"\x00not a model" * 10)
    with pytest.raises(CpmError, match="not a SentencePiece model"):
        Tokenizer.load(garbage)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CpmError, match="not a tokenizer directory"):
        Tokenizer.load(tmp_path / "empty_dir")

    import shutil

    newer = tmp_path / "newer"
    shutil.copytree(lossless.path, newer)
    config = json.loads((newer / "cpm_tokenizer.json").read_text("utf-8"))
    (newer / "cpm_tokenizer.json").write_text(json.dumps({**config, "format_version": 99, "tool_version": "9.0.0"}))
    with pytest.raises(CpmError, match="written by cpm 9.0.0, newer than this cpm"):
        Tokenizer.load(newer)
    (newer / "cpm_tokenizer.json").write_text(json.dumps(config))
    (newer / "tokenizer.model").write_bytes((newer / "tokenizer.model").read_bytes()[:-10])
    with pytest.raises(CpmError, match="checksum does not match"):
        Tokenizer.load(newer)
    # the model file inside a tokenizer directory loads as that directory (lossless, not cpm)
    inside = Tokenizer.load(Path(lossless.path) / "tokenizer.model")
    assert inside.mode == "lossless" and inside.path == lossless.path and inside.config == lossless.config


def test_directory_with_the_old_config_name_loads(lossless, tmp_path):
    """Outputs written before the config was renamed (``tokenizer.json``, Hugging Face's name) still load."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(lossless.path, old)
    (old / "cpm_tokenizer.json").rename(old / "tokenizer.json")
    tok = Tokenizer.load(old)
    assert (tok.mode, tok.fingerprint) == ("lossless", lossless.fingerprint)
    assert Tokenizer.load(old / "tokenizer.model").mode == "lossless"


def test_lossless_model_copied_out_of_its_directory_stays_lossless(lossless, cpm_trained, cpm1, tmp_path):
    import shutil

    copy = tmp_path / "my.model"
    shutil.copy(Path(lossless.path) / "tokenizer.model", copy)
    tok = Tokenizer.load(copy)
    assert tok.mode == "lossless" and tok.fingerprint == lossless.fingerprint
    for text in ("a b", "今天 天气\n不错", "  Ｈｅｌｌｏ ▂ 😀"):
        assert tok.encode(text) == lossless.encode(text)
        assert tok.decode(tok.encode(text)) == text  # was "a▁ ▁b" when loaded in cpm mode
    shutil.copy(Path(cpm_trained.path) / "tokenizer.model", copy)
    assert Tokenizer.load(copy).mode == "cpm"  # models trained in cpm mode, and CPM-1's, stay cpm
    assert cpm1.mode == "cpm"


def test_decode_out_of_range(lossless):
    for ids in ([lossless.vocab_size], [-1], [5, 10**9]):
        with pytest.raises(CpmError, match="out of range"):
            lossless.decode(ids)


def test_thread_safety(lossless, heldout):
    expected = [lossless.encode(t) for t in heldout[:300]]
    results: dict[int, list] = {}

    def work(k: int) -> None:
        results[k] = [lossless.encode(t) for t in heldout[:300]]

    workers = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert all(r == expected for r in results.values()) and len(results) == 4
    assert lossless.encode_batch(heldout[:300], threads=4) == expected  # forked workers
    assert lossless.encode_batch(heldout[:100], threads=3) == expected[:100]  # threads


# -- CLI --------------------------------------------------------------------------------------


def test_cli_train_encode_decode_info(train_dir, tmp_path, capsys, cpm1_model):
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "stale.txt").write_text("from an earlier run")
    manifest = (train_dir / "manifest.json").read_bytes()
    # the corpus directory itself, or any non-empty directory, is refused (before the long work) ...
    assert main(["tokenizer", "train", "--input", str(train_dir), "--output", str(train_dir), "--overwrite"]) == 1
    assert "is the --input" in capsys.readouterr().err
    assert (train_dir / "manifest.json").read_bytes() == manifest
    assert main(["tokenizer", "train", "--input", str(train_dir), "--output", str(tok_dir), "--vocab-size", "3000", "--no-progress"]) == 1
    assert "exists and is not empty (use --overwrite" in capsys.readouterr().err
    # ... unless --overwrite: then replaced as a whole, not mixed
    assert main(["tokenizer", "train", "--input", str(train_dir), "--output", str(tok_dir), "--vocab-size", "3000", "--no-progress", "--overwrite"]) == 0
    assert "lossless tokenizer, 3000 pieces" in capsys.readouterr().out
    assert sorted(p.name for p in tok_dir.iterdir()) == ["cpm_tokenizer.json", "manifest.json", "tokenizer.model", "vocab.tsv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]  # no temporary directory left

    texts = ["今天天气不错，\t我们去公园散步吧。", "  Ｈｅｌｌｏ <eod> ▂▃ 😀", ""]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["tokenizer", "encode", "-t", str(tok_dir), "--input", str(src), "--output", str(tmp_path / "ids.txt")]) == 0
    assert main(["tokenizer", "decode", "-t", str(tok_dir), "--input", str(tmp_path / "ids.txt"), "--output", str(tmp_path / "back.txt")]) == 0
    assert (tmp_path / "back.txt").read_bytes() == src.read_bytes()

    jsonl = tmp_path / "in.jsonl"
    records = [{"id": "a", "text": "第一行\r\n第二行"}, {"id": "b", "text": "<eod>"}]
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    assert main(["tokenizer", "encode", "-t", str(tok_dir), "--jsonl", "--input", str(jsonl), "--output", str(tmp_path / "ids.jsonl"), "--threads", "2"]) == 0
    encoded = [json.loads(line) for line in (tmp_path / "ids.jsonl").read_text().splitlines()]
    assert [e["id"] for e in encoded] == ["a", "b"] and all(isinstance(i, int) for i in encoded[0]["ids"])
    assert main(["tokenizer", "decode", "-t", str(tok_dir), "--jsonl", "--input", str(tmp_path / "ids.jsonl"), "--output", str(tmp_path / "back.jsonl")]) == 0
    assert [json.loads(line) for line in (tmp_path / "back.jsonl").read_text(encoding="utf-8").splitlines()] == records

    capsys.readouterr()
    assert main(["tokenizer", "info", str(tok_dir)]) == 0
    out = capsys.readouterr().out
    assert "mode:        lossless" in out and "vocab size:  3000" in out and "round trip: exact" in out
    assert main(["tokenizer", "info", str(cpm1_model), "--sample", "今天天气不错"]) == 0
    assert "4 tokens: ▁今天 天 气 ▁不错" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys, lossless):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n4 x\n", encoding="utf-8")
    assert main(["tokenizer", "decode", "-t", lossless.path, "--input", str(bad)]) == 1
    assert f"{bad}:2:" in capsys.readouterr().err
    bad.write_text(f"1 {lossless.vocab_size + 5}\n", encoding="utf-8")
    assert main(["tokenizer", "decode", "-t", lossless.path, "--input", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:1: token id {lossless.vocab_size + 5} is out of range" in err and err.count("\n") == 1
    bad.write_text('{"text": "ok"}\n{"txt": 1}\n', encoding="utf-8")
    assert main(["tokenizer", "encode", "-t", lossless.path, "--jsonl", "--input", str(bad), "--output", str(tmp_path / "o")]) == 1
    assert f"{bad}:2: expected an object" in capsys.readouterr().err
    bad.write_text('{"ids": "x"}\n', encoding="utf-8")
    assert main(["tokenizer", "decode", "-t", lossless.path, "--jsonl", "--input", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:1: expected an object with an \"ids\" list" in err and err.count(f"{bad}:1:") == 1
    assert main(["tokenizer", "info", str(tmp_path / "missing")]) == 1
    assert "no such tokenizer" in capsys.readouterr().err


def test_decode_jsonl_writes_lone_surrogates_as_escapes(lossless, tmp_path, capfdbinary):
    # lone surrogates (from ids of UTF-8-invalid byte sequences) used to be written as raw bytes ED A0 80
    texts = ["a\ud800b", "\udcff", "中\udc80文\ud800"]
    ids = tmp_path / "ids.jsonl"
    ids.write_text("".join(json.dumps({"n": n, "ids": lossless.encode(t)}) + "\n" for n, t in enumerate(texts)), encoding="utf-8")
    out = tmp_path / "back.jsonl"
    assert main(["tokenizer", "decode", "-t", lossless.path, "--jsonl", "--input", str(ids), "--output", str(out)]) == 0
    raw = out.read_bytes()
    assert b"\\ud800" in raw and b"\\udcff" in raw and "中".encode() in raw
    assert [json.loads(line)["text"] for line in raw.decode("utf-8").splitlines()] == texts  # strict UTF-8, same strings
    capfdbinary.readouterr()
    assert main(["tokenizer", "decode", "-t", lossless.path, "--jsonl", "--input", str(ids)]) == 0  # stdout too
    assert capfdbinary.readouterr().out == raw
    # and encode --jsonl reads the file back to the same ids
    again = tmp_path / "again.jsonl"
    assert main(["tokenizer", "encode", "-t", lossless.path, "--jsonl", "--input", str(out), "--output", str(again)]) == 0
    assert again.read_text(encoding="utf-8") == ids.read_text(encoding="utf-8")


def test_json_line_round_trips_any_string() -> None:
    from cpm.jsonl import json_line

    for text in ["\ud800", "x\udfffy", "😀", "\u2028", "\x00", "中文"]:
        line = json_line({"text": text})
        assert line.endswith("\n") and line.count("\n") == 1
        assert json.loads(line.encode("utf-8").decode("utf-8")) == {"text": text}
def test_lossless_mode_needs_byte_pieces(cpm1):
    with pytest.raises(CpmError, match=r"^vocab/chinese_vocab\.model: a lossless tokenizer needs the 256 byte pieces"):
        Tokenizer(cpm1._model_proto, "lossless", path="vocab/chinese_vocab.model")
    with pytest.raises(CpmError, match=r"^model: a lossless tokenizer needs"):
        Tokenizer(cpm1._model_proto, "lossless")
