"""The one n-gram hash of the corpus build, against its definition written out term by term."""

from __future__ import annotations

import numpy as np
import pytest

from cpm.pipeline.rolling_hash import rolling_hashes

BASES = (np.uint64(1_000_003), np.uint64(0x100000001B3))  # the repetition filters', MinHash's


def by_definition(codes: list[int], n: int, base: int) -> list[int]:
    """sum(codes[i + k] * base ** (n - 1 - k)) mod 2**64, in Python integers."""
    return [sum(codes[i + k] * pow(base, n - 1 - k, 1 << 64) for k in range(n)) % (1 << 64)
            for i in range(len(codes) - n + 1)]


@pytest.mark.parametrize("length", [1, 2, 7, 8, 9, 31, 64, 200])
@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_every_window_length_matches_the_definition(length, dtype):
    rng = np.random.default_rng(length)
    codes = rng.integers(0, 0x32000, length).astype(dtype)
    for n in range(1, min(length, 20) + 1):  # every combination of doubled parts up to 16 + 4
        for base in BASES:
            hashes = rolling_hashes(codes, n, base)
            assert hashes.dtype == np.uint64 and hashes.tolist() == by_definition(codes.tolist(), n, int(base)), n


def test_the_result_is_a_new_array_and_the_codes_are_left_alone():
    codes = np.arange(100, 140, dtype=np.uint64)
    before = codes.copy()
    for n in (1, 2, 5):
        hashes = rolling_hashes(codes, n, BASES[0])
        hashes += np.uint64(1)  # MinHash mixes its hashes in place
        assert not np.shares_memory(hashes, codes)
    assert (codes == before).all()
