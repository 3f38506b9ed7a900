"""Script detection and traditional -> simplified conversion (the ``t2s`` cleaning step)."""

from __future__ import annotations

from pathlib import Path

from conftest import shared_lines

from cpm.pipeline import clean
from cpm.pipeline.clean import CleanConfig, clean_record, default_config
from cpm.pipeline.readers import read_input
from cpm.pipeline.records import RawRecord
from cpm.pipeline.script import derive_sets, is_traditional, script_counts, simplify_document, to_simplified

ROOT = Path(__file__).resolve().parents[1]
T2S = CleanConfig(t2s=True, min_chars=1, min_cjk_ratio=0)


def record(text: str, title: str | None = None) -> RawRecord:
    return RawRecord(source="story", origin="in.txt:1", text=text, title=title, id="d1")


def test_character_sets_come_from_opencc():
    traditional_only, simplified_only = derive_sets()
    assert {"乾", "榘", "國", "這", "後", "髮"} <= traditional_only
    assert {"国", "这", "后", "发"} <= simplified_only
    assert not traditional_only & simplified_only
    # 著 is also the simplified form of 著 (著名), 干 is what 乾/幹 become: neither marks traditional text
    assert "著" not in traditional_only and "干" not in traditional_only


def test_simplified_names_are_never_converted():
    for text in ("王丙乾、郭振乾、萧乾和韩复榘", "全国人大常委会副委员长王丙乾出席了会议。", "乾隆皇帝在位六十年。"):
        assert clean.t2s(record(text), T2S).text == text
    assert not is_traditional(script_counts("王丙乾、郭振乾、萧乾和韩复榘"))


def test_traditional_text_and_its_title_are_converted_together():
    result = clean.t2s(record("常數Q轉換是一種時頻分析方法，與傅立葉變換相關。", title="常數Q轉換"), T2S)
    assert result.text == "常数Q转换是一种时频分析方法，与傅立叶变换相关。"
    assert result.title == "常数Q转换"
    # title and body are decided together: a simplified body keeps the name in its title
    kept = clean.t2s(record("王丙乾同志是我国财政战线的卓越领导人，长期负责国家财政工作。", title="王丙乾同志生平"), T2S)
    assert kept.title == "王丙乾同志生平" and kept.text.startswith("王丙乾")


def test_t2s_only_when_configured():
    assert clean.t2s(record("漢字與繁體"), T2S).text == "汉字与繁体"
    assert clean.t2s(record("漢字與繁體"), CleanConfig()).text == "漢字與繁體"


def test_people_daily_is_left_unchanged():
    paragraphs = shared_lines("people_daily_1998_paragraphs.txt.zst")
    changed = [p for p in paragraphs if simplify_document(p)[0] != p]
    assert changed == []
    assert any("王丙乾" in p for p in paragraphs)


def test_big5_novel_is_fully_converted():
    path = ROOT / "pipeline" / "samples" / "story" / "水滸傳.big5.txt"
    config = default_config("story")
    traditional_only, _ = derive_sets()
    docs = [r for r in read_input(str(path), "story") if isinstance(r, RawRecord)]
    assert docs
    kept = 0
    for doc in docs:
        raw_text, raw_title = doc.text, doc.title
        cleaned = clean_record(doc, config)
        if not isinstance(cleaned, RawRecord):  # the front matter (title, author) is too short
            assert cleaned.rule == "min_length" and len(raw_text) < config.min_chars
            continue
        kept += 1
        assert not set(cleaned.text) & traditional_only, cleaned.text[:100]
        assert not set(cleaned.title or "") & traditional_only
        assert cleaned.title == to_simplified(raw_title)
        assert len(cleaned.text) <= len(raw_text)
    assert kept >= 3
