"""sha256 of a checkpoint's files: recorded when it is saved, checked when a file is loaded.

``checksums.json`` in a checkpoint directory lists every other file of it::

    {"algorithm": "sha256", "files": {"model-tp00-of-01.pt": {"bytes": 1234, "sha256": "..."}, ...}}

:func:`verified_file` checks one file against it before the file is read (size first, then the
streamed sha256), so ``--resume``, ``generate``, ``eval``, ``export hf`` and resharding never load
changed bytes. A checkpoint written before checksums were recorded loads with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cpm.errors import CpmError
from cpm.schemas.manifest import sha256_file

log = logging.getLogger(__name__)

CHECKSUMS = "checksums.json"
HASH_THREADS = 4  # hashlib releases the GIL: files are hashed in parallel

_verified: set[tuple[str, int, int]] = set()  # (path, size, mtime) already checked in this process
_unverifiable: set[str] = set()  # directories without checksums.json, warned about once


def write_checksums(directory: str | os.PathLike[str]) -> Path:
    """Hash every file of ``directory`` (but ``checksums.json``) and write ``checksums.json``."""
    directory = Path(directory)
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != CHECKSUMS)
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        digests = list(pool.map(sha256_file, files))
    record = {"algorithm": "sha256",
              "files": {p.name: {"bytes": p.stat().st_size, "sha256": d} for p, d in zip(files, digests)}}
    path = directory / CHECKSUMS
    tmp = path.with_name(f".{CHECKSUMS}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_checksums(directory: Path) -> dict[str, Any] | None:
    """The ``files`` table of ``directory/checksums.json``; None when the checkpoint has none."""
    path = directory / CHECKSUMS
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CpmError(f"{path}: unreadable checksums ({type(exc).__name__}: {exc})") from None
    if not isinstance(files, dict):
        raise CpmError(f"{path}: unreadable checksums (no 'files' table)")
    return files


def verified_file(path: str | os.PathLike[str]) -> Path:
    """``path``, once its size and sha256 match its checkpoint's ``checksums.json``.

    Raises :class:`CpmError` naming the file on a mismatch or when the file is not listed.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return path
    files = read_checksums(path.parent)
    if files is None:
        if str(path.parent) not in _unverifiable:
            _unverifiable.add(str(path.parent))
            log.warning("%s: no %s (saved by an older cpm): its files cannot be verified", path.parent, CHECKSUMS)
        return path
    entry = files.get(path.name)
    if not isinstance(entry, dict):
        raise CpmError(f"{path}: not listed in {path.parent / CHECKSUMS}; the checkpoint was changed after it was saved")
    if stat.st_size != entry.get("bytes"):
        raise CpmError(f"{path}: corrupted checkpoint file: {stat.st_size} bytes, {CHECKSUMS} says {entry.get('bytes')}")
    if sha256_file(path) != entry.get("sha256"):
        raise CpmError(f"{path}: corrupted checkpoint file: its sha256 differs from {path.parent / CHECKSUMS}")
    _verified.add(key)
    return path
