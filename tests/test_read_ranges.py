"""A large local JSONL file read in line-aligned byte ranges gives the records of reading it whole."""

from __future__ import annotations

import codecs
import gzip
import json
import random

from cpm.pipeline.readers import read_input
from cpm.pipeline.readers.ranges import ByteRange, input_ranges, line_ranges


def _lines(rng: random.Random, count: int) -> list[bytes]:
    lines = []
    for i in range(count):
        kind = rng.random()
        if kind < 0.05:
            lines.append(b"")  # blank line
        elif kind < 0.1:
            lines.append(b"{not json")
        elif kind < 0.15:
            lines.append(json.dumps({"text": "无编号" * rng.randint(1, 30)}, ensure_ascii=False).encode() + b"\r")  # CRLF, derived id
        elif kind < 0.2:
            lines.append(b'{"id": "bad", "text": "\xff\xfe"}')  # invalid UTF-8
        else:
            lines.append(json.dumps({"id": f"d{i}", "text": "中文段落。" * rng.randint(1, 200)}, ensure_ascii=False).encode())
    return lines


def _records(path, **kwargs) -> list[tuple]:
    return [(r.origin, r.id, getattr(r, "text", None), getattr(r, "rule", None)) for r in read_input(str(path), "news", **kwargs)]


def test_ranges_are_line_aligned_and_number_their_first_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"aaaa\nbb\n\ncccccc\nd")
    ranges = line_ranges(str(path), 3)
    assert ranges == [ByteRange(0, 5, 1), ByteRange(5, 9, 2), ByteRange(9, 16, 4), ByteRange(16, 17, 5)]
    data = path.read_bytes()
    assert all(r.start == 0 or data[r.start - 1 : r.start] == b"\n" for r in ranges)
    assert all(data[: r.start].count(b"\n") + 1 == r.first_line for r in ranges)
    assert line_ranges(str(path), 100) == [ByteRange(0, 17, 1)]


def test_reading_the_ranges_gives_the_records_of_the_whole_file(tmp_path, monkeypatch):
    rng = random.Random(5)
    path = tmp_path / "news.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + b"\n".join(_lines(rng, 400)) + b"\n" + b'{"id": "last", "text": "no newline"}')
    whole = _records(path)
    monkeypatch.setattr("cpm.pipeline.readers.ranges.SCAN_BLOCK", 4096)  # boundaries found across scan blocks
    for range_bytes in (1, 700, 5000, 60000):
        ranges = input_ranges(str(path), "news", path.stat().st_size, range_bytes)
        assert ranges is not None and len(ranges) > 1
        parts = [record for r in ranges for record in _records(path, byte_range=r)]
        assert parts == whole, range_bytes
    assert whole[0][1] == "d0" and any(rule == "malformed_json" for *_, rule in whole)


def test_small_compressed_and_other_inputs_are_read_whole(tmp_path):
    lines = b"\n".join(_lines(random.Random(1), 200)) + b"\n"
    plain = tmp_path / "news.jsonl"
    plain.write_bytes(lines)
    packed = tmp_path / "news.jsonl.gz"
    packed.write_bytes(gzip.compress(lines))
    html = tmp_path / "page.html"
    html.write_bytes(b"<html><body>" + "中文".encode() * 5000 + b"\n</body></html>\n" * 100)
    size = plain.stat().st_size
    assert input_ranges(str(plain), "news", size, size) is None
    assert input_ranges(str(plain), "news", size, size // 4) is not None
    assert input_ranges(str(packed), "news", packed.stat().st_size, 100) is None
    assert input_ranges(str(html), "web", html.stat().st_size, 100) is None
