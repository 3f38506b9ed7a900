"""JSONL: one object per line with ``text`` (or ``content``, ``html``, a Q&A or a dialog).

Input ``id``, ``title``, ``url`` and ``date`` are kept; other fields go to ``meta``. Dialog turn
format: one turn per line, each prefixed with its speaker and a full-width colon. A Q&A record
becomes ``问：<question>`` followed by one ``答：<answer>`` line per answer; a multi-turn dialog
alternates ``甲：`` and ``乙：``, starting with ``甲：``::

    问：地铁站里可以带折叠自行车吗？
    答：大多数城市允许带折叠好的自行车，但高峰时段可能受限。

    甲：周末去爬山吗？
    乙：好啊，几点出发？
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import Any

from cpm.pipeline.readers.common import REJECTED_TEXT_CHARS, Context, derived_id, iter_lines
from cpm.pipeline.readers.compression import TruncatedInputError
from cpm.pipeline.records import RawRecord, Rejection


def _text_field(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _optional_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


_CJK = r"\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_SPACE_BETWEEN_CJK = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")


def join_cjk_tokens(text: str) -> str:
    """Remove the spaces LCCC-style corpora put between CJK tokens (``"我 也 是 ！"`` -> ``"我也是！"``)."""
    return _SPACE_BETWEEN_CJK.sub("", text.strip())


def _answer_text(answer: Any) -> str | None:
    if isinstance(answer, dict):
        answer = answer.get("text") or answer.get("content") or answer.get("answer")
    return join_cjk_tokens(answer) if isinstance(answer, str) and answer.strip() else None


def render_qa(question: str, answers: list[Any]) -> str:
    """``问：<question>`` then one ``答：<answer>`` line per answer (see the module docstring)."""
    lines = [f"问：{join_cjk_tokens(question)}"]
    lines += [f"答：{text}" for text in map(_answer_text, answers) if text]
    return "\n".join(lines)


def render_dialog(utterances: list[Any]) -> str:
    """One line per turn, alternating ``甲：`` and ``乙：`` (see the module docstring)."""
    turns = [join_cjk_tokens(u) for u in utterances if isinstance(u, str) and u.strip()]
    return "\n".join(f"{'甲乙'[i % 2]}：{turn}" for i, turn in enumerate(turns))


def _record_from_json(obj: dict[str, Any], context: Context, line: int) -> RawRecord | Rejection:
    consumed = {"id", "title", "url", "date"}
    text: str | None
    html: str | None = None
    if isinstance(obj.get("dialog"), list):
        text = render_dialog(obj["dialog"]) or None
        consumed.add("dialog")
    elif isinstance(obj.get("question"), str) and ("answers" in obj or "answer" in obj):
        answers = obj.get("answers", obj.get("answer"))
        text = render_qa(obj["question"], answers if isinstance(answers, list) else [answers])
        consumed |= {"question", "answers", "answer"}
    else:
        text = _text_field(obj.get("text")) or _text_field(obj.get("content"))
        html = _text_field(obj.get("html"))
        consumed |= {"text", "content", "html"}
    origin = context.origin(line)
    record_id = _optional_str(obj.get("id"))
    if text is None and html is None:
        fields = ", ".join(sorted(obj)) or "none"
        return Rejection(
            context.source,
            "missing_text",
            origin,
            id=record_id,
            detail=f"no non-empty 'text' or 'content' field (fields: {fields})",
        )
    if record_id is None:
        record_id = derived_id(context.source, context.path, line, text if text is not None else html or "")
    meta = {key: value for key, value in obj.items() if key not in consumed}
    return RawRecord(
        source=context.source,
        origin=origin,
        text=text,
        html=html,
        id=record_id,
        title=_optional_str(obj.get("title")),
        url=_optional_str(obj.get("url")),
        date=_optional_str(obj.get("date")),
        meta=meta,
    )


def read_jsonl(context: Context, chunks: Iterator[bytes], head: bytes) -> Iterator[RawRecord | Rejection]:
    source, line_number = context.source, 0
    try:
        for line in iter_lines(chunks, 4 * context.max_record_chars, context.first_line):
            line_number = line.number
            if line.oversized_bytes:
                prefix = line.data.decode("utf-8", "ignore")
                yield context.oversized(line.number, prefix, f"{line.oversized_bytes:,} bytes")
                continue
            data = line.data[3:] if line.number == 1 and line.data.startswith(codecs.BOM_UTF8) else line.data
            if not data.strip():
                continue
            try:
                decoded = data.decode("utf-8")
            except UnicodeDecodeError as error:
                yield Rejection(
                    source,
                    "invalid_utf8",
                    context.origin(line.number),
                    detail=str(error),
                    text=data.decode("utf-8", "replace")[:REJECTED_TEXT_CHARS],
                )
                continue
            if len(decoded) > context.max_record_chars:
                yield context.oversized(line.number, decoded, f"{len(decoded):,} characters")
                continue
            try:
                obj = json.loads(decoded)
            except ValueError as error:
                yield Rejection(
                    source,
                    "malformed_json",
                    context.origin(line.number),
                    detail=str(error),
                    text=decoded[:REJECTED_TEXT_CHARS],
                )
                continue
            if not isinstance(obj, dict):
                yield Rejection(
                    source,
                    "malformed_json",
                    context.origin(line.number),
                    detail=f"a JSON {type(obj).__name__}, not an object",
                    text=decoded[:REJECTED_TEXT_CHARS],
                )
                continue
            yield _record_from_json(obj, context, line.number)
    except TruncatedInputError as error:
        yield Rejection(source, "truncated_file", context.origin(line_number + 1), detail=str(error))
