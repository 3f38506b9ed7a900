"""Polynomial rolling hashes of every window of n code points: the one n-gram hash of the corpus build.

The repetition filters (:mod:`cpm.pipeline.clean`) compare the raw hashes for equality; MinHash
(:mod:`cpm.pipeline.minhash`) finishes them with a mixer, since its permutations need well-spread bits.
"""

from __future__ import annotations

import numpy as np


def rolling_hashes(codes: np.ndarray, n: int, base: np.uint64) -> np.ndarray:
    """``sum(codes[i + k] * base ** (n - 1 - k))`` mod 2**64 for every window ``i`` of ``n`` code points
    (``len(codes) - n + 1`` uint64 hashes)."""
    count = len(codes) - n + 1
    wide = codes.astype(np.uint64, copy=False)
    hashes = wide[:count].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            hashes *= base
            hashes += wide[k : k + count]
    return hashes
