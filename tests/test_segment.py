"""cpm.tokenizer.segment: word for word equal to jieba 0.42.1 (``jieba.cut``, HMM on) on any text."""

from __future__ import annotations

import io
import logging
import pickle
import random
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import jieba
import pytest
import rjieba
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpm.tokenizer import segment
from cpm.tokenizer.segment import cut, cut_batch

jieba.setLogLevel(logging.WARNING)  # the reference's "Building prefix dict" chatter


def jieba_cut(text: str) -> list[str]:
    return list(jieba.cut(text))


def read_lines(path: Path) -> list[str]:
    """Every line, byte for byte (no newline translation, so a stray "\\r" stays)."""
    import zstandard

    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        return io.TextIOWrapper(stream, encoding="utf-8", newline="").read().split("\n")


def first_difference(a: list[str], b: list[str]) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at word {i}: jieba {a[max(0, i - 3):i + 4]} vs cut {b[max(0, i - 3):i + 4]}"


@pytest.mark.parametrize("name", ["people_daily_1998_paragraphs", "product_reviews"])
def test_every_line_of_the_shared_corpora_matches_jieba(zh_dir: Path, name: str) -> None:
    lines = read_lines(zh_dir / f"{name}.txt.zst")
    assert len(lines) > 19_000
    expected = [jieba_cut(line) for line in lines]
    segment.clear_caches()
    for number, (line, words) in enumerate(zip(lines, expected), 1):
        got = cut(line)
        assert got == words, f"{name} line {number}: {first_difference(words, got)}"
    # cut_batch (what the corpus job calls) from empty caches: numpy bufs, batched Viterbi, and one call
    # big enough to be split into several route calls.
    segment.clear_caches()
    batched = [words for i in range(0, len(lines), 1000) for words in cut_batch(lines[i : i + 1000])]
    batched_whole = cut_batch(lines)
    for number, (words, got, got_whole) in enumerate(zip(expected, batched, batched_whole), 1):
        assert got == words, f"{name} line {number} (cut_batch): {first_difference(words, got)}"
        assert got_whole == words, f"{name} line {number} (one cut_batch): {first_difference(words, got_whole)}"
    assert len(batched) == len(batched_whole) == len(lines)


# Found by searching for near-ties in jieba's HMM: jieba-rs (rjieba 0.2.2) rounds the emission
# log-probabilities to 6 decimals and picks the other path on these unknown-word runs.
HMM_NEAR_TIES = ["气儕仲", "頡徹苯", "阡记嚷", "堂壓肱", "卢窘概", "濑湍拾", "毂罰记"]

EDGE_CASES = [
    "", " ", "  ", "\t", "\n", "\r\n", "\r", "\r\r\n\n", " \r\n\t\u3000", "\u3000\u3000中文\u3000",
    "3-4", "3-4个", "第3-4名", "C++", "c++和C#", "用C++写", "AT&T公司", "1.5%", "增长1.5%以上", "10%", "1.2.3",
    "http://www.baidu.com/a_b?x=1&y=2", "访问www.example.com/path-1_2.html看看", "email: a.b@c.com",
    "abc.def", "a_b", "x--y", "..", "++", "#1", "%%", "v1.0.2-beta", "2019-12-31 23:59", "1998年1月",
    "A股", "AA制", "AB超", "B超检查", "T恤衫", "4S店", "小S和大S", "阿Q正传", "江南style",
    "Hugging Face大法好，谁用谁知道。", "我爱北京天安门", "今天天气不错", "他来到了网易杭研大厦",
    "小明硕士毕业于中国科学院计算所，后在日本京都大学深造",
    "ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３，。！", "中文English混合123数字", "😀表情👍🏽符号", "㐀𠀀𪜀龦鿿豈",
    "人\U00020000民", "中\x00国", "中\ud800国", "\x1c\x1d\x1e\x1f", "\x85\xa0\u2028\u2029", "\ufeff开头",
    "很好很好很好很好很好很好", "的的的的的的的的的的", "龥" * 5, *HMM_NEAR_TIES,
]


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_match_jieba(text: str) -> None:
    words = cut(text)
    assert words == jieba_cut(text)
    assert "".join(words) == text


def test_hmm_near_ties_are_where_rjieba_alone_differs() -> None:
    """The reason the HMM is redone here: rjieba's rounded probabilities flip these."""
    for text in HMM_NEAR_TIES:
        assert cut(text) == jieba_cut(text)
        assert rjieba.cut(text) != jieba_cut(text)


def test_ascii_runs_are_where_rjieba_alone_differs() -> None:
    for text in ["3-4", "访问www.baidu.com", "a_b是"]:
        assert cut(text) == jieba_cut(text)
        assert rjieba.cut(text) != jieba_cut(text)


def _dictionary_sample(size: int, seed: int = 0) -> list[str]:
    with open(segment.jieba_dict_path(), encoding="utf-8") as f:
        words = [line.split(" ")[0] for line in f]
    ascii_words = [w for w in words if not all("\u4e00" <= c <= "\u9fd5" for c in w)]
    return random.Random(seed).sample(words, size) + ascii_words


DICT_WORDS = _dictionary_sample(3000)
PUNCTUATION = list("，。！？、；：“”‘’（）《》【】…—～·,.!?;:'\"()[]{}<>/\\@=~`^*|$")
SPACES = [" ", "  ", "\t", "\n", "\r", "\r\n", "\u3000", "\xa0", "\x0b", "\x0c", "\x1c", "\x85", "\u2028"]
RARE = ["😀", "👍🏽", "\U0001f1e8\U0001f1f3", "㐀", "䶵", "𠀀", "𪜀", "𫠝", "龦", "鿿", "豈", "\x00", "\ud800", "\u200b",
        "\ufeff", "Ａ", "１", "．", "－"]
ASCII_RUN = st.text(alphabet="abcXYZ0123456789+#&._%-", min_size=1, max_size=8)
PIECES = st.one_of(
    st.sampled_from(DICT_WORDS),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FD5),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF),  # denser: more repeats, more HMM runs
    ASCII_RUN,
    st.sampled_from(PUNCTUATION),
    st.sampled_from(SPACES),
    st.sampled_from(RARE),
    st.characters(),
)
TEXTS = st.lists(PIECES, max_size=40).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_property_equals_jieba_and_round_trips(text: str) -> None:
    words = cut(text)
    assert words == jieba_cut(text)
    assert "".join(words) == text
    assert all(words)


def test_random_han_runs_match_jieba() -> None:
    """Many short unknown-word runs (what the HMM sees), separated by punctuation and ASCII."""
    from jieba.finalseg.prob_emit import P as emit

    rng = random.Random(1998)
    alphabet = sorted(set(emit["B"]) & set(emit["E"]) & set(emit["S"]) - set(DICT_WORDS))
    alphabet = [c for c in alphabet if "\u4e00" <= c <= "\u9fd5"]
    seps = ["，", " ", "3", "a-b", "的", "。", ""]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) + rng.choice(seps) for _ in range(6000)]
    texts = ["".join(texts[i : i + 5]) for i in range(0, len(texts), 5)]
    for text in texts:
        assert cut(text) == jieba_cut(text), text


def test_cut_batch_matches_cut_and_keeps_order() -> None:
    texts = EDGE_CASES * 3 + ["中\x01国", "\x01", "a\x01b", "我们\x01", "", "", "\x00\x01"]
    expected = [jieba_cut(t) for t in texts]
    assert [cut(t) for t in texts] == expected
    assert cut_batch(texts) == expected
    assert cut_batch(texts, threads=2) == expected
    fast = [t for t in texts if not segment.needs_block_split(t)]  # the path that joins texts
    assert cut_batch(fast) == [jieba_cut(t) for t in fast]
    assert cut_batch([]) == []
    assert cut_batch([""]) == [[]]
    assert cut_batch(["", ""]) == [[], []]
    assert cut_batch(("今天", "天气")) == [["今天"], ["天气"]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXTS, max_size=30))
def test_property_cut_batch_equals_jieba(texts: list[str]) -> None:
    segment.clear_caches()  # so the batch's unseen bufs go through the batched Viterbi together
    assert cut_batch(texts) == [jieba_cut(t) for t in texts]


def test_batched_viterbi_equals_the_python_one() -> None:
    """The numpy Viterbi against the plain one on many runs of all lengths, near-ties included."""
    from jieba.finalseg.prob_emit import P as emit

    rng = random.Random(7)
    alphabet = [c for c in sorted(set(emit["B"]) | set(emit["S"])) if "\u4e00" <= c <= "\u9fd5"]
    alphabet += ["\u9fd5", "\u4e00", "\u9fa6"]  # chars the HMM tables lack (all MIN_FLOAT)
    runs = ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 40))) for _ in range(3000)]
    runs += HMM_NEAR_TIES + ["\u9fa6" * 5, "\u9fa6\u9fa6"]
    model = segment._model()
    words = segment._viterbi_batch(model, runs)
    _, single = segment._hmm_many(model, runs)  # one numpy batch too: 3,000 runs of 2-40 chars
    for run, got, one_per_char in zip(runs, words, single):
        expected = segment._viterbi_cut(model, run)
        assert got.split("\x00") == expected, run
        assert bool(one_per_char) == (len(expected) == len(run))
        assert got.split("\x00") == list(jieba.finalseg.cut(run)), run
    # _hmm_many batches by length class and leaves the longest and the rare lengths to Python
    mixed = runs + ["".join(rng.choice(alphabet) for _ in range(n)) for n in (100, 200, 300, 600, 700) * 30]
    words, single = segment._hmm_many(model, mixed)
    for run, got, one_per_char in zip(mixed, words, single):
        expected = segment._viterbi_cut(model, run)
        assert got.split("\x00") == expected and one_per_char == (len(expected) == len(run)), run


def test_works_in_a_spawned_process_pool_after_pickling() -> None:
    assert pickle.loads(pickle.dumps(cut)) is cut
    texts = ["我爱北京天安门", "3-4个C++程序员", *HMM_NEAR_TIES]
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        assert list(pool.map(cut, texts, timeout=120)) == [jieba_cut(t) for t in texts]


def test_initialising_prints_nothing() -> None:
    code = "from cpm.tokenizer.segment import cut; assert cut('初始化一下') == ['初始化', '一下']"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "prefix dict" not in done.stderr


def test_dictionary_is_jiebas_with_jiebas_total() -> None:
    """Same words as jieba's FREQ (freq > 0) and the same total, duplicate dict lines included."""
    jieba.initialize()
    model = segment._model()
    assert model.total == jieba.dt.total
    frequent = [w for w, f in jieba.dt.FREQ.items() if f]
    assert all(model.route.has_word(w) for w in random.Random(0).sample(frequent, 20_000))
    prefixes = [w for w, f in jieba.dt.FREQ.items() if not f]
    assert not any(model.route.has_word(w) for w in random.Random(0).sample(prefixes, 20_000))


def test_dictionary_loader_checks_other_dicts_line_by_line(tmp_path: Path) -> None:
    """A dict.txt other than jieba's takes the validated path: 2-field and CRLF lines, duplicates counted."""
    path = tmp_path / "dict.txt"
    path.write_bytes("北京 100 ns\r\n天安门 50\n北京 100 ns\n".encode("utf-8"))
    route, total = segment._load_route_finder(str(path))
    assert total == 250 and route.has_word("天安门") and route.has_word("北京")
    for bad, message in [("abc 5 n\n", "purely alphanumeric"), ("好 0 n\n", "zero frequency"), ("好 x n\n", "invalid dictionary entry")]:
        path.write_text("北京 100 ns\n" + bad, encoding="utf-8")
        with pytest.raises(ValueError, match=f"dict.txt:2: {message}"):
            segment._load_route_finder(str(path))
    plain = "北京 100 ns\n天安门 50 ns\n"
    assert segment._is_plain_dict(plain) and not segment._is_plain_dict("北京 100\n")
