"""Intermediate files of the staged corpus build: framed pickles, partitioned, written atomically.

A *spill file* holds rows (any picklable values) in frames of at most :data:`FRAME_ROWS`, so a
reader holds one frame at a time. A *partitioned* spill file groups its frames by partition
(a shard number, a hash bucket) with an index at its end, so the task that owns partition ``p``
reads only that section of every producer's file. Files are written to a temporary name and
renamed, so a killed task leaves either the whole file or none.

Task markers (``<stage>/<task>.done``, holding the task's small result) are written last by a
task, after its files: a task with a marker is complete and is not run again by ``--resume``
(the per-task completion markers of datatrove).
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any, Iterable, Iterator

FRAME_ROWS = 256
_FOOTER = struct.Struct("<Q")
MARKERS_DIR = ".tasks"


def _atomic_open(path: str):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    return tmp, open(tmp, "wb")


def _frames(rows: Iterable[Any]) -> Iterator[list[Any]]:
    frame: list[Any] = []
    for row in rows:
        frame.append(row)
        if len(frame) == FRAME_ROWS:
            yield frame
            frame = []
    if frame:
        yield frame


def write_partitioned(path: str, parts: dict[int, Iterable[Any]]) -> int:
    """Write each partition's rows (in the given order) as frames; return the number of rows."""
    tmp, handle = _atomic_open(path)
    index: dict[int, list[int]] = {}
    rows = 0
    try:
        with handle:
            for part in sorted(parts):
                offsets = index.setdefault(part, [])
                for frame in _frames(parts[part]):
                    offsets.append(handle.tell())
                    pickle.dump(frame, handle, protocol=pickle.HIGHEST_PROTOCOL)
                    rows += len(frame)
            start = handle.tell()
            pickle.dump(index, handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.write(_FOOTER.pack(start))
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return rows


def write_rows(path: str, rows: Iterable[Any]) -> int:
    """A spill file of one partition (0)."""
    return write_partitioned(path, {0: rows})


def read_partition(path: str, part: int = 0) -> Iterator[Any]:
    """The rows of partition ``part`` of a spill file, a frame at a time (none if it has none)."""
    with open(path, "rb") as handle:
        handle.seek(-_FOOTER.size, os.SEEK_END)
        (start,) = _FOOTER.unpack(handle.read(_FOOTER.size))
        handle.seek(start)
        offsets = pickle.load(handle).get(part, [])
        for offset in offsets:
            handle.seek(offset)
            yield from pickle.load(handle)


def read_rows(path: str) -> Iterator[Any]:
    return read_partition(path, 0)


def partitions_of(path: str) -> list[int]:
    """The partitions a spill file has rows for."""
    with open(path, "rb") as handle:
        handle.seek(-_FOOTER.size, os.SEEK_END)
        (start,) = _FOOTER.unpack(handle.read(_FOOTER.size))
        handle.seek(start)
        return sorted(pickle.load(handle))


def write_object(path: str, value: Any) -> None:
    """One picklable value, atomically."""
    tmp, handle = _atomic_open(path)
    try:
        with handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def read_object(path: str) -> Any:
    with open(path, "rb") as handle:
        return pickle.load(handle)


def marker_path(work_dir: str, stage: str, task: str) -> str:
    return os.path.join(work_dir, MARKERS_DIR, stage, f"{task}.done")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
