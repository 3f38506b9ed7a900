"""Plain text: novels split at chapter headings, and THUCNews-style ``<category>/<n>.txt`` articles.

Novels are UTF-8, GB18030/GBK or Big5 (:func:`~cpm.pipeline.readers.encoding.detect_encoding`),
split into documents at chapter headings (``第…章/回/节`` with Chinese or Arabic numerals at
line start, the heading is the ``title``) and, within a chapter, at paragraph boundaries every
``max_chapter_chars`` characters; the novel's title (from the file name) is ``meta.novel``.
A THUCNews file's first line is the title, the rest the body, its parent directory's name
``meta.category``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from cpm.pipeline.readers.common import Context, derived_id, iter_lines
from cpm.pipeline.readers.compression import COMPRESSED_SUFFIX, TruncatedInputError
from cpm.pipeline.readers.encoding import codec as decoding_codec
from cpm.pipeline.readers.encoding import detect_encoding
from cpm.pipeline.records import RawRecord, Rejection

_CHAPTER_HEADING = re.compile(
    r"^第[0-9０-９一二三四五六七八九十百千万零〇两壹贰叁肆伍陆柒捌玖拾佰仟]{1,9}[章回节節]"
    r"(?:[\s　:：、.．].{0,40}|[^\s，。！？；,.!?]{0,24})$"
)


def is_chapter_heading(line: str) -> bool:
    """True for a chapter heading line: ``第…章/回/节`` with a short title and no sentence end."""
    return bool(_CHAPTER_HEADING.match(line)) and not line.endswith(("。", "！", "？", "，", "；", "…", "”"))


_ENCODING_SUFFIX = re.compile(r"[._-](gb18030|gbk|gb2312|big5|utf-?8)$", re.IGNORECASE)


def novel_title(path: str) -> str:
    """A novel's title from its file name: ``…/《西游记》.gb18030.txt.gz`` -> ``西游记``."""
    name = COMPRESSED_SUFFIX.sub("", os.path.basename(path.rstrip("/")))
    name = os.path.splitext(name)[0] if name.lower().endswith(".txt") else name
    return _ENCODING_SUFFIX.sub("", name).strip().strip("《》") or name


def _split_paragraph(paragraph: str, limit: int) -> list[str]:
    return [paragraph[i : i + limit] for i in range(0, len(paragraph), limit)] or [paragraph]


def read_novel(context: Context, chunks: Iterator[bytes], head: bytes) -> Iterator[RawRecord | Rejection]:
    source, path = context.source, context.path
    encoding = detect_encoding(head)
    codec = decoding_codec(encoding)
    novel = novel_title(path)
    chapter: str | None = None
    chapter_line = 1
    paragraphs: list[str] = []
    size = 0
    part = 0
    ordinal = 0
    line_number = 0

    def emit() -> Iterator[RawRecord]:
        nonlocal paragraphs, size, part, ordinal
        if not paragraphs:
            return
        part += 1
        ordinal += 1
        text = "\n".join(paragraphs)
        meta = {"novel": novel, "encoding": encoding, "part": part}
        if chapter is not None:
            meta["chapter"] = chapter
        yield RawRecord(
            source=source,
            origin=context.origin(chapter_line),
            text=text,
            title=chapter or novel,
            id=derived_id(source, path, ordinal, text),
            meta=meta,
        )
        paragraphs, size = [], 0

    try:
        for line in iter_lines(chunks, 4 * context.max_record_chars):
            line_number = line.number
            if line.oversized_bytes:
                yield context.oversized(
                    line.number, line.data.decode(codec, "ignore"), f"{line.oversized_bytes:,} bytes"
                )
                continue
            text = line.data.decode(codec, "replace")
            if line.number == 1:
                text = text.lstrip("\ufeff")
            text = text.strip()
            if is_chapter_heading(text):
                yield from emit()
                chapter, chapter_line, part = re.sub(r"\s+", " ", text), line.number, 0
                continue
            if not text:
                continue
            for piece in _split_paragraph(text, context.max_chapter_chars):
                if size and size + len(piece) > context.max_chapter_chars:
                    yield from emit()
                if not paragraphs and chapter is None:
                    chapter_line = line.number
                paragraphs.append(piece)
                size += len(piece) + 1
        yield from emit()
    except TruncatedInputError as error:
        yield from emit()
        yield Rejection(source, "truncated_file", context.origin(line_number + 1), detail=str(error))


def read_thucnews(context: Context, chunks: Iterator[bytes], head: bytes) -> Iterator[RawRecord | Rejection]:
    source, path = context.source, context.path
    codec = decoding_codec(detect_encoding(head))
    title: str | None = None
    title_line = 1
    body: list[str] = []
    size = 0
    line_number = 0
    try:
        for line in iter_lines(chunks, 4 * context.max_record_chars):
            line_number = line.number
            if line.oversized_bytes:
                yield context.oversized(
                    line.number, line.data.decode(codec, "ignore"), f"{line.oversized_bytes:,} bytes"
                )
                return
            text = line.data.decode(codec, "replace").lstrip("\ufeff").strip()
            if not text:
                continue
            if title is None:
                title, title_line = text, line.number
                continue
            body.append(text)
            size += len(text) + 1
            if size > context.max_record_chars:
                yield context.oversized(title_line, "\n".join(body), f"over {size:,} characters")
                return
    except TruncatedInputError as error:
        yield Rejection(source, "truncated_file", context.origin(line_number + 1), detail=str(error))
        return
    category = os.path.basename(os.path.dirname(path.rstrip("/"))) or None
    text = "\n".join(body)
    if not text:
        yield Rejection(
            source, "missing_text", context.origin(title_line), detail="a title line and no body", text=title
        )
        return
    meta = {"category": category} if category else {}
    yield RawRecord(
        source=source,
        origin=context.origin(title_line),
        text=text,
        title=title,
        id=derived_id(source, path, 1, text),
        meta=meta,
    )
