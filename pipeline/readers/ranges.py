"""Line-aligned byte ranges of a large local JSONL file, so that its parts are read in parallel.

The launcher cuts such a file at the first line break after every ``range_bytes``, in one pass
that only counts line breaks (no parsing), and gives each range the number of its first line:
records keep the origins (``path:line``) and derived ids they get when the file is read whole.
Compressed files, other formats and remote files are read whole (one range).
"""

from __future__ import annotations

from typing import NamedTuple

from cpm.pipeline.readers.common import HEAD_BYTES
from cpm.pipeline.readers.compression import compression_of
from cpm.pipeline.readers.detect import detect_format
from cpm.pipeline.readers.encoding import looks_binary

SCAN_BLOCK = 1 << 24


class ByteRange(NamedTuple):
    """Bytes ``[start, end)`` of a file, starting at line ``first_line`` (1-based)."""

    start: int
    end: int
    first_line: int


def splittable(path: str, source: str, size: int, range_bytes: int) -> bool:
    """Whether ``path`` is a local, uncompressed JSONL file of more than ``range_bytes``."""
    if "://" in path or size <= range_bytes:
        return False
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    if compression_of(path, head[:4]) is not None or not head.strip() or looks_binary(head):
        return False
    return detect_format(path, head, source) == "jsonl"


def line_ranges(path: str, range_bytes: int) -> list[ByteRange]:
    """The file cut after the first line break at or beyond every ``range_bytes`` from the last cut."""
    ranges: list[ByteRange] = []
    start, first_line, target = 0, 1, range_bytes
    position, lines = 0, 0  # bytes and line breaks before the current block
    with open(path, "rb") as handle:
        while block := handle.read(SCAN_BLOCK):
            offset = 0
            while (search := max(target - position, offset)) < len(block):
                newline = block.find(b"\n", search)
                if newline < 0:
                    break
                end = position + newline + 1
                ranges.append(ByteRange(start, end, first_line))
                first_line = lines + block.count(b"\n", 0, newline + 1) + 1
                start, target, offset = end, end + range_bytes, newline + 1
            lines += block.count(b"\n")
            position += len(block)
    if start < position or not ranges:
        ranges.append(ByteRange(start, max(position, start), first_line))
    return ranges


def input_ranges(path: str, source: str, size: int, range_bytes: int) -> list[ByteRange] | None:
    """The ranges ``path`` is read in, or None to read it whole."""
    if not splittable(path, source, size, range_bytes):
        return None
    ranges = line_ranges(path, range_bytes)
    return ranges if len(ranges) > 1 else None


def range_chunks(handle, byte_range: ByteRange, block: int = 1 << 20):
    """The bytes of ``byte_range`` of an open file, a block at a time."""
    handle.seek(byte_range.start)
    remaining = byte_range.end - byte_range.start
    while remaining > 0 and (data := handle.read(min(block, remaining))):
        remaining -= len(data)
        yield data

