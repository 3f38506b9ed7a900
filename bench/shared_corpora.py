"""The real Chinese text in ../shared/data/zh that several benchmarks read (not needed to run cpm)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "zh"


def read_lines(name: str) -> list[str]:
    """The non-blank lines, stripped, of a zstd-compressed UTF-8 file of ../shared/data/zh; exits if it is missing."""
    import zstandard

    path = SHARED / name
    if not path.is_file():
        sys.exit(f"{path} is missing: the benchmark needs the shared corpora")
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        return [line.strip() for line in io.TextIOWrapper(stream, encoding="utf-8") if line.strip()]
