"""The rules of ``cpm data pack``: which split a document is in, how many copies of it the train
stream holds, where each copy goes, and the per-source weights that set the copies.

Each rule is a pure function of the document id, the seed and the options (never of the other
documents), computed with :func:`cpm.hashing.stable_hash`, so the same input and options give the
same sequences and a document never changes split when the corpus grows.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pyarrow as pa

from cpm.errors import CpmError
from cpm.hashing import stable_hash
from cpm.schemas import SOURCES, token_type

log = logging.getLogger(__name__)

SPLITS = ("train", "valid")
# The CPM-1 paper's corpus mix (encyclopedia : webpage : story : news : dialog), as token shares.
PAPER_MIX = {"encyclopedia": 40.0, "webpage": 39.0, "story": 10.0, "news": 10.0, "dialog": 1.0}


def numpy_token_dtype(vocab_size: int) -> np.dtype:
    """The numpy twin of :func:`cpm.schemas.token_type`: uint16, or uint32 for vocabularies over 65,536."""
    return np.dtype(np.uint16 if token_type(vocab_size) == pa.uint16() else np.uint32)


def split_hash(doc_id: str) -> int:
    """The 64-bit hash that decides a document's split."""
    return stable_hash("cpm-split:" + doc_id)


def split_of(doc_id: str, valid_fraction: float) -> str:
    """The split of a document: ``valid`` iff ``blake2b("cpm-split:" + id) / 2**64 < valid_fraction``."""
    return "valid" if split_hash(doc_id) < valid_fraction * 2.0**64 else "train"


def copies_of(doc_id: str, weight: float, seed: int) -> int:
    """How many times a document of source weight ``weight`` appears in the train stream."""
    whole = math.floor(weight)
    frac = weight - whole
    if frac > 0 and stable_hash(f"cpm-mix:{seed}:{doc_id}") < frac * 2.0**64:
        whole += 1
    return whole


def order_key(doc_id: str, copy: int, seed: int) -> int:
    """The sort key that places a document copy in the stream (a 64-bit hash of seed, copy, id)."""
    return stable_hash(f"cpm-order:{seed}:{copy}:{doc_id}")


def parse_weights(spec: str | None, option: str = "--source-weights") -> dict[str, float]:
    """``"encyclopedia=40,webpage=39"`` -> ``{"encyclopedia": 40.0, "webpage": 39.0}``."""
    weights: dict[str, float] = {}
    if not spec:
        return weights
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in SOURCES:
            raise CpmError(f"{option}: {item!r} is not SOURCE=NUMBER with SOURCE one of {', '.join(SOURCES)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise CpmError(f"{option}: {value!r} is not a number (in {item!r})") from None
        if not math.isfinite(weights[name]) or weights[name] < 0:
            raise CpmError(f"{option}: the weight of {name} must be a finite number >= 0, got {value}")
    return weights


def weights_from_mix(mix: dict[str, float], train_tokens: dict[str, int]) -> dict[str, float]:
    """Per-source repeat factors that turn the measured train token counts into the shares of ``mix``.

    The total number of train tokens stays about the same. A source with a share but no
    documents is left out (with a warning) and the other shares are scaled up; a source
    without a share is dropped (weight 0).
    """
    missing = sorted(s for s, share in mix.items() if share > 0 and not train_tokens.get(s))
    if missing:
        log.warning("--source-mix: the input has no %s documents; mixing the other sources in their ratio", ", ".join(missing))
    present = {s: share for s, share in mix.items() if train_tokens.get(s)}
    total_share = sum(present.values())
    if total_share <= 0:
        raise CpmError(f"--source-mix: no source with a share > 0 has documents (the input has {', '.join(sorted(train_tokens)) or 'none'})")
    total_tokens = sum(train_tokens.values())
    return {
        source: present.get(source, 0.0) / total_share * total_tokens / have
        for source, have in sorted(train_tokens.items())
        if have
    }
