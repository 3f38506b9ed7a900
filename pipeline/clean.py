"""Cleaning steps and quality filters of ``cpm corpus build``.

The cleaning is a list of small pure functions ``step(record, config) -> record | Rejection``
(:data:`STEPS`), after datatrove and TFDS C4: each has a ``name`` that is both its Beam
counter and the ``rule`` of the records it rejects, and each is testable without Beam.
:func:`clean_record` runs them in order; the Beam job wraps it in a thin ``DoFn``.

Steps, in order (a step whose config switch is off passes the record through):

========================  =====================================================================
``html_extraction``       web records: main text of ``html`` (trafilatura); no text -> rejected
``unicode_repair``        mojibake (ftfy, only on suspect text; no width folding, no NFKC),
                          NFC, removes control, zero-width, bidi and private-use characters
``t2s``                   traditional -> simplified Chinese (OpenCC ``t2s``), if ``t2s``, only for
                          documents detected as traditional (title with body; script.py)
``whitespace``            one space for runs of spaces/tabs inside a line, lines stripped,
                          blank lines dropped: paragraphs separated by a single ``"\\n"``
``language``              py3langid on the first ``language_sample_chars``: keep ``zh`` with
                          probability >= ``min_language_score``, if ``language_filter``
``line_filters``          drops web-residue lines (cookie/JS/navigation/share/copyright) and,
                          if ``drop_lines_without_cjk``, lines without a CJK ideograph;
                          nothing left -> rejected
``pii_masking``           e-mail, phone, QQ, ID-card and bank-card numbers, IPv4 -> placeholders
                          (pii.py: width-normalised matching, checksums, contact words)
``min_length``            fewer than ``min_chars`` non-space characters -> rejected
``max_length``            more than ``max_chars`` characters -> rejected
``cjk_ratio``             CJK ideographs / non-space characters < ``min_cjk_ratio`` -> rejected
``duplicate_lines``       fraction of lines that repeat an earlier line > ``max_dup_line_frac``
``top_ngrams``            characters in the most frequent n-gram of letters/digits/ideographs / all
``duplicate_ngrams``      characters covered by repeated character n-grams / all > threshold
``bad_words``             characters inside bad words / all > ``max_bad_word_density``
========================  =====================================================================

The repetition filters follow FineWeb-2 (line, top n-gram and duplicated n-gram fractions), on
characters since words are not known before segmentation (which runs after dedup). Their
limits are calibrated on Chinese by ``bench/bench_repetition.py``: for plain text, the smallest
limit that at most 0.03% of the People's Daily and product-review documents exceed (+5%);
for formal text (numbered articles or clauses: laws, regulations, notices, see
:func:`is_formal`), the largest value on 1,500 Chinese laws (+10%). ``top_ngrams`` counts
letters, digits and ideographs only (punctuation and symbols removed, as words would drop
them). The filters run on documents of at least ``repetition_min_chars`` characters only.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Union

from cpm.errors import CpmError
from cpm.pipeline.records import RawRecord, Rejection
from cpm.schemas import SOURCES

Result = Union[RawRecord, Rejection]


# --------------------------------------------------------------------------- config

@dataclass(frozen=True)
class CleanConfig:
    """Thresholds and switches of the cleaning steps for one source.

    The defaults of each source live in ``cpm/pipeline/configs/<source>.json``;
    ``--config FILE`` overrides fields (see :func:`load_configs`).
    """

    max_record_chars: int = 5_000_000  # readers reject longer records (rule of the reader)
    extract_main_text: bool = False  # html -> main text (trafilatura)
    t2s: bool = False  # traditional -> simplified (OpenCC t2s) for documents detected as traditional
    language_filter: bool = False  # keep only documents identified as Chinese
    min_language_score: float = 0.5  # py3langid probability (FineWeb-2 cmn_Hani: 0.692, but with GlotLID)
    language_sample_chars: int = 2000  # characters given to the language identifier
    web_residue_lines: bool = False  # drop cookie/JS/navigation/share/copyright lines
    drop_lines_without_cjk: bool = False  # drop lines without a CJK ideograph
    mask_pii: bool = True  # e-mail, phone, QQ, ID-card, bank-card, IPv4 -> placeholders
    min_chars: int = 20
    max_chars: int = 1_000_000
    min_cjk_ratio: float = 0.3
    max_dup_line_frac: float = 0.287
    repetition_min_chars: int = 200
    # n -> limit, calibrated on Chinese by bench/bench_repetition.py (docs/corpus.md)
    top_char_ngrams: dict[str, float] = field(default_factory=lambda: {"3": 0.16, "4": 0.17, "5": 0.16})
    dup_char_ngrams: dict[str, float] = field(default_factory=lambda: {"8": 0.33})  # 10..20 derive 0.33 too
    # the same for formal text (numbered articles: laws, regulations, official notices)
    formal_top_char_ngrams: dict[str, float] = field(default_factory=lambda: {"3": 0.2, "4": 0.27, "5": 0.33})
    formal_dup_char_ngrams: dict[str, float] = field(
        default_factory=lambda: {"8": 0.67, "10": 0.63, "13": 0.59, "20": 0.49}
    )
    max_bad_word_density: float = 0.005
    extra_bad_words: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(CleanConfig)}


def _check_value(name: str, value: Any, where: str) -> Any:
    default = getattr(CleanConfig(), name)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
        value = float(value) if ok else value
    elif isinstance(default, dict):
        ok = isinstance(value, dict) and all(
            str(k).isdigit() and int(k) > 0 and isinstance(v, (int, float)) for k, v in value.items()
        )
        value = {str(k): float(v) for k, v in value.items()} if ok else value
    else:  # list of strings
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
    if not ok:
        raise CpmError(f"{where}: bad value for {name!r}: {value!r} (expected {type(default).__name__} like {default!r})")
    return value


def _apply(config: CleanConfig, fields: dict[str, Any], where: str) -> CleanConfig:
    changes = {}
    for name, value in fields.items():
        if name.startswith("_"):  # "_doc" and similar comment keys
            continue
        if name not in CONFIG_FIELDS:
            raise CpmError(f"{where}: unknown config key {name!r} (known: {', '.join(CONFIG_FIELDS)})")
        changes[name] = _check_value(name, value, where)
    return dataclasses.replace(config, **changes)


def _read_json(path: str | Path, text: str | None = None) -> dict[str, Any]:
    try:
        data = json.loads(text if text is not None else Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise CpmError(f"{path}: no such config file") from None
    except json.JSONDecodeError as exc:
        raise CpmError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CpmError(f"{path}: cannot read config ({exc})") from None
    if not isinstance(data, dict):
        raise CpmError(f"{path}: a config must be a JSON object")
    return data


def default_config(source: str) -> CleanConfig:
    """The bundled defaults of ``source`` (``configs/<source>.json``)."""
    if source not in SOURCES:
        raise CpmError(f"unknown source {source!r} (one of {', '.join(SOURCES)})")
    name = f"configs/{source}.json"
    text = resources.files("cpm.pipeline").joinpath(name).read_text("utf-8")
    return _apply(CleanConfig(), _read_json(name, text), name)


def load_configs(sources: list[str], override: str | Path | None = None) -> dict[str, CleanConfig]:
    """The config of each source: bundled defaults, then the fields of ``override``.

    ``override`` is a JSON object; its keys are config fields (applied to every source)
    and/or source names mapping to objects of fields (applied to that source only, after
    the global ones). Unknown keys and ill-typed values raise a one-line :class:`CpmError`.
    """
    configs = {s: default_config(s) for s in sources}
    if override is None:
        return configs
    data = _read_json(override)
    per_source = {k: v for k, v in data.items() if k in SOURCES}
    common = {k: v for k, v in data.items() if k not in SOURCES}
    for key, value in per_source.items():
        if not isinstance(value, dict):
            raise CpmError(f"{override}: {key!r} must map to an object of config fields")
    for source in sources:
        configs[source] = _apply(configs[source], common, str(override))
        configs[source] = _apply(configs[source], per_source.get(source, {}), f"{override} [{source}]")
    for key, value in per_source.items():  # validate sections of sources not built, too
        _apply(CleanConfig(), value, f"{override} [{key}]")
    return configs


# --------------------------------------------------------------------------- helpers

CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


_CODES_CACHE: list = [(None, None)]  # [(text, its code points)]: steps in a row reuse one array (one atomic slot)


def code_points(text: str):
    """The code points of ``text`` as a numpy uint32 array (the last one is cached by identity)."""
    import numpy as np

    cached_text, codes = _CODES_CACHE[0]
    if cached_text is not text:
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        _CODES_CACHE[0] = (text, codes)
    return codes


# CJK ideograph blocks as (first code point, last - first): Unified, Extension A, Compatibility, planes 2-3.
_CJK_RANGES = ((0x4E00, 0x9FFF - 0x4E00), (0x3400, 0x4DBF - 0x3400), (0xF900, 0xFAFF - 0xF900), (0x20000, 0x3134F - 0x20000))


def _is_cjk(codes):
    """Boolean mask of the CJK ideographs among uint32 ``codes``."""
    mask = (codes - _CJK_RANGES[0][0]) <= _CJK_RANGES[0][1]  # uint32 wrap-around: one compare per range
    for first, span in _CJK_RANGES[1:]:
        mask |= (codes - first) <= span
    return mask


_CJK_TABLE: list = []  # [uint8 array: 1 for a CJK ideograph, by code point up to the last range's end]


def count_cjk(text: str) -> int:
    """Number of CJK ideographs in ``text``."""
    if not text:
        return 0
    import numpy as np

    if not _CJK_TABLE:
        end = max(first + span for first, span in _CJK_RANGES) + 2
        table = np.zeros(end, dtype=np.uint8)
        for first, span in _CJK_RANGES:
            table[first : first + span + 1] = 1
        _CJK_TABLE.append(table)
    table = _CJK_TABLE[0]
    return int(np.count_nonzero(table[np.minimum(code_points(text), table.size - 1)]))


_RATIO_CACHE: list = [(None, 0.0)]  # [(text object, its ratio)]: the filter and the document row ask for the same text


def cjk_ratio(text: str) -> float:
    """CJK ideographs / non-space characters (0 for an empty text)."""
    cached_text, ratio = _RATIO_CACHE[0]
    if cached_text is text:
        return ratio
    non_space = len(text) - sum(map(text.count, (" ", "\n", "\t")))
    ratio = count_cjk(text) / non_space if non_space > 0 else 0.0
    _RATIO_CACHE[0] = (text, ratio)
    return ratio


def _reject(record: RawRecord, rule: str, detail: str) -> Rejection:
    return Rejection(record.source, rule, record.origin, detail, record.id, record.text)


# --------------------------------------------------------------------------- steps

def html_extraction(record: RawRecord, config: CleanConfig) -> Result:
    """Web records: the main text of ``html`` (trafilatura, via the readers)."""
    if record.text is not None or not record.html:
        if record.text is None:
            return _reject(record, "html_extraction", "no text and no html")
        return record
    if not config.extract_main_text:
        return _reject(record, "html_extraction", "html record but extract_main_text is off")
    from cpm.pipeline.html_text import html_to_text

    text = html_to_text(record.html, record.url)
    if not text:
        return Rejection(record.source, "html_extraction", record.origin, "no main text found", record.id, record.html[:10_000])
    record.text, record.html = text, None
    return record


# a UTF-8 lead byte read as Latin-1/cp1252, followed by a continuation byte read the same way
_MOJIBAKE_RE = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201a\u201c-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
)
# C0/C1 controls (not \t \n \r), zero-width and bidi controls, BOM, lone surrogates, private-use areas
_INVISIBLE_RE = re.compile(
    "[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ue000-\uf8ff\ud800-\udfff\U000f0000-\U0010ffff]"
)
_FTFY_CONFIG = None


def _ftfy_config():
    global _FTFY_CONFIG
    if _FTFY_CONFIG is None:
        import ftfy

        # only the encoding repairs: no width folding, no NFKC, no quote uncurling
        _FTFY_CONFIG = ftfy.TextFixerConfig(
            unescape_html=False,
            fix_character_width=False,
            uncurl_quotes=False,
            fix_latin_ligatures=False,
            fix_line_breaks=False,
            normalization="NFC",
            explain=False,
        )
    return _FTFY_CONFIG


def repair_unicode(text: str) -> str:
    """Mojibake repaired (ftfy, only where suspect), NFC, invisible characters removed."""
    if _MOJIBAKE_RE.search(text):
        import ftfy

        text = ftfy.fix_text(text, _ftfy_config())
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return _INVISIBLE_RE.sub("", text)


def unicode_repair(record: RawRecord, config: CleanConfig) -> Result:
    """Mojibake, NFC, control/zero-width/private-use characters; CJK punctuation untouched."""
    record.text = repair_unicode(record.text)
    return record


def to_simplified(text: str) -> str:
    """Traditional -> simplified Chinese (OpenCC ``t2s``), unconditionally."""
    from cpm.pipeline.script import to_simplified as convert

    return convert(text)


def t2s(record: RawRecord, config: CleanConfig) -> Result:
    """Text and title to simplified Chinese, when ``config.t2s`` and they are traditional.

    The script is detected per document (:mod:`cpm.pipeline.script`): text that is already
    simplified is left alone, so names such as 王丙乾 are never "converted" to 王丙干.
    """
    if config.t2s:
        from cpm.pipeline.script import simplify_document

        record.text, record.title, _ = simplify_document(record.text, record.title)
    return record


_LINE_BREAK_RE = re.compile("[\r\u2028\u2029\u0085\u000b\u000c]")
_HSPACE_RE = re.compile(r"[^\S\n]+")


_OTHER_SPACE_RE = re.compile(r"[^\S\n ]")  # whitespace other than a space or a line break


def is_normal_whitespace(text: str) -> bool:
    """Whether :func:`normalize_whitespace` leaves ``text`` as it is: no whitespace but single spaces
    and line breaks, no space or line break first or last, no blank line, no line that starts or
    ends with a space (substring searches and one character class: cheaper than the passes)."""
    return not (
        _OTHER_SPACE_RE.search(text) or "  " in text or " \n" in text or "\n " in text or "\n\n" in text
        or text[:1] in ("", " ", "\n") or text[-1:] in (" ", "\n")
    )


def normalize_whitespace(text: str) -> str:
    """Runs of spaces/tabs -> one space, lines stripped, blank lines dropped (paragraphs = lines)."""
    if is_normal_whitespace(text):
        return text  # most cleaned text
    text = _LINE_BREAK_RE.sub("\n", text.replace("\r\n", "\n"))
    text = _HSPACE_RE.sub(" ", text)
    return "\n".join(line for line in (l.strip() for l in text.split("\n")) if line)


def whitespace(record: RawRecord, config: CleanConfig) -> Result:
    """Whitespace normalised, paragraph breaks kept as single newlines."""
    record.text = normalize_whitespace(record.text)
    return record


def language(record: RawRecord, config: CleanConfig) -> Result:
    """Keep documents identified as Chinese (py3langid), when ``config.language_filter``."""
    if not config.language_filter:
        return record
    from cpm.pipeline.language import detect_language

    lang, prob = detect_language(record.text[: config.language_sample_chars])
    if lang != "zh" or prob < config.min_language_score:
        return _reject(record, "language", f"{lang} p={prob:.3f} (keep zh, p >= {config.min_language_score})")
    record.meta = {**record.meta, "language_score": round(float(prob), 4)}
    return record


_WEB_RESIDUE_RE = re.compile(
    r"cookie|javascript|\bjs\b|document\.write|window\.|function\s*\(|var\s+\w+\s*=|<script|"
    r"浏览器不支持|启用\s*javascript|隐私政策|用户协议|版权所有|copyright|all rights reserved|©|"
    r"icp备|icp证|京公网安备|上一篇|下一篇|上一页|下一页|返回顶部|返回首页|点击进入|点击查看|点击这里|"
    r"分享到|扫一扫|扫描二维码|关注我们|加入收藏|设为首页|登录\s*[|｜/]\s*注册|免责声明|网站地图|"
    r"^\s*首页\s*[>›»/]|^[\s|｜/·>›»]*$",
    re.IGNORECASE,
)


def is_web_residue(line: str) -> bool:
    """A cookie/JS/navigation/share/copyright line of a web page (short lines only)."""
    return len(line) <= 200 and _WEB_RESIDUE_RE.search(line) is not None


def line_filters(record: RawRecord, config: CleanConfig) -> Result:
    """Drop web-residue lines and lines without CJK; reject when nothing is left."""
    if not (config.web_residue_lines or config.drop_lines_without_cjk):
        return record
    kept = []
    for line in record.text.split("\n"):
        if config.web_residue_lines and is_web_residue(line):
            continue
        if config.drop_lines_without_cjk and CJK_RE.search(line) is None:
            continue
        kept.append(line)
    if not kept:
        return _reject(record, "line_filters", "no line left after the line filters")
    record.text = "\n".join(kept)
    return record


def mask_pii_text(text: str) -> str:
    """E-mail, ID-card, bank-card, phone and QQ numbers and IPv4 -> placeholders (:mod:`cpm.pipeline.pii`)."""
    from cpm.pipeline.pii import mask_pii

    return mask_pii(text)


def pii_masking(record: RawRecord, config: CleanConfig) -> Result:
    """PII masked, when ``config.mask_pii``."""
    if config.mask_pii:
        record.text = mask_pii_text(record.text)
    return record


def min_length(record: RawRecord, config: CleanConfig) -> Result:
    """Reject documents with fewer than ``min_chars`` non-space characters."""
    n = len(record.text) - record.text.count("\n") - record.text.count(" ")
    if n < config.min_chars:
        return _reject(record, "min_length", f"{n} chars < {config.min_chars}")
    return record


def max_length(record: RawRecord, config: CleanConfig) -> Result:
    """Reject documents longer than ``max_chars`` characters."""
    if len(record.text) > config.max_chars:
        return _reject(record, "max_length", f"{len(record.text)} chars > {config.max_chars}")
    return record


def cjk_ratio_filter(record: RawRecord, config: CleanConfig) -> Result:
    """Reject documents whose CJK ideographs / non-space characters < ``min_cjk_ratio``."""
    ratio = cjk_ratio(record.text)
    if ratio < config.min_cjk_ratio:
        return _reject(record, "cjk_ratio", f"{ratio:.3f} < {config.min_cjk_ratio}")
    return record


cjk_ratio_filter.__name__ = "cjk_ratio"


def duplicate_line_fraction(text: str) -> float:
    """Fraction of lines equal to an earlier line of the same text."""
    lines = text.split("\n")
    return (len(lines) - len(set(lines))) / len(lines)


def duplicate_lines(record: RawRecord, config: CleanConfig) -> Result:
    """Reject documents whose repeated-line fraction exceeds ``max_dup_line_frac``."""
    if record.text.count("\n") < 2:
        return record
    frac = duplicate_line_fraction(record.text)
    if frac > config.max_dup_line_frac:
        return _reject(record, "duplicate_lines", f"{frac:.3f} > {config.max_dup_line_frac}")
    return record


_REPETITION_BASE = 1_000_003  # the rolling hash's base for the repetition filters (equality only: no mixer)


def _repetition_hashes(codes, n: int):
    """Rolling hashes (uint64, wrapping) of every character n-gram of uint64 ``codes``, for equality."""
    import numpy as np

    from cpm.pipeline.rolling_hash import rolling_hashes

    return rolling_hashes(codes, n, np.uint64(_REPETITION_BASE))


def top_ngram_fraction(codes, n: int, limit: float | None = None) -> float:
    """Characters in all occurrences of the most frequent character n-gram / all characters.

    With ``limit``, a cheap upper bound may be returned instead when it is at most ``limit``: the
    largest count of the n-gram hashes folded into 4096 buckets (folding only merges counts).
    """
    import numpy as np

    if len(codes) < n:
        return 0.0
    hashes = _repetition_hashes(codes, n)
    if limit is not None:
        bound = int(np.bincount((hashes & np.uint64(4095)).astype(np.intp), minlength=1).max())
        if (bound * n / len(codes) if bound > 1 else 0.0) <= limit:
            return bound * n / len(codes) if bound > 1 else 0.0
    _, counts = np.unique(hashes, return_counts=True)
    top = int(counts.max())
    return top * n / len(codes) if top > 1 else 0.0


def duplicate_ngram_fraction(codes, n: int) -> float:
    """Characters covered by the second and later occurrences of repeated n-grams / all."""
    import numpy as np

    if len(codes) < n:
        return 0.0
    hashes = _repetition_hashes(codes, n)
    ranked = np.sort(hashes)
    if not (ranked[1:] == ranked[:-1]).any():  # most texts: no n-gram repeats (a plain sort is cheaper)
        return 0.0
    order = np.argsort(hashes, kind="stable")  # equal n-grams stay in text order
    ranked = hashes[order]
    repeats = order[1:][ranked[1:] == ranked[:-1]]  # every occurrence but the first
    if len(repeats) == 0:
        return 0.0
    delta = np.zeros(len(codes) + 1, dtype=np.int32)
    delta[repeats] += 1  # positions are distinct, so plain fancy indexing adds correctly
    delta[repeats + n] -= 1
    return float(np.count_nonzero(np.cumsum(delta[:-1]))) / len(codes)


_WORD_TABLE: list = []  # [bool array by code point: a letter, digit or CJK ideograph]
_WORD_CACHE: list = [(None, None)]  # [(text, its word codes)]: one atomic slot, as _CODES_CACHE


def word_codes(text: str):
    """Code points of the letters, digits and CJK ideographs of ``text`` as uint64, cached by identity.

    Punctuation, symbols and spaces are left out: the closest to FineWeb-2's words before
    segmentation (a run of 「。。。。」 or 「！！！」 is no repetition of words).
    """
    cached_text, words = _WORD_CACHE[0]
    if cached_text is not text:
        import numpy as np

        if not _WORD_TABLE:
            end = max(first + span for first, span in _CJK_RANGES) + 2
            table = np.zeros(end, dtype=bool)
            for first, span in _CJK_RANGES:
                table[first : first + span + 1] = True
            for first, last in ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A), (0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A)):
                table[first : last + 1] = True
            _WORD_TABLE.append(table)
        table = _WORD_TABLE[0]
        codes = code_points(text)
        words = codes[table[np.minimum(codes, table.size - 1)]].astype(np.uint64)
        _WORD_CACHE[0] = (text, words)
    return words


# numbered articles and chapters (第十二条, 第三章, 第1款, also where cited), clauses opening a line or
# a sentence (（一）, 一、) and numbered items opening a line (12.)
_FORMAL_RE = re.compile(
    r"第[一二三四五六七八九十百千零〇两0-9０-９]+[条章节款编]"
    r"|(?:^|[\n。；;])\s*(?:[（(][一二三四五六七八九十]+[）)]|[一二三四五六七八九十]+、)"
    r"|(?:^|\n)\s*[0-9]{1,3}[.．、](?![0-9])"
)
_FORMAL_CACHE: list = [(None, False)]  # [(text, is it formal)]: one atomic slot


def is_formal(text: str) -> bool:
    """Numbered articles or clauses (laws, regulations, official notices): 2 or more, at least
    one per 400 characters. Such text repeats formal phrases by nature and gets the
    ``formal_*`` repetition limits."""
    cached_text, formal = _FORMAL_CACHE[0]
    if cached_text is not text:
        found = 0
        for found, _ in enumerate(_FORMAL_RE.finditer(text), 1):
            pass
        formal = found >= max(2, len(text) / 400)
        _FORMAL_CACHE[0] = (text, formal)
    return formal


def _limits(limits: dict[str, float]) -> list[tuple[int, float]]:
    return sorted((int(n), limit) for n, limit in limits.items())


def _top_ngram_excess(codes, limits: list[tuple[int, float]]) -> tuple[int, float, float] | None:
    """(n, fraction, limit) of the first top n-gram fraction above its limit, or None."""
    smallest = None
    for n, limit in limits:
        # the top n-gram occurs at most as often as the top m-gram (m < n): skip hopeless checks
        if smallest is not None and smallest[1] * n / smallest[0] <= limit:
            continue
        frac = top_ngram_fraction(codes, n, limit)  # exact when above the limit, else at most the limit
        if frac > limit:
            return n, frac, limit
        if smallest is None:
            smallest = (n, frac)
    return None


def _duplicate_ngram_excess(codes, limits: list[tuple[int, float]]) -> tuple[int, float, float] | None:
    """(n, fraction, limit) of the first duplicated n-gram fraction above its limit, or None."""
    for i, (n, limit) in enumerate(limits):
        frac = duplicate_ngram_fraction(codes, n)
        if frac > limit:
            return n, frac, limit
        # coverage only shrinks as n grows: below every later limit, nothing more can fail
        if frac <= min(l for _, l in limits[i + 1 :] or [(0, 1.0)]):
            break
    return None


def _repetition_filter(record: RawRecord, config: CleanConfig, rule: str, excess, plain, formal, what: str) -> Result:
    """Reject when a fraction exceeds its plain limit and, for formal text, its formal limit."""
    if len(record.text) < config.repetition_min_chars or not plain:
        return record
    codes = word_codes(record.text)
    found = excess(codes, _limits(plain))
    if found is not None and is_formal(record.text):  # formal limits are looser: checked only when needed
        found = excess(codes, _limits(formal))
        if found is not None:
            return _reject(record, rule, f"formal text: {what} {found[0]}-gram fraction {found[1]:.3f} > {found[2]}")
        return record
    if found is not None:
        return _reject(record, rule, f"{what} {found[0]}-gram fraction {found[1]:.3f} > {found[2]}")
    return record


def top_ngrams(record: RawRecord, config: CleanConfig) -> Result:
    """Reject documents dominated by one n-gram of letters/digits/ideographs (FineWeb-2 top_n_grams)."""
    return _repetition_filter(record, config, "top_ngrams", _top_ngram_excess, config.top_char_ngrams,
                              config.formal_top_char_ngrams, "top")


def duplicate_ngrams(record: RawRecord, config: CleanConfig) -> Result:
    """Reject documents with too many repeated n-grams of letters/digits/ideographs (FineWeb-2 dup_n_grams)."""
    return _repetition_filter(record, config, "duplicate_ngrams", _duplicate_ngram_excess, config.dup_char_ngrams,
                              config.formal_dup_char_ngrams, "duplicated")


# Spam/porn/gambling/profanity terms; density = characters inside them / all characters.
BAD_WORDS = (
    "在线赌博", "网上赌场", "澳门赌场", "真人赌场", "博彩网", "六合彩", "时时彩", "百家乐", "老虎机",
    "成人影片", "成人视频", "色情网站", "黄色网站", "黄色电影", "裸聊", "约炮", "一夜情", "援交",
    "代开发票", "办证刻章", "枪支出售", "迷药", "他妈的", "操你妈", "草泥马", "傻逼", "傻屄",
    "狗日的", "王八蛋", "肏", "屌丝", "贱人",
)
_BAD_WORD_RES: dict[tuple[str, ...], re.Pattern] = {}


def bad_word_density(text: str, extra: tuple[str, ...] = ()) -> float:
    """Characters inside bad words (:data:`BAD_WORDS` + ``extra``) / all characters."""
    words = BAD_WORDS + tuple(extra)
    pattern = _BAD_WORD_RES.get(words)
    if pattern is None:
        pattern = _BAD_WORD_RES[words] = re.compile("|".join(map(re.escape, sorted(words, key=len, reverse=True))))
    found = pattern.findall(text)
    return sum(map(len, found)) / len(text) if found else 0.0


def bad_words(record: RawRecord, config: CleanConfig) -> Result:
    """Reject documents whose bad-word density exceeds ``max_bad_word_density``."""
    density = bad_word_density(record.text, tuple(config.extra_bad_words))
    if density > config.max_bad_word_density:
        return _reject(record, "bad_words", f"density {density:.4f} > {config.max_bad_word_density}")
    return record


Step = Callable[[RawRecord, CleanConfig], Result]

STEPS: list[Step] = [
    html_extraction,
    unicode_repair,
    t2s,
    whitespace,
    language,
    line_filters,
    pii_masking,
    min_length,
    max_length,
    cjk_ratio_filter,
    duplicate_lines,
    top_ngrams,
    duplicate_ngrams,
    bad_words,
]
STEP_NAMES = [step.__name__ for step in STEPS]


def clean_record(record: RawRecord, config: CleanConfig, on_step: Callable[[str, bool], None] | None = None) -> Result:
    """Run every step of :data:`STEPS` on ``record``; the cleaned record or the first rejection.

    ``on_step(name, rejected)`` is called after each step that ran (the Beam counters).
    """
    for step in STEPS:
        result = step(record, config)
        if on_step is not None:
            on_step(step.__name__, isinstance(result, Rejection))
        if isinstance(result, Rejection):
            return result
        record = result
    return record
