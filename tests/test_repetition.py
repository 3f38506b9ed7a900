"""The repetition filters calibrated for Chinese: clean news, reviews and laws pass, spam is caught."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
import zstandard

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
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "zh"
FILTERS = (duplicate_lines, top_ngrams, duplicate_ngrams)


def record(text: str, source: str = "news") -> RawRecord:
    return RawRecord(source=source, origin="in.txt:1", text=text, id="d1")


def rejected_by(text: str, source: str = "news") -> list[str]:
    config = default_config(source)
    return [f.__name__ for f in FILTERS if isinstance(f(record(text, source), config), Rejection)]


def shared_lines(name: str) -> list[str]:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        return [line.strip() for line in io.TextIOWrapper(stream, encoding="utf-8") if line.strip()]


def law(path: Path) -> str:
    body = path.read_text("utf-8").split("<!-- INFO END -->")[-1]
    return "\n".join(line.lstrip("#").strip() for line in body.splitlines() if line.strip())


def test_word_codes_drop_punctuation_and_keep_letters_digits_ideographs():
    assert "".join(map(chr, word_codes("Ａｂ１２，中文。abc 12！ＺＺ…"))) == "Ａｂ１２中文abc12ＺＺ"


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
