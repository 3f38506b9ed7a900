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
_PAIR = struct.Struct("<qq")
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
    """Write each partition's rows (in the given order) as frames; return the number of rows.

    Layout: the frames, partition after partition; a dense index of (first frame offset, frames)
    for partitions ``0 .. max``; then (index offset, index length). A reader of one partition
    reads 32 bytes of index, whatever the number of partitions.
    """
    tmp, handle = _atomic_open(path)
    size = max(parts, default=-1) + 1
    index = [(0, 0)] * size
    rows = 0
    try:
        with handle:
            for part in sorted(parts):
                start, count = handle.tell(), 0
                for frame in _frames(parts[part]):
                    pickle.dump(frame, handle, protocol=pickle.HIGHEST_PROTOCOL)
                    rows += len(frame)
                    count += 1
                index[part] = (start, count)
            start = handle.tell()
            handle.write(b"".join(_PAIR.pack(*entry) for entry in index))
            handle.write(_PAIR.pack(start, size))
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return rows


def write_rows(path: str, rows: Iterable[Any]) -> int:
    """A spill file of one partition (0)."""
    return write_partitioned(path, {0: rows})


def _locate(handle, part: int) -> tuple[int, int]:
    handle.seek(-_PAIR.size, os.SEEK_END)
    index, size = _PAIR.unpack(handle.read(_PAIR.size))
    if not 0 <= part < size:
        return 0, 0
    handle.seek(index + part * _PAIR.size)
    return _PAIR.unpack(handle.read(_PAIR.size))


def read_partition(path: str, part: int = 0) -> Iterator[Any]:
    """The rows of partition ``part`` of a spill file, a frame at a time (none if it has none).

    The file is open only while a frame is read, so any number of readers may be merged.
    """
    with open(path, "rb") as handle:
        position, count = _locate(handle, part)
    for _ in range(count):
        with open(path, "rb") as handle:
            handle.seek(position)
            frame = pickle.load(handle)
            position = handle.tell()
        yield from frame


def read_rows(path: str) -> Iterator[Any]:
    return read_partition(path, 0)


def partitions_of(path: str) -> list[int]:
    """The partitions a spill file has rows for."""
    with open(path, "rb") as handle:
        handle.seek(-_PAIR.size, os.SEEK_END)
        index, size = _PAIR.unpack(handle.read(_PAIR.size))
        handle.seek(index)
        entries = [_PAIR.unpack(handle.read(_PAIR.size)) for _ in range(size)]
    return [part for part, (_, count) in enumerate(entries) if count]


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
