"""Word segmentation identical to ``jieba.cut(text)`` (jieba 0.42.1, accurate mode, HMM on), ~10-12x faster.

CPM-1 segments with ``jieba.cut`` before SentencePiece, so a compatible tokenizer needs jieba's exact
words.  jieba-rs (via ``rjieba``) is fast but not exact: its HMM uses emission log-probabilities rounded
to 6 decimals (near-ties in the Viterbi go the other way, e.g. ``气儕仲``), its HMM keeps ASCII runs such
as ``3-4`` or ``www.baidu.com`` whole, its "Han" blocks cover more CJK ranges than jieba's and it ships
its own dictionary.  This module runs jieba's algorithm and only borrows the expensive, exact part
from Rust:

1. blocks: jieba splits text into runs of ``[\u4E00-\u9FD5a-zA-Z0-9+#&._%-]`` ("Han blocks") and the
   rest, which it emits char by char (``\r\n`` kept together).  rjieba does the same for any text that
   has no CJK outside U+4E00..U+9FD5; other texts are split here and only Han blocks go to rjieba.
2. route: ``rjieba.cut(block, hmm=False)`` is jieba's max-probability DAG route (same float operations,
   same tie-breaking) over jieba 0.42.1's own ``dict.txt`` loaded into an empty rjieba, with jieba's
   total frequency (duplicate lines included).  rjieba merges runs of single ASCII-alphanumeric route
   words; jieba's dict has no purely alphanumeric word, so those merges are unambiguous.
3. HMM: runs of >= 2 single-character route words ("bufs") are re-cut exactly like
   ``Tokenizer.__cut_DAG`` + ``jieba.finalseg.cut``: dictionary words into characters, the rest with
   jieba's regexes and jieba's Viterbi (jieba's probabilities, sums and tie order), in numpy for all
   unseen bufs of a batch at once or in plain Python for a few.  A buf's words depend only on its
   text, and bufs repeat a lot, so they are cached by text (bounded, per process).

``cut_batch`` joins its texts with U+0001 (a word of its own for jieba and rjieba) for one route call per
chunk and finds the bufs with numpy over the route words' lengths and character classes; ``cut`` finds
them with one regex over the route words joined by NUL.  Either way Python touches the bufs whose
words change, not every word.  Nothing falls back to jieba, and nothing is printed (jieba's own
loader is never run).
The route has been checked against rjieba 0.2.2 (jieba-rs 0.11.0); other versions log a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, repeat

import numpy as np

logger = logging.getLogger(__name__)

# --- jieba 0.42.1's regular expressions (jieba/__init__.py and jieba/finalseg/__init__.py) -------------
_HAN_CLASS = "\u4e00-\u9fd5a-zA-Z0-9+#&\\._%\\-"
RE_HAN_DEFAULT = re.compile(f"([{_HAN_CLASS}]+)")  # re_han_default
RE_SKIP_DEFAULT = re.compile("(\r\n|\\s)")  # re_skip_default
RE_HAN_HMM = re.compile("([\u4e00-\u9fd5]+)")  # finalseg.re_han
RE_SKIP_HMM = re.compile("([a-zA-Z0-9]+(?:\\.\\d+)?%?)")  # finalseg.re_skip

# Characters for which rjieba's own block split would differ from jieba's (CJK outside U+4E00..U+9FD5,
# which rjieba counts as Han; planes 2-3 taken whole to be safe), lone surrogates (not valid for Rust) and
# the separator used below.  Texts containing any of them are split into jieba blocks here first.
_SEP = "\x00"
_DOC_SEP = "\x01"  # joins the texts of a cut_batch chunk: jieba and rjieba emit it as a word of its own
_NEEDS_BLOCK_SPLIT_BUT_DOC_SEP = re.compile(
    "[\x00\u3400-\u4dbf\u9fd6-\u9fff\uf900-\ufaff\ud800-\udfff\U00020000-\U0003ffff]"
)
_NEEDS_BLOCK_SPLIT = re.compile(f"{_NEEDS_BLOCK_SPLIT_BUT_DOC_SEP.pattern[:-1]}{_DOC_SEP}]")

# Bufs in the route words of one text joined by the separator (each word is preceded and followed by one):
# runs of >= 2 words that are one char of jieba's Han class or a merged run of letters and digits.
_ROUTE_SINGLE = "(?:[\u4e00-\u9fd5+#&._%\\-](?=\x00)|[a-zA-Z0-9]++(?=\x00))"
_BUF_RUN = re.compile(f"\x00({_ROUTE_SINGLE}(?:\x00{_ROUTE_SINGLE})++)")
# finalseg.cut's pieces of a buf (chars of jieba's Han class): Han runs, re_skip matches, text between them.
_FINALSEG_PIECES = re.compile("[\u4e00-\u9fd5]+|[a-zA-Z0-9]+(?:\\.\\d+)?%?|[^\u4e00-\u9fd5a-zA-Z0-9]+")
# rjieba's route words inside a buf: each char, except that runs of letters and digits come merged.
_BUF_ROUTE_WORDS = re.compile("[a-zA-Z0-9]+|.", re.S)
_MERGED_ALNUM = re.compile("[a-zA-Z0-9]{2,}")
# A dict.txt line the fast loader must leave to the line-by-line one (which reports it): a purely
# alphanumeric word, a zero or non-decimal frequency, or a line that is not "word freq tag".
_BAD_DICT_LINE = re.compile("^(?:[a-zA-Z0-9]{2,} |\\S+ (?:0+|\\S*\\D\\S*) |\\S+ \\S+\\n|\\s)", re.M)

VERIFIED_RJIEBA = "0.2.2"
JIEBA_DICT_SHA256 = "7197c3211ddd98962b036cdf40324d1ea2bfaa12bd028e68faa70111a88e12a8"  # jieba 0.42.1 dict.txt
_MIN_FLOAT = -3.14e100  # finalseg.MIN_FLOAT
_MISSING_EMIT = (_MIN_FLOAT,) * 4
_CACHE_LIMIT = 200_000  # entries per cache: at most ~40 MB per process
_HAN_START, _HAN_END = 0x4E00, 0x9FD6  # the chars of finalseg.re_han
_NUMPY_MIN_RUNS = 24  # a numpy Viterbi step pays off for at least this many runs (see _hmm_many)
_LENGTH_CLASSES = np.array([8, 32, 128, 512])  # upper bounds of the run lengths _hmm_many batches together
_DROP = 0xFFFFFFFF  # not a code point: marks slots _viterbi_batch removes before decoding
_RECORD_END = "\x02"  # ends each run's words in _viterbi_batch's output
_BATCH_CHARS = 1 << 18  # chars per route call in cut_batch
_ONE_TEXT_CHARS = 4096  # cut() finds the bufs of shorter texts with a regex, of longer ones with numpy
# Kinds of chars for finding bufs: ASCII letters and digits, the rest of jieba's Han class, anything else
# (everything from U+9FD6 up shares the last entry).
_OTHER, _ALNUM, _HAN_CLASS_CHAR = 0, 1, 2
_CHAR_KIND = np.zeros(_HAN_END + 1, dtype=np.int8)
_CHAR_KIND[_HAN_START:_HAN_END] = _HAN_CLASS_CHAR
_CHAR_KIND[[ord(c) for c in "+#&._%-"]] = _HAN_CLASS_CHAR
_CHAR_KIND[[ord(c) for c in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]] = _ALNUM


@dataclass
class _Model:
    """Lazily built per process: the rjieba route finder and jieba's HMM parameters."""

    route: object  # rjieba.Jieba holding jieba 0.42.1's dict.txt
    total: int  # jieba's total frequency (log(total) is in every route score)
    emit: dict[str, tuple[float, float, float, float]]  # char -> (B, E, M, S) emission log-probs
    params: tuple[float, ...]  # start B, E, M, S; transitions EB, SB, BE, ME, BM, MM, ES, SS
    emit_table: np.ndarray  # (U+9FD6 - U+4E00, 4): `emit` for every char an HMM run can hold
    # buf (route words joined by the separator) -> jieba's words for it, joined by the separator
    buf_cache: dict[str, str] = field(default_factory=dict)
    hmm_cache: dict[str, str] = field(default_factory=dict)  # Han run inside a mixed buf -> joined words


_MODEL: _Model | None = None
_MODEL_LOCK = threading.Lock()


def jieba_dict_path() -> str:
    """Path of the ``dict.txt`` shipped with the installed jieba (0.42.1)."""
    import jieba

    return os.path.join(os.path.dirname(jieba.__file__), "dict.txt")


def _is_plain_dict(data: str) -> bool:
    """Whether every line of a dict.txt is "word freq tag" as the fast load path needs (checked in one pass)."""
    fields = data.split()
    lines = data.count("\n") + (not data.endswith("\n"))
    return len(fields) == 3 * lines and "\r" not in data and not _BAD_DICT_LINE.search(data)


def _jieba_class():
    """``rjieba.Jieba``, without running ``rjieba/__init__.py``: it builds a default segmenter with
    jieba-rs's own dictionary (~0.2 s of CPU per process) that cpm never uses. The extension module
    is registered as ``rjieba.rjieba``, so a later ``import rjieba`` uses it rather than loading it twice."""
    import importlib.machinery
    import importlib.util
    import sys

    if "rjieba.rjieba" not in sys.modules:
        package = importlib.util.find_spec("rjieba")
        locations = list(package.submodule_search_locations or []) if package else []
        found = [os.path.join(d, name) for d in locations for name in sorted(os.listdir(d))
                 if name.startswith("rjieba.") and name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))]
        if not found:
            import rjieba

            return rjieba.Jieba
        loader = importlib.machinery.ExtensionFileLoader("rjieba.rjieba", found[0])
        spec = importlib.util.spec_from_file_location("rjieba.rjieba", found[0], loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        sys.modules["rjieba.rjieba"] = module
    return sys.modules["rjieba.rjieba"].Jieba


def _load_route_finder(path: str):
    """An empty rjieba loaded with jieba's dict, parsed exactly like ``Tokenizer.gen_pfdict``; its total."""
    route = _jieba_class().empty()
    with open(path, "rb") as f:
        raw = f.read()
    data = raw.decode("utf-8")
    if hashlib.sha256(raw).hexdigest() == JIEBA_DICT_SHA256 or _is_plain_dict(data):
        # Fast path: every line is "word freq tag" with a positive decimal freq and a word that is not
        # purely alphanumeric (the slow path's per-line checks; known to hold for jieba 0.42.1's dict.txt).
        fields = data.split()
        words, freqs = fields[0::3], list(map(int, fields[1::3]))
        list(map(route.add_word, words, freqs, repeat(None)))
        total = sum(freqs)
        missing = total - sum(dict(zip(words, freqs)).values())
        if missing:
            route.add_word("\u3000\u3000", missing, None)
        return route, total
    last_freq: dict[str, int] = {}
    total = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip().decode("utf-8")
            try:
                word, freq_text = line.split(" ")[:2]
                freq = int(freq_text)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: invalid dictionary entry {line!r}") from exc
            route.add_word(word, freq, None)
            last_freq[word] = freq
            total += freq
            if freq > 0 and _MERGED_ALNUM.fullmatch(word):
                # Would make merged alphanumeric runs ambiguous (see module docstring, step 2).
                raise ValueError(f"{path}:{lineno}: purely alphanumeric word {word!r} is unsupported")
            if freq == 0:
                raise ValueError(f"{path}:{lineno}: zero frequency for {word!r} is unsupported")
    # jieba's total counts duplicate lines (dict.txt has "B超 3" twice); rjieba's counts each word once.
    # A word that can never occur inside a Han block makes up the difference so log(total) agrees.
    missing = total - sum(last_freq.values())
    if missing:
        route.add_word("\u3000\u3000", missing, None)
    return route, total


def _build_model() -> _Model:
    from importlib.metadata import version

    from jieba.finalseg.prob_emit import P as emit_p
    from jieba.finalseg.prob_start import P as start_p
    from jieba.finalseg.prob_trans import P as trans_p

    if version("rjieba") != VERIFIED_RJIEBA or version("jieba") != "0.42.1":
        logger.warning(
            "cpm.tokenizer.segment is verified with rjieba %s and jieba 0.42.1, found rjieba %s and jieba %s: "
            "run tests/test_segment.py before trusting its words",
            VERIFIED_RJIEBA, version("rjieba"), version("jieba"),
        )

    path = jieba_dict_path()
    logger.debug("loading jieba dictionary %s into rjieba", path)
    route, total = _load_route_finder(path)
    chars = set().union(*(emit_p[s] for s in "BEMS"))
    b, e, m, s = (emit_p[state] for state in "BEMS")
    emit = {c: (b.get(c, _MIN_FLOAT), e.get(c, _MIN_FLOAT), m.get(c, _MIN_FLOAT), s.get(c, _MIN_FLOAT)) for c in chars}
    start = tuple(start_p[s] for s in "BEMS")
    trans = tuple(trans_p[a][b] for a, b in ("EB", "SB", "BE", "ME", "BM", "MM", "ES", "SS"))
    emit_table = np.full((_HAN_END - _HAN_START, 4), _MIN_FLOAT)
    for char, probs in emit.items():
        if _HAN_START <= ord(char) < _HAN_END:
            emit_table[ord(char) - _HAN_START] = probs
    return _Model(route=route, total=total, emit=emit, params=start + trans, emit_table=emit_table)


def _model() -> _Model:
    global _MODEL
    if _MODEL is None:
        with _MODEL_LOCK:
            if _MODEL is None:
                _MODEL = _build_model()
    return _MODEL


def _viterbi_cut(model: _Model, run: str) -> list[str]:
    """``jieba.finalseg.__cut`` for a run of >= 2 chars in U+4E00..U+9FD5: same sums, same tie order."""
    emit = model.emit
    missing = _MISSING_EMIT
    sb, se, sm, ss, t_eb, t_sb, t_be, t_me, t_bm, t_mm, t_es, t_ss = model.params
    b, e, m, s = emit.get(run[0], missing)
    v_b, v_e, v_m, v_s = sb + b, se + e, sm + m, ss + s
    back = []  # per position >= 1: best predecessor of (B, E, M, S) as indices 0..3
    push = back.append
    for ch in run[1:]:
        b, e, m, s = emit.get(ch, missing)
        # jieba keeps max((prob, prev_state)): equal probs go to the larger state letter (B<E<M<S),
        # and it adds V + trans first, then the emission.
        p = v_e + t_eb + b
        q = v_s + t_sb + b
        if q >= p:
            n_b, k_b = q, 3
        else:
            n_b, k_b = p, 1
        p = v_b + t_be + e
        q = v_m + t_me + e
        if q >= p:
            n_e, k_e = q, 2
        else:
            n_e, k_e = p, 0
        p = v_b + t_bm + m
        q = v_m + t_mm + m
        if q >= p:
            n_m, k_m = q, 2
        else:
            n_m, k_m = p, 0
        p = v_e + t_es + s
        q = v_s + t_ss + s
        if q >= p:
            n_s, k_s = q, 3
        else:
            n_s, k_s = p, 1
        push((k_b, k_e, k_m, k_s))
        v_b, v_e, v_m, v_s = n_b, n_e, n_m, n_s
    state = 3 if v_s >= v_e else 1
    # Walk back to the first char, emitting words right to left exactly as __cut does left to right:
    # B..E and S are words, M/B left open at the end are emitted as one trailing word.
    n = len(run)
    tags = [0] * n
    tags[n - 1] = state
    for i in range(n - 1, 0, -1):
        state = back[i - 1][state]
        tags[i - 1] = state
    words = []
    begin = next_i = 0
    for i, tag in enumerate(tags):
        if tag == 0:
            begin = i
        elif tag == 1:
            words.append(run[begin : i + 1])
            next_i = i + 1
        elif tag == 3:
            words.append(run[i])
            next_i = i + 1
    if next_i < n:
        words.append(run[next_i:])
    return words


def _viterbi_batch(model: _Model, runs: list[str]) -> list[str]:
    """``_viterbi_cut`` for many runs at once in numpy: each result's words joined by the separator.

    Runs are sorted longest first, so step ``i`` of the Viterbi updates the prefix of rows still longer than
    ``i``: no padding enters a sum.  numpy adds float64 in the same order as jieba (``V + trans``, then
    ``+ emit``) and ties go the same way (``q >= p`` picks the larger state letter), so the paths are
    jieba's bit for bit.  A path is cut after every E or S tag, which is what ``finalseg.__cut`` yields
    for any path this Viterbi can produce (E and S are only ever followed by B or S, B and M only by M or
    E, and the last tag is E or S).
    """
    n = len(runs)
    lengths = np.fromiter(map(len, runs), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    width = int(sorted_lengths[0])
    flat_codes = np.frombuffer("".join(map(runs.__getitem__, order.tolist())).encode("utf-32-le"), dtype=np.uint32)
    offsets = np.cumsum(sorted_lengths) - sorted_lengths
    positions = np.arange(width)
    inside = positions[None, :] < sorted_lengths[:, None]  # (n, width): a real char, not padding
    codes = flat_codes[np.minimum(offsets[:, None] + positions[None, :], flat_codes.size - 1)]
    emission = model.emit_table[codes - _HAN_START]  # (n, width, 4); padding rows are never read
    active = np.searchsorted(-sorted_lengths, -positions, side="left")  # rows longer than i
    sb, se, sm, ss, t_eb, t_sb, t_be, t_me, t_bm, t_mm, t_es, t_ss = model.params
    # State order B, E, M, S.  Each state's first predecessor, or the second (state + 2) if it is at least
    # as likely: B <- E|S, E <- B|M, M <- B|M, S <- E|S.
    first, first_trans = np.array([1, 0, 0, 1]), np.array([t_eb, t_be, t_bm, t_es])
    second, second_trans = first + 2, np.array([t_sb, t_me, t_mm, t_ss])
    v = np.array([sb, se, sm, ss]) + emission[:, 0]
    took_second = np.zeros((width, n, 4), dtype=np.int8)
    for i in range(1, width):
        k = active[i]
        prev = v[:k]
        p = prev[:, first] + first_trans
        p += emission[:k, i]
        q = prev[:, second] + second_trans
        q += emission[:k, i]
        np.greater_equal(q, p, out=took_second[i, :k], casting="unsafe")
        np.maximum(p, q, out=v[:k])  # no NaN: the max, and on a tie the same value
    state = np.where(v[:, 3] >= v[:, 1], 3, 1)
    cut_after = np.zeros((n, width), dtype=bool)  # tag E or S
    rows = np.arange(n)
    for i in range(width - 1, -1, -1):
        k = active[i]
        cut_after[:k, i] = state[:k] & 1
        if i:
            state[:k] = first[state[:k]] + 2 * took_second[i, rows[:k], state[:k]]
    cut_after &= inside
    # Chars interleaved with a separator after E/S tags (none after the last char), records joined by
    # _RECORD_END, padding dropped.
    out = np.empty((n, width, 2), dtype=np.uint32)
    out[:, :, 0] = np.where(inside, codes, _DROP)
    out[:, :, 1] = np.where(cut_after, ord(_SEP), _DROP)
    out[rows, sorted_lengths - 1, 1] = ord(_RECORD_END)
    flat = out.ravel()
    pieces = flat[flat != _DROP].tobytes().decode("utf-32-le").split(_RECORD_END)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = rows
    return list(map(pieces.__getitem__, inverse.tolist()))


def _hmm_many(model: _Model, runs: list[str]) -> tuple[list[str], list[bool]]:
    """jieba's HMM words for each run (>= 2 chars in U+4E00..U+9FD5), joined by the separator, and
    whether they are one word per char.

    Runs go to :func:`_viterbi_batch` by length class (2-8, 9-32, 33-128, 129-512 chars), so its padded
    arrays hold at most ~4 cells per char of input; a class with fewer than ``_NUMPY_MIN_RUNS`` runs
    (numpy's set-up would cost more) and runs over 512 chars take the plain Python Viterbi.
    """
    if len(runs) < _NUMPY_MIN_RUNS:  # a few runs (one text's, say)
        words = [_SEP.join(_viterbi_cut(model, run)) for run in runs]
        return words, [len(w) == 2 * len(r) - 1 for w, r in zip(words, runs)]
    words: list[str] = [""] * len(runs)
    lengths = np.fromiter(map(len, runs), dtype=np.int64, count=len(runs))
    classes = np.searchsorted(_LENGTH_CLASSES, lengths)  # index of the first bound >= length
    rest: list[int] = []
    for index in range(len(_LENGTH_CLASSES) + 1):
        members = np.flatnonzero(classes == index).tolist()
        if index == len(_LENGTH_CLASSES) or len(members) < _NUMPY_MIN_RUNS:
            rest += members
        elif members:
            for i, joined in zip(members, _viterbi_batch(model, list(map(runs.__getitem__, members)))):
                words[i] = joined
    for i in rest:
        words[i] = _SEP.join(_viterbi_cut(model, runs[i]))
    return words, [len(w) == 2 * n - 1 for w, n in zip(words, lengths.tolist())]


def _fill_buf_cache(model: _Model, keys: set[str]) -> None:
    """Put jieba's words (``Tokenizer.__cut_DAG`` + ``finalseg.cut``) for each unseen buf into the cache.

    The value is ``""`` when jieba's words are the buf's route words (its chars, runs of letters and
    digits merged), else the tuple of jieba's words.  A buf that is a dictionary word (freq > 0, so ``FREQ.get(buf)`` is
    true) is yielded char by char; otherwise ``finalseg.cut`` splits it into Han runs (HMM) and the rest
    (``re_skip``).  All HMM runs of all keys go through one batched Viterbi.
    """
    cache, hmm_cache = model.buf_cache, model.hmm_cache
    keys = list(keys)
    in_dict = list(map(model.route.has_word, keys))
    only_han = [k >= "\u4e00" and min(k) >= "\u4e00" for k in keys]  # a buf's chars are ASCII or Han
    cache.update((k, "" if h else tuple(k)) for k, d, h in zip(keys, in_dict, only_han) if d)
    han_bufs = [k for k, d, h in zip(keys, in_dict, only_han) if h and not d]
    # Mixed bufs: finalseg.cut's pieces (Han runs for the HMM; re_skip matches and the text between them).
    plans = [(k, _FINALSEG_PIECES.findall(k)) for k, d, h in zip(keys, in_dict, only_han) if not h and not d]
    unseen = {p for _, pieces in plans for p in pieces if len(p) > 1 and p not in hmm_cache and p >= "\u4e00"}
    if len(hmm_cache) + len(unseen) > _CACHE_LIMIT:
        hmm_cache.clear()
        unseen = {p for _, pieces in plans for p in pieces if len(p) > 1 and p >= "\u4e00"}
    unseen_runs = list(unseen)
    if not han_bufs and not unseen_runs:
        words, single = [], []
    else:
        words, single = _hmm_many(model, han_bufs + unseen_runs)
    # jieba's words are the route words (single chars) iff the HMM cut between every two chars.
    cache.update(zip(han_bufs, ["" if s else tuple(w.split(_SEP)) for w, s in zip(words, single)]))
    hmm_cache.update(zip(unseen_runs, words[len(han_bufs):]))
    for buf, pieces in plans:
        words = tuple(_SEP.join([hmm_cache.get(p, p) if len(p) > 1 else p for p in pieces]).split(_SEP))
        cache[buf] = "" if words == tuple(_BUF_ROUTE_WORDS.findall(buf)) else words


def _cached_words(model: _Model, keys: list[str]) -> list:
    """The cache's value for each buf in ``keys`` (``""`` or jieba's words), filling in unseen ones."""
    cache = model.buf_cache
    unseen = set(keys).difference(cache)
    if unseen:
        if len(cache) + len(unseen) > _CACHE_LIMIT:
            cache.clear()
            unseen = set(keys)
        _fill_buf_cache(model, unseen)
    return list(map(cache.__getitem__, keys))


def _cut_han_texts(model: _Model, text: str) -> list[list[str]]:
    """jieba's words for each ``_DOC_SEP``-separated text in ``text``, whose Han blocks rjieba delimits
    like jieba (no separator inside).

    rjieba gives the route words.  numpy finds the bufs: runs of >= 2 route words that are one char of
    jieba's Han class or a run of ASCII letters and digits (rjieba merges jieba's single-char ones into
    one).  jieba's words for a buf depend only on its text, which is the cache key; bufs whose words
    differ from their route words are spliced in, and the route words are sliced at the documents.
    """
    tokens = model.route.cut(text, False)
    if not tokens:
        return [[]]
    # Token ends from the separator-joined tokens: the k-th separator sits k chars after the k-th end.
    joined = np.frombuffer(_SEP.join(tokens).encode("utf-32-le"), dtype=np.uint32)
    separator_at = np.flatnonzero(joined == 0)
    ends = np.empty(len(tokens), dtype=np.int64)
    ends[:-1] = separator_at - np.arange(separator_at.size)
    ends[-1] = len(text)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1]
    lengths = ends - starts
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    kinds = _CHAR_KIND[np.minimum(codes, _CHAR_KIND.size - 1)]
    first = kinds[starts]
    not_alnum = np.zeros(codes.size + 1, dtype=np.int32)
    np.cumsum(kinds != _ALNUM, out=not_alnum[1:])
    single = ((lengths == 1) & (first != _OTHER)) | ((first == _ALNUM) & (not_alnum[ends] == not_alnum[starts]))
    edges = np.diff(single.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    run_starts = np.flatnonzero(edges == 1)
    run_ends = np.flatnonzero(edges == -1)
    long_enough = run_ends - run_starts >= 2
    run_starts, run_ends = run_starts[long_enough], run_ends[long_enough]
    changed_starts: list[int] = []
    if run_starts.size:
        keys = list(map(text.__getitem__, map(slice, starts[run_starts].tolist(), ends[run_ends - 1].tolist())))
        replacements = _cached_words(model, keys)
        changed = np.flatnonzero(np.fromiter(map(len, replacements), dtype=np.int64, count=len(keys)))
        if changed.size:
            changed_starts = run_starts[changed].tolist()
            changed_ends = run_ends[changed].tolist()
            changed_words = list(map(replacements.__getitem__, changed.tolist()))
    separators = np.flatnonzero((lengths == 1) & (codes[starts] == ord(_DOC_SEP)))
    if changed_starts:
        # All words of the chunk: the route words between changed bufs, and the bufs' jieba words (C-level
        # iterators, no Python loop per buf); a separator's index moves by the bufs' word-count changes.
        between = map(tokens.__getitem__, map(slice, [0, *changed_ends], [*changed_starts, len(tokens)]))
        tokens = list(chain.from_iterable(chain.from_iterable(zip(between, [*changed_words, ()]))))
        grown = np.fromiter(map(len, changed_words), dtype=np.int64, count=len(changed_words))
        grown -= run_ends[changed] - run_starts[changed]
        shift = np.concatenate(([0], np.cumsum(grown)))
        separators = separators + shift[np.searchsorted(run_starts[changed], separators)]
    ends_at = separators.tolist()
    ends_at.append(len(tokens))
    starts_at = (separators + 1).tolist()
    starts_at.insert(0, 0)
    return list(map(tokens.__getitem__, map(slice, starts_at, ends_at)))


def _cut_one(model: _Model, text: str) -> list[str]:
    """``_cut_han_texts`` for one short text: a regex finds the bufs (numpy's set-up costs more here)."""
    tokens = model.route.cut(text, False)
    joined = _SEP + _SEP.join(tokens) + _SEP
    runs = list(_BUF_RUN.finditer(joined))
    if not runs:
        return tokens
    keys = [run[1].replace(_SEP, "") for run in runs]
    words: list[str] = []
    done = position = scanned = 0  # tokens copied, tokens before `scanned`, offset in `joined`
    for run, replacement in zip(runs, _cached_words(model, keys)):
        if replacement:
            position += joined.count(_SEP, scanned, run.start())  # one separator before each token
            words += tokens[done:position]
            words += replacement
            position += run[1].count(_SEP) + 1
            done, scanned = position, run.end()
    if not words:
        return tokens
    words += tokens[done:]
    return words


def needs_block_split(text: str) -> bool:
    """Whether ``cut`` splits ``text`` into jieba's blocks itself (rare CJK, surrogates, NUL) first."""
    return _NEEDS_BLOCK_SPLIT.search(text) is not None


def clear_caches() -> None:
    """Empty this process's caches of HMM results (they are bounded; this is for benchmarks)."""
    if _MODEL is not None:
        _MODEL.buf_cache.clear()
        _MODEL.hmm_cache.clear()


def cut(text: str) -> list[str]:
    """Exactly ``list(jieba.cut(text))`` (jieba 0.42.1, ``cut_all=False``, ``HMM=True``)."""
    if not text:
        return []
    model = _model()
    if not _NEEDS_BLOCK_SPLIT.search(text):
        return _cut_one(model, text) if len(text) < _ONE_TEXT_CHARS else _cut_han_texts(model, text)[0]
    words: list[str] = []
    for blk in RE_HAN_DEFAULT.split(text):  # jieba.Tokenizer.cut, block by block
        if not blk:
            continue
        if RE_HAN_DEFAULT.match(blk):
            words.extend(_cut_one(model, blk) if len(blk) < _ONE_TEXT_CHARS else _cut_han_texts(model, blk)[0])
        else:
            for x in RE_SKIP_DEFAULT.split(blk):
                if RE_SKIP_DEFAULT.match(x):
                    words.append(x)
                else:
                    words.extend(x)
    return words


def cut_batch(texts: list[str], threads: int | None = None) -> list[list[str]]:
    """``[cut(t) for t in texts]``, faster: texts are joined for one route call per ~``_BATCH_CHARS`` chars.

    The join uses a character that jieba and rjieba both emit as a word of its own and never merge with
    a neighbour, so each text's words are exactly its own ``cut``; texts that contain it (or need the
    block split) are cut one by one.  All bufs of a chunk are looked up together, and those never seen
    go through one batched Viterbi.

    ``threads`` > 1 segments slices of ``texts`` in a thread pool, but rjieba holds the GIL, so that is
    no faster (measured); for real parallelism use processes (Beam workers, or
    ``multiprocessing.Pool(n).map(cut_batch, chunks)``): the model is built lazily once per process and
    ``cut``/``cut_batch`` pickle by reference.
    """
    if threads and threads > 1 and len(texts) > 1:
        step = -(-len(texts) // threads)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            slices = pool.map(cut_batch, [texts[i : i + step] for i in range(0, len(texts), step)])
            return [words for chunk in slices for words in chunk]
    texts = list(texts)
    if not texts:
        return []
    model = _model()
    joined = _DOC_SEP.join(texts)
    if _NEEDS_BLOCK_SPLIT_BUT_DOC_SEP.search(joined) is None and joined.count(_DOC_SEP) == len(texts) - 1:
        return _cut_fast_texts(model, texts, joined)
    # Some texts need the block split (or hold the join character): those are cut one by one.
    results: list[list[str]] = [[] for _ in texts]
    fast = [i for i, text in enumerate(texts) if _NEEDS_BLOCK_SPLIT.search(text) is None]
    for i, words in zip(fast, _cut_fast_texts(model, [texts[i] for i in fast])):
        results[i] = words
    for i in set(range(len(texts))).difference(fast):
        results[i] = cut(texts[i])
    return results


def _cut_fast_texts(model: _Model, texts: list[str], joined: str | None = None) -> list[list[str]]:
    """``cut`` of texts that need no block split, one route call per ~``_BATCH_CHARS`` chars."""
    if not texts:
        return []
    if joined is None:
        joined = _DOC_SEP.join(texts)
    if len(joined) <= 2 * _BATCH_CHARS:
        return _cut_han_texts(model, joined)
    results: list[list[str]] = []
    start = 0
    size = 0
    for i, length in enumerate(map(len, texts)):
        size += length + 1
        if size >= _BATCH_CHARS:
            results += _cut_han_texts(model, _DOC_SEP.join(texts[start : i + 1]))
            start, size = i + 1, 0
    if start < len(texts):
        results += _cut_han_texts(model, _DOC_SEP.join(texts[start:]))
    return results
