"""cpm.tokenizer.model on its own, fast: loading and its errors, special pieces, the lossless byte
pieces and split markers, batch forms and their workers, id checks. Real SentencePiece throughout:
CPM-1's vocabulary, a small lossless tokenizer trained here, and tiny models trained with odd options;
expected ids come from SentencePiece loaded independently, expected texts from the inputs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import shutil
import threading
from pathlib import Path

import pytest

from cpm.errors import CpmError
from cpm.tokenizer import model
from cpm.tokenizer.evaluate import write_document_shard
from cpm.tokenizer.model import Tokenizer, model_mode
from cpm.tokenizer.train import train_tokenizer

from conftest import read_zst_lines

SPACE, NEWLINE = "\u2582", "\u2583"


@pytest.fixture(scope="module")
def cpm1(cpm1_model) -> Tokenizer:
    return Tokenizer.load(cpm1_model)


@pytest.fixture(scope="module")
def cpm1_vocab(shared_dir) -> dict[str, int]:
    return json.loads((shared_dir / "data" / "cpm1" / "vocab.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def lossless(zh_dir, tmp_path_factory) -> Tokenizer:
    root = tmp_path_factory.mktemp("model")
    lines = read_zst_lines(zh_dir / "people_daily_1998_paragraphs.txt.zst", 300)
    write_document_shard(root / "corpus" / "shards" / "part-00000.arrow", lines)
    return Tokenizer.load(train_tokenizer([root / "corpus"], root / "tok", vocab_size=1500, progress=False))


@pytest.fixture(scope="module")
def lossless_sp(lossless):
    """The lossless model loaded by SentencePiece itself (the oracle for ids)."""
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(Path(lossless.path) / "tokenizer.model"))


def tiny_model(**options) -> bytes:
    """A small unigram model trained by SentencePiece on a few hundred random lines."""
    import sentencepiece as spm

    rng = random.Random(0)
    lines = ["".join(rng.choice("今天天气不错我们的中国人民abcdefg") for _ in range(rng.randrange(5, 30))) for _ in range(300)]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out, model_type="unigram",
                                   hard_vocab_limit=False, minloglevel=2, **options)
    return out.getvalue()


# -- special pieces, piece types, ids ---------------------------------------------------------------


def test_special_ids_are_those_of_the_vocabulary(cpm1, cpm1_vocab, lossless, lossless_sp):
    names = {"unk": "<unk>", "sep": "<sep>", "pad": "<pad>", "mask": "<mask>", "eod": "<eod>"}
    assert cpm1.special_ids() == {key: cpm1_vocab[piece] for key, piece in names.items()}
    assert lossless.special_ids() == {key: lossless_sp.piece_to_id(piece) for key, piece in names.items()}
    assert len(set(lossless.special_ids().values())) == 5
    assert (cpm1.vocab_size, lossless.vocab_size) == (len(cpm1_vocab), lossless_sp.vocab_size())
    for piece in ("<unk>", "\u2581今天", "不错", SPACE, NEWLINE):
        assert cpm1.piece_to_id(piece) == cpm1_vocab[piece]
        assert cpm1.id_to_piece(cpm1_vocab[piece]) == piece
    last = max(cpm1_vocab.values())
    assert cpm1.id_to_piece(last) == next(p for p, i in cpm1_vocab.items() if i == last)
    with pytest.raises(CpmError, match="out of range"):
        cpm1.id_to_piece(last + 1)
    assert repr(cpm1) == f"Tokenizer(mode='cpm', vocab_size=30000, path={str(cpm1.path)!r})"


def test_piece_types(cpm1, lossless, lossless_sp):
    assert cpm1.piece_type(cpm1.unk_id) == "unknown"
    assert cpm1.piece_type(cpm1.eod_id) == "normal"  # CPM-1's <eod> is an ordinary piece
    assert cpm1.piece_type(cpm1.pad_id) == "control"
    assert lossless.piece_type(lossless.eod_id) == "control"
    assert lossless.piece_type(lossless_sp.piece_to_id("<0xE2>")) == "byte"
    assert lossless.piece_type(lossless_sp.piece_to_id("的")) == "normal"


# -- decoding --------------------------------------------------------------------------------------


def test_decode_checks_ids_at_both_ends_of_the_vocabulary(cpm1, lossless):
    for tok in (cpm1, lossless):
        size = tok.vocab_size
        assert tok.decode([]) == "" and tok.decode_batch([]) == [] and tok.decode_batch([[]]) == [""]
        tok.decode([0, size - 1])  # both ends are valid ids
        message = f"token id {size} is out of range for a vocabulary of {size} (0..{size - 1})"
        for ids, bad in (([size], size), ([0, size], size), ([3, -1, size], -1), ([size + 7, -1], size + 7)):
            with pytest.raises(CpmError) as info:
                tok.decode(ids)
            assert str(info.value) == message.replace(f"token id {size} ", f"token id {bad} "), ids


def test_lossless_decode_of_byte_control_and_unknown_pieces(lossless, lossless_sp):
    def byte_ids(data: bytes) -> list[int]:
        return [lossless_sp.piece_to_id(f"<0x{b:02X}>") for b in data]

    text = "中😀\u2581é\x00\x7f"
    assert lossless.decode(byte_ids(text.encode("utf-8"))) == text
    assert lossless.decode(byte_ids(b"\xed\xa0\x80")) == "\ud800"  # a lone surrogate, as encode writes one
    assert lossless.decode(byte_ids(b"a\xe4\xb8")) == "a\ufffd"  # split bytes no encode makes
    assert lossless.decode([lossless.unk_id]) == "\ufffd"
    assert lossless.decode([lossless.eod_id, lossless.pad_id, lossless.sep_id, lossless.mask_id]) == ""
    assert lossless.decode([lossless_sp.piece_to_id(SPACE), lossless_sp.piece_to_id(NEWLINE)]) == " \n"
    normal = [i for i in range(lossless.vocab_size) if lossless.piece_type(i) == "normal"]
    assert lossless.decode(normal) == "".join(lossless_sp.id_to_piece(i) for i in normal).replace(SPACE, " ").replace(NEWLINE, "\n")


def test_cpm_decode_is_the_original_algorithm(cpm1, cpm1_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(cpm1_model))
    ids = cpm1.encode("今天 天气\n不错，Hello World!")
    assert cpm1.decode(ids) == sp.decode(ids).replace(" ", "").replace(SPACE, " ").replace(NEWLINE, "\n")
    assert cpm1.decode(ids) == "今天 天气\n不错,Hello World!"
    assert cpm1.decode([cpm1.eod_id]) == "<eod>"


# -- encoding --------------------------------------------------------------------------------------


def test_lossless_words_are_sentencepiece_of_the_marked_word(lossless, lossless_sp):
    words = ["今天", " ", "天气 不错", "\n", "Hello", "  x\n"]
    expected = [i for w in words for i in lossless_sp.encode(w.replace(" ", SPACE).replace("\n", NEWLINE))]
    assert lossless.encode_words(words) == expected
    assert lossless.tokenize(" ") == [SPACE] and lossless.tokenize("\n") == [NEWLINE]
    assert lossless.decode(expected) == "".join(words)


def test_lossless_reserved_characters_are_written_as_bytes(lossless, lossless_sp):
    def byte_ids(ch: str) -> list[int]:
        return [lossless_sp.piece_to_id(f"<0x{b:02X}>") for b in ch.encode("utf-8", "surrogatepass")]

    def sp(text: str) -> list[int]:
        return lossless_sp.encode(text.replace(" ", SPACE))

    assert lossless.encode_words([SPACE]) == byte_ids(SPACE)  # a literal marker is not a space
    assert lossless.encode_words(["x" + SPACE + "y"]) == sp("x") + byte_ids(SPACE) + sp("y")
    assert lossless.encode_words(["\u2581a b"]) == byte_ids("\u2581") + sp("a b")
    assert lossless.encode_words(["ab" + NEWLINE + NEWLINE]) == sp("ab") + byte_ids(NEWLINE) * 2
    assert lossless.encode_words(["\ud800"]) == byte_ids("\ud800")
    # a one-character part beside a reserved character is still SentencePiece's, not bytes
    assert sp("的") != byte_ids("的")
    assert lossless.encode_words(["的" + SPACE + "的"]) == sp("的") + byte_ids(SPACE) + sp("的")
    words = ["\u2581", "a\u2581\u2582b", "\u2583\n", "\udfff中", "c\ud800\u2581", " \u2582 "]
    ids = lossless.encode_words(words)
    assert lossless.decode(ids) == "".join(words)
    assert lossless.unk_id not in ids


def test_lossless_word_cache_remembers_words_up_to_its_limit(lossless, lossless_sp, monkeypatch):
    tok = pickle.loads(pickle.dumps(lossless))  # a fresh cache
    words = [f"词{n}" for n in range(200)]
    per_word = [lossless_sp.encode(word) for word in words]
    assert tok.encode_words(words) == [i for ids in per_word for i in ids]
    assert len(tok._cache) == 200 and tok.encode_words(words) == [i for ids in per_word for i in ids]
    monkeypatch.setattr(model, "_CACHE_LIMIT", 3)
    small = pickle.loads(pickle.dumps(lossless))
    for n in range(1, 8):
        assert small.encode_words(words[:n]) == [i for ids in per_word[:n] for i in ids]
        assert len(small._cache) <= 3


def test_cpm_join_marks_words_and_keeps_the_unit_separator(cpm1, cpm1_model):
    """Words are marked (" " -> U+2582, "\\n" -> U+2583) and joined by one space, as CPM-1 does;
    a word holding U+001F (the fast path's own separator) is joined the same way."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(cpm1_model))
    for words in (["a\x1fb", "c"], ["今天", " ", "天气\n", "x\x1f"], ["\x1f", "\x1f\x1f"], ["\x1f"], ["x\x1f\x1fy"], ["a b"], [" "], []):
        joined = " ".join(w.replace(" ", SPACE).replace("\n", NEWLINE) for w in words)
        assert Tokenizer._cpm_join(words) == joined
        assert Tokenizer._cpm_join(iter(words)) == joined
        assert cpm1.encode_words(words) == sp.encode(joined)
        assert cpm1.encode_words(iter(words)) == sp.encode(joined)
    assert cpm1.encode_words(["a\x1fb", "c"]) != cpm1.encode_words(["a", "b", "c"])


def test_batch_forms_equal_one_text_at_a_time(cpm1, lossless):
    rng = random.Random(1)
    texts = ["".join(rng.choice("今天天气不错。我们 的\n中国Hello▂😀") for _ in range(rng.randrange(0, 25))) for _ in range(40)]
    from cpm.tokenizer.segment import cut

    for tok in (cpm1, lossless):
        expected = [tok.encode(t) for t in texts]
        for threads in (1, 2, 3, 0, None):
            assert tok.encode_batch(texts, threads=threads) == expected
            assert tok.encode_words_batch([cut(t) for t in texts], threads=threads) == expected
        assert tok.encode_batch([], threads=2) == [] and tok.encode_batch(texts[:1], threads=2) == expected[:1]
        assert tok.encode_batch(iter(texts), threads=2) == expected
        assert tok.decode_batch(expected) == [tok.decode(ids) for ids in expected]
    assert lossless.decode_batch(lossless.encode_batch(texts, threads=2)) == texts


def where(chunk: list[int]) -> list[list[int]]:
    """For each item: [process id, caller thread (31 bits), item]."""
    me = threading.get_ident() % 2**31
    return [[os.getpid(), me, x] for x in chunk]


def test_parallel_uses_threads_for_short_batches_and_forks_from_256_items():
    pid, me = os.getpid(), threading.get_ident() % 2**31
    for threads in (1, 0, None, -2):
        assert Tokenizer._parallel(where, list(range(300)), threads) == [[pid, me, x] for x in range(300)]
    assert Tokenizer._parallel(where, [7], 4) == [[pid, me, 7]]  # one item: no worker
    for n in (2, 10, 255):
        out = Tokenizer._parallel(where, list(range(n)), 3)
        assert [x for _, _, x in out] == list(range(n))
        assert {p for p, _, _ in out} == {pid} and me not in {t for _, t, _ in out}  # threads
    out = Tokenizer._parallel(where, list(range(256)), 2)
    assert [x for _, _, x in out] == list(range(256))
    assert pid not in {p for p, _, _ in out}  # forked workers
    assert model._FORK_JOB is None


def chunk_sizes(n: int, threads: int) -> list[int]:
    """The sizes of the slices ``_parallel`` hands to its workers, in order (thread workers)."""
    calls: list[int] = []
    lock = threading.Lock()

    def record(chunk: list[int]) -> list[list[int]]:
        with lock:
            calls.append(chunk[0])
        return [[x] for x in chunk]

    assert Tokenizer._parallel(record, list(range(n)), threads) == [[x] for x in range(n)]
    starts = sorted(calls)
    return [b - a for a, b in zip(starts, starts[1:] + [n])]


def test_parallel_cuts_a_batch_into_about_four_chunks_per_worker():
    """About 4 chunks per worker, so that uneven texts balance; a batch of at most 4 per worker: one item each."""
    assert chunk_sizes(100, 2) == [13] * 7 + [9]  # ceil(100 / 8) items per chunk
    assert chunk_sizes(240, 3) == [20] * 12
    assert chunk_sizes(3, 2) == [1, 1, 1] and chunk_sizes(8, 2) == [1] * 8


def _parallel_in_a_daemon(queue) -> None:
    try:
        queue.put(Tokenizer._parallel(where, list(range(300)), 2))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        queue.put(repr(exc))


def test_parallel_in_a_daemon_process_uses_threads():
    """A daemon process (a ``multiprocessing.Pool`` worker) cannot fork workers: it uses threads."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    worker = ctx.Process(target=_parallel_in_a_daemon, args=(queue,), daemon=True)
    worker.start()
    out = queue.get(timeout=60)
    worker.join(timeout=60)
    assert isinstance(out, list), out
    assert [x for _, _, x in out] == list(range(300)) and {p for p, _, _ in out} == {worker.pid}


class CallerThreads(Tokenizer):
    """Records the thread of every chunk encoded."""

    def _encode_chunk(self, texts):
        self.threads_seen.add(threading.get_ident())
        return super()._encode_chunk(texts)

    def _encode_words_chunk(self, word_lists):
        self.threads_seen.add(threading.get_ident())
        return super()._encode_words_chunk(word_lists)


def test_batches_run_in_the_callers_thread_by_default(cpm1):
    tok = CallerThreads(cpm1._model_proto, "cpm")
    tok.threads_seen = set()
    texts = ["今天天气不错", "我们的中国", "Hello World"] * 4
    assert tok.encode_batch(texts) == [cpm1.encode(t) for t in texts]
    assert tok.encode_words_batch([[t] for t in texts]) == [cpm1.encode_words([t]) for t in texts]
    assert tok.threads_seen == {threading.get_ident()}


def test_pickled_tokenizer_is_the_same_tokenizer(cpm1, lossless):
    for tok in (cpm1, lossless):
        copy = pickle.loads(pickle.dumps(tok))
        assert (copy.mode, copy.path, copy.config, copy.fingerprint) == (tok.mode, tok.path, tok.config, tok.fingerprint)
        assert copy.encode("今天 天气\n不错") == tok.encode("今天 天气\n不错")


# -- loading ---------------------------------------------------------------------------------------


def test_model_mode_needs_byte_pieces_and_a_control_eod(cpm1_model):
    assert model_mode(Path(cpm1_model).read_bytes()) == "cpm"
    specials = ["<sep>", "<pad>", "<mask>"]
    lossless_like = tiny_model(vocab_size=320, byte_fallback=True, control_symbols=specials + ["<eod>"])
    bytes_but_eod_normal = tiny_model(vocab_size=320, byte_fallback=True, control_symbols=specials, user_defined_symbols=["<eod>"])
    eod_control_no_bytes = tiny_model(vocab_size=60, control_symbols=specials + ["<eod>"])
    spelled_like_a_byte = tiny_model(vocab_size=60, control_symbols=specials + ["<eod>"], user_defined_symbols=["<0x00>"])
    assert model_mode(spelled_like_a_byte) == "cpm"  # a piece "<0x00>" that is not a byte piece
    assert model_mode(lossless_like) == "lossless"
    assert model_mode(bytes_but_eod_normal) == "cpm"
    assert model_mode(eod_control_no_bytes) == "cpm"
    assert Tokenizer(lossless_like, "lossless").mode == "lossless"
    with pytest.raises(CpmError, match=r"^x\.model: not a SentencePiece model"):
        model_mode(b"\x00junk" * 10, "x.model")
    with pytest.raises(CpmError, match=r"^model: not a SentencePiece model"):
        model_mode(b"\x00junk" * 10)


def test_constructor_errors_name_the_model():
    specials = ["<sep>", "<pad>", "<mask>", "<eod>"]
    good = tiny_model(vocab_size=60, control_symbols=specials)
    assert Tokenizer(good, "cpm").eod_id != Tokenizer(good, "cpm").unk_id
    with pytest.raises(CpmError, match=r"^unknown tokenizer mode 'bpe' \(expected one of lossless, cpm\)"):
        Tokenizer(good, "bpe")
    with pytest.raises(CpmError, match=r"^m\.model: not a SentencePiece model"):
        Tokenizer(b"\x00junk" * 10, "cpm", path="m.model")
    with pytest.raises(CpmError, match=r"^model: not a SentencePiece model"):
        Tokenizer(b"\x00junk" * 10, "cpm")
    no_mask = tiny_model(vocab_size=60, control_symbols=["<sep>", "<pad>", "<eod>"])
    with pytest.raises(CpmError, match=r"^model: the vocabulary has no <mask> piece"):
        Tokenizer(no_mask, "cpm")
    with pytest.raises(CpmError, match=r"^m\.model: the vocabulary has no <mask> piece"):
        Tokenizer(no_mask, "cpm", path="m.model")
    # the unknown piece spelled "<pad>" is not a padding piece
    unk_named_pad = tiny_model(vocab_size=60, unk_piece="<pad>", control_symbols=["<sep>", "<mask>", "<eod>"])
    with pytest.raises(CpmError, match=r"the vocabulary has no <pad> piece"):
        Tokenizer(unk_named_pad, "cpm")
    with pytest.raises(CpmError, match=r"^model: a lossless tokenizer needs the 256 byte pieces"):
        Tokenizer(good, "lossless")


@pytest.fixture()
def tokdir(lossless, tmp_path) -> Path:
    copy = tmp_path / "tok"
    shutil.copytree(lossless.path, copy)
    return copy


def write_config(directory: Path, **changes) -> None:
    path = directory / "cpm_tokenizer.json"
    config = json.loads(path.read_text("utf-8"))
    config.update(changes)
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}), "utf-8")


def test_load_reads_the_config_of_a_directory(tokdir, lossless, cpm1_model):
    config = json.loads((tokdir / "cpm_tokenizer.json").read_text("utf-8"))
    assert config["format"] == "cpm-tokenizer" and config["format_version"] == 1
    tok = Tokenizer.load(tokdir)
    assert (tok.mode, tok.path, tok.config) == ("lossless", str(tokdir), config)
    assert tok.fingerprint == hashlib.sha256((tokdir / "tokenizer.model").read_bytes()).hexdigest()
    assert Tokenizer.load(str(tokdir)).fingerprint == tok.fingerprint
    # the model file of a directory loads as that directory; another .model file in it loads on its own
    assert Tokenizer.load(tokdir / "tokenizer.model").path == str(tokdir)
    shutil.copy(cpm1_model, tokdir / "other.model")
    other = Tokenizer.load(tokdir / "other.model")
    assert (other.mode, other.path, other.config) == ("cpm", str(tokdir / "other.model"),
                                                      {"mode": "cpm", "source": str(tokdir / "other.model")})
    # a renamed model file, no checksum, no vocab size, an older format version: all still load
    (tokdir / "tokenizer.model").rename(tokdir / "renamed.model")
    write_config(tokdir, model_file="renamed.model", model_sha256=None, vocab_size=None, format_version=0)
    assert Tokenizer.load(tokdir).fingerprint == lossless.fingerprint
    assert Tokenizer.load(tokdir / "renamed.model").path == str(tokdir)


@pytest.mark.parametrize("changes, message", [
    (dict(format_version=2, tool_version="9.1"), r"tokenizer format version 2 was written by cpm 9\.1, newer than this cpm .* "
                                                 r"\(reads format version 1\); upgrade cpm"),
    (dict(format_version="1"), "tokenizer format version 1 was written"),
    (dict(format_version=None), "tokenizer format version None was written by cpm"),
    (dict(format="sentencepiece"), 'not a cpm tokenizer config \\(no "format": "cpm-tokenizer"\\)'),
    (dict(mode="bpe"), r"unknown mode 'bpe' \(expected one of lossless, cpm\)"),
    (dict(mode=None), "unknown mode None"),
    (dict(model_sha256="0" * 64), "checksum does not match"),
    (dict(vocab_size=1499), "vocab_size 1499 but the model has 1500"),
    (dict(model_file="missing.model"), "missing.model: no such tokenizer"),
])
def test_load_rejects_a_bad_config(tokdir, changes, message):
    write_config(tokdir, **changes)
    with pytest.raises(CpmError, match=message):
        Tokenizer.load(tokdir)


def test_load_rejects_what_is_not_a_tokenizer(tokdir, tmp_path):
    config = tokdir / "cpm_tokenizer.json"
    config.write_text("{not json", "utf-8")
    with pytest.raises(CpmError, match=r"cpm_tokenizer\.json: not valid JSON"):
        Tokenizer.load(tokdir)
    config.write_text("[1, 2]", "utf-8")
    with pytest.raises(CpmError, match="not a cpm tokenizer config"):
        Tokenizer.load(tokdir)
    config.write_bytes(b"\xff\xfe{}")
    with pytest.raises(CpmError, match="not valid JSON"):
        Tokenizer.load(tokdir)
    with pytest.raises(CpmError, match=r"not a tokenizer directory \(no cpm_tokenizer\.json"):
        Tokenizer.load(tmp_path / "tok" / "..")
    (tmp_path / "empty.model").write_bytes(b"")
    with pytest.raises(CpmError, match=r"empty\.model: empty model file"):
        Tokenizer.load(tmp_path / "empty.model")
    with pytest.raises(CpmError, match=r"nope\.model: no such tokenizer"):
        Tokenizer.load(tmp_path / "nope.model")
