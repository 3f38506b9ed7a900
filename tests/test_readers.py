"""Readers of ``cpm corpus build`` on the bundled samples and on broken inputs written to tmp files."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import random
import zlib
from collections import Counter
from pathlib import Path

import pytest
import zstandard
from apache_beam.io.localfilesystem import LocalFileSystem
from cpm.errors import CpmError
from cpm.pipeline.readers import (
    derived_id,
    detect_encoding,
    detect_format,
    is_chapter_heading,
    join_cjk_tokens,
    novel_title,
    read_input,
    render_dialog,
    render_qa,
    sample_inputs,
)
from cpm.pipeline.html_text import html_to_text
from cpm.pipeline.language import detect_language
from cpm.pipeline.records import RawRecord, Rejection
from cpm.pipeline.readers.wikitext import is_disambiguation, is_redirect, wikitext_to_text
from cpm.schemas import SOURCES

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "samples"


def read_all(path: str | Path, source: str, **kwargs) -> list[RawRecord | Rejection]:
    return list(read_input(str(path), source, **kwargs))


def kept(records: list[RawRecord | Rejection]) -> list[RawRecord]:
    return [r for r in records if isinstance(r, RawRecord)]


def rules(records: list[RawRecord | Rejection]) -> Counter:
    return Counter(r.rule for r in records if isinstance(r, Rejection))


def sample(source: str, name: str) -> str:
    matches = [p for p in sample_inputs(source) if p.endswith(name)]
    assert len(matches) == 1, (name, sample_inputs(source))
    return matches[0]


# --------------------------------------------------------------------------------- samples


def test_sample_inputs_cover_every_source_within_the_size_budget():
    total = 0
    for source in SOURCES:
        paths = sample_inputs(source)
        assert paths == sorted(paths) and paths
        assert all(os.path.isfile(p) and not p.endswith("README.md") for p in paths)
        total += sum(os.path.getsize(p) for p in paths)
    assert total <= 2 * 1024 * 1024
    assert (SAMPLES / "README.md").is_file()
    with pytest.raises(CpmError, match="unknown source"):
        sample_inputs("poetry")


def test_every_sample_reads_without_read_errors_and_with_unique_ids():
    ids = []
    for source in SOURCES:
        for path in sample_inputs(source):
            records = read_all(path, source)
            assert records, path
            assert "read_error" not in rules(records), path
            assert all(r.source == source and r.origin.startswith(path + ":") for r in records)
            ids += [r.id for r in kept(records)]
    assert len(ids) == len(set(ids))
    assert all(ids)


def test_mediawiki_dump_sample():
    path = sample("encyclopedia", "zhwiki-sample-pages-articles.xml.bz2")
    records = read_all(path, "encyclopedia")
    articles = kept(records)
    assert len(articles) == 26
    assert rules(records) == Counter({"redirect": 1, "disambiguation": 1, "non_article_namespace": 1})
    rejected = {r.rule: r for r in records if isinstance(r, Rejection)}
    assert rejected["redirect"].detail == "扬子江 -> 长江" and rejected["redirect"].id == "zhwiki-4001"
    assert rejected["disambiguation"].detail == "长城 (消歧义)"
    river = articles[0]
    assert river.id.startswith("zhwiki-") and river.title == "长江"
    assert river.url == "https://zh.wikipedia.org/wiki/长江"
    assert river.date == "2024-01-10T00:10:20Z"
    assert river.origin == f"{path}:page 1"
    text = river.text
    assert text.startswith("长江是中国第一长河")  # the infobox, the bold quotes and the link brackets are gone
    assert "\n河段划分\n" in text  # headings kept as their own line
    assert "著名的三峡位于" in text  # [[长江三峡|三峡]] -> 三峡
    for residue in ("{{", "}}", "[[", "]]", "<ref", "'''", "Category", "分类", "thumb", "参考文献", "外部链接", "cite"):
        assert residue not in text, residue
    by_title = {r.title: r.text for r in articles}
    assert "俗称“电脑”" in by_title["计算机"]  # -{zh-hans:电脑; zh-hant:電腦;}-
    assert "立春" not in by_title["二十四节气"].split("文化影响")[-1]  # the table went with its heading
    assert "<!--" not in by_title["长城"] and "&nbsp;" not in by_title["长城"]
    assert "建立自然保护区，连通被分割的栖息地" in by_title["大熊猫"].split("\n")  # list marker stripped


def test_wikitext_constructs():
    wikitext = """{{Infobox 城市|名称={{lang|zh|示例}}|人口={{formatnum:1000}}}}
'''示例城''' 是一座''虚构''的城市<ref name="a">{{cite web|url=http://x|title=y}}</ref>，位于[[河流|大河]]边<ref name="a"/>。<!-- 注释 -->
[[File:Example.jpg|thumb|[[示例城]]的[[夜景|夜晚景色]]]]
[[文件:另一张.png|缩略图]]
[[Image:Old.gif]] [[图像:旧图.gif|说明]]
== 历史 ==
{| class="wikitable"
| 年份 || {|
| 嵌套表格
|}
|}
示例城建于<span style="color:red">公元前</span>二世纪，见[https://example.org 官方网站]。
* 第一条
# 第二条
=== 空小节 ===
== 参考资料 ==
<references />
[[Category:城市]] [[分类:示例]] [[en:Example City]]"""
    text = wikitext_to_text(wikitext)
    assert text.split("\n") == [
        "示例城 是一座虚构的城市，位于大河边。",
        "历史",
        "示例城建于公元前二世纪，见官方网站。",
        "第一条",
        "第二条",
    ]
    assert is_redirect("#REDIRECT [[长江]]") and is_redirect("#重定向 [[长江]]") and not is_redirect("长江 #1")
    assert (
        is_disambiguation("x\n{{消歧义}}")
        and is_disambiguation("{{Disambig|geo}}")
        and is_disambiguation("{{disambig}}")
    )
    assert not is_disambiguation("{{Infobox}}")


def test_baike_jsonl_sample():
    records = read_all(sample("encyclopedia", "baike-sample.jsonl"), "encyclopedia")
    entries = kept(records)
    assert len(entries) == len(records) == 21
    assert entries[0].title == "银杏" and entries[0].text.startswith("银杏是一种落叶乔木")
    assert entries[0].meta == {"tags": ["百科", "示例"]}
    assert all(r.id.startswith("encyclopedia-") for r in entries)


def test_warc_sample():
    records = read_all(sample("webpage", "crawl-sample.warc.gz"), "webpage")
    pages = kept(records)
    assert len(pages) == 13
    assert rules(records) == Counter({"unsupported_content_type": 1})
    assert all(p.html and p.text is None for p in pages)
    first = pages[0]
    assert first.id.startswith("urn:uuid:") and first.url == "https://www.chifan-lab.cn/recipe/fanqie-chaodan.html"
    assert first.date == "2024-05-10T08:00:00Z" and first.meta["warc_type"] == "response"
    gbk = [p for p in pages if "gbk-shequ" in p.url][0]
    assert gbk.meta["charset"] == "gb18030" and "老街坊的茶馆记忆" in gbk.html


def test_html_to_text_removes_boilerplate():
    pages = kept(read_all(sample("webpage", "crawl-sample.warc.gz"), "webpage"))
    first = pages[0]
    text = html_to_text(first.html, first.url)
    assert text is not None
    assert "鸡蛋里加一点温水" in text and "配上一碗白米饭" in text
    for boilerplate in ("Cookie", "版权所有", "ICP", "热门文章", "登录", "分享到", "gtag", "上一篇", "广告"):
        assert boilerplate not in text, boilerplate
    assert "\n\n" not in text
    assert html_to_text("<html><body><script>var a=1;</script></body></html>") is None
    english = [p for p in pages if "example-garden" in p.url][0]
    assert detect_language(html_to_text(english.html, english.url))[0] == "en"
    language, probability = detect_language(text)
    assert language == "zh" and probability > 0.9
    assert detect_language("   ") == ("und", 0.0)


def test_wet_and_html_jsonl_samples():
    wet = read_all(sample("webpage", "crawl-sample.warc.wet.gz"), "webpage")
    assert len(kept(wet)) == len(wet) == 4
    assert all(r.text and r.html is None and r.meta["warc_type"] == "conversion" for r in wet)
    assert "旧衣服别扔" in wet[0].text and wet[0].url.startswith("https://")
    pages = read_all(sample("webpage", "pages.jsonl"), "webpage")
    assert len(kept(pages)) == len(pages) == 9
    assert all(r.html and r.url and r.text is None and r.meta == {"fetched": r.meta["fetched"]} for r in pages)


def test_novels_in_gb18030_big5_and_utf8():
    journey = read_all(sample("story", "西游记.gb18030.txt"), "story")
    assert all(r.meta["encoding"] == "gb18030" and r.meta["novel"] == "西游记" for r in journey)
    assert [r.title for r in journey] == [
        "西游记",
        "第一回 灵根育孕源流出 心性修持大道生",
        "第二回 悟彻菩提真妙理 断魔归本合元神",
        "第三回 四海千山皆拱伏 九幽十类尽除名",
    ]
    assert journey[1].text.startswith("诗曰：\n混沌未分天地乱") and "\r" not in journey[1].text
    outlaws = read_all(sample("story", "水滸傳.big5.txt"), "story")
    assert all(r.meta["encoding"] == "big5" and r.meta["novel"] == "水滸傳" for r in outlaws)
    assert outlaws[1].title.startswith("第一回") and "話說大宋仁宗天子在位" in outlaws[1].text
    lighthouse = read_all(sample("story", "海边的灯塔.txt"), "story")
    assert lighthouse[0].meta["encoding"] == "utf-8"
    assert [r.title for r in lighthouse[1:]] == [
        "第1章 回到小岛",
        "第2章 灯塔里的旧日志",
        "第3章 台风来临",
        "第4章 海上的光",
        "第5章 新的开始",
    ]
    with_bom = read_all(sample("story", "山城旧事.txt"), "story")
    assert with_bom[0].meta["encoding"] == "utf-8-sig" and with_bom[0].text.startswith("山城旧事")
    assert with_bom[1].title == "第一章 雾" and len(with_bom) == 11
    postman = read_all(sample("story", "小镇邮递员.txt"), "story")
    assert [r.title for r in postman][1:3] == ["第一节 绿色的自行车", "第二节 不识字的王婶"]
    bakery = read_all(sample("story", "星期天的面包店.txt.gz"), "story")
    assert bakery[0].meta["novel"] == "星期天的面包店" and bakery[-1].title == "第十章 又一个星期天"
    lane = read_all(sample("story", "青石巷.gbk.txt"), "story")
    assert lane[0].meta == {"novel": "青石巷", "encoding": "gb18030", "part": 1} and lane[1].title == "第一章 搬家"
    watches = read_all(sample("story", "修表铺.txt.zst"), "story")
    assert [r.title for r in watches] == [
        "修表铺",
        "第一章 钟表声",
        "第二章 一块旧手表",
        "第三章 找零件",
        "第四章 走起来了",
        "第五章 时间走路的声音",
    ]


def test_long_chapters_split_at_paragraph_boundaries():
    path = sample("story", "海边的灯塔.txt")
    whole = kept(read_all(path, "story"))
    parts = kept(read_all(path, "story", max_chapter_chars=300))
    assert len(parts) > len(whole)
    assert all(len(p.text) <= 300 for p in parts)
    for chapter in whole:
        pieces = [p for p in parts if p.title == chapter.title]
        assert [p.meta["part"] for p in pieces] == list(range(1, len(pieces) + 1))
        assert "\n".join(p.text for p in pieces) == chapter.text


def test_news_jsonl_sample():
    records = read_all(sample("news", "news-sample.jsonl"), "news")
    assert rules(records) == Counter({"malformed_json": 1, "missing_text": 1})
    articles = kept(records)
    assert len(articles) == 49
    first = articles[0]
    assert first.id == "cityd-20240318-001" and first.title == "城东新建社区图书馆正式开放"
    assert first.date == "2024-03-18" and first.url.startswith("https://news.example-city.cn/")
    assert first.meta == {"section": "本地"}
    broken = [r for r in records if isinstance(r, Rejection) and r.rule == "malformed_json"][0]
    assert broken.origin.endswith("news-sample.jsonl:9") and broken.text.startswith('{"id": "cityd-broken"')
    missing = [r for r in records if isinstance(r, Rejection) and r.rule == "missing_text"][0]
    assert missing.id == "cityd-notext"


def test_thucnews_files():
    paths = [p for p in sample_inputs("news") if "/thucnews/" in p]
    assert len(paths) == 9
    for path in paths:
        assert detect_format(path, Path(path).read_bytes()[:1000]) == "thucnews_txt"
        (record,) = read_all(path, "news")
        assert record.meta["category"] == Path(path).parent.name
        assert record.title and "\n" not in record.title and record.text and not record.text.startswith("　")
    categories = {read_all(p, "news")[0].meta["category"] for p in paths}
    assert categories == {"体育", "财经", "科技"}


def test_dialog_samples_and_turn_format():
    qa = read_all(sample("dialog", "qa-sample.jsonl"), "dialog")
    first = qa[0]
    assert first.text.split("\n") == [
        "问：地铁上可以带折叠自行车吗？",
        "答：大多数城市允许乘客携带折叠好的自行车进站，但要求尺寸不超过规定，而且在早晚高峰时段可能会受到限制，出发前最好查看当地地铁的乘客守则。",
        "答：折叠好、装进袋子里一般没问题，别在高峰期带就行。",
    ]
    assert first.meta == {"category": "生活"}
    assert len(qa) == 37 and qa[-1].text == "问：？"
    lccc = read_all(sample("dialog", "lccc-sample.jsonl"), "dialog")
    assert len(lccc) == 37 and all(" " not in r.text for r in lccc)
    assert lccc[0].text == "甲：今天下班好早啊\n乙：是啊，难得不加班\n甲：那一起去吃火锅吧\n乙：好，我知道一家新开的店"
    assert join_cjk_tokens("我 也 是 ！ 用 iPhone 15 拍 的") == "我也是！用 iPhone 15 拍的"
    assert render_dialog(["a", " ", "b c", "d"]) == "甲：a\n乙：b c\n甲：d"
    assert render_qa("为 什么 ？", [{"text": "因为 。"}, "", None]) == "问：为什么？\n答：因为。"


# --------------------------------------------------------------------------------- bad input


def write_jsonl(path: Path, rows: list[dict]) -> bytes:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    path.write_bytes(data)
    return data


def test_jsonl_bad_lines_are_rejections_and_the_file_goes_on(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps({"text": "第一条", "id": 7}).encode()
        + b"\r\n"
        + b'{"text": "\xe4\xb8\xad\xff"}\n'
        + b'{"text": "broken\n'
        + b"\n"
        + b'["a", "list"]\n'
        + json.dumps({"title": "no text", "text": "  "}).encode()
        + b"\n"
        + json.dumps({"content": "用 content 字段", "author": "x"}, ensure_ascii=False).encode()
        + b"\n"
    )
    records = read_all(path, "news")
    assert [getattr(r, "rule", "kept") for r in records] == [
        "kept",
        "invalid_utf8",
        "malformed_json",
        "malformed_json",
        "missing_text",
        "kept",
    ]
    assert [r.origin.rsplit(":", 1)[1] for r in records] == ["1", "2", "3", "5", "6", "7"]
    assert records[0].id == "7" and records[0].text == "第一条"
    assert records[5].text == "用 content 字段" and records[5].meta == {"author": "x"}
    assert records[5].id == derived_id("news", str(path), 7, "用 content 字段")


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".zst"])
def test_truncated_compressed_file_keeps_the_records_before_the_break(tmp_path, suffix):
    rng = random.Random(0)
    rows = [{"text": f"第{i}条记录，" + "".join(rng.choices("天地玄黄宇宙洪荒日月盈昃", k=200))} for i in range(3000)]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    if suffix == ".gz":
        compressed = gzip.compress(data)
    elif suffix == ".bz2":
        compressed = bz2.compress(data, compresslevel=1)  # 100 kB blocks: a cut keeps whole blocks
    else:
        compressed = zstandard.ZstdCompressor(level=1).compress(data)
    whole = tmp_path / f"whole.jsonl{suffix}"
    whole.write_bytes(compressed)
    assert len(read_all(whole, "news")) == 3000 and not rules(read_all(whole, "news"))
    cut = tmp_path / f"cut.jsonl{suffix}"
    cut.write_bytes(compressed[: len(compressed) * 2 // 3])
    records = read_all(cut, "news")
    assert rules(records) == Counter({"truncated_file": 1})
    assert isinstance(records[-1], Rejection) and records[-1].rule == "truncated_file"
    good = kept(records)
    assert 500 < len(good) < 3000
    assert [r.text for r in good] == [r["text"] for r in rows[: len(good)]]
    assert records[-1].origin == f"{cut}:{len(good) + 1}"


def test_concatenated_gzip_members_and_compression_by_magic(tmp_path):
    path = tmp_path / "two-members.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "one"}\n') + gzip.compress(b'{"text": "two"}\n'))
    assert [r.text for r in read_all(path, "news")] == ["one", "two"]
    misnamed = tmp_path / "really-gzip.jsonl"
    misnamed.write_bytes(gzip.compress(b'{"text": "three"}\n'))
    assert [r.text for r in read_all(misnamed, "news")] == ["three"]


def test_empty_binary_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    blank_gz = tmp_path / "blank.jsonl.gz"
    blank_gz.write_bytes(gzip.compress(b"\n \n"))
    for path in (empty, blank_gz):
        (rejection,) = read_all(path, "dialog")
        assert rejection.rule == "empty_file" and rejection.origin == f"{path}:1"
    png = tmp_path / "picture.jsonl"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    nul = tmp_path / "data.txt"
    nul.write_bytes(b"text\x00with nul")
    for path in (png, nul):
        (rejection,) = read_all(path, "story")
        assert rejection.rule == "binary_file"
    with pytest.raises(CpmError, match="nope.jsonl"):
        read_all(tmp_path / "nope.jsonl", "news")
    with pytest.raises(CpmError, match="unknown source"):
        read_all(empty, "poetry")


def test_single_html_file(tmp_path):
    path = tmp_path / "saved page.html"
    path.write_bytes('<html><head><meta charset="gbk"></head><body><p>老街的茶馆</p></body></html>'.encode("gbk"))
    (record,) = read_all(path, "webpage")
    assert "老街的茶馆" in record.html and record.meta == {"charset": "gb18030"} and record.text is None


def test_plain_text_for_a_source_without_a_text_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("一些没有格式的文字。\n", encoding="utf-8")
    (rejection,) = read_all(path, "dialog")
    assert rejection.rule == "unsupported_format"


def test_oversized_single_line_document_is_streamed_not_held(tmp_path):
    path = tmp_path / "huge.jsonl"
    block = ("长" * 1000).encode()
    with open(path, "wb") as f:
        f.write(b'{"text": "small"}\n{"text": "')
        for _ in range(50 * 1024 * 1024 // len(block)):
            f.write(block)
        f.write(b'"}\n{"text": "after"}\n')
    records = read_all(path, "webpage")
    assert [getattr(r, "rule", "kept") for r in records] == ["kept", "oversized_record", "kept"]
    oversized = records[1]
    assert oversized.origin == f"{path}:2"
    assert len(oversized.text) == 1000 and oversized.text.startswith('{"text": "长长')
    assert "first 1000 characters" in oversized.detail and "max_record_chars=5000000" in oversized.detail
    assert records[2].text == "after"
    # under the byte bound but over the character bound
    small = tmp_path / "chars.jsonl"
    write_jsonl(small, [{"text": "字" * 300}, {"text": "ok"}])
    assert [getattr(r, "rule", "kept") for r in read_all(small, "news", max_record_chars=200)] == [
        "oversized_record",
        "kept",
    ]


def test_malformed_xml_keeps_the_pages_before_it(tmp_path):
    page = (
        "<page><title>{t}</title><ns>0</ns><id>{i}</id>"
        "<revision><id>9{i}</id><timestamp>2024-01-01T00:00:00Z</timestamp><text>{t}是一个条目。</text></revision></page>\n"
    )
    xml = (
        "<mediawiki><siteinfo><dbname>testwiki</dbname></siteinfo>\n"
        + page.format(t="甲", i=1)
        + page.format(t="乙", i=2)
        + "<page><title>丙</title><ns>0</ns><oops></page>\n"
    )
    path = tmp_path / "broken-pages-articles.xml"
    path.write_text(xml, encoding="utf-8")
    records = read_all(path, "encyclopedia")
    assert [r.id for r in kept(records)] == ["testwiki-1", "testwiki-2"]
    assert kept(records)[0].url is None and kept(records)[0].text == "甲是一个条目。"
    assert records[-1].rule == "malformed_xml" and records[-1].origin == f"{path}:4"
    assert "2 pages before it were kept" in records[-1].detail


def middle_of_a_gzip_member(data: bytes) -> int:
    """An offset inside the gzip member that spans the middle of ``data``."""
    start = 0
    while True:
        decompressor = zlib.decompressobj(wbits=31)
        decompressor.decompress(data[start:])
        end = len(data) - len(decompressor.unused_data)
        if end > len(data) // 2:
            return (start + end) // 2
        start = end


def test_truncated_bz2_dump_and_warc(tmp_path):
    page = (
        "<page><title>条目{i}</title><ns>0</ns><id>{i}</id>"
        "<revision><timestamp>2024-01-01T00:00:00Z</timestamp><text>{body}</text></revision></page>\n"
    )
    rng = random.Random(3)
    xml = (
        "<mediawiki>\n"
        + "".join(page.format(i=i, body="".join(rng.choices("山川河流湖海平原丘陵", k=2000))) for i in range(200))
        + "</mediawiki>\n"
    )
    compressed = bz2.compress(xml.encode(), compresslevel=1)
    path = tmp_path / "cut-pages-articles.xml.bz2"
    path.write_bytes(compressed[: len(compressed) // 2])
    records = read_all(path, "encyclopedia")
    assert records[-1].rule == "truncated_file" and 0 < len(kept(records)) < 200
    warc = Path(sample("webpage", "crawl-sample.warc.gz")).read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(warc[: middle_of_a_gzip_member(warc)])  # a cut between members would be a valid file
    records = read_all(cut, "webpage")
    assert records[-1].rule == "truncated_file" and 0 < len(kept(records)) < 13


# --------------------------------------------------------------------------------- detection and ids


TEXT = "话说天下大势，分久必合，合久必分。这是我们在学校里学过的一段文字，大家都说这个故事很有意思。" * 20


def test_encoding_detection():
    assert detect_encoding(TEXT.encode("utf-8")) == "utf-8"
    assert detect_encoding(b"\xef\xbb\xbf" + TEXT.encode("utf-8")) == "utf-8-sig"
    assert detect_encoding(TEXT.encode("gb18030")) == "gb18030"
    assert detect_encoding(TEXT.encode("gbk")) == "gb18030"
    traditional = "話說天下大勢，分久必合，合久必分。這是我們在學校裡學過的一段文字，大家都說這個故事很有意思。" * 20
    assert detect_encoding(traditional.encode("big5")) == "big5"
    # a multi-byte character cut at the end of the head does not break the UTF-8 guess
    assert detect_encoding(TEXT.encode("utf-8")[:100]) == "utf-8"


def test_novel_encodings_from_tmp_files(tmp_path):
    novel = "第一章　开端\n" + TEXT + "\n第二章　结局\n" + TEXT + "\n"
    for encoding, expected in (("gb18030", "gb18030"), ("big5", "big5"), ("utf-8", "utf-8")):
        text = (
            novel
            if encoding != "big5"
            else novel.replace("话说", "話說")
            .replace("这是我们", "這是我們")
            .replace("学", "學")
            .replace("过", "過")
            .replace("说这个", "說這個")
            .replace("里", "裡")
            .replace("开端", "開端")
            .replace("结局", "結局")
            .replace("字", "字")
            .replace("大势", "大勢")
        )
        path = tmp_path / f"故事-{encoding}.txt.gz"
        path.write_bytes(gzip.compress(text.encode(encoding)))
        records = read_all(path, "story")
        assert [r.meta["encoding"] for r in records] == [expected, expected]
        assert records[0].meta["novel"] == "故事" and records[0].text.startswith(
            TEXT[:10] if encoding != "big5" else "話說"
        )


def test_chapter_headings_and_titles():
    for heading in (
        "第一回　灵根育孕源流出",
        "第1章 风起",
        "第十二章",
        "第二节：总则",
        "第１０章 海",
        "第一百二十回 终",
    ):
        assert is_chapter_heading(heading), heading
    for line in ("第三回合他就输了，", "第一章的内容是这样的。", "他说第一章写得好", "第一天", "第三回合，他赢了"):
        assert not is_chapter_heading(line), line
    assert novel_title("gs://bucket/novels/《西游记》.gb18030.txt.gz") == "西游记"
    assert novel_title("/x/水滸傳.big5.txt") == "水滸傳"


def test_detect_format():
    assert detect_format("a.jsonl", b'{"text": 1}') == "jsonl"
    assert detect_format("a.json.gz", b"  \n") == "jsonl"
    assert detect_format("x.xml", b'<?xml version="1.0"?>\n<mediawiki xmlns="...">') == "mediawiki_xml"
    assert detect_format("zhwiki-pages-articles.xml.bz2", b"<mediawiki>") == "mediawiki_xml"
    assert detect_format("c.warc.gz", b"WARC/1.0\r\nWARC-Type: warcinfo\r\n") == "warc"
    assert detect_format("c.warc.wet.gz", b"WARC/1.0\r\nWARC-Type: warcinfo\r\n") == "wet"
    assert detect_format("c.gz", b"WARC/1.0\r\nWARC-Type: conversion\r\n") == "wet"
    assert detect_format("体育/12345.txt", "标题\n正文".encode()) == "thucnews_txt"
    assert detect_format("体育/title.txt", "标题\n正文".encode(), source="news") == "thucnews_txt"
    assert detect_format("book.txt", "序\n第一章 始\n正文".encode()) == "text_novel"
    assert detect_format("book.txt", "随便一段话".encode(), source="story") == "text_novel"
    assert detect_format("notes.txt", "随便一段话".encode()) == "text"
    assert detect_format("page.htm", b"<div>") == "html" and detect_format("x", b"<!DOCTYPE html><html>") == "html"


def test_derived_ids_are_stable_and_unique(tmp_path):
    first = derived_id("news", "/data/a/part-1.jsonl", 3, "同样的文字")
    assert first == derived_id(
        "news", "gs://bucket/a/part-1.jsonl", 3, "同样的文字"
    )  # only the last two path parts count
    assert first == "news-" + first[5:] and len(first) == len("news-") + 16
    assert first == "news-b25cd3bedd356989"  # pinned: ids must not change between releases
    assert derived_id("news", "/data/a/part-1.jsonl", 4, "同样的文字") != first
    assert derived_id("news", "/data/a/part-2.jsonl", 3, "同样的文字") != first
    assert derived_id("news", "/data/体育/0.txt", 1, "x") != derived_id("news", "/data/财经/0.txt", 1, "x")
    assert derived_id("story", "/data/a/part-1.jsonl", 3, "同样的文字") != first
    path = tmp_path / "dupes.jsonl"
    write_jsonl(path, [{"text": "一模一样"}] * 3)
    ids = [r.id for r in read_all(path, "dialog")]
    assert len(set(ids)) == 3 and ids == [r.id for r in read_all(path, "dialog")]


class _RecordingFileSystem(LocalFileSystem):
    """Beam's local file system under the scheme ``cpmtest://``, which only Beam can resolve;
    it records every file it opens."""

    opened: list = []

    @classmethod
    def scheme(cls) -> str:
        return "cpmtest"

    def exists(self, path: str) -> bool:
        return super().exists(path.removeprefix("cpmtest://"))

    def open(self, path: str, *args, **kwargs):
        handle = super().open(path.removeprefix("cpmtest://"), *args, **kwargs)
        self.opened.append(handle)
        return handle


def test_read_input_opens_through_beam_filesystems(tmp_path):
    """A path of a file system registered with Beam is read; closing the generator early closes the file."""
    path = tmp_path / "x.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "zstd"}\n{"text": "second"}\n'))
    url = f"cpmtest://{path}"
    _RecordingFileSystem.opened.clear()
    generator = read_input(url, "news")
    first = next(generator)
    assert first.text == "zstd" and first.origin.startswith(url)
    [handle] = _RecordingFileSystem.opened
    assert not handle.closed
    generator.close()
    assert handle.closed
    assert [r.text for r in read_input(url, "news")] == ["zstd", "second"]
    assert len(_RecordingFileSystem.opened) == 2 and _RecordingFileSystem.opened[1].closed
    with pytest.raises(CpmError, match="no such input file"):
        next(read_input(f"cpmtest://{tmp_path}/missing.jsonl", "news"))


def test_wikitext_variant_flags_and_unclosed_templates() -> None:
    from cpm.pipeline.readers.wikitext import wikitext_to_text

    # a hidden conversion rule (H) shows nothing; an added rule (A) shows its simplified variant
    assert wikitext_to_text("软件-{H|zh-cn:软件;zh-tw:軟體}-很好。") == "软件很好。"
    assert wikitext_to_text("-{A|zh-cn:计算机;zh-tw:電腦}-也好") == "计算机也好"
    assert wikitext_to_text("-{R|zh-tw:原文}-") == "zh-tw:原文"
    # MediaWiki shows an unclosed "{{" literally: the rest of the article is kept
    assert wikitext_to_text("前文{{模板|x}}中间{{未闭合 后面的文字{{ok}}结尾") == "前文中间未闭合 后面的文字结尾"
