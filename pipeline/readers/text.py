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
from dataclasses import dataclass, field

from cpm.pipeline.readers.common import Context, Line, derived_id, iter_lines
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


@dataclass
class _Chapters:
    """A novel's documents as its lines arrive: the current chapter's paragraphs, cut into parts of
    at most ``context.max_chapter_chars`` characters at paragraph boundaries."""

    context: Context
    novel: str
    encoding: str
    chapter: str | None = None
    chapter_line: int = 1
    paragraphs: list[str] = field(default_factory=list)
    size: int = 0
    part: int = 0  # within the chapter
    ordinal: int = 0  # within the file

    def flush(self) -> Iterator[RawRecord]:
        """The document of the paragraphs so far, if any."""
        if not self.paragraphs:
            return
        self.part += 1
        self.ordinal += 1
        source, text = self.context.source, "\n".join(self.paragraphs)
        meta = {"novel": self.novel, "encoding": self.encoding, "part": self.part}
        if self.chapter is not None:
            meta["chapter"] = self.chapter
        yield RawRecord(
            source=source,
            origin=self.context.origin(self.chapter_line),
            text=text,
            title=self.chapter or self.novel,
            id=derived_id(source, self.context.path, self.ordinal, text),
            meta=meta,
        )
        self.paragraphs, self.size = [], 0

    def heading(self, text: str, number: int) -> Iterator[RawRecord]:
        """A chapter heading at line ``number``: the previous chapter's last part, then a new chapter."""
        yield from self.flush()
        self.chapter, self.chapter_line, self.part = re.sub(r"\s+", " ", text), number, 0

    def paragraph(self, text: str, number: int) -> Iterator[RawRecord]:
        """A paragraph at line ``number``, split when longer than a part; a full part goes out first."""
        limit = self.context.max_chapter_chars
        for piece in _split_paragraph(text, limit):
            if self.size and self.size + len(piece) > limit:
                yield from self.flush()
            if not self.paragraphs and self.chapter is None:
                self.chapter_line = number
            self.paragraphs.append(piece)
            self.size += len(piece) + 1


def _oversized_line(context: Context, line: Line, codec: str) -> Rejection:
    return context.oversized(line.number, line.data.decode(codec, "ignore"), f"{line.oversized_bytes:,} bytes")


def read_novel(context: Context, chunks: Iterator[bytes], head: bytes) -> Iterator[RawRecord | Rejection]:
    encoding = detect_encoding(head)
    codec = decoding_codec(encoding)
    chapters = _Chapters(context, novel_title(context.path), encoding)
    line_number = 0
    try:
        for line in iter_lines(chunks, 4 * context.max_record_chars):
            line_number = line.number
            if line.oversized_bytes:
                yield _oversized_line(context, line, codec)
                continue
            text = line.data.decode(codec, "replace")
            if line.number == 1:
                text = text.lstrip("\ufeff")
            text = text.strip()
            if is_chapter_heading(text):
                yield from chapters.heading(text, line.number)
            elif text:
                yield from chapters.paragraph(text, line.number)
        yield from chapters.flush()
    except TruncatedInputError as error:
        yield from chapters.flush()
        yield Rejection(context.source, "truncated_file", context.origin(line_number + 1), detail=str(error))


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
                yield _oversized_line(context, line, codec)
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
