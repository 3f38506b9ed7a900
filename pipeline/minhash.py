"""Vectorised MinHash signatures of Chinese text (pure numpy, no Beam).

The pipeline, per batch of documents:

1. :func:`normalize_codes` — the *hashing form* of a text (the stored text is never changed):
   NFKC (folds full-width ASCII, compatibility forms), traditional to simplified, lower case
   and deletion, all as one vectorised lookup in a per-code-point table. Texts that contain a
   traditional character (or one of the rare code points whose NFKC is not per code point) are
   first NFKC-normalised and converted by OpenCC ``t2s`` as a whole (phrase-aware). The table
   lower-cases, maps traditional to simplified characters (OpenCC's ``t2s`` dictionary,
   applied per character), and deletes punctuation, symbols, whitespace, line breaks and
   control characters (Unicode categories P*, S*, Z*, C*): only letters, digits and marks are
   hashed. Deleting punctuation, rather than mapping it, also folds "……" vs "...", "——" vs
   "-", 《》 vs <> and full- vs half-width marks.
2. :func:`shingle_hashes` — every character n-gram of the hashing form as a 64-bit hash
   (a polynomial rolling hash over the code points, finished with the splitmix64 mixer).
   A text shorter than n characters is one shingle; an empty hashing form has none.
3. :func:`signatures` — ``num_perm`` min-hashes per document. Permutation k of a shingle hash
   x is the top 32 bits of ``a_k * x + b_k mod 2**64`` (multiply-shift; ``a_k`` odd), evaluated
   for a chunk of shingles x all permutations at once (a ``num_perm x chunk`` uint64 matrix,
   bounded memory), reduced with ``np.minimum.reduceat`` per document.

Everything is a pure function of (text, num_perm, ngram, seed), identical on every machine,
so signatures saved by one build can be compared with those of a later one.
"""

from __future__ import annotations

import functools
import hashlib
import math
import unicodedata
from typing import Sequence

import numpy as np

from cpm.pipeline.rolling_hash import rolling_hashes

HASH_SCHEME = "cpm-minhash-v1"  # bump when any step below changes the signature values
DEFAULT_SEED = 1
EMPTY_HASH = np.uint32(0xFFFFFFFF)  # every min-hash of a text with no shingles

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_POLY = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime: odd, so the rolling hash keeps all bits
_ROW_CHUNK = 8192  # shingles per (num_perm x chunk) matrix: 8192 * 128 * 8 B = 8 MiB (measured fastest)
_TABLE_END = 0x32000  # planes 0-3 (CJK extensions included); code points above map to themselves
_CJK_RANGES = ((0x3400, 0x4DC0), (0x4E00, 0xA000), (0xF900, 0xFB00), (0x20000, 0x2FA20), (0x30000, 0x3134B))  # pragma: no mutate (an end +-1 gains or loses a code point that t2s leaves alone or never sees)


@functools.lru_cache(maxsize=1)
def fold_tables() -> tuple[np.ndarray, np.ndarray]:
    """(fold, needs_whole_text), built once per process (about a second).

    ``fold[cp]`` is the hashing form of code point ``cp`` (0 = deleted): its NFKC form when
    that is one code point, then traditional -> simplified, then lower case. ``needs_whole_text[cp]``
    marks code points whose NFKC is not one code point or that may compose with a neighbour
    (marks, Hangul jamo), and traditional characters: a text containing one is NFKC-normalised
    and converted by OpenCC ``t2s`` as a whole first (its phrase table knows that 瞭解 is 了解
    although 瞭 alone stays 瞭); the per-character table then applies as to any text.
    """
    converter = _t2s()
    to_simplified: dict[str, str] = {}
    for start, end in _CJK_RANGES:
        chars = [chr(cp) for cp in range(start, min(end, _TABLE_END))]
        converted = converter.convert("\n".join(chars)).split("\n")
        if len(converted) != len(chars):  # never seen; fall back to one call per character
            converted = [converter.convert(ch) for ch in chars]
        to_simplified.update((ch, simple) for ch, simple in zip(chars, converted) if len(simple) == 1 and simple != ch)

    fold = np.zeros(_TABLE_END, dtype=np.uint32)
    needs_whole_text = np.zeros(_TABLE_END, dtype=bool)
    for cp in range(_TABLE_END):
        ch = chr(cp)
        nfkc = unicodedata.normalize("NFKC", ch)
        if len(nfkc) != 1 or unicodedata.category(ch)[0] == "M" or 0x1100 <= cp < 0x1200 or 0x3130 <= cp < 0x3190:
            needs_whole_text[cp] = True
            nfkc = ch if len(nfkc) != 1 else nfkc
        if nfkc in to_simplified:
            needs_whole_text[cp] = True
            nfkc = to_simplified[nfkc]
        if unicodedata.category(nfkc)[0] in "PSZC":
            continue  # deleted: punctuation, symbols, spaces, line breaks, controls
        lower = nfkc.lower()
        fold[cp] = ord(lower if len(lower) == 1 else nfkc)
    return fold, needs_whole_text


@functools.lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def _hash_form(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashing-form code points of all ``texts`` concatenated, and each text's number of them."""
    fold, needs_whole_text = fold_tables()
    texts = list(texts)
    for attempt in range(2):
        raw = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
        inside = None
        if len(raw) and int(raw.max()) >= _TABLE_END:  # rare: code points beyond the table map to themselves
            inside = raw < _TABLE_END
            clipped = np.where(inside, raw, 0)
        else:
            clipped = raw
        if attempt == 0:
            flagged = needs_whole_text[clipped]
            if inside is not None:
                flagged &= inside
            if flagged.any():  # traditional or rare code points: whole-text NFKC + t2s, then the same table lookup
                ends = np.cumsum([len(t) for t in texts])
                converter = _t2s()
                for index in np.unique(np.searchsorted(ends, np.flatnonzero(flagged), side="right")).tolist():
                    texts[index] = converter.convert(unicodedata.normalize("NFKC", texts[index]))
                continue
        break
    folded = fold[clipped]
    if inside is not None:
        folded = np.where(inside, folded, raw)
    keep = folded != 0
    kept_before = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
    bounds = np.concatenate(([0], np.cumsum([len(t) for t in texts], dtype=np.int64)))
    return folded[keep], np.diff(kept_before[bounds])


def normalize_codes(text: str) -> np.ndarray:
    """The hashing form of ``text`` as a uint32 array of code points."""
    return _hash_form([text])[0]


def normalize_for_hash(text: str) -> str:
    """The hashing form of ``text`` as a string (for tests, exact dedup keys and debugging)."""
    return normalize_codes(text).tobytes().decode("utf-32-le")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array."""
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def _ngram_hashes(codes: np.ndarray, ngram: int) -> np.ndarray:
    """Mixed hash of every window of ``ngram`` consecutive code points (len(codes) - ngram + 1 of them):
    the rolling hash of :mod:`cpm.pipeline.rolling_hash`, spread over all 64 bits for the permutations."""
    return _mix64(rolling_hashes(codes, ngram, _POLY))


def shingle_hashes(text: str, ngram: int) -> np.ndarray:
    """64-bit hashes of the character ``ngram``-grams of ``text``'s hashing form (may repeat)."""
    codes = normalize_codes(text)
    if len(codes) == 0:
        return np.zeros(0, dtype=np.uint64)
    return _ngram_hashes(codes, min(ngram, len(codes)))


@functools.lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) uint64 parameters of the ``num_perm`` hash permutations; ``a`` is odd."""
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
    return a, b


def signatures(texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = DEFAULT_SEED) -> np.ndarray:
    """MinHash signatures of ``texts``: a ``(len(texts), num_perm)`` uint32 array.

    Texts are processed together (one concatenated code point array), so batches of a few
    hundred short documents cost little more Python overhead than one long one.
    """
    return sign_batch(texts, num_perm, ngram, seed)[0]


def sign_batch(
    texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = DEFAULT_SEED
) -> tuple[np.ndarray, list[bytes]]:
    """Signatures of ``texts`` and the 16-byte BLAKE2b digest of each one's hashing form.

    Two texts with the same digest are exact duplicates after normalisation.
    """
    if num_perm < 1 or ngram < 1:
        raise ValueError("num_perm and ngram must be >= 1")
    out = np.full((len(texts), num_perm), EMPTY_HASH, dtype=np.uint32)
    if not texts:
        return out, []
    codes, lengths = _hash_form(texts)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    digests = [
        hashlib.blake2b(codes[start : start + length].tobytes(), digest_size=16).digest()
        for start, length in zip(starts.tolist(), lengths.tolist())
    ]

    # Shingle hashes of all documents: windows that cross a document boundary are dropped;
    # a document shorter than ngram contributes one shingle (all its characters).
    hash_parts: list[np.ndarray] = []
    owner_parts: list[np.ndarray] = []
    if len(codes) >= ngram:
        all_hashes = _ngram_hashes(codes, ngram)
        long_docs = np.flatnonzero(lengths >= ngram)
        counts = lengths[long_docs] - ngram + 1
        owner = np.repeat(long_docs, counts)
        offset = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
        hash_parts.append(all_hashes[starts[owner] + offset])
        owner_parts.append(owner)
    for doc in np.flatnonzero((lengths > 0) & (lengths < ngram)):
        piece = codes[starts[doc] : starts[doc] + lengths[doc]]
        hash_parts.append(_ngram_hashes(piece, len(piece)))
        owner_parts.append(np.array([doc]))
    if not hash_parts:
        return out, digests
    hashes = np.concatenate(hash_parts)
    owners = np.concatenate(owner_parts)
    order = np.argsort(owners, kind="stable")  # documents contiguous (already so unless short docs exist)
    hashes, owners = hashes[order], owners[order]

    a, b = permutations(num_perm, seed)
    a_col, b_col = a[:, None], b[:, None]
    buffer = np.empty((num_perm, min(_ROW_CHUNK, len(hashes))), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for lo in range(0, len(hashes), _ROW_CHUNK):
            chunk = hashes[lo : lo + _ROW_CHUNK]
            chunk_owners = owners[lo : lo + _ROW_CHUNK]
            values = buffer[:, : len(chunk)]  # (num_perm, chunk): contiguous rows reduce fastest
            np.multiply(a_col, chunk[None, :], out=values)
            values += b_col
            segment_starts = np.flatnonzero(np.diff(chunk_owners, prepend=-1))
            # min of the 64-bit values, then their top 32 bits (= min of the top 32 bits)
            mins = (np.minimum.reduceat(values, segment_starts, axis=1) >> np.uint64(32)).astype(np.uint32)
            docs = chunk_owners[segment_starts]
            out[docs] = np.minimum(out[docs], mins.T)
    return out, digests


def signature(text: str, num_perm: int = 128, ngram: int = 5, seed: int = DEFAULT_SEED) -> np.ndarray:
    """MinHash signature of one text: ``num_perm`` uint32 values."""
    return signatures([text], num_perm, ngram, seed)[0]


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Share of equal min-hashes: an unbiased estimate of the shingle sets' Jaccard similarity."""
    return float(np.mean(sig_a == sig_b))


def shingle_set(text: str, ngram: int) -> np.ndarray:
    """Sorted distinct 64-bit hashes of ``text``'s hashing-form character ``ngram``-grams."""
    return np.unique(shingle_hashes(text, ngram))


def set_jaccard(set_a: np.ndarray, set_b: np.ndarray) -> float:
    """Jaccard similarity of two :func:`shingle_set` arrays (1.0 when both are empty)."""
    if len(set_a) == 0 and len(set_b) == 0:
        return 1.0
    common = np.intersect1d(set_a, set_b, assume_unique=True).size
    return common / (len(set_a) + len(set_b) - common)


def exact_jaccard(text_a: str, text_b: str, ngram: int = 5) -> float:
    """Exact Jaccard similarity of the two texts' hashing-form character n-gram sets."""
    return set_jaccard(shingle_set(text_a, ngram), shingle_set(text_b, ngram))


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that LSH banding makes a pair of Jaccard ``similarity`` a candidate."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def estimate_std(similarity: float, num_perm: int) -> float:
    """Standard deviation of :func:`estimated_jaccard` for a pair of true Jaccard ``similarity``
    (each of the ``num_perm`` min-hashes agrees with probability ``similarity``: a binomial share)."""
    return math.sqrt(similarity * (1.0 - similarity) / num_perm)


def borderline_margin(threshold: float, num_perm: int, sigmas: float = 4.0) -> float:
    """Width of the band ``[threshold - margin, threshold)`` of estimates that are confirmed exactly.

    ``sigmas`` standard deviations of the estimate at the threshold: a pair whose true Jaccard is
    at (or above) the threshold has an estimate below the band with probability < 1e-4 at 4 sigma
    (0.141 for 128 permutations at 0.8).
    """
    return sigmas * estimate_std(threshold, num_perm)


def lsh_bands(threshold: float, num_perm: int, min_recall: float = 0.999) -> tuple[int, int]:
    """LSH (bands, rows) for a Jaccard ``threshold``: the most rows per band (fewest false
    candidates) such that, with ``bands = num_perm // rows``, a pair exactly at the threshold
    becomes a candidate with probability >= ``min_recall`` (25 bands x 5 rows for 0.8 and 128
    permutations: 0.99995; 18 x 7 would give 0.986, one near-duplicate pair in 70 never compared).

    Candidates are confirmed with the full signatures afterwards, so banding is tuned for
    recall; extra candidates only cost a comparison of two signatures.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if not 0.0 < min_recall < 1.0:
        raise ValueError(f"min_recall must be in (0, 1), got {min_recall}")
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if candidate_probability(threshold, bands, rows) >= min_recall:
            return bands, rows
    return num_perm, 1
