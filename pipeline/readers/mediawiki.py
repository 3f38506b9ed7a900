"""MediaWiki XML dumps (``*-pages-articles.xml[.bz2]``), streamed in constant memory.

Namespace 0 only; wikitext converted to plain text (:mod:`cpm.pipeline.readers.wikitext`); id
``<dbname>-<page id>``, url from the siteinfo base, date from the revision timestamp. Redirects,
disambiguation pages and pages of other namespaces are rejections (rules ``redirect``,
``disambiguation``, ``non_article_namespace``), so every page is counted.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from cpm.pipeline.readers.common import REJECTED_TEXT_CHARS, Context, derived_id
from cpm.pipeline.readers.compression import READ_CHUNK, ChunkStream, TruncatedInputError
from cpm.pipeline.readers.wikitext import is_disambiguation, is_redirect, wikitext_to_text
from cpm.pipeline.records import RawRecord, Rejection


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: Any, name: str) -> Any:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _child_text(element: Any, name: str) -> str | None:
    child = _child(element, name) if element is not None else None
    return child.text if child is not None else None


def _page_url(base: str | None, title: str) -> str | None:
    if not base or "/wiki/" not in base:
        return None
    return base[: base.index("/wiki/") + len("/wiki/")] + title.replace(" ", "_")


def _page_record(page: Any, site: dict[str, str | None], context: Context, ordinal: int) -> RawRecord | Rejection:
    source, origin = context.source, context.origin(f"page {ordinal}")
    title = _child_text(page, "title") or ""
    namespace = (_child_text(page, "ns") or "0").strip()
    page_id = (_child_text(page, "id") or "").strip()
    revisions = [child for child in page if _local(child.tag) == "revision"]
    revision = revisions[-1] if revisions else None
    wikitext = _child_text(revision, "text") or ""
    timestamp = _child_text(revision, "timestamp")
    record_id = (
        f"{site.get('dbname') or 'wiki'}-{page_id}"
        if page_id
        else derived_id(source, context.path, ordinal, title + wikitext)
    )
    if namespace != "0":
        return Rejection(
            source, "non_article_namespace", origin, id=record_id, detail=f"namespace {namespace}: {title}"
        )
    redirect = _child(page, "redirect")
    if redirect is not None or is_redirect(wikitext):
        target = redirect.get("title") if redirect is not None else wikitext.strip()[:200]
        return Rejection(source, "redirect", origin, id=record_id, detail=f"{title} -> {target}")
    if is_disambiguation(wikitext):
        return Rejection(
            source, "disambiguation", origin, id=record_id, detail=title, text=wikitext[:REJECTED_TEXT_CHARS]
        )
    if len(wikitext) > context.max_record_chars:
        return context.oversized(f"page {ordinal}", wikitext, f"{len(wikitext):,} characters of wikitext", record_id)
    meta: dict[str, Any] = {"namespace": 0, "page_id": page_id}
    revision_id = _child_text(revision, "id")
    if revision_id:
        meta["revision_id"] = revision_id.strip()
    return RawRecord(
        source=source,
        origin=origin,
        text=wikitext_to_text(wikitext),
        id=record_id,
        title=title,
        url=_page_url(site.get("base"), title),
        date=timestamp,
        meta=meta,
    )


def read_mediawiki(context: Context, chunks: Iterator[bytes], head: bytes) -> Iterator[RawRecord | Rejection]:
    from xml.etree import ElementTree

    stream = io.BufferedReader(ChunkStream(chunks), buffer_size=READ_CHUNK)
    site: dict[str, str | None] = {"dbname": None, "base": None}
    root = None
    ordinal = 0
    try:
        for event, element in ElementTree.iterparse(stream, events=("start", "end")):
            if event == "start":
                if root is None:
                    root = element
                continue
            name = _local(element.tag)
            if name in ("dbname", "base") and site[name] is None:
                site[name] = (element.text or "").strip() or None
            elif name == "page":
                ordinal += 1
                yield _page_record(element, site, context, ordinal)
                element.clear()
                if root is not None:
                    root.clear()  # constant memory: drop finished pages from the tree
    except ElementTree.ParseError as error:
        line = error.position[0] if getattr(error, "position", None) else 1
        yield Rejection(
            context.source,
            "malformed_xml",
            context.origin(line),
            detail=f"{error}; {ordinal} pages before it were kept",
        )
    except TruncatedInputError as error:
        yield Rejection(
            context.source,
            "truncated_file",
            context.origin(f"page {ordinal + 1}"),
            detail=f"{error}; {ordinal} pages before it were kept",
        )
