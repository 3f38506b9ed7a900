"""Reading and writing Arrow shards.

A shard is an Arrow IPC *file* (``.arrow``): readable by plain ``pyarrow``
(``pa.ipc.open_file``), ``polars.read_ipc``, and anything built on them, without cpm.
Document and rejected shards use zstd-compressed record batches; sequence shards are
uncompressed so that training can memory-map them. Every write is atomic: the bytes go
to a hidden temporary name in the same directory, are fsynced, then renamed, so a killed
job never leaves a half-written file under a shard's name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow as pa

from cpm.errors import CpmError, ShardError
from cpm.schemas import validate_schema
from cpm.schemas.manifest import sha256_file

DEFAULT_BATCH_ROWS = 1024
COMPRESSION_KEY = b"cpm.compression"


@dataclass(frozen=True)
class ShardInfo:
    """What a manifest records of a shard; ``path`` is relative to the manifest's directory when listed there."""

    path: str
    rows: int
    bytes: int
    sha256: str

    def entry(self, relative_to: str | os.PathLike[str] | None = None, **extra: str) -> dict:
        path = os.path.relpath(self.path, relative_to) if relative_to is not None else self.path
        return {"path": path, "rows": self.rows, "bytes": self.bytes, "sha256": self.sha256, **extra}


def shard_name(index: int) -> str:
    """``part-00000.arrow``-style file name of the ``index``-th shard."""
    return f"part-{index:05d}.arrow"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class _HashingSink:
    """A binary file that keeps the SHA-256 of the bytes written to it (the writer writes in order)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.hash = hashlib.sha256()
        self.position = 0
        self.closed = False

    def write(self, data) -> int:
        self.hash.update(data)
        self.position += len(data)
        return self.file.write(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        if not self.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self.closed = True


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_table(
    path: str | os.PathLike[str],
    table: pa.Table | Iterable[pa.RecordBatch],
    schema: pa.Schema | None = None,
    *,
    compression: str | None = "zstd",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    threads: bool = False,
) -> ShardInfo:
    """Write one shard atomically and return its :class:`ShardInfo`.

    ``table`` is a table or an iterable of record batches of ``schema``; the schema is
    validated against :mod:`cpm.schemas` first. The same rows give the same bytes. ``threads``
    compresses a batch's buffers on Arrow's CPU threads (the same bytes).
    """
    path = Path(path)
    if isinstance(table, pa.Table):
        schema = schema or table.schema
        batches: Iterable[pa.RecordBatch] = table.cast(schema).to_batches(max_chunksize=batch_rows)
    else:
        if schema is None:
            raise ValueError("write_table needs a schema when given record batches")
        batches = table
    validate_schema(schema, str(path))
    # record the codec in the schema metadata: pyarrow does not expose it when reading
    schema = schema.with_metadata({**(schema.metadata or {}), COMPRESSION_KEY: (compression or "none").encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    options = pa.ipc.IpcWriteOptions(compression=compression, use_threads=threads)
    rows = 0
    sink = _HashingSink(tmp)  # the bytes are hashed as they are written, not read back
    try:
        with pa.PythonFile(sink, mode="w") as stream, pa.ipc.new_file(stream, schema, options=options) as writer:
            for batch in batches:
                if batch.num_rows:
                    writer.write_batch(batch.replace_schema_metadata(schema.metadata))
                    rows += batch.num_rows
        sink.close()  # fsynced
        os.replace(tmp, path)
    except BaseException:
        sink.file.close()
        tmp.unlink(missing_ok=True)
        raise
    return ShardInfo(str(path), rows, sink.position, sink.hash.hexdigest())


def open_shard(path: str | os.PathLike[str], kind: str | None = None, memory_map: bool = True) -> pa.ipc.RecordBatchFileReader:
    """Open a shard for reading (memory-mapped), checking its schema; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: no such shard file")
    try:
        source = pa.memory_map(str(path), "r") if memory_map else pa.OSFile(str(path), "rb")
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{path}: not a readable Arrow shard (truncated or corrupted?): {_one_line(exc)}") from None
    return open_shard_source(source, str(path), kind)


def open_shard_source(source, path: str, kind: str | None = None) -> pa.ipc.RecordBatchFileReader:
    """:func:`open_shard` on an open file (a memory map, or a seekable file object from any file system)."""
    try:
        reader = pa.ipc.open_file(source)
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{path}: not a readable Arrow shard (truncated or corrupted?): {_one_line(exc)}") from None
    validate_schema(reader.schema, path, kind)
    return reader


def read_batch(reader: pa.ipc.RecordBatchFileReader, index: int, path: str | os.PathLike[str]) -> pa.RecordBatch:
    """Record batch ``index`` of an open shard, fully validated (offsets, UTF-8, list bounds).

    Corrupted bytes that still decompress would otherwise reach native code (tokenizers,
    ``to_pylist``) as garbage offsets and crash or give wrong results; they raise
    :class:`ShardError` naming the file instead. Full validation costs about half of the
    (zstd) read time, and nothing next to what is done with the rows.
    """
    try:
        batch = reader.get_batch(index)
        batch.validate(full=True)
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{path}: corrupted record batch {index} (truncated or damaged file?): {_one_line(exc)}") from None
    return batch


def read_table(path: str | os.PathLike[str], kind: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """Read a whole shard (or some of its columns), checking its schema and data; errors name the file."""
    reader = open_shard(path, kind)
    batches = [read_batch(reader, i, path) for i in range(reader.num_record_batches)]
    table = pa.Table.from_batches(batches, schema=reader.schema)
    return table.select(columns) if columns else table


def iter_batches(path: str | os.PathLike[str], kind: str | None = None) -> Iterator[pa.RecordBatch]:
    """Yield a shard's validated record batches one at a time (constant memory)."""
    reader = open_shard(path, kind)
    for i in range(reader.num_record_batches):
        yield read_batch(reader, i, path)


def verify_checksums(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Check each shard's size and sha256 against the manifest of the output directory holding it.

    A shard ``DIR/shards/part-00000.arrow`` (or ``DIR/part-00000.arrow``) listed in
    ``DIR/manifest.json`` must match its entry, else :class:`ShardError` names the file.
    Shards without a manifest are left to the per-batch validation. Returns how many were checked.
    """
    from cpm.schemas.manifest import MANIFEST_NAME, read_manifest

    manifests: dict[Path, dict[Path, dict]] = {}
    checked = 0
    for path in paths:
        path = Path(path)
        for directory in (path.parent, path.parent.parent):
            if not (directory / MANIFEST_NAME).is_file():
                continue
            if directory not in manifests:
                manifests[directory] = {(directory / s["path"]).resolve(): s for s in read_manifest(directory)["shards"]}
            shard = manifests[directory].get(path.resolve())
            if shard is None:
                continue
            if path.stat().st_size != shard["bytes"] or sha256_file(path) != shard["sha256"]:
                raise ShardError(
                    f"{path}: corrupted: its size or sha256 differs from {directory / MANIFEST_NAME} "
                    f"(see `cpm shards inspect {directory} --verify`)"
                )
            checked += 1
            break
    return checked


def check_output_dir(
    output: str | os.PathLike[str], overwrite: bool, inputs: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """Refuse an output that is a file, a non-empty directory (unless ``overwrite``), or holds one of ``inputs``."""
    out = Path(output).resolve()
    if out.exists() and not out.is_dir():
        raise CpmError(f"{out}: exists and is not a directory")
    for item in inputs:
        item = Path(item).resolve()
        if item == out or out in item.parents:
            raise CpmError(f"{out}: the output directory holds the input {item}; choose another --output")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CpmError(f"{out}: exists and is not empty (use --overwrite to replace it)")
    return out


@contextmanager
def atomic_output_dir(
    output: str | os.PathLike[str], overwrite: bool = False, inputs: Iterable[str | os.PathLike[str]] = ()
) -> Iterator[Path]:
    """Write an output directory all at once (the rule of ``cpm corpus build``).

    Refuses a non-empty ``output`` unless ``overwrite`` (see :func:`check_output_dir`), yields a
    hidden sibling temporary directory to write into, and on success renames it into place,
    replacing the old ``output``; on failure the temporary directory is removed and ``output``
    is left as it was.
    """
    out = check_output_dir(output, overwrite, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        yield work
        if out.exists():
            check_output_dir(out, overwrite)  # something may have appeared meanwhile
        replace_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def replace_dir(work: str | os.PathLike[str], output: str | os.PathLike[str]) -> None:
    """Move the finished directory ``work`` to ``output`` by renames, replacing an old ``output``."""
    out = Path(output)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def list_shards(directory: str | os.PathLike[str], subdir: str = "shards") -> list[Path]:
    """The ``part-*.arrow`` files of an output directory's ``subdir``, in order."""
    return sorted((Path(directory) / subdir).glob("part-*.arrow"))


def expand_inputs(
    inputs: Iterable[str | os.PathLike[str]], in_directory: Callable[[Path], list[Path]]
) -> list[Path]:
    """Expand CLI inputs (shard files, directories, globs) into shard files, in order.

    A file is itself; a directory contributes ``in_directory(directory)``; a glob (a name with
    ``*?[`` that is not an existing path) its matches in sorted order. Raises :class:`ShardError`
    for a glob without a match or a path that does not exist.
    """
    import glob

    paths: list[Path] = []
    for item in inputs:
        item = str(item)
        is_glob = any(c in item for c in "*?[") and not os.path.exists(item)
        matches = sorted(glob.glob(item)) if is_glob else [item]
        if not matches:
            raise ShardError(f"{item}: no file matches")
        for match in matches:
            p = Path(match)
            if p.is_dir():
                paths.extend(in_directory(p))
            elif p.is_file():
                paths.append(p)
            else:
                raise ShardError(f"{p}: no such file or directory")
    return paths


def resolve_shard_paths(inputs: Iterable[str | os.PathLike[str]], subdir: str = "shards") -> list[Path]:
    """Expand CLI inputs (shard files, output directories, globs) into shard files, in order.

    A directory contributes ``DIR/<subdir>/part-*.arrow`` (or its own ``*.arrow`` when it
    has no such sub-directory). Raises :class:`ShardError` for a path that yields nothing.
    """

    def in_directory(p: Path) -> list[Path]:
        found = list_shards(p, subdir) or sorted(p.glob("*.arrow"))
        if not found:
            raise ShardError(f"{p}: no .arrow shards in it or in {p / subdir}")
        return found

    return expand_inputs(inputs, in_directory)


class ShardWriter:
    """Write rows of one schema into ``directory/part-NNNNN.arrow`` shards of about ``target_bytes``.

    Rows are buffered as record batches; a shard is closed (atomically) once its
    uncompressed size reaches ``target_bytes``. ``close()`` returns every :class:`ShardInfo`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        schema: pa.Schema,
        *,
        target_bytes: int = 256 << 20,
        compression: str | None = "zstd",
        batch_rows: int = DEFAULT_BATCH_ROWS,
        first_index: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.schema = schema
        self.target_bytes = target_bytes
        self.compression = compression
        self.batch_rows = batch_rows
        self.index = first_index
        self.shards: list[ShardInfo] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._rows: list[dict] = []

    def write_rows(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self._rows.append(row)
            if len(self._rows) >= self.batch_rows:
                self._flush_rows()

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._flush_rows()
        self._add(batch)

    def _flush_rows(self) -> None:
        if self._rows:
            batch = pa.RecordBatch.from_pylist(self._rows, schema=self.schema)
            self._rows = []
            self._add(batch)

    def _add(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        if self._pending_bytes >= self.target_bytes:
            self._close_shard()

    def _close_shard(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        path = self.directory / shard_name(self.index)
        self.shards.append(
            write_table(path, table, self.schema, compression=self.compression, batch_rows=self.batch_rows)
        )
        self.index += 1
        self._pending, self._pending_bytes = [], 0

    def close(self) -> list[ShardInfo]:
        self._flush_rows()
        self._close_shard()
        return self.shards

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
