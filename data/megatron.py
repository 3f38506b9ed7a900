"""``cpm data export-megatron``: sequence shards -> Megatron-LM's indexed dataset (``.bin`` + ``.idx``).

Megatron-LM (``MMapIndexedDataset``, index version 1) wants one entry per document, which it
then packs itself. The documents are recovered from the packed stream: samples overlap by one
token, so ``sample_0 + sample_1[1:] + sample_2[1:] + ...`` is the ``<eod>``-joined stream, and
each piece up to and including an ``<eod>`` is one document (``<eod>`` appended, as Megatron's
``preprocess_data.py --append-eod`` writes it). The unfinished document at the end of the
stream (cut by the dropped tail) is left out and counted. The stream order is the pack order
(already shuffled and source-mixed), so every document copy of ``--source-weights`` is exported.

``PREFIX.idx`` layout (little-endian): ``b"MMIDIDX\\x00\\x00"``, ``<Q`` version 1, ``<B`` dtype
code, ``<Q`` sequence count ``n``, ``<Q`` document count ``n + 1``, ``int32`` sizes[n],
``int64`` byte pointers[n] into ``PREFIX.bin``, ``int64`` document index ``0, 1, ..., n``.

``PREFIX.json`` beside them records what the two files cannot: ``eod_id``, ``pad_id``, ``vocab_size``
and the tokenizer fingerprint (from the shards' metadata and the packed directory's manifest), and the
Megatron-LM arguments that train on them (:func:`megatron_args`).
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from cpm.errors import CpmError
from cpm.shards.sequences import SequenceShards

log = logging.getLogger(__name__)

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
# Megatron-LM's dtype codes.
DTYPE_CODES = {
    np.dtype(np.uint8): 1,
    np.dtype(np.int8): 2,
    np.dtype(np.int16): 3,
    np.dtype(np.int32): 4,
    np.dtype(np.int64): 5,
    np.dtype(np.float64): 6,
    np.dtype(np.float32): 7,
    np.dtype(np.uint16): 8,
}


def megatron_dtype(vocab_size: int) -> np.dtype:
    """uint16 (code 8) when every id fits, else int32 (code 4), as Megatron's ``best_fitting_dtype``."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def _packed_config(shard_paths: Sequence[Path]) -> dict[str, Any]:
    """The ``config`` of the packed directory holding the first shard (``DIR/train/part-*.arrow``), or {}."""
    from cpm.schemas.manifest import MANIFEST_NAME, read_manifest

    directory = Path(shard_paths[0]).resolve().parent.parent
    return read_manifest(directory)["config"] if (directory / MANIFEST_NAME).is_file() else {}


def megatron_args(prefix: str, vocab_size: int) -> list[str]:
    """Megatron-LM (``pretrain_gpt.py``) arguments that train on the export with cpm's own ids.

    ``NullTokenizer`` uses the ids as they are; its vocabulary is ``--vocab-size`` + 1 and its ``eod`` is
    ``--vocab-size``, not cpm's ``<eod>``, so the options that look for ``eod`` (``--reset-position-ids``,
    ``--reset-attention-mask``, ``--eod-mask-loss``) must stay off: documents are still separated by
    cpm's ``<eod>`` in the token stream, as in ``cpm train``.
    """
    return ["--data-path", prefix, "--tokenizer-type", "NullTokenizer", "--vocab-size", str(vocab_size), "--split", "100,0,0"]


def write_metadata(prefix: str, data: SequenceShards, shard_paths: Sequence[Path], counters: dict[str, Any]) -> Path:
    """``PREFIX.json``: the special ids, vocabulary size and tokenizer of an export, and its Megatron-LM arguments."""
    config = _packed_config(shard_paths)
    info = {
        "format": "megatron-mmidx-v1",
        "bin": Path(prefix + ".bin").name,
        "idx": Path(prefix + ".idx").name,
        "eod_id": data.eod_id,
        "pad_id": config.get("pad_id"),
        "vocab_size": data.vocab_size,
        "tokenizer_fingerprint": data.metadata.get("tokenizer_fingerprint", config.get("tokenizer_fingerprint")),
        "dtype": counters["dtype"],
        "documents": counters["documents"],
        "tokens": counters["tokens"],
        "megatron_args": megatron_args(prefix, data.vocab_size),
    }
    path = Path(prefix + ".json")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", "utf-8")
    os.replace(tmp, path)
    return path


class Documents(NamedTuple):
    """What :func:`write_documents` wrote: tokens per document (int32), all tokens, and the unfinished tail left out."""

    sizes: np.ndarray
    tokens: int
    unfinished_tail: int


def write_documents(data: SequenceShards, path: Path, dtype: np.dtype, chunk_rows: int, progress: bool) -> Documents:
    """Write every finished document of the packed stream to ``path`` (``PREFIX.bin``), ``chunk_rows`` samples at a time.

    Samples overlap by one token, so the stream is the first sample and every sample after its first token.
    """
    from tqdm import tqdm

    sizes: list[np.ndarray] = []
    carry = np.zeros(0, dtype=np.int64)
    tokens_written = 0
    with open(path, "wb") as out, tqdm(total=data.num_samples, desc="export", unit="sample", disable=not progress) as bar:
        for start in range(0, data.num_samples, chunk_rows):
            rows = data.gather(np.arange(start, min(start + chunk_rows, data.num_samples)))
            stream = rows[:, 1:].reshape(-1) if start else np.concatenate([rows[0, :1], rows[:, 1:].reshape(-1)])
            stream = np.concatenate([carry, stream])
            ends = np.flatnonzero(stream == data.eod_id) + 1
            if len(ends):
                complete = stream[: ends[-1]]
                out.write(complete.astype(dtype).tobytes())
                sizes.append(np.diff(ends, prepend=0))
                tokens_written += len(complete)
                carry = stream[ends[-1] :]
            else:
                carry = stream
            bar.update(len(rows))
        out.flush()
        os.fsync(out.fileno())
    size_array = np.concatenate(sizes).astype(np.int32) if sizes else np.zeros(0, np.int32)
    return Documents(size_array, tokens_written, int(len(carry)))


def write_index(path: Path, sizes: np.ndarray, dtype: np.dtype) -> None:
    """Write ``PREFIX.idx`` (MMIDIDX version 1) for documents of ``sizes`` tokens stored one after the other."""
    pointers = np.zeros(len(sizes), dtype=np.int64)
    count = len(sizes)
    if count > 1:
        np.cumsum(sizes[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
    with open(path, "wb") as out:
        out.write(MAGIC)
        out.write(struct.pack("<Q", VERSION))
        out.write(struct.pack("<B", DTYPE_CODES[dtype]))
        out.write(struct.pack("<Q", count))
        out.write(struct.pack("<Q", count + 1))
        out.write(sizes.astype("<i4").tobytes())
        out.write(pointers.astype("<i8").tobytes())
        out.write(np.arange(count + 1, dtype="<i8").tobytes())
        out.flush()
        os.fsync(out.fileno())


def export_megatron(
    shard_paths: Sequence[str | os.PathLike[str]],
    prefix: str | os.PathLike[str],
    progress: bool = True,
    chunk_rows: int = 4096,
) -> dict[str, Any]:
    """Write ``PREFIX.bin``, ``PREFIX.idx`` and ``PREFIX.json`` from sequence shards (in pack order); return counters.

    Samples are read ``chunk_rows`` at a time (bounded memory); the output does not depend on it.
    The ``.bin`` and ``.idx`` are written under temporary names and renamed into place together.
    """
    data = SequenceShards([Path(p) for p in shard_paths])
    if data.eod_id < 0:
        raise CpmError(f"{data.paths[0]}: the shard metadata has no eod_id (not written by 'cpm data pack'?)")
    dtype = megatron_dtype(data.vocab_size)
    prefix = str(prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    bin_path, idx_path = Path(prefix + ".bin"), Path(prefix + ".idx")
    bin_tmp, idx_tmp = bin_path.with_name(f".{bin_path.name}.tmp"), idx_path.with_name(f".{idx_path.name}.tmp")
    try:
        documents = write_documents(data, bin_tmp, dtype, chunk_rows, progress)
        write_index(idx_tmp, documents.sizes, dtype)
        os.replace(bin_tmp, bin_path)
        os.replace(idx_tmp, idx_path)
    except BaseException:
        bin_tmp.unlink(missing_ok=True)
        idx_tmp.unlink(missing_ok=True)
        raise
    counters = {
        "documents": len(documents.sizes),
        "tokens": documents.tokens,
        "unfinished_tail_tokens": documents.unfinished_tail,
        "dtype": str(dtype),
        "dtype_code": DTYPE_CODES[dtype],
        "bin": str(bin_path),
        "idx": str(idx_path),
    }
    counters["json"] = str(write_metadata(prefix, data, [Path(p) for p in shard_paths], counters))
    log.info("exported %d documents, %d tokens to %s.{bin,idx}", len(documents.sizes), documents.tokens, prefix)
    return counters
