"""Telling text from binary data, and the encoding of Chinese text and of HTML pages."""

from __future__ import annotations

import codecs
import re

_BINARY_MAGIC = (b"\x89PNG", b"%PDF", b"PK\x03\x04", b"GIF8", b"\xff\xd8\xff", b"\x7fELF", b"RIFF", b"\x00\x00\x01\x00")


def looks_binary(head: bytes) -> bool:
    """True for data that is not text: a NUL byte, a known binary magic, or many control bytes."""
    if head.startswith(_BINARY_MAGIC) or b"\x00" in head:
        return True
    sample = head[:8192]
    controls = sum(1 for byte in sample if byte < 0x20 and byte not in (0x09, 0x0A, 0x0C, 0x0D, 0x1B))
    return controls > 0.05 * max(len(sample), 1)


# Very common characters in both scripts; the right decoding of Chinese text is full of them.
_COMMON_CHARS = set(
    "的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后作里"
    "用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她本前开但因只从想实"
    "這個們來為國時說會對過後裡沒動現當還進學將與問"
)


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        codecs.getincrementaldecoder(encoding)("strict").decode(data, final=False)
    except UnicodeDecodeError:
        return False
    return True


def detect_encoding(data: bytes) -> str:
    """Encoding of Chinese plain text: ``"utf-8-sig"``, ``"utf-8"``, ``"gb18030"`` or ``"big5"``.

    BOM first, then a strict UTF-8 decode, then charset-normalizer restricted to GB18030 and
    Big5 (cp950); when it cannot tell, the decoding with more common Chinese characters wins.
    ``data`` is the head of the file (a cut multi-byte character at its end is fine).
    """
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if _decodes(data, "utf-8"):
        return "utf-8"
    candidates = [enc for enc in ("gb18030", "cp950") if _decodes(data, enc)]
    if len(candidates) == 1:
        return "big5" if candidates[0] == "cp950" else candidates[0]
    if len(candidates) > 1:
        import charset_normalizer

        best = charset_normalizer.from_bytes(data, cp_isolation=["gb18030", "big5", "cp950"]).best()
        if best is not None and best.encoding in ("gb18030", "big5", "cp950"):
            return "gb18030" if best.encoding == "gb18030" else "big5"
    scores = {enc: sum(ch in _COMMON_CHARS for ch in data.decode(enc, "replace")) for enc in ("gb18030", "cp950")}
    return "gb18030" if scores["gb18030"] >= scores["cp950"] else "big5"


def codec(encoding: str) -> str:
    """The codec to decode with: Big5 files are cp950 in practice (a superset)."""
    return {"big5": "cp950", "gbk": "gb18030", "gb2312": "gb18030"}.get(encoding, encoding)


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.IGNORECASE)


def known_codec(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codec(codecs.lookup(name).name)
    except LookupError:
        return None


def decode_html(content: bytes, content_type: str | None = None) -> tuple[str, str]:
    """Decode an HTML page: charset from the HTTP header, else the ``<meta>`` tag, else detection.

    Returns ``(html, encoding)``; GB2312/GBK are decoded as their superset GB18030.
    """
    header = _HEADER_CHARSET.search(content_type or "")
    meta = _META_CHARSET.search(content[:4096])
    encoding = known_codec(header.group(1) if header else None) or known_codec(
        meta.group(1).decode("ascii", "ignore") if meta else None
    )
    if encoding is None:
        if _decodes(content, "utf-8"):
            encoding = "utf-8"
        else:
            import charset_normalizer

            best = charset_normalizer.from_bytes(content).best()
            encoding = known_codec(best.encoding if best is not None else None) or "utf-8"
    return content.decode(encoding, "replace"), encoding
