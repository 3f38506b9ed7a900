"""Checking shards against their manifest before they are used: size, then a streamed sha256.

``cpm train`` and ``cpm eval ppl`` call :func:`verify_data` before the first step, so a shard
that changed after ``cpm data pack`` wrote it (a flipped byte, a truncated copy) is a one-line
error naming it, not silently different training data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from cpm.errors import ShardError
from cpm.schemas.manifest import MANIFEST_NAME, read_manifest

log = logging.getLogger(__name__)

READ_CHUNK = 8 << 20  # bytes hashed per read
HASH_THREADS = 8  # shards hashed at once (at most one per core)


@dataclass(frozen=True)
class ListedShard:
    """A shard file and what its manifest says about it."""

    path: Path
    bytes: int
    sha256: str
    manifest: Path


class Verified(NamedTuple):
    shards: int
    bytes: int
    seconds: float
    unlisted: int  # shard files no manifest lists (nothing to compare them with)


def listed_shards(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[ListedShard], list[Path]]:
    """The manifest entry of each shard (``DIR/manifest.json`` lists ``DIR/part-N.arrow`` and
    ``DIR/<split>/part-N.arrow``), and the shards that no manifest lists."""
    tables: dict[Path, dict[Path, dict]] = {}
    listed: list[ListedShard] = []
    unlisted: list[Path] = []
    for path in map(Path, paths):
        entry = None
        for directory in (path.parent, path.parent.parent):
            if not (directory / MANIFEST_NAME).is_file():
                continue
            if directory not in tables:
                tables[directory] = {(directory / s["path"]).resolve(): s for s in read_manifest(directory)["shards"]}
            entry = tables[directory].get(path.resolve())
            if entry is not None:
                listed.append(ListedShard(path, int(entry["bytes"]), entry["sha256"], directory / MANIFEST_NAME))
                break
        if entry is None:
            unlisted.append(path)
    return listed, unlisted


def sha256_streamed(path: Path, on_bytes=None) -> str:
    """Hex sha256 of ``path``, read in chunks; ``on_bytes(n)`` after each chunk."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(READ_CHUNK):
            digest.update(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return digest.hexdigest()


def verify_listed(shards: Sequence[ListedShard], progress: bool = True) -> float:
    """Check sizes (all first: cheap), then sha256s, with a progress bar over the bytes; return
    the seconds taken. :class:`ShardError` names the first shard (in order) that differs."""
    from tqdm import tqdm

    for shard in shards:
        if not shard.path.is_file():
            raise ShardError(f"{shard.path}: listed in {shard.manifest} but missing")
        size = shard.path.stat().st_size
        if size != shard.bytes:
            raise ShardError(f"{shard.path}: {size} bytes, {shard.manifest} says {shard.bytes} (truncated or replaced?)")
    started = time.perf_counter()
    total = sum(s.bytes for s in shards)
    lock = threading.Lock()
    with tqdm(total=total, desc="verifying shards", unit="B", unit_scale=True, unit_divisor=1024,
              disable=not progress, leave=False) as bar:

        def advance(n: int) -> None:
            with lock:
                bar.update(n)

        # hashlib releases the GIL: shards are hashed on several cores at once
        with ThreadPoolExecutor(max_workers=max(1, min(HASH_THREADS, os.cpu_count() or 1, len(shards)))) as pool:
            digests = pool.map(lambda shard: sha256_streamed(shard.path, advance), shards)
            for shard, digest in zip(shards, digests):
                if digest != shard.sha256:
                    raise ShardError(
                        f"{shard.path}: corrupted: its sha256 differs from {shard.manifest} "
                        f"(see `cpm shards inspect {shard.manifest.parent} --verify`)"
                    )
    return time.perf_counter() - started


def verify_data(paths: Sequence[str | os.PathLike[str]], *, skip: bool = False, progress: bool = True,
                what: str = "the data") -> Verified:
    """Verify the shards ``paths`` against their manifests (see :func:`verify_listed`); with
    ``skip`` only warn that they are not checked."""
    listed, unlisted = listed_shards(paths)
    if unlisted:
        log.warning("%d shard(s) of %s are listed in no manifest, so their size and sha256 are not checked (first: %s)",
                    len(unlisted), what, unlisted[0])
    total = sum(s.bytes for s in listed)
    if skip:
        log.warning("--skip-verify: %d shard(s) of %s (%.2f GB) are not checked against their manifest's sha256; "
                    "a corrupted shard would be used as it is", len(listed), what, total / 1e9)
        return Verified(0, 0, 0.0, len(unlisted))
    seconds = verify_listed(listed, progress)
    log.info("verified %d shard(s) of %s, %.2f GB, in %.1fs", len(listed), what, total / 1e9, seconds)
    return Verified(len(listed), total, seconds, len(unlisted))
