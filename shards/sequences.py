"""Sequence shards (the output of ``cpm data pack``): where a split's shards are, reading them, their statistics.

One place for everything that reads packed data, below both ``cpm data`` (the Megatron export) and the
trainer's loader:

* :func:`split_shard_paths`: the shards of a split, from packed directories (listed in their manifest and
  checked to be there whole) or the shard files given;
* :class:`SequenceShards`: every sample of some shards, memory-mapped, addressable by global row, with
  every token id checked against the vocabulary size (:func:`check_token_range`);
* :func:`sequence_stats`: what ``cpm shards inspect`` shows of sequence shards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
import pyarrow as pa

from cpm.errors import CpmError, ShardError
from cpm.schemas import schema_metadata, validate_schema
from cpm.schemas.manifest import MANIFEST_NAME, read_manifest
from cpm.shards.io import expand_inputs, list_shards, open_shard, read_batch

EOD_MARK = "⟨eod⟩"
RANGE_CHECK_TOKENS = 1 << 24  # tokens compared per numpy pass of the range check


class Decoder(Protocol):
    """What :func:`sequence_stats` needs of a tokenizer (:class:`cpm.tokenizer.Tokenizer` is one)."""

    path: str
    fingerprint: str

    def decode(self, ids: Sequence[int]) -> str: ...


# ---------------------------------------------------------------------------- where the shards are


def split_shard_paths(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], split: str) -> list[Path]:
    """The sequence shards of ``split``: from pack output directories, or the shard files given."""
    items = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    shards = expand_inputs(items, lambda directory: _split_in_directory(directory, split))
    if not shards:
        raise ShardError(f"{', '.join(map(str, items))}: no {split} sequence shards (is the {split} split empty?)")
    return shards


def _split_in_directory(directory: Path, split: str) -> list[Path]:
    """A directory's shards of ``split``: from its manifest, else ``DIR/<split>/part-*`` or ``DIR/part-*``."""
    if (directory / MANIFEST_NAME).is_file():
        return manifest_split_shards(directory, split)
    if (directory / split).is_dir():
        return list_shards(directory, split)
    found = list_shards(directory, "")
    if not found:
        raise ShardError(f"{directory}: no {split}/part-*.arrow sequence shards")
    return found


def manifest_split_shards(directory: Path, split: str) -> list[Path]:
    """The shards of ``split`` listed in a pack directory's manifest, checked to be there whole."""
    manifest = read_manifest(directory)
    if manifest["kind"] != "sequences":
        raise ShardError(f"{directory}: holds {manifest['kind']}, not sequences (run 'cpm data pack' first)")
    paths = []
    for entry in manifest["shards"]:
        if entry.get("split") != split:
            continue
        path = directory / entry["path"]
        if not path.is_file():
            raise ShardError(f"{path}: listed in {directory / MANIFEST_NAME} but missing")
        if path.stat().st_size != entry["bytes"]:
            raise ShardError(f"{path}: {path.stat().st_size} bytes, the manifest says {entry['bytes']} (truncated or replaced?)")
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------- memory-mapped samples


def check_token_range(block: np.ndarray, vocab_size: int, path: Path, first_row: int) -> None:
    """:class:`ShardError` naming the shard and row of the first token id in ``block`` (rows of
    ``seq_len + 1`` ids, memory-mapped) outside ``[0, vocab_size)``: such an id would crash the
    embedding lookup mid-run. A vectorised min/max per chunk; the row is searched only on failure."""
    step = max(1, RANGE_CHECK_TOKENS // max(1, block.shape[1]))
    for start in range(0, len(block), step):
        chunk = block[start : start + step]
        if len(chunk) == 0 or (int(chunk.max()) < vocab_size and int(chunk.min()) >= 0):
            continue
        bad = (chunk >= vocab_size) | (chunk < 0)
        row = int(np.argmax(bad.any(axis=1)))
        column = int(np.argmax(bad[row]))
        raise ShardError(f"{path}: row {first_row + start + row}: token id {int(chunk[row, column])} at position {column} "
                         f"is outside the vocabulary (size {vocab_size})")


def _open_mapped(path: Path) -> tuple[pa.MemoryMappedFile, pa.ipc.RecordBatchFileReader]:
    try:
        source = pa.memory_map(str(path), "r")
        reader = pa.ipc.open_file(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardError(f"{path}: not a readable Arrow shard: {exc}") from None
    validate_schema(reader.schema, str(path), "sequences")
    return source, reader


def _mapped_blocks(source: pa.MemoryMappedFile, reader: pa.ipc.RecordBatchFileReader, path: Path) -> list[np.ndarray]:
    """Each record batch's samples as a ``(rows, seq_len + 1)`` view into the mapped file, range-checked."""
    meta = schema_metadata(reader.schema)
    source.seek(0)
    mapped = source.read_buffer(source.size())  # the whole file, zero-copy: batches must point into it
    width, vocab_size = int(meta["seq_len"]) + 1, int(meta["vocab_size"])
    blocks: list[np.ndarray] = []
    row = 0
    for i in range(reader.num_record_batches):
        column = read_batch(reader, i, path).column(0)
        if len(column) == 0:
            continue
        if column.null_count:
            raise ShardError(f"{path}: record batch {i} has null samples")
        data = column.values.buffers()[1]
        if not mapped.address <= data.address < mapped.address + mapped.size:
            raise ShardError(f"{path}: compressed sequence shard cannot be memory-mapped; re-pack it uncompressed")
        values = column.values.to_numpy(zero_copy_only=True)
        block = values[column.offset * width : (column.offset + len(column)) * width].reshape(len(column), width)
        check_token_range(block, vocab_size, path, row)
        blocks.append(block)
        row += len(block)
    return blocks


class SequenceShards:
    """Every sample of some sequence shards, memory-mapped, addressable by global row index.

    Opening checks every token id against the shards' vocabulary size (:func:`check_token_range`).
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self._blocks: list[np.ndarray] = []  # (rows, seq_len + 1) views into the mapped files
        self._maps: list[pa.MemoryMappedFile] = []
        meta0: dict[str, str] | None = None
        for path in self.paths:
            source, reader = _open_mapped(path)
            meta = schema_metadata(reader.schema)
            if meta0 is None:
                meta0 = meta
            elif any(meta.get(k) != meta0.get(k) for k in ("seq_len", "vocab_size", "eod_id")):
                raise ShardError(f"{path}: seq_len/vocab_size/eod_id differ from {self.paths[0]}")
            self._maps.append(source)
            self._blocks += _mapped_blocks(source, reader, path)
        if meta0 is None:
            raise ShardError("no sequence shards given")
        self.seq_len = int(meta0["seq_len"])
        self.vocab_size = int(meta0["vocab_size"])
        self.eod_id = int(meta0.get("eod_id", -1))
        self.metadata = meta0
        sizes = np.array([len(b) for b in self._blocks], dtype=np.int64)
        self._starts = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self._starts[1:])
        self.num_samples = int(self._starts[-1])

    def __len__(self) -> int:
        return self.num_samples

    def gather(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Copy the samples ``rows`` into an int64 array of shape ``(len(rows), seq_len + 1)``."""
        rows = np.asarray(rows, dtype=np.int64)
        if out is None:
            out = np.empty((len(rows), self.seq_len + 1), dtype=np.int64)
        blocks = np.searchsorted(self._starts, rows, side="right") - 1
        local = rows - self._starts[blocks]
        for i, (b, r) in enumerate(zip(blocks.tolist(), local.tolist())):
            out[i] = self._blocks[b][r]
        return out


# ---------------------------------------------------------------------------- inspect


def sequence_stats(paths: Iterable[str | os.PathLike[str]], tokenizer: Decoder | None = None, rows: int = 3) -> dict[str, Any]:
    """Statistics of sequence shards for ``cpm shards inspect``.

    Token count, ``<eod>`` share, documents per sample (mean, max), and the first ``rows``
    samples decoded (``<eod>`` shown as ``⟨eod⟩``) when a loaded ``tokenizer`` is given.
    """
    samples = tokens = eods = docs_total = docs_max = 0
    shown: list[dict[str, Any]] = []
    meta: dict[str, str] = {}
    for path in paths:
        reader = open_shard(path, kind="sequences")
        meta = meta or schema_metadata(reader.schema)
        eod = int(schema_metadata(reader.schema).get("eod_id", -1))
        _check_packed_with(path, schema_metadata(reader.schema), tokenizer)
        for i in range(reader.num_record_batches):
            batch = read_batch(reader, i, path)
            values = batch.column(0).values.to_numpy(zero_copy_only=True)
            samples += batch.num_rows
            tokens += len(values)
            eods += int(np.count_nonzero(values == eod))
            per_sample = np.diff(batch.column(1).offsets.to_numpy())
            docs_total += int(per_sample.sum())
            docs_max = max(docs_max, int(per_sample.max(initial=0)))
            shown += _shown_samples(batch, rows - len(shown), tokenizer, eod)
    return {
        "seq_len": int(meta.get("seq_len", 0)),
        "vocab_size": int(meta.get("vocab_size", 0)),
        "eod_id": int(meta.get("eod_id", -1)),
        "samples": samples,
        "tokens": tokens,
        "eod_share": eods / tokens if tokens else 0.0,
        "docs_per_sample_mean": docs_total / samples if samples else 0.0,
        "docs_per_sample_max": docs_max,
        "samples_shown": shown,
    }


def _check_packed_with(path: str | os.PathLike[str], meta: dict[str, str], tokenizer: Decoder | None) -> None:
    packed_with = meta.get("tokenizer_fingerprint", "")
    if tokenizer is not None and packed_with and packed_with != tokenizer.fingerprint:
        raise CpmError(
            f"{path}: packed with tokenizer fingerprint {packed_with}, but --tokenizer {tokenizer.path} has "
            f"fingerprint {tokenizer.fingerprint}; give the tokenizer the data was packed with"
        )


def _shown_samples(batch: pa.RecordBatch, count: int, tokenizer: Decoder | None, eod_id: int) -> list[dict[str, Any]]:
    """The first ``count`` samples of ``batch``: documents, start offset, tokens and (with a tokenizer) text."""
    shown = []
    for r in range(min(batch.num_rows, count)):
        ids = batch.column(0)[r].values.to_numpy().tolist()
        entry: dict[str, Any] = {"doc_ids": batch.column(1)[r].as_py(), "start_offset": batch.column(2)[r].as_py(), "tokens": ids}
        if tokenizer is not None:
            entry["text"] = decode_marked(tokenizer, ids, eod_id)
        shown.append(entry)
    return shown


def decode_marked(tokenizer: Decoder, ids: Sequence[int], eod_id: int) -> str:
    """Decode token ids, showing each ``<eod>`` as ``⟨eod⟩``."""
    parts: list[str] = []
    piece: list[int] = []
    for t in ids:
        if t == eod_id:
            parts.append(tokenizer.decode(piece) if piece else "")
            parts.append(EOD_MARK)
            piece = []
        else:
            piece.append(int(t))
    if piece:
        parts.append(tokenizer.decode(piece))
    return "".join(parts)
