"""The repetition filters calibrated for Chinese: clean news, reviews and laws pass, spam is caught."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
import zstandard

from conftest import shared_lines

from cpm.pipeline.clean import (
    RawRecord,
    Rejection,
    clean_record,
    default_config,
    duplicate_lines,
    duplicate_ngrams,
    is_formal,
    top_ngrams,
    word_codes,
)
from cpm.schemas import SOURCES

DATA = Path(__file__).resolve().parent / "data"
FILTERS = (duplicate_lines, top_ngrams, duplicate_ngrams)


def record(text: str, source: str = "news") -> RawRecord:
    return RawRecord(source=source, origin="in.txt:1", text=text, id="d1")


def rejected_by(text: str, source: str = "news") -> list[str]:
    config = default_config(source)
    return [f.__name__ for f in FILTERS if isinstance(f(record(text, source), config), Rejection)]


def law(path: Path) -> str:
    body = path.read_text("utf-8").split("<!-- INFO END -->")[-1]
    return "\n".join(line.lstrip("#").strip() for line in body.splitlines() if line.strip())


def test_word_codes_drop_punctuation_and_keep_letters_digits_ideographs():
    assert "".join(map(chr, word_codes("Ａｂ１２，中文。abc 12！ＺＺ…"))) == "Ａｂ１２中文abc12ＺＺ"


@pytest.mark.parametrize("cached", [word_codes, is_formal])
def test_identity_caches_answer_each_thread_for_its_own_text(cached):
    """Threaded Beam runners call the filters from several threads: a cache read between another
    thread's writes must not hand one text the value of another.

    CPython with the GIL switches threads only at a few kinds of bytecode; a line tracer that
    sleeps at every line of the cached function lets the threads interleave at any line, as a
    free-threaded interpreter may."""
    import threading
    import time

    import numpy as np

    texts = ["第一条 规定。\n第二条 适用。\n第三条 国家。", "一、二年级的学生1.5小时就完成了。" * 3,
             "ＡＢ１２，中文。abc", "根据合同法第五十二条的规定，该合同无效。" * 3]
    expected = [cached(text) for text in texts]  # one thread: the cache cannot mix texts up
    assert len({repr(value) for value in expected}) > 1

    def trace(frame, event, arg):
        if frame.f_code is not cached.__code__:
            return None

        def each_line(frame, event, arg):
            if event == "line":
                time.sleep(1e-5)  # let another thread run here
            return each_line

        return each_line

    wrong = []

    def worker(i: int) -> None:
        for _ in range(200):
            if not np.array_equal(cached(texts[i]), expected[i]):
                wrong.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(texts))]
    threading.settrace(trace)
    try:
        for thread in threads:
            thread.start()
    finally:
        threading.settrace(None)
    for thread in threads:
        thread.join()
    assert not wrong, f"{len(wrong)} of {200 * len(texts)} calls got another text's value"


def test_formal_text_is_recognised():
    assert is_formal("第一条 为了规范……制定本法。\n第二条 本法适用于……\n第三条 国家……")
    assert is_formal("一、总体要求\n（一）指导思想\n（二）基本原则")
    assert is_formal("根据合同法第五十二条的规定，该合同无效。" * 3)  # citing articles is legal text too
    assert not is_formal("我们一、二年级的学生1.5小时就完成了。" * 3)


@pytest.mark.parametrize("path", sorted(DATA.joinpath("legal").glob("*.txt")), ids=lambda p: p.stem)
def test_laws_with_numbered_articles_pass(path):
    text = law(path)
    assert len(text) > 3000
    for source in SOURCES:
        result = clean_record(record(text, source), default_config(source))
        assert isinstance(result, RawRecord), (source, result.rule, result.detail)


def test_repetition_spam_is_caught():
    with open(DATA / "repetition_spam.jsonl.zst", "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        pages = [json.loads(line) for line in io.TextIOWrapper(stream, encoding="utf-8")]
    caught: dict[str, list[bool]] = {}
    for page in pages:
        caught.setdefault(page["kind"], []).append(bool(rejected_by(page["text"])))
    overall = sum(sum(v) for v in caught.values()) / len(pages)
    assert len(pages) >= 300 and overall >= 0.9, {k: sum(v) / len(v) for k, v in caught.items()}
    for kind in ("templated", "spun", "stuffed", "listing", "repeated_block"):
        assert sum(caught[kind]) / len(caught[kind]) >= 0.9, kind


@pytest.mark.slow
def test_clean_news_and_reviews_are_rarely_rejected():
    paragraphs = shared_lines("people_daily_1998_paragraphs.txt.zst")
    reviews = [r for r in shared_lines("product_reviews.txt.zst") if len(r) >= 200]
    rng = random.Random(0)
    documents, i = [], 0
    while i < len(paragraphs):
        n = rng.randint(3, 10)
        documents.append("\n".join(paragraphs[i : i + n]))
        i += n
    long_paragraphs = [p for p in paragraphs if len(p) >= 200]
    for docs, total in ((long_paragraphs, len(paragraphs)), (documents, len(documents)), (reviews, 35_124)):
        counts = {f.__name__: 0 for f in FILTERS}
        for doc in docs:
            for name in rejected_by(doc):
                counts[name] += 1
        assert all(n <= 0.001 * total for n in counts.values()), counts
