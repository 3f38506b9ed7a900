"""WARC, WET and ARC reading on warcio's own test archives and on archives written with warcio."""

from __future__ import annotations

import gzip
import io
import logging
from collections import Counter
from pathlib import Path

import pytest
from cpm.pipeline.readers import read_input
from cpm.pipeline.records import RawRecord, Rejection
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

WARCIO = Path(__file__).resolve().parent / "data" / "warcio"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00" + bytes(64)
PAGE = (
    "<html><head><meta charset='utf-8'><title>新闻</title></head><body><article>"
    "<p>北京时间昨天晚上，国家统计局发布了上半年的经济数据，多项指标好于市场预期。</p>"
    "</article></body></html>"
).encode()


def outcome(records: list[RawRecord | Rejection]) -> Counter:
    return Counter("kept" if isinstance(r, RawRecord) else r.rule for r in records)


def read(path: Path) -> list[RawRecord | Rejection]:
    return list(read_input(str(path), "webpage"))


# warcio's archives: (kept, rejections) per file; every response/resource record is counted once
EXPECTED = {
    "example.warc": {"kept": 1},  # a gzip-encoded body and a revisit record: NUL bytes in the file
    "example.warc.gz": {"kept": 1},
    "example.arc": {"kept": 1},
    "example.arc.gz": {"kept": 1},
    "bad.arc": {"unsupported_content_type": 3},  # ARC records with no body type
    "example-bad-non-chunked.warc.gz": {"kept": 1},  # one gzip member for the whole file
    "example-trunc.warc": {"kept": 1},
    "example-resource.warc.gz": {"kept": 1},
    "example-wrong-chunks.warc.gz": {"kept": 1},
    "example-iana.org-chunked.warc": {"kept": 1},
    "post-test.warc.gz": {"unsupported_content_type": 3},  # JSON responses to POSTs
    "example-digest.warc": {},  # request records only: nothing to count
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_warcio_archives_are_read_record_by_record(name: str, caplog: pytest.LogCaptureFixture) -> None:
    records = read(WARCIO / name)
    assert dict(outcome(records)) == EXPECTED[name]
    assert not [r for r in caplog.records if r.exc_info]  # never a traceback


def test_records_carry_warc_headers_and_html() -> None:
    (record,) = read(WARCIO / "example.warc.gz")
    assert record.url == "http://example.com/" and record.date == "2017-03-06T04:02:06Z"
    assert record.id == "urn:uuid:a9c51e3e-0221-11e7-bf66-0242ac120005"
    assert "Example Domain" in record.html and record.meta == {"warc_type": "response", "charset": "utf-8"}


def test_arc_records_get_stable_derived_ids() -> None:
    first, second = read(WARCIO / "example.arc"), read(WARCIO / "example.arc")
    (record,) = first
    assert record.url == "http://example.com/" and "Example Domain" in record.html
    assert record.id.startswith("webpage-") and record.id == second[0].id  # warcio's own ARC ids are random


def write_warc(records: list[tuple[str, bytes, str]], gzipped: bool) -> bytes:
    """A WARC written by warcio: (url, body, content type) responses."""
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=gzipped)
    for url, body, content_type in records:
        http = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
        record = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http)
        writer.write_record(record)
    return out.getvalue()


@pytest.mark.parametrize("gzipped", [False, True])
def test_an_image_record_costs_only_itself(tmp_path: Path, gzipped: bool) -> None:
    path = tmp_path / ("crawl.warc.gz" if gzipped else "crawl.warc")
    path.write_bytes(write_warc([("http://a.cn/logo.png", PNG, "image/png"), ("http://a.cn/n", PAGE, "text/html")], gzipped))
    records = read(path)
    assert [r.rule if isinstance(r, Rejection) else "kept" for r in records] == ["unsupported_content_type", "kept"]
    assert "国家统计局" in records[1].html and records[1].origin.endswith(":record 2")


def test_binary_and_oversized_bodies_are_rejected_one_record_at_a_time(tmp_path: Path) -> None:
    big = b"<html><body>" + "很长的页面。".encode() * 2000 + b"</body></html>"
    path = tmp_path / "mixed.warc.gz"
    pages = [("http://a.cn/x", PNG, "text/html"), ("http://a.cn/big", big, "text/html"), ("http://a.cn/n", PAGE, "text/html")]
    path.write_bytes(write_warc(pages, gzipped=True))
    records = list(read_input(str(path), "webpage", max_record_chars=5000))
    assert [r.rule if isinstance(r, Rejection) else "kept" for r in records] == [
        "binary_record",
        "oversized_record",
        "kept",
    ]


def test_a_truncated_tail_keeps_every_record_before_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pages = [(f"http://a.cn/{i}", PAGE, "text/html") for i in range(5)]
    data = write_warc(pages, gzipped=True)
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data[: len(data) - 200])  # inside the last gzip member
    with caplog.at_level(logging.WARNING):
        records = read(path)
    assert [r.rule if isinstance(r, Rejection) else "kept" for r in records] == ["kept"] * 4 + ["truncated_file"]
    assert records[-1].origin.endswith(":record 5") and "4 records before it were kept" in records[-1].detail
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is None and str(path) in caplog.messages[0]


def test_a_corrupt_header_keeps_the_records_before_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = write_warc([(f"http://a.cn/{i}", PAGE, "text/html") for i in range(3)], gzipped=False)
    second = data.index(b"WARC/1.", 10)
    path = tmp_path / "corrupt.warc"
    path.write_bytes(data[:second] + b"GARBAGE NOT A HEADER\r\n" + data[second + 9 :])
    with caplog.at_level(logging.WARNING):
        records = read(path)
    assert [r.rule if isinstance(r, Rejection) else "kept" for r in records] == ["kept", "malformed_record"]
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is None


def test_records_without_blank_lines_between_them_are_all_read(tmp_path: Path) -> None:
    """Internet Archive files whose records are not followed by the two CRLFs the standard asks for."""
    members = [gzip.decompress(write_warc([(f"http://a.cn/{i}", PAGE, "text/html")], gzipped=True)) for i in range(3)]
    joined = b"".join(member[: -len(b"\r\n\r\n")] for member in members)
    path = tmp_path / "no-separators.warc.gz"
    path.write_bytes(b"".join(gzip.compress(member) for member in [joined]))
    records = read(path)
    assert outcome(records) == Counter(kept=3)


def test_wet_conversion_records_carry_text(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    for i, text in enumerate(["第一段正文。", "第二段正文。"]):
        record = writer.create_warc_record(
            f"http://a.cn/{i}", "conversion", payload=io.BytesIO(text.encode()), warc_content_type="text/plain"
        )
        writer.write_record(record)
    path = tmp_path / "crawl.warc.wet.gz"
    path.write_bytes(out.getvalue())
    records = read(path)
    assert [r.text for r in records] == ["第一段正文。", "第二段正文。"]
    assert all(r.meta == {"warc_type": "conversion"} for r in records)


def test_a_binary_file_named_like_an_archive_is_one_rejection(tmp_path: Path) -> None:
    path = tmp_path / "photo.arc"
    path.write_bytes(PNG)
    assert [r.rule for r in read(path)] == ["binary_file"]
