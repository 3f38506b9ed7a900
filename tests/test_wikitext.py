"""Wikitext rendering: the template table, the math policy, boilerplate sections, and 20 real articles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cpm.pipeline.readers.wiki_templates import TEMPLATES, Arguments, render_template
from cpm.pipeline.readers.wikitext import BOILERPLATE_SECTIONS, render_templates, wikitext_to_text

ZHWIKI = Path(__file__).resolve().parents[1] / "bench" / "data" / "zhwiki"


@pytest.mark.parametrize(
    ("wikitext", "text"),
    [
        ("WebDAV由互联网工程任务组的工作组在{{IETF RFC|4918}}中定义。", "WebDAV由互联网工程任务组的工作组在RFC 4918中定义。"),
        ("见{{RFC|2616}}。", "见RFC 2616。"),
        ("'''加速器'''（{{lang|en|Accelerator}}）", "加速器（Accelerator）"),
        ("'''面容ID'''（{{lang-en|'''Face ID'''}}）", "面容ID（英语：Face ID）"),
        ("東京（{{lang-ja|東京}}）", "東京（日语：東京）"),
        ("（{{langx|fr|Paris}}）", "（法语：Paris）"),
        ("（{{lang-xyz|text}}）", "（text）"),  # a language without a name: the text alone
        ("就是{{link-en|艾克曼公式|Ackermann's formula}}，可以", "就是艾克曼公式，可以"),
        ("{{Link-ja|東京大学|東京大学}}", "東京大学"),
        ("一个{{le|臉部识别系统|Facial recognition system}}", "一个臉部识别系统"),
        ("单个{{le|原子性提交|atomic commit|原子性动作}}中", "单个原子性动作中"),
        ("{{ill|沃尔夫冈·约格劳|de|Wolfgang Yourgrau}}", "沃尔夫冈·约格劳"),
        ("{{ill|甲|en|A|lt=乙}}", "乙"),
        ("{{tsl|en|Congestion window|拥塞窗口}}", "拥塞窗口"),
        ("{{tsl|en|Fairness measure||公平原则}}", "公平原则"),
        ("{{tsl|en|FAST TCP}}", "FAST TCP"),
        ("全长{{convert|6300|km|mi}}。", "全长6300 km。"),
        ("{{convert|10|to|12|mi|km}}", "10至12 mi"),
        ("{{convert|3|-|5|m}}", "3–5 m"),
        ("是{{nowrap|后进先出}}的", "是后进先出的"),
        ("{{small|小字}}与{{nobr|不换行}}", "小字与不换行"),
        ("生于{{birth date|1944|5|14}}", "生于1944年5月14日"),
        ("发布于{{Start date and age|2017|08|28|df=yes}}", "发布于2017年8月28日"),
        ("{{death date and age|1990|1|2|1920|3|4}}", "1990年1月2日"),
        ("{{start date|1998}}", "1998年"),
        ("{{dts|2001-09-11}}", "2001年9月11日"),
        ("{{bd|1900年|1月1日|1990年|12月31日}}", "1900年1月1日—1990年12月31日"),
        ("使 {{mvar|G}} 是一个 {{math|p}} 阶群", "使 G 是一个 p 阶群"),
        ("{{abbr|UN|United Nations}}", "UN"),
        ("{{ruby|行|háng}}", "行（háng）"),
        ("{{quote|路漫漫其修远兮|屈原}}", "路漫漫其修远兮"),
        ("{{sic|hide=y|was| been}}", "wasbeen"),
        ("{{Javadoc:SE|package=java.lang|java/lang|Object}}", "Object"),
        ("{{Javadoc:SE|name=compareTo|java/lang|Comparable|compareTo(T)}}", "compareTo"),
        ("later{{snd}}see", "later – see"),
        ("{{formatnum:1000}}人", "1000人"),
        ("（{{lj|東京都}}）", "（東京都）"),
        ("{{transl|zh|Běijīng}}", "Běijīng"),
        ("{{font|text=字|color=red}}", "字"),
        ("{{audio|Zh-Beijing.ogg|北京}}", "北京"),
        ("{{nowrap|{{lang|en|nested}} 模板}}", "nested 模板"),
        ("{{nowrap|[[链接|标签]]}}", "标签"),
    ],
)
def test_prose_templates_render_their_visible_text(wikitext: str, text: str) -> None:
    assert wikitext_to_text(wikitext) == text


def test_every_other_template_renders_to_nothing() -> None:
    wikitext = "{{Infobox 城市|名称={{lang|zh|示例}}}}{{noteTA|G1=IT}}{{Reflist}}{{China-stub}}{{Cite web|url=x}}正文。"
    assert wikitext_to_text(wikitext) == "正文。"
    assert render_templates("a{{未知模板|{{lang|en|x}}}}b") == "ab"


def test_template_names_fold_case_and_underscores() -> None:
    assert render_template("Lang_en", Arguments(["x"])) is None  # not a lang-xx name: unknown
    assert render_template("Lang-en", Arguments(["x"])) == "英语：x"
    assert render_template("Birth_date_and_age", Arguments(["2000", "1", "2"])) == "2000年1月2日"
    assert all(name == name.lower() for name in TEMPLATES)


def test_the_sentences_of_the_issue_no_longer_break() -> None:
    assert wikitext_to_text("微软在IE8 Beta1中以“{{lang|en|activities}}”为名引进加速器。") == (
        "微软在IE8 Beta1中以“activities”为名引进加速器。"
    )
    assert wikitext_to_text("其书写方向为{{lang|en|left-to-right}}。") == "其书写方向为left-to-right。"
    assert "（）" not in wikitext_to_text("某物（{{noteTag|注}}）是一种东西。")  # brackets left empty go


def test_no_space_or_ascii_stop_is_left_beside_full_width_punctuation_where_refs_went() -> None:
    # both from real articles (介面_Java, 双重sinh-Gordon方程): the page shows "使用[1] 。" and "方程。[1]. [2]."
    assert wikitext_to_text("用来做回调函数使用<ref>{{cite web|url=http://a.b/c|title=T}}</ref> 。Java并不允许") == (
        "用来做回调函数使用。Java并不允许"
    )
    assert wikitext_to_text("是一个方程。<ref>书 甲</ref>. <ref>书 乙</ref> <ref>书 丙</ref>.\n\n下一段。") == "是一个方程。\n下一段。"
    assert wikitext_to_text("映射到集合 <math>S_2</math> ，且元素数量相同！.") == "映射到集合 S_2，且元素数量相同！"
    # ASCII text keeps its own punctuation, and a space before ASCII punctuation stays
    assert wikitext_to_text("Version 1.2. Then 3 . 4。") == "Version 1.2. Then 3 . 4。"
    assert wikitext_to_text("写作<nowiki>甲 。.</nowiki>即可") == "写作甲 。.即可"  # nowiki text is shown literally


def test_math_inline_kept_display_paragraphs_dropped() -> None:
    wikitext = (
        "设 <math>k=\\mathbb{R}</math> 或 <math>k=\\mathbb{C}</math>。\n"
        ":<math>H(s) = \\frac{1}{s}</math>\n\n"
        "<math>x^2</math>，\n\n"
        "会转换为以下的函数\n\n"
        "化学式<chem>H2O</chem>是水。"
    )
    assert wikitext_to_text(wikitext).split("\n") == [
        "设 k=\\mathbb{R} 或 k=\\mathbb{C}。",
        "会转换为以下的函数",
        "化学式H2O是水。",
    ]
    assert not re.search(r"而 或 。", wikitext_to_text("而 <math>a</math> 或 <math>b</math> 。"))


@pytest.mark.parametrize("heading", sorted(BOILERPLATE_SECTIONS))
def test_boilerplate_sections_go_with_their_subsections(heading: str) -> None:
    title = heading.replace("_", " ").title() if heading.isascii() else heading
    wikitext = f"正文。\n== {title} ==\n* [[甲]]\n=== 小节 ===\n乙\n== 历史 ==\n历史正文。"
    assert wikitext_to_text(wikitext).split("\n") == ["正文。", "历史", "历史正文。"]


def test_galleries_files_navboxes_and_tables_go() -> None:
    wikitext = (
        "正文[[File:a.jpg|thumb|说明[[链接]]]]。\n<gallery>\nb.jpg|图\n</gallery>\n"
        "{{Navbox|list1=[[甲]]}}\n{| class=wikitable\n| 表格 |}\n[[Category:类]]"
    )
    assert wikitext_to_text(wikitext) == "正文。"


def test_lines_of_one_paragraph_are_joined_as_on_the_page() -> None:
    wikitext = "第一行\n接着第二行，\nand English\nwords here。\n\n新段落\n* 列表项\n 预排版\n== 标题 ==\n正文<br/>换行"
    assert wikitext_to_text(wikitext).split("\n") == [
        "第一行接着第二行，and English words here。",
        "新段落",
        "列表项",
        "预排版",
        "标题",
        "正文",
        "换行",
    ]


def test_nowiki_content_is_shown_literally() -> None:
    wikitext = "写作<code><nowiki>[[链接|标签]]</nowiki></code>会显示为[[链接|标签]]。"
    assert wikitext_to_text(wikitext) == "写作[[链接|标签]]会显示为标签。"


def test_twenty_real_articles_keep_their_prose_and_lose_their_markup() -> None:
    """The bench's measure (bench/bench_wikitext.py) as a floor: >= 95% phrases, no residue."""
    import sys

    sys.path.insert(0, str(ZHWIKI.parents[1]))
    from bench_wikitext import load_articles, residue_of

    articles, expectations = load_articles()
    assert len(articles) >= 20
    phrases = kept = 0
    for name, wikitext in articles.items():
        text = wikitext_to_text(wikitext)
        flat = re.sub(r"\s*\n\s*", "", text)
        expected = expectations[name]
        phrases += len(expected["phrases"])
        kept += sum(p in text or p in flat for p in expected["phrases"])
        assert residue_of(text, expected) == [], name
    assert kept / phrases >= 0.95


def test_real_articles_wrapped_in_a_dump_read_end_to_end(tmp_path: Path) -> None:
    import bz2
    from xml.sax.saxutils import escape

    from cpm.pipeline.readers import read_input

    names = ["WebDAV", "面容ID", "加速器_IE"]
    pages = "".join(
        f"<page><title>{name}</title><ns>0</ns><id>{i + 1}</id><revision><id>{i + 10}</id>"
        f"<timestamp>2019-01-01T00:00:00Z</timestamp><text>{escape((ZHWIKI / f'{name}.wiki').read_text())}</text>"
        "</revision></page>"
        for i, name in enumerate(names)
    )
    dump = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"><siteinfo><dbname>zhwiki</dbname>'
        f"<base>https://zh.wikipedia.org/wiki/Wikipedia:首页</base></siteinfo>{pages}</mediawiki>"
    )
    path = tmp_path / "zhwiki-pages-articles.xml.bz2"
    path.write_bytes(bz2.compress(dump.encode()))
    records = list(read_input(str(path), "encyclopedia"))
    assert [r.id for r in records] == ["zhwiki-1", "zhwiki-2", "zhwiki-3"]
    webdav, face_id, accelerator = (r.text for r in records)
    assert "WebDAV由互联网工程任务组的工作组在RFC 4918中定义。" in webdav and "外部链接" not in webdav
    assert face_id.startswith("面容ID（英语：Face ID）是蘋果公司设计和发布的一个臉部识别系统")
    assert "以“activities”为名引进加速器" in accelerator and "（）" not in accelerator


def test_a_line_of_nowiki_text_alone_stays() -> None:
    assert wikitext_to_text("例如：\n\n<nowiki>[[条目]]</nowiki>\n\n<math>x</math>") == "例如：\n[[条目]]"
