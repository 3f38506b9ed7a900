"""The cleaning steps of ``cpm corpus build``, without Beam."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cpm.errors import CpmError
from cpm.pipeline import clean
from cpm.pipeline.clean import (
    STEP_NAMES,
    CleanConfig,
    clean_record,
    default_config,
    load_configs,
    mask_pii_text,
    normalize_whitespace,
    repair_unicode,
)
from cpm.pipeline.records import RawRecord, Rejection
from cpm.schemas import SOURCES

PARAGRAPH = "北京是中华人民共和国的首都，也是全国的政治中心和文化中心。这座城市有三千多年的建城史。"


def record(text: str, source: str = "news", **kw) -> RawRecord:
    return RawRecord(source=source, origin="in.jsonl:1", text=text, id="d1", **kw)


def test_every_source_has_a_valid_config_and_steps_have_unique_names():
    from pathlib import Path

    fields = set(CleanConfig().to_dict())
    for source in SOURCES:
        # read with json, not with the loader under test: every field is set, and set as loaded
        data = json.loads((Path(clean.__file__).parent / "configs" / f"{source}.json").read_text("utf-8"))
        assert set(data) == fields | {"_doc"} and data["_doc"].strip(), source
        config = default_config(source)
        assert config.to_dict() == {k: v for k, v in data.items() if k != "_doc"}, source
        assert 0 < config.min_chars < config.max_chars <= config.max_record_chars, source
        assert all(0 <= x <= 1 for x in (config.min_cjk_ratio, config.max_dup_line_frac, config.min_language_score,
                                         config.max_bad_word_density)), source
        assert all(0 < v < 1 for v in {**config.top_char_ngrams, **config.dup_char_ngrams}.values()), source
    assert len(set(STEP_NAMES)) == len(STEP_NAMES)
    assert "cjk_ratio" in STEP_NAMES and "pii_masking" in STEP_NAMES


def test_unicode_repair_keeps_cjk_punctuation_and_full_width_forms():
    text = "“你好”，世界！（测试）《书名》【注】ＡＢＣ１２３……——"
    assert repair_unicode(text) == text


def test_unicode_repair_fixes_mojibake_and_removes_invisible_characters():
    mojibake = "中文".encode("utf-8").decode("latin-1")
    assert repair_unicode(f"这是{mojibake}") == "这是中文"
    assert repair_unicode("中\u200b文\ufeff\ue001字\u0007") == "中文字"
    assert repair_unicode("e\u0301") == "\u00e9"  # NFC


def test_whitespace_keeps_paragraphs_and_collapses_spaces():
    text = "　　第一段  有\t空格。\r\n\r\n\n  第二段。 \u2028第三段"
    assert normalize_whitespace(text) == "第一段 有 空格。\n第二段。\n第三段"


def test_t2s_only_when_configured():
    config = CleanConfig(t2s=True, min_chars=1, min_cjk_ratio=0)
    assert clean.t2s(record("漢字與繁體"), config).text == "汉字与繁体"
    assert clean.t2s(record("漢字"), CleanConfig()).text == "漢字"


def test_pii_masking():
    text = "邮箱 zhang.san@example.com.cn 电话 13812345678 或 +86 139-1234-5678 或 010-12345678，身份证 11010519491231002X，服务器 192.168.1.20。"
    masked = mask_pii_text(text)
    assert masked == "邮箱 <EMAIL> 电话 <PHONE> 或 <PHONE> 或 <PHONE>，身份证 <ID>，服务器 <IP>。"
    plain = "1998年12月31日，国内生产总值增长7.8%，共计12345人。"
    assert mask_pii_text(plain) == plain


def test_line_filters_drop_web_residue_and_non_cjk_lines():
    config = default_config("webpage")
    text = "\n".join(["首页 > 新闻 > 国内", PARAGRAPH, "Accept all cookies", "Click here to continue", PARAGRAPH + "二", "版权所有 © 2020"])
    result = clean.line_filters(record(text, "webpage"), config)
    assert result.text == PARAGRAPH + "\n" + PARAGRAPH + "二"
    rejected = clean.line_filters(record("only English here\nand here", "webpage"), config)
    assert isinstance(rejected, Rejection) and rejected.rule == "line_filters"


@pytest.mark.parametrize(
    "text, rule",
    [
        ("太短。", "min_length"),
        ("This document is written almost entirely in English, 只有几个汉字.", "cjk_ratio"),
        ("\n".join(["重复的行内容在这里出现"] * 6 + ["另一行不同的内容"]), "duplicate_lines"),
        ("买买买" * 200, "top_ngrams"),
        ((PARAGRAPH + "上海是中国最大的经济中心城市，位于长江入海口，人口超过两千万。") * 3, "duplicate_ngrams"),
        ("欢迎来到在线赌博平台，澳门赌场真人赌场百家乐老虎机，" + PARAGRAPH, "bad_words"),
    ],
)
def test_document_filters_reject_with_their_rule(text, rule):
    result = clean_record(record(text), default_config("news"))
    assert isinstance(result, Rejection), result
    assert result.rule == rule
    assert result.detail and result.origin == "in.jsonl:1" and result.id == "d1"


def test_a_clean_document_passes_and_counters_see_every_step():
    seen: list[tuple[str, bool]] = []
    text = "\n".join([PARAGRAPH, "上海是中国最大的经济中心城市，位于长江入海口。", "广州是华南地区的中心城市。"])
    result = clean_record(record(text), default_config("news"), lambda name, rejected: seen.append((name, rejected)))
    assert isinstance(result, RawRecord) and result.text == text
    assert [name for name, _ in seen] == STEP_NAMES and not any(r for _, r in seen)


def test_max_length_and_language(monkeypatch):
    config = CleanConfig(max_chars=50, min_chars=1)
    assert clean_record(record(PARAGRAPH * 3), config).rule == "max_length"
    web = default_config("webpage")
    english = record("The quick brown fox jumps over the lazy dog. " * 10, "webpage")
    assert clean.language(english, web).rule == "language"
    assert isinstance(clean.language(record(PARAGRAPH * 3, "webpage"), web), RawRecord)


def test_config_override_and_errors(tmp_path):
    override = tmp_path / "cfg.json"
    override.write_text(json.dumps({"min_chars": 5, "news": {"min_cjk_ratio": 0.9}, "dialog": {"t2s": True}}))
    configs = load_configs(["news", "story"], override)
    assert configs["news"].min_chars == 5 and configs["news"].min_cjk_ratio == 0.9
    assert configs["story"].min_chars == 5 and configs["story"].min_cjk_ratio == default_config("story").min_cjk_ratio
    override.write_text(json.dumps({"min_charz": 5}))
    with pytest.raises(CpmError, match="unknown config key 'min_charz'"):
        load_configs(["news"], override)
    override.write_text(json.dumps({"news": {"t2s": "yes"}}))
    with pytest.raises(CpmError, match="bad value for 't2s'"):
        load_configs(["news"], override)
    override.write_text("{not json")
    with pytest.raises(CpmError, match=r"cfg.json:1: not valid JSON"):
        load_configs(["news"], override)
    with pytest.raises(CpmError, match="no such config file"):
        load_configs(["news"], tmp_path / "missing.json")


def test_real_news_mostly_kept(zh_dir):
    from conftest import read_zst_lines

    lines = read_zst_lines(zh_dir / "people_daily_1998_paragraphs.txt.zst", 800)
    docs = ["\n".join(lines[i : i + 8]) for i in range(0, len(lines), 8)]
    config = default_config("news")
    kept = sum(isinstance(clean_record(record(d), config), RawRecord) for d in docs)
    assert kept >= 0.9 * len(docs)


def _normalize_whitespace_in_full(text: str) -> str:
    """normalize_whitespace's three passes, without its check for text that is already normalised."""
    import re

    text = re.sub("[\r\u2028\u2029\u0085\u000b\u000c]", "\n", text.replace("\r\n", "\n"))
    text = re.sub(r"[^\S\n]+", " ", text)
    return "\n".join(line for line in (l.strip() for l in text.split("\n")) if line)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("中文a。中文a。 \n \n\t\r\u3000\u00a0\u2028\u0085\x0b\x1c\u200b")), max_size=30))
@example("段落 \n段落")  # a line that ends with a space
@example("段落\n 段落")
@example("段落  段落")
@example("段落\n\n段落")  # a blank line
@example("\n段落")
@example("段落\u3000")
def test_whitespace_skips_only_text_that_is_already_normalised(text):
    expected = _normalize_whitespace_in_full(text)
    assert normalize_whitespace(text) == expected
    assert normalize_whitespace(expected) is expected  # the normalised form is returned as it is
