"""Polynomial rolling hashes of every window of n code points: the one n-gram hash of the corpus build.

The repetition filters (:mod:`cpm.pipeline.clean`) compare the raw hashes for equality; MinHash
(:mod:`cpm.pipeline.minhash`) finishes them with a mixer, since its permutations need well-spread bits.
"""

from __future__ import annotations

import numpy as np


def rolling_hashes(codes: np.ndarray, n: int, base: np.uint64) -> np.ndarray:
    """``sum(codes[i + k] * base ** (n - 1 - k))`` mod 2**64 for every window ``i`` of ``n`` code points
    (``len(codes) - n + 1`` uint64 hashes, a new array).

    Computed by doubling, like a power by squaring: the hashes of windows of ``a`` and of ``b`` code
    points give those of ``a + b`` as ``h_a[i] * base**b + h_b[i + a]`` (mod 2**64), so 8-grams take
    three multiply-adds over the array rather than seven.
    """
    count = len(codes) - n + 1
    part = codes.astype(np.uint64, copy=False)  # hashes of the windows of `size` code points
    size = 1
    result = None  # hashes of the windows of the first `done` code points of each n-gram
    done = 0
    with np.errstate(over="ignore"):
        while True:
            if n & size:
                if result is None:
                    result = part.copy() if size == 1 else part  # (never the caller's array)
                else:
                    result = _join(result, part, done, _power(base, size))
                done += size
            if done == n:
                return result[:count]
            part = _join(part, part, size, _power(base, size))
            size *= 2


_POWERS: dict[tuple[int, int], np.uint64] = {}


def _power(base: np.uint64, exponent: int) -> np.uint64:
    """``base ** exponent`` mod 2**64 (cached: a few bases and exponents are used)."""
    key = (int(base), exponent)
    value = _POWERS.get(key)
    if value is None:
        value = _POWERS[key] = np.uint64(pow(key[0], exponent, 1 << 64))
    return value


def _join(head: np.ndarray, tail: np.ndarray, head_size: int, tail_factor: np.uint64) -> np.ndarray:
    """``head[i] * tail_factor + tail[i + head_size]``: windows of a head and the tail that follows it."""
    length = min(len(head), len(tail) - head_size)
    joined = head[:length] * tail_factor
    joined += tail[head_size : head_size + length]
    return joined
