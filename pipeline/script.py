"""Which script a Chinese document is written in, and traditional -> simplified conversion.

OpenCC's ``t2s`` run on text that is already simplified corrupts proper names (王丙乾 ->
王丙干, 韩复榘 -> 韩复矩), so conversion runs only on documents detected as traditional.

The detector counts *traditional-only* characters: characters that OpenCC's ``t2s``
changes and that are not themselves the simplified form of any character (乾, 榘 and 著
are in the set only when nothing maps *to* them: 乾 is, 著 is not). The set is derived
from the installed OpenCC's own tables on first use (each CJK code point converted once,
under a second per process), so it follows OpenCC's data rather than a list kept here.
The mirror set, *simplified-only* characters, is the converse: results of ``t2s`` that
``t2s`` itself leaves alone (国, 这, 后).

A document (title and text together) is traditional when it has at least
:data:`MIN_TRADITIONAL_CHARS` *different* traditional-only characters (a name repeated,
「王丙乾、郭振乾、萧乾」, counts once) and they are at least
:data:`MIN_TRADITIONAL_SHARE` of its *script-marking* characters (traditional-only plus
simplified-only). Traditional text still has simplified-only characters (后 in 皇后, 干 in
若干, 里 in 公里 are both), so the share of real traditional text sits around 0.5-0.9; a
simplified text quoting a few traditional names or titles stays near 0.

The thresholds were measured by ``bench/bench_script_detect.py``: on the People's Daily
paragraphs (simplified) no document with 3 or more traditional-only characters has a share
above 0.1, and a paragraph such as 「王丙乾、郭振乾」 has only 2; on traditional text (a Big5
novel, Tang and Song poetry, 孟子, People's Daily converted with ``s2t``/``s2twp``) the share
of documents with 3 or more is above 0.25 in all but a handful. Documents with fewer than 3
(a line or two) are left as they are. See docs/corpus.md.
"""

from __future__ import annotations

from typing import NamedTuple

MIN_TRADITIONAL_SHARE = 0.25  # traditional-only / (traditional-only + simplified-only) characters
MIN_TRADITIONAL_CHARS = 3  # different traditional-only characters

# CJK ideograph blocks: Extension A, Unified, Compatibility, planes 2-3
_CJK_BLOCKS = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))
OTHER_CJK, TRADITIONAL_ONLY, SIMPLIFIED_ONLY = 1, 2, 3  # 0: not a CJK ideograph
_TABLE: list = []  # [uint8 array by code point: 0, OTHER_CJK, TRADITIONAL_ONLY or SIMPLIFIED_ONLY]
_SETS: list = []  # [(traditional-only, simplified-only)]
SHORT_TEXT = 400  # below this many characters a set intersection is cheaper than numpy
_CONVERTER: list = []  # [opencc.OpenCC("t2s")]


def _t2s_converter():
    if not _CONVERTER:
        import opencc

        _CONVERTER.append(opencc.OpenCC("t2s"))
    return _CONVERTER[0]


def derive_sets() -> tuple[frozenset[str], frozenset[str]]:
    """(traditional-only, simplified-only) characters, from OpenCC's ``t2s`` table.

    Each CJK code point is converted alone. Traditional-only: changed, and not the result of
    converting any character. Simplified-only: the result of converting some character, and
    not changed itself.
    """
    chars = [chr(c) for first, last in _CJK_BLOCKS for c in range(first, last + 1)]
    converted = _t2s_converter().convert("\n".join(chars)).split("\n")
    if len(converted) != len(chars) or any(len(c) != 1 for c in converted):
        raise RuntimeError("OpenCC t2s: unexpected character mapping")
    changed = {c for c, s in zip(chars, converted) if s != c}
    simplified_forms = {s for c, s in zip(chars, converted) if s != c}
    return frozenset(changed - simplified_forms), frozenset(simplified_forms - changed)


def character_sets() -> tuple[frozenset[str], frozenset[str]]:
    """:func:`derive_sets`, computed once per process."""
    if not _SETS:
        _SETS.append(derive_sets())
    return _SETS[0]


def script_table():
    """uint8 array by code point: 0 (not CJK), OTHER_CJK, TRADITIONAL_ONLY or SIMPLIFIED_ONLY."""
    if not _TABLE:
        import numpy as np

        traditional_only, simplified_only = character_sets()
        table = np.zeros(0x110000, dtype=np.uint8)  # every code point: no clipping on lookup
        for first, last in _CJK_BLOCKS:
            table[first : last + 1] = OTHER_CJK
        table[[ord(c) for c in traditional_only]] = TRADITIONAL_ONLY
        table[[ord(c) for c in simplified_only]] = SIMPLIFIED_ONLY
        _TABLE.append(table)
    return _TABLE[0]


class ScriptCounts(NamedTuple):
    """Character counts of a text for script detection."""

    cjk: int
    traditional_only: int
    simplified_only: int
    traditional_distinct: int  # different traditional-only characters

    @property
    def traditional_share(self) -> float:
        """Traditional-only characters / script-marking (traditional- plus simplified-only) ones."""
        marked = self.traditional_only + self.simplified_only
        return self.traditional_only / marked if marked else 0.0

    def __add__(self, other: "ScriptCounts") -> "ScriptCounts":  # type: ignore[override]
        """Counts of two texts together (``traditional_distinct`` is an upper bound)."""
        return ScriptCounts(*(a + b for a, b in zip(self, other)))


def script_counts(text: str) -> ScriptCounts:
    """CJK ideographs, traditional-only and simplified-only characters of ``text``."""
    if not text:
        return ScriptCounts(0, 0, 0, 0)
    import numpy as np

    from cpm.pipeline.clean import code_points  # cached: the later steps reuse the array

    table = script_table()
    codes = code_points(text)
    kind = table[codes]
    counts = np.bincount(kind, minlength=4)
    distinct = len(np.unique(codes[kind == TRADITIONAL_ONLY])) if counts[TRADITIONAL_ONLY] else 0
    return ScriptCounts(int(counts[1:].sum()), int(counts[TRADITIONAL_ONLY]), int(counts[SIMPLIFIED_ONLY]), distinct)


def is_traditional(counts: ScriptCounts) -> bool:
    """Whether a document with ``counts`` is written in traditional characters (see the module doc)."""
    return counts.traditional_distinct >= MIN_TRADITIONAL_CHARS and counts.traditional_share >= MIN_TRADITIONAL_SHARE


def to_simplified(text: str) -> str:
    """``text`` converted by OpenCC ``t2s`` (unconditionally: callers check :func:`is_traditional`)."""
    return _t2s_converter().convert(text) if text else text


def _clearly_simplified(text: str, title: str | None) -> bool:
    """Short texts with fewer than MIN_TRADITIONAL_CHARS different traditional-only characters."""
    if len(text) + len(title or "") >= SHORT_TEXT:
        return False
    traditional_only = character_sets()[0]
    found = traditional_only.intersection(text)
    if title:
        found |= traditional_only.intersection(title)
    return len(found) < MIN_TRADITIONAL_CHARS


def simplify_document(text: str, title: str | None = None) -> tuple[str, str | None, bool]:
    """(text, title, converted): both converted to simplified when, together, they are traditional."""
    if _clearly_simplified(text, title):
        return text, title, False
    counts = script_counts(text)
    if title:
        counts = counts + script_counts(title)
    if not is_traditional(counts):
        return text, title, False
    return to_simplified(text), to_simplified(title) if title else title, True
