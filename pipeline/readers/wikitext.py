"""Wikitext -> the plain text a reader sees on the page, for MediaWiki dumps (zhwiki).

What :func:`wikitext_to_text` does, in order:

* keeps the content of ``<nowiki>`` literally; drops HTML comments, ``<ref>…</ref>`` /
  ``<ref …/>``, and the content of ``<gallery>``, ``<timeline>``, ``<score>``,
  ``<syntaxhighlight>``/``<source>``, ``<imagemap>`` tags;
* ``<math>``/``<chem>``: a formula inside a sentence keeps its TeX source inline (whitespace
  collapsed), so no sentence loses its subject or object; a paragraph made of formulas only
  (display math, ``:<math>…</math>``) is dropped;
* renders the prose-carrying templates to their visible text and drops every other template
  (nested ones too, so infoboxes and navboxes go): the table is in :mod:`.wiki_templates`;
* drops tables ``{|…|}`` (nested);
* resolves zhwiki language-variant markup ``-{zh-hans:计算机; zh-hant:電腦}-`` to the
  simplified variant (``-{text}-`` to ``text``);
* drops file/image links with their captions (``[[File:…]]``, ``[[文件:…]]``, ``[[Image:…]]``,
  ``[[图像:…]]`` … even with links nested in the caption), category links and interlanguage
  links; turns ``[[target|label]]`` into ``label`` and ``[[target]]`` into ``target``; external
  links ``[http://… label]`` into ``label``;
* strips ``'''bold'''`` / ``''italic''`` quotes, remaining HTML tags, magic words
  (``__TOC__``), HTML entities, brackets left empty or unmatched by what went, and what dropped
  references leave around full-width punctuation (a space before ``。``, an ASCII ``.`` after it);
* joins the lines of one paragraph (a single newline is no break on the page: nothing is put
  next to a CJK character, a space between two others);
* keeps headings ``== x ==`` as their own line ``x`` (a heading whose section is empty is
  dropped); drops the boilerplate sections whole (:data:`BOILERPLATE_SECTIONS`: 参见, 外部链接,
  参考文献, 参考资料, 注释, 脚注, 延伸阅读, 相关条目 … and their English forms) with their
  subsections; strips list markers ``*``, ``#``, ``:``, ``;`` at line start.

Paragraphs of the result are separated by a single ``"\\n"``, as in the document shards.
"""

from __future__ import annotations

import html
import re

from cpm.pipeline.readers.wiki_templates import Arguments, is_listed, render_template

FILE_NAMESPACES = {"file", "image", "media", "文件", "檔案", "档案", "图像", "圖像", "图片", "圖片", "媒体", "媒體"}
CATEGORY_NAMESPACES = {"category", "分类", "分類"}
# Interlanguage links look like [[en:Foo]]; a short lowercase language code before the colon.
_INTERLANGUAGE = re.compile(r"^[a-z]{2,3}(?:-[a-z]{2,8})*$")

DISAMBIGUATION_TEMPLATES = {
    "disambig",
    "disambiguation",
    "dab",
    "disamb",
    "hndis",
    "geodis",
    "消歧义",
    "消歧義",
    "消歧义页",
    "消歧義頁",
    "disambig-cleanup",
    "shortpages",
}
_REDIRECT = re.compile(r"^\s*#\s*(redirect|重定向)\b", re.IGNORECASE)
_TEMPLATE_NAME = re.compile(r"\{\{\s*([^|{}\n]+?)\s*(?:\||\}\})")

_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_REF_SELF_CLOSING = re.compile(r"<ref\b[^>]*/\s*>", re.IGNORECASE)
_REF = re.compile(r"<ref\b[^>]*>.*?(?:</ref\s*>|$)", re.IGNORECASE | re.DOTALL)
_DROPPED_TAGS = re.compile(
    r"<(gallery|timeline|score|syntaxhighlight|source|imagemap|references)\b[^>]*>.*?</\1\s*>",
    re.IGNORECASE | re.DOTALL,
)
_NOWIKI = re.compile(r"<nowiki\s*>(.*?)</nowiki\s*>|<nowiki\s*/>", re.IGNORECASE | re.DOTALL)
_MATH = re.compile(r"<(math|chem|ce)\b[^>]*>(.*?)</\1\s*>", re.IGNORECASE | re.DOTALL)
_KEPT = re.compile("[\ue000\ue002](\\d+)\ue001")  # a placeholder: \ue000 a formula, \ue002 nowiki text
_PLACEHOLDER_CHARS = re.compile("[\ue000-\ue002]")  # private-use: never taken from the input
_FORMULA_ONLY = re.compile(r"^(?:\ue000\d+\ue001|[\s:;,.，。；：、])*$")
_EMPTY_BRACKETS = re.compile(r"[（(][\s，,、；;：:]*[）)]")
_STRAY = re.compile(r"\[\[|\]\]|\{\{|\}\}")
# Left where references or templates stood: a space before full-width punctuation ("使用<ref/> 。"), and
# ASCII stops after a full-width one ("方程。<ref/>. <ref/>.").
_SPACE_BEFORE_FULLWIDTH = re.compile(r"[ \t]+(?=[，。、；：！？])")
_STOP_AFTER_FULLWIDTH = re.compile(r"(?<=[。！？])(?:[ \t]*\.)+")
BOILERPLATE_SECTIONS = frozenset(
    """参见 參見 参看 參看 另见 另見 相关条目 相關條目 相关词条 相關詞條 外部链接 外部連結 外部連接 外部链结
    参考文献 參考文獻 参考资料 參考資料 参考 參考 参考来源 參考來源 资料来源 資料來源 来源 來源 引用 注释 註釋 注解
    註解 脚注 腳註 延伸阅读 延伸閱讀 扩展阅读 擴展閱讀 相关链接 相關連結 书目 書目
    see_also external_links references notes footnotes further_reading bibliography sources citations""".split()
)
_REFERENCES_TAG = re.compile(r"<references\b[^>]*/\s*>", re.IGNORECASE)
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")
_VARIANT = re.compile(r"-\{([^{}]*)\}-")
_INNER_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.DOTALL)
_INNER_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]+(?:\s+([^\]]*))?\]")
_BOLD_ITALIC = re.compile(r"'{2,5}")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_HEADING = re.compile(r"^(={1,6})\s*(.*?)\s*\1\s*$")
_LIST_MARKER = re.compile(r"^[*#:;]+\s*")


def is_redirect(wikitext: str) -> bool:
    """True for a redirect page (``#REDIRECT [[…]]`` or ``#重定向 [[…]]``)."""
    return bool(_REDIRECT.match(wikitext))


def is_disambiguation(wikitext: str) -> bool:
    """True for a disambiguation page (``{{disambig}}``, ``{{消歧义}}``, ``{{Disambig|…}}`` …)."""
    for match in _TEMPLATE_NAME.finditer(wikitext):
        if match.group(1).strip().lower().replace("_", " ") in DISAMBIGUATION_TEMPLATES:
            return True
    return False


_BRACES = re.compile(r"\{\{|\}\}")
_ARGUMENT_MARKS = re.compile(r"\{\{|\}\}|\[\[|\]\]|\|")
_NAMED = re.compile(r"^\s*([^=\[\]{}<>|]{1,40}?)\s*=(.*)$", re.DOTALL)


def render_templates(text: str) -> str:
    """Replace every ``{{…}}`` (nested ones too) by its visible text (:mod:`.wiki_templates`).

    Listed templates render their arguments (templates inside them rendered first); every other
    template renders to nothing, so infoboxes and navboxes go whole. An unclosed ``{{`` is shown
    literally by MediaWiki, so only those two braces are dropped and the text after them is kept.
    """
    if "{{" not in text:
        return text
    out: list[str] = []
    depth = 0
    start = 0
    opened = 0
    for mark in _BRACES.finditer(text):
        if mark.group() == "{{":
            if depth == 0:
                out.append(text[start : mark.start()])
                opened = mark.start()
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                out.append(_render(text[opened + 2 : mark.start()]))
                start = mark.end()
    if depth:
        out.append(render_templates(text[opened + 2 :]))
    else:
        out.append(text[start:])
    return "".join(out)


def _split_arguments(body: str) -> list[str]:
    """``a|[[b|c]]|{{d|e}}`` -> ``["a", "[[b|c]]", "{{d|e}}"]``: bars inside links and templates stay."""
    parts: list[str] = []
    depth = 0
    start = 0
    for mark in _ARGUMENT_MARKS.finditer(body):
        token = mark.group()
        if token in ("{{", "[["):
            depth += 1
        elif token in ("}}", "]]"):
            depth = max(depth - 1, 0)
        elif depth == 0:
            parts.append(body[start : mark.start()])
            start = mark.end()
    parts.append(body[start:])
    return parts


def _render(body: str) -> str:
    name, bar, rest = body.partition("|")
    name = name.strip()
    if not is_listed(name):
        head, colon, value = name.partition(":")
        return value.strip() if colon and head.strip().lower() == "formatnum" else ""
    args = Arguments()
    for part in _split_arguments(rest) if bar else []:
        named = _NAMED.match(part)
        if named:
            args.named[named.group(1).strip().lower()] = render_templates(named.group(2)).strip()
        else:
            args.positional.append(render_templates(part).strip())
    return render_template(name, args) or ""


_VARIANT_FLAGS = re.compile(r"^\s*([A-Za-z\-;\s]{1,12})\|(.*)$", re.DOTALL)


def _resolve_variant(match: re.Match[str]) -> str:
    body = match.group(1)
    flagged = _VARIANT_FLAGS.match(body)
    if flagged:  # -{FLAGS|…}-: H (hidden rule), T (title), D (delete), - (remove) show nothing; R is raw
        flags, body = set(flagged.group(1)), flagged.group(2)
        if flags & {"H", "T", "D", "-"}:
            return ""
        if "R" in flags:
            return body
    if ":" not in body and "：" not in body:
        return body
    variants: dict[str, str] = {}
    for part in body.split(";"):
        if ":" in part:
            code, _, value = part.partition(":")
            variants[code.strip().lower()] = value.strip()
    for code in ("zh-hans", "zh-cn", "zh", "zh-sg", "zh-hant", "zh-tw", "zh-hk"):
        if code in variants:
            return variants[code]
    return next(iter(variants.values()), "")


def resolve_variants(text: str) -> str:
    """``-{zh-hans:计算机; zh-hant:電腦}-`` -> ``计算机`` (the simplified variant), ``-{text}-`` -> ``text``."""
    return _VARIANT.sub(_resolve_variant, text)


def link_text(target: str, label: str | None) -> str:
    """What ``[[target|label]]`` (``label`` None: ``[[target]]``) shows; nothing for files, categories, interlanguage links."""
    prefix, colon, _ = target.partition(":")
    if colon:
        namespace = prefix.strip().lstrip(":").lower()
        if namespace in FILE_NAMESPACES or namespace in CATEGORY_NAMESPACES:
            return ""
        if _INTERLANGUAGE.match(prefix.strip()) and not target.startswith(":"):
            return ""
    if label is not None:
        return label.strip() if label.strip() else target.split("#")[0].strip()
    page = target.lstrip(":").split("#")[0].strip()
    return page or target.strip("#: ")  # [[#section]] links to a section of the same page


def _resolve_link(match: re.Match[str]) -> str:
    target, bar, label = match.group(1).partition("|")
    return link_text(target, label if bar else None)


def _heading_key(title: str) -> str:
    return "_".join(title.replace("'", "").lower().split())


def _drop_boilerplate(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Drop the boilerplate sections (see also, references, external links …) with their subsections."""
    kept: list[tuple[int, str]] = []
    skipping = 0  # > 0: the level of the boilerplate heading being skipped
    for level, line in lines:
        if level and skipping and level <= skipping:
            skipping = 0
        if skipping:
            continue
        if level and _heading_key(line) in BOILERPLATE_SECTIONS:
            skipping = level
            continue
        kept.append((level, line))
    return kept


def _drop_empty_sections(lines: list[tuple[int, str]]) -> list[str]:
    """``lines`` are (heading level or 0, text); drop headings with nothing under them."""
    kept: list[str] = []
    for i, (level, line) in enumerate(lines):
        if level:
            has_body = False
            for next_level, _ in lines[i + 1 :]:
                if next_level == 0:
                    has_body = True
                    break
                if next_level <= level:
                    break
            if not has_body:
                continue
        kept.append(line)
    return kept


def _restore(text: str, held: list[str]) -> str:
    return _KEPT.sub(lambda m: held[int(m.group(1))], text) if held else text


def _hold(held: list[str], text: str, formula: bool) -> str:
    held.append(text)
    return f"{chr(0xE000) if formula else chr(0xE002)}{len(held) - 1}\ue001"


def wikitext_to_text(wikitext: str) -> str:
    """Plain text of an article's wikitext (see the module docstring for the rules)."""
    held: list[str] = []  # nowiki content and formulas, behind placeholders until the end
    text = _COMMENT.sub("", _PLACEHOLDER_CHARS.sub("", wikitext))
    text = _NOWIKI.sub(lambda m: _hold(held, html.unescape(m.group(1) or ""), formula=False), text)
    text = _REF_SELF_CLOSING.sub("", text)
    text = _REF.sub("", text)
    text = _REFERENCES_TAG.sub("", text)
    text = _DROPPED_TAGS.sub("", text)
    text = _MATH.sub(lambda m: _hold(held, " ".join(m.group(2).split()), formula=True), text)
    text = render_templates(text)
    previous = None
    while previous != text:  # innermost tables first
        previous = text
        text = _INNER_TABLE.sub("", text)
    text = resolve_variants(text)
    previous = None
    while previous != text:  # innermost links first, so a caption's links resolve before its file link goes
        previous = text
        text = _INNER_LINK.sub(_resolve_link, text)
    text = _EXTERNAL_LINK.sub(lambda m: m.group(1) or "", text)
    return assemble_lines(text, held)


_BLOCK_START = (" ", "\t", "*", "#", ":", ";", "=", "|", "!", "{")


def _join_paragraph_lines(text: str) -> str:
    """Join the lines of one paragraph, as MediaWiki renders them (a single newline is no break).

    A line continues the paragraph when it and the line before are both plain text: not blank,
    not a list item, heading, table row or preformatted line. The join is a space between two
    non-CJK characters and nothing next to a CJK one.
    """
    lines: list[str] = []
    continues = False
    for line in text.split("\n"):
        is_text = bool(line.strip()) and not line.startswith(_BLOCK_START)
        if is_text and continues:
            previous, line = lines[-1].rstrip(), line.strip()
            cjk_edge = previous[-1:] >= "\u2e80" or line[:1] >= "\u2e80"
            lines[-1] = previous + ("" if cjk_edge else " ") + line
        else:
            lines.append(line)
        continues = is_text
    return "\n".join(lines)


def assemble_lines(text: str, held: list[str]) -> str:
    """The last passes, on text whose templates, tables and links are resolved.

    Quotes, tags, magic words and entities go; headings become lines of their own; boilerplate
    sections, empty sections and formula-only paragraphs are dropped; the ``held`` texts
    (placeholders ``\\ue000<i>\\ue001`` for formulas, ``\\ue002<i>\\ue001`` for nowiki text) are put back.
    """
    text = _BOLD_ITALIC.sub("", _join_paragraph_lines(text))
    text = _BR.sub("\n", text)
    text = _TAG.sub("", text)
    text = _MAGIC_WORD.sub("", text)
    text = html.unescape(text).replace("\xa0", " ")
    text = _STRAY.sub("", _EMPTY_BRACKETS.sub("", text))
    text = _STOP_AFTER_FULLWIDTH.sub("", _SPACE_BEFORE_FULLWIDTH.sub("", text))
    lines: list[tuple[int, str]] = []
    for raw in text.split("\n"):
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading:
            title = heading.group(2).strip()
            if title:
                lines.append((len(heading.group(1)), _restore(title, held)))
            continue
        line = _LIST_MARKER.sub("", line).strip()
        if line and line not in ("|}", "}}") and not _FORMULA_ONLY.match(line):
            lines.append((0, _restore(line, held)))
    return "\n".join(_drop_empty_sections(_drop_boilerplate(lines)))
