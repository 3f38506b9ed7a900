"""Stable hashes: the same value in every process and on every machine (unlike ``hash``)."""

from __future__ import annotations

import hashlib


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text``: blake2b with an 8-byte digest, read little-endian.

    The corpus build keys document shards on it, and ``cpm data pack`` its split, repeat and
    order rules: changing it changes which shard, split and position every document gets.
    """
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
