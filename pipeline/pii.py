"""Personal data in Chinese text -> placeholders (the ``pii_masking`` cleaning step).

Matching runs on a width-normalised view of the text (full-width digits, letters, ``＋ － ． ＠``
and dashes folded to ASCII, one character for one, so every offset of the view is an
offset of the original); the spans found there are replaced in the original text.

========== ===========================================================================
label      what is masked
========== ===========================================================================
EMAIL      ``name@host.tld``
ID         18-digit resident ID numbers with a valid birth date and ISO 7064 check digit
           (15-digit ones only after 身份证)
CARD       bank card numbers: 15-19 digits, optionally in groups, passing the Luhn check
PHONE      mobile numbers (``1[3-9]x``, optional +86 / 0086, any grouping); landlines
           with an area code (``010-…``, ``(0717)…``, ``+86 10 …``, extension
           ``转``/``-``); 7-8 digit local numbers and hotlines (400/800) only after a
           contact word (电话, 手机, 传真, 热线, 联系, Tel, …), lists of numbers included
QQ         5-11 digit numbers after QQ / Q号 / 扣扣 (QQ群 too)
IP         IPv4 addresses
========== ===========================================================================

Context-free numbers are masked only where their form cannot be a date, an amount or a
statistic (an ID check digit, a Luhn check, a leading ``1[3-9]`` with exactly 11 digits, an
area code starting with 0); bare 7-8 digit numbers need a contact word in front of them.
Recall and precision are measured by ``bench/bench_pii.py`` on
``tests/data/pii_contact_lines.jsonl`` and the People's Daily text.
"""

from __future__ import annotations

import re
from typing import Iterator, NamedTuple

# full-width ASCII digits/letters and the symbols numbers and addresses use; dashes -> "-"
_WIDTH_TABLE = {
    **{0xFF10 + i: 0x30 + i for i in range(10)},
    **{0xFF21 + i: 0x41 + i for i in range(26)},
    **{0xFF41 + i: 0x61 + i for i in range(26)},
    0xFF0B: ord("+"), 0xFF0D: ord("-"), 0xFF0E: ord("."), 0xFF20: ord("@"),
    0x2010: ord("-"), 0x2011: ord("-"), 0x2012: ord("-"), 0x2013: ord("-"), 0x2014: ord("-"),
    0x2015: ord("-"), 0x2212: ord("-"), 0xFE63: ord("-"), 0x00A0: ord(" "), 0x3000: ord(" "),
}
# digits written as Chinese numerals (幺 is how 1 is read out in phone numbers)
_NUMERAL_TABLE = {ord(c): ord(d) for c, d in zip("〇零幺一二三四五六七八九", "001123456789")}
_NEEDS_WIDTH_RE = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\uff0b\uff0d\uff0e\uff20\u2010-\u2015\u2212\ufe63\u00a0\u3000]")
# a text without "@", a run of 5 digits (either width; one separator allowed) or a phone number in
# Chinese numerals has nothing to mask
_DIGITS_HINT_RE = re.compile(r"[0-9０-９]{3}[-\s.)）．－]?[0-9０-９]{2}")
_NUMERAL_RUN_RE = re.compile("[〇零幺一二三四五六七八九]{7}")
_NUMERAL_WORDS = ("电话", "手机", "号码", "电話", "手機")


def _worth_a_look(text: str) -> bool:
    """Cheap first pass: could ``text`` hold anything to mask?"""
    if "@" in text or "＠" in text or _DIGITS_HINT_RE.search(text) is not None:
        return True
    return any(word in text for word in _NUMERAL_WORDS) and _NUMERAL_RUN_RE.search(text) is not None


def width_normalised(text: str) -> str:
    """``text`` with full-width digits/letters/``＋－．＠``, dashes and wide spaces as ASCII (same length)."""
    if _NEEDS_WIDTH_RE.search(text) is None:
        return text
    return text.translate(_WIDTH_TABLE)


class Span(NamedTuple):
    """A masked stretch of the text: ``text[start:end]`` becomes ``<label>``."""

    start: int
    end: int
    label: str


_SEP = r"[- ]?"  # one optional separator inside a number (space or dash)
_MSEP = r"[-. ]?"  # mobile numbers are also written 138.1234.5678
_MOBILE = rf"(?:(?:\+|00)?86{_SEP}|[(（]\+?86[)）]{_SEP})?1[3-9][0-9]{_MSEP}[0-9]{{4}}{_MSEP}[0-9]{{4}}"
_AREA = r"0(?:10|2[0-9]|[3-9][0-9]{2})"
_EXT = r" ?(?:转|分机|ext\.?|x|-) ?[0-9]{1,5}(?![0-9])"  # an extension after the number
_EXTENSION = rf"(?:{_EXT})?"
_LANDLINE = (
    rf"(?:(?:(?:\+|00)86{_SEP}|[(（]\+?86[)）]{_SEP})(?:\(0\) ?)?(?:[(（]0?[1-9][0-9]{{1,2}}[)）]|[1-9][0-9]{{1,2}}){_SEP}"
    rf"|[(（]{_AREA}[)）] ?|{_AREA}[- ])[2-9][0-9]{{2,3}}{_SEP}[0-9]{{4}}{_EXTENSION}"
)
_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
_IP = r"(?:(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])"
# issuer prefixes: UnionPay 62, Chinese debit 60 and 9558, Visa 4, Mastercard 51-55 and 22-27, JCB 35, Amex 34/37
_CARD = r"(?:62|60|9558|4[0-9]|5[1-5]|2[2-7]|3[457])[0-9]{2}(?:[ -]?[0-9]{4}){2}[ -]?[0-9]{3,4}(?:[ -]?[0-9]{1,3})?"
_ID = r"[1-9][0-9]{5} ?(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01]) ?[0-9]{3}[0-9Xx]"

_EMAIL_RE = re.compile(_EMAIL)
# numbers that stand alone: each alternative is tried only around a run of digits
_FREE_RE = re.compile(
    "|".join(
        [
            rf"(?<![0-9A-Za-z])(?P<ID>{_ID})(?![0-9A-Za-z])",
            rf"(?<![0-9.])(?P<IP>{_IP})(?![0-9]|\.[0-9])",
            rf"(?<![0-9A-Za-z+.])(?P<CARD>{_CARD})(?![0-9A-Za-z])",
            rf"(?<![0-9A-Za-z])(?P<PHONE>{_MOBILE}|{_LANDLINE})(?![0-9])",
        ]
    )
)
# a run of at least 5 digits, possibly split by separators: where anything numeric can be masked
_RUN_RE = re.compile(r"[0-9](?:[ ().+\-（）]?[0-9]){4,}")

# numbers that need a contact word: local landlines (7-8 digits), 400/800 hotlines, QQ, old IDs
_PHONE_WORDS = (
    r"电话|电\s*话|手机|手机号|座机|传真|热线|专线|总机|办公室|联系方式|联系人|联系|咨询|订票|预订|预约|报名|"
    r"举报|投诉|服务台|值班室|客服|致电|拨打|来电|电传|先生|女士|小姐|電話|手機|傳真|聯繫|聯絡|"
    r"call|tel|phone|mobile|fax|cell"
)
_QQ_WORDS = r"qq|q号|q群|q我|扣扣|企鹅号"
_QQ_RE = re.compile(_QQ_WORDS, re.IGNORECASE)
# a contact word, then at most 12 characters that are not digits or a sentence end, then the number
_CONTEXT_RE = re.compile(
    rf"(?:(?P<qq>{_QQ_WORDS})|(?P<id15>身份证)|(?P<phone>{_PHONE_WORDS}))[^0-9\n。；;!！?？]{{0,12}}$",
    re.IGNORECASE,
)
_LOCAL = rf"(?:[(（]\+?[0-9]{{2,4}}[)）] ?)?\+?[0-9]{{2,5}}(?:[ -]?[0-9]{{2,5}}){{0,3}}(?![0-9]){_EXTENSION}"
# a count, not a number to call: 电话用户3560000户
_UNIT_RE = re.compile(r"\s*(?:[户人元万亿台部门次件个家吨条项名所座辆%‰]|多|余|以上|公里|平方)")
_LIST_RE = re.compile(rf"(?P<num>{_LOCAL})(?: *(?:[、,，/／;；]|或|和|及|or) *(?=[+(（0-9]))?")
_DIGITS_RE = re.compile(r"[0-9]")
_LIMITS = {"QQ": (5, 11), "ID": (15, 15), "PHONE": (7, 18)}  # digits of a number after a contact word


def id_check_digit(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of an 18-digit resident ID number."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights)) % 11]


def luhn_ok(digits: str) -> bool:
    """Whether ``digits`` passes the Luhn check (bank card numbers)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _free_spans(view: str, start: int, end: int) -> Iterator[Span]:
    """Stand-alone numbers in ``view[start:end]`` (lookarounds see the characters around)."""
    for match in _FREE_RE.finditer(view, start, end):
        label, value = match.lastgroup, match.group().replace(" ", "")
        if label == "ID" and id_check_digit(value[:17]) != value[17].upper():
            digits = value[:18] if value[17].isdigit() else ""
            if not (digits and luhn_ok(digits)):
                continue
            label = "CARD"
        elif label == "CARD":
            digits = "".join(_DIGITS_RE.findall(value))
            if not ((len(digits) == 15) == (digits[:2] in ("34", "37")) and len(digits) <= 19 and luhn_ok(digits)):
                continue
        yield Span(match.start(), match.end(), label)


def _context_label(view: str, run_start: int) -> tuple[str, int] | None:
    """(label, where the number starts) when a contact word comes right before the run."""
    start = run_start
    while start > 0 and view[start - 1] in "(（+":
        start -= 1
    match = _CONTEXT_RE.search(view, max(0, start - 20), start)
    if match is None:
        return None
    if match.group("qq") or _QQ_RE.search(match.group()):
        return "QQ", start
    return ("ID" if match.group("id15") else "PHONE"), start


def _listed_numbers(view: str, pos: int, label: str) -> tuple[list[Span], int]:
    """The numbers from ``pos`` on, separated by list separators (电话：65091040、65091041)."""
    spans: list[Span] = []
    low, high = _LIMITS[label]
    while True:
        item = _LIST_RE.match(view, pos)
        if item is None:
            break
        start, end = item.span("num")
        n = sum(ch.isdigit() for ch in view[start:end])
        if not low <= n <= high or _UNIT_RE.match(view, end):
            break
        spans.append(Span(start, end, label))
        pos = item.end()
        if pos == end:  # no list separator follows: the list ends here
            break
    return spans, pos


def _number_spans(view: str) -> list[Span]:
    spans: list[Span] = []
    listed_to = 0
    for run in _RUN_RE.finditer(view):
        start, end = run.span()
        spans += _free_spans(view, max(0, start - 5), min(len(view), end + 12))  # + an extension
        if start < listed_to:
            continue
        context = _context_label(view, start)
        if context is not None:
            found, listed_to = _listed_numbers(view, context[1], context[0])
            spans += found
    return spans


def pii_spans(text: str) -> list[Span]:
    """The spans of ``text`` to mask, sorted and without overlaps (an earlier/longer span wins)."""
    if not _worth_a_look(text):
        return []
    view = width_normalised(text)
    if _NUMERAL_RUN_RE.search(view) is not None:
        view = view.translate(_NUMERAL_TABLE)
    spans = _number_spans(view)
    if "@" in view:
        spans += [Span(m.start(), m.end(), "EMAIL") for m in _EMAIL_RE.finditer(view)]
    spans.sort(key=lambda s: (s.start, -s.end))
    kept: list[Span] = []
    for span in spans:
        if kept and span.start < kept[-1].end:
            continue
        kept.append(span)
    return kept


def mask_pii(text: str) -> str:
    """``text`` with every span of :func:`pii_spans` replaced by ``<LABEL>``."""
    spans = pii_spans(text)
    if not spans:
        return text
    parts, last = [], 0
    for span in spans:
        parts.append(text[last : span.start])
        parts.append(f"<{span.label}>")
        last = span.end
    parts.append(text[last:])
    return "".join(parts)
