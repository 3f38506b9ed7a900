"""Opening input files and decompressing them in streaming fashion.

:func:`open_raw` opens a path through Beam's file systems (local paths, ``gs://``, ``s3://``,
``hdfs://`` alike); :func:`decompressed_chunks` yields the decompressed bytes of ``.gz``,
``.bz2`` and ``.zst`` files (detected by magic bytes, else by extension), concatenated
members and frames included. A stream that ends or breaks before its end marker raises
:class:`TruncatedInputError` after yielding everything before the break.
"""

from __future__ import annotations

import bz2
import io
import os
import re
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from cpm.errors import CpmError

READ_CHUNK = 1 << 20
_OUT_CHUNK = 1 << 20
_ZSTD_READ_CHUNK = 1 << 14  # zstd output is not bounded per call, so feed it small pieces


class TruncatedInputError(Exception):
    """A compressed stream that ends (or breaks) before its end-of-stream marker."""


_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\x28\xb5\x2f\xfd", "zstd"))
COMPRESSED_SUFFIX = re.compile(r"\.(gz|gzip|bz2|zst|zstd)$", re.IGNORECASE)
_EXTENSIONS = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bzip2", ".zst": "zstd", ".zstd": "zstd"}


def compression_of(path: str, magic: bytes) -> str | None:
    """``"gzip"``, ``"bzip2"``, ``"zstd"`` or None: by magic bytes, else by file extension."""
    for prefix, kind in _MAGIC:
        if magic.startswith(prefix):
            return kind
    return _EXTENSIONS.get(os.path.splitext(path)[1].lower())


def open_raw(path: str) -> BinaryIO:
    if "://" not in path:  # a local file: no need to load Beam's file systems
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise CpmError(f"{path}: no such input file") from None
        except OSError as error:
            raise CpmError(f"{path}: cannot open input file ({error})") from error
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        exists = FileSystems.exists(path)
    except Exception as error:  # an unknown scheme, unreachable storage
        raise CpmError(f"{path}: cannot open input file ({error})") from error
    if not exists:
        raise CpmError(f"{path}: no such input file")
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _plain_chunks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    while chunk := read(READ_CHUNK):
        yield chunk


def _gzip_chunks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    decompressor = zlib.decompressobj(wbits=31)
    started = False
    while True:
        data = read(READ_CHUNK)
        if not data:
            if started and not decompressor.eof:
                raise TruncatedInputError("gzip stream ends before its end-of-stream marker")
            return
        while data:
            started = True
            try:
                out = decompressor.decompress(data, _OUT_CHUNK)
            except zlib.error as error:
                raise TruncatedInputError(f"corrupt gzip data: {error}") from error
            if out:
                yield out
            if decompressor.eof:  # a concatenated gzip member may follow
                data = decompressor.unused_data.lstrip(b"\x00")
                decompressor = zlib.decompressobj(wbits=31)
                started = False
                continue
            data = decompressor.unconsumed_tail
            if not data and len(out) == _OUT_CHUNK:
                data = b""
                while len(out) == _OUT_CHUNK:  # drain output held back by the size limit
                    out = decompressor.decompress(b"", _OUT_CHUNK)
                    if out:
                        yield out
                if decompressor.eof:
                    data = decompressor.unused_data.lstrip(b"\x00")
                    decompressor = zlib.decompressobj(wbits=31)
                    started = False


def _bzip2_chunks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    decompressor = bz2.BZ2Decompressor()
    started = False
    while True:
        data = read(READ_CHUNK)
        if not data:
            if started and not decompressor.eof:
                raise TruncatedInputError("bzip2 stream ends before its end-of-stream marker")
            return
        while True:
            started = True
            try:
                out = decompressor.decompress(data, _OUT_CHUNK)
            except (OSError, EOFError) as error:
                raise TruncatedInputError(f"corrupt bzip2 data: {error}") from error
            if out:
                yield out
            if decompressor.eof:  # multi-stream .bz2 (pbzip2 writes those)
                data = decompressor.unused_data
                decompressor = bz2.BZ2Decompressor()
                started = False
                if not data:
                    break
                continue
            if decompressor.needs_input:
                break
            data = b""


def _zstd_chunks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    import zstandard

    decompressor = zstandard.ZstdDecompressor().decompressobj()
    started = False
    while True:
        data = read(_ZSTD_READ_CHUNK)
        if not data:
            if started and not decompressor.eof:
                raise TruncatedInputError("zstd stream ends before the end of its frame")
            return
        while data:
            started = True
            try:
                out = decompressor.decompress(data)
            except zstandard.ZstdError as error:
                raise TruncatedInputError(f"corrupt zstd data: {error}") from error
            if out:
                yield out
            if decompressor.eof:  # the next frame, if any
                data = decompressor.unused_data
                decompressor = zstandard.ZstdDecompressor().decompressobj()
                started = False
            else:
                data = b""


DECOMPRESSORS: dict[str | None, Callable[[Callable[[int], bytes]], Iterator[bytes]]] = {
    None: _plain_chunks,
    "gzip": _gzip_chunks,
    "bzip2": _bzip2_chunks,
    "zstd": _zstd_chunks,
}


def replay(prefix: bytes, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
    """A ``read`` that first returns ``prefix`` (bytes already read to sniff magic)."""
    pending = [prefix] if prefix else []

    def replayed(size: int) -> bytes:
        if pending:
            return pending.pop()
        return read(size)

    return replayed


def peek(chunks: Iterator[bytes], size: int) -> tuple[bytes, Iterator[bytes]]:
    """The first ``size`` bytes of a chunk stream, and the whole stream again."""
    seen: list[bytes] = []
    total = 0
    broken: TruncatedInputError | None = None
    try:
        for chunk in chunks:
            seen.append(chunk)
            total += len(chunk)
            if total >= size:
                break
    except TruncatedInputError as error:  # a short broken file: its records before the break still count
        broken = error
    head = b"".join(seen)
    if broken is not None and not head:
        raise broken

    def again() -> Iterator[bytes]:
        if head:
            yield head
        if broken is not None:
            raise broken
        yield from chunks

    return head[:size], again()


class ChunkStream(io.RawIOBase):
    """A readable binary file over a chunk iterator (for iterparse and warcio).

    A :class:`TruncatedInputError` from the chunks is held back until the bytes before it have
    been read, so that a buffered reader on top hands them out first.
    """

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buffer = b""
        self._offset = 0
        self._error: TruncatedInputError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._offset >= len(self._buffer):
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            try:
                chunk = next(self._chunks, None)
            except TruncatedInputError as error:
                self._error = error
                return 0  # end of the good bytes; the error comes with the next read
            if chunk is None:
                return 0
            self._buffer, self._offset = chunk, 0
        size = min(len(buffer), len(self._buffer) - self._offset)
        buffer[:size] = self._buffer[self._offset : self._offset + size]
        self._offset += size
        return size


def decompressed_chunks(path: str, raw: BinaryIO) -> tuple[str | None, Iterator[bytes]]:
    """The compression of an opened file (magic bytes, else extension) and its decompressed chunks."""
    magic = raw.read(4)
    compression = compression_of(path, magic)
    return compression, DECOMPRESSORS[compression](replay(magic, raw.read))
