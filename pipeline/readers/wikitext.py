"""Wikitext -> plain text, for MediaWiki dumps (zhwiki ``*-pages-articles.xml``).

What :func:`wikitext_to_text` does, in order:

* drops HTML comments, ``<ref>…</ref>`` / ``<ref …/>``, and the content of ``<math>``,
  ``<gallery>``, ``<timeline>``, ``<score>``, ``<syntaxhighlight>``, ``<imagemap>`` tags;
* drops templates ``{{…}}`` (nested ones too, so infoboxes go) and tables ``{|…|}`` (nested);
* resolves zhwiki language-variant markup ``-{zh-hans:计算机; zh-hant:電腦}-`` to the
  simplified variant (``-{text}-`` to ``text``);
* drops file/image links with their captions (``[[File:…]]``, ``[[文件:…]]``, ``[[Image:…]]``,
  ``[[图像:…]]`` … even with links nested in the caption), category links and interlanguage
  links; turns ``[[target|label]]`` into ``label`` and ``[[target]]`` into ``target``; external
  links ``[http://… label]`` into ``label``;
* strips ``'''bold'''`` / ``''italic''`` quotes, remaining HTML tags, magic words
  (``__TOC__``) and HTML entities;
* keeps headings ``== x ==`` as their own line ``x`` (a heading whose section is empty, such as
  ``== 参考文献 ==`` once its refs are gone, is dropped); strips list markers ``*``, ``#``,
  ``:``, ``;`` at line start.

Paragraphs of the result are separated by a single ``"\\n"``, as in the document shards.
"""

from __future__ import annotations

import html
import re

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
    r"<(math|gallery|timeline|score|syntaxhighlight|source|imagemap|references|chem)\b[^>]*>.*?</\1\s*>",
    re.IGNORECASE | re.DOTALL,
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


def strip_templates(text: str) -> str:
    """Remove every ``{{…}}``, nested ones included.

    An unclosed ``{{`` is shown literally by MediaWiki, so only those two braces are dropped
    and the text after them is kept (with its own closed templates removed).
    """
    out: list[str] = []
    depth = 0
    i = 0
    start = 0
    outer_open = 0
    n = len(text)
    while i < n:
        pair = text[i : i + 2]
        if pair == "{{":
            if depth == 0:
                out.append(text[start:i])
                outer_open = i
            depth += 1
            i += 2
        elif pair == "}}" and depth > 0:
            depth -= 1
            i += 2
            if depth == 0:
                start = i
        else:
            i += 1
    if depth == 0:
        out.append(text[start:])
    else:
        out.append(strip_templates(text[outer_open + 2 :]))
    return "".join(out)


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


def _resolve_link(match: re.Match[str]) -> str:
    inner = match.group(1)
    target, bar, label = inner.partition("|")
    prefix, colon, _ = target.partition(":")
    if colon:
        namespace = prefix.strip().lstrip(":").lower()
        if namespace in FILE_NAMESPACES or namespace in CATEGORY_NAMESPACES:
            return ""
        if _INTERLANGUAGE.match(prefix.strip()) and not target.startswith(":"):
            return ""
    if bar:
        return label.strip() if label.strip() else target.split("#")[0].strip()
    page = target.lstrip(":").split("#")[0].strip()
    return page or target.strip("#: ")  # [[#section]] links to a section of the same page


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


def wikitext_to_text(wikitext: str) -> str:
    """Plain text of an article's wikitext (see the module docstring for the rules)."""
    text = _COMMENT.sub("", wikitext)
    text = _REF_SELF_CLOSING.sub("", text)
    text = _REF.sub("", text)
    text = _REFERENCES_TAG.sub("", text)
    text = _DROPPED_TAGS.sub("", text)
    text = strip_templates(text)
    previous = None
    while previous != text:  # innermost tables first
        previous = text
        text = _INNER_TABLE.sub("", text)
    text = _VARIANT.sub(_resolve_variant, text)
    previous = None
    while previous != text:  # innermost links first, so a caption's links resolve before its file link goes
        previous = text
        text = _INNER_LINK.sub(_resolve_link, text)
    text = _EXTERNAL_LINK.sub(lambda m: m.group(1) or "", text)
    text = _BOLD_ITALIC.sub("", text)
    text = _BR.sub("\n", text)
    text = _TAG.sub("", text)
    text = _MAGIC_WORD.sub("", text)
    text = html.unescape(text).replace("\xa0", " ")

    lines: list[tuple[int, str]] = []
    for raw in text.split("\n"):
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading:
            title = heading.group(2).strip()
            if title:
                lines.append((len(heading.group(1)), title))
            continue
        line = _LIST_MARKER.sub("", line).strip()
        if line and line not in ("|}", "}}"):
            lines.append((0, line))
    return "\n".join(_drop_empty_sections(lines))
