"""Opening input files and decompressing them in streaming fashion.

:func:`open_raw` opens a path through Beam's file systems (local paths, ``gs://``, ``s3://``,
``hdfs://`` alike); :func:`decompressed_chunks` yields the decompressed bytes of ``.gz``,
``.bz2`` and ``.zst`` files (detected by magic bytes, else by extension), concatenated
members and frames included. A stream that ends or breaks before its end marker raises
:class:`TruncatedInputError` after yielding everything before the break.
"""

from __future__ import annotations

import bz2
import functools
import io
import os
import re
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, NamedTuple

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


class Codec(NamedTuple):
    """How :func:`_decoded_chunks` drives one compression format's streaming decompressor."""

    name: str
    new: Callable[[], Any]  # a fresh decompressor (one per member / stream / frame)
    decompress: Callable[[Any, bytes], bytes]  # output bounded by _OUT_CHUNK where the format allows
    more: Callable[[Any, bytes], bytes | None]  # after ``out``: input to feed again (b"": none, just drain), None: read
    errors: tuple[type[BaseException], ...]  # what the decompressor raises on corrupt data
    end: str  # what a truncated stream lacks
    read_size: int = READ_CHUNK
    padding: bytes = b""  # stripped between members


def _gzip_more(decompressor: Any, out: bytes) -> bytes | None:
    if decompressor.unconsumed_tail:
        return decompressor.unconsumed_tail
    return b"" if len(out) == _OUT_CHUNK else None  # drain output held back by the size limit


def _gzip() -> Codec:
    return Codec("gzip", lambda: zlib.decompressobj(wbits=31), lambda d, data: d.decompress(data, _OUT_CHUNK),
                 _gzip_more, (zlib.error,), "its end-of-stream marker", padding=b"\x00")


def _bzip2() -> Codec:
    return Codec("bzip2", bz2.BZ2Decompressor, lambda d, data: d.decompress(data, _OUT_CHUNK),
                 lambda d, out: None if d.needs_input else b"", (OSError, EOFError), "its end-of-stream marker")


def _zstd() -> Codec:
    import zstandard

    return Codec("zstd", lambda: zstandard.ZstdDecompressor().decompressobj(), lambda d, data: d.decompress(data),
                 lambda d, out: None, (zstandard.ZstdError,), "the end of its frame",
                 read_size=_ZSTD_READ_CHUNK)  # zstd output is not bounded per call


def _decoded_chunks(codec: Callable[[], Codec], read: Callable[[int], bytes]) -> Iterator[bytes]:
    """The decompressed bytes of a stream of concatenated members (gzip), streams (bzip2, as pbzip2
    writes them) or frames (zstd); :class:`TruncatedInputError` on corrupt data or a missing end."""
    codec = codec()
    decompressor = codec.new()
    started = False
    while data := read(codec.read_size):
        pending: bytes | None = data
        while pending is not None:
            started = True
            try:
                out = codec.decompress(decompressor, pending)
            except codec.errors as error:
                raise TruncatedInputError(f"corrupt {codec.name} data: {error}") from error
            if out:
                yield out
            if decompressor.eof:  # the next member, if any
                pending = decompressor.unused_data.lstrip(codec.padding) or None
                decompressor = codec.new()
                started = False
            else:
                pending = codec.more(decompressor, out)
    if started and not decompressor.eof:
        raise TruncatedInputError(f"{codec.name} stream ends before {codec.end}")


DECOMPRESSORS: dict[str | None, Callable[[Callable[[int], bytes]], Iterator[bytes]]] = {
    None: _plain_chunks,
    "gzip": functools.partial(_decoded_chunks, _gzip),
    "bzip2": functools.partial(_decoded_chunks, _bzip2),
    "zstd": functools.partial(_decoded_chunks, _zstd),
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
