"""The signature index of a build (``DIR/dedup/``): what ``cpm corpus build --against DIR`` reads.

The kept documents' MinHash signatures, in Arrow IPC files ``signatures-NNNNN-of-NNNNN.minhash``
(sharded by a hash of the id, rows sorted by id), and ``index.json``: the config the signatures
were made with and the build's dedup counts. A later build compares its documents with these
without re-reading the earlier corpus; documents of earlier builds are never removed.
"""

from __future__ import annotations

import glob
import os
from dataclasses import asdict
from typing import Any, Iterator

import numpy as np

from cpm.errors import CpmError
from cpm.pipeline import minhash
from cpm.pipeline.dedup import DedupConfig, node_key, short_hash

INDEX_DIR = "dedup"
INDEX_FILE = "index.json"
SIGNATURE_SUFFIX = ".minhash"  # Arrow IPC files, named apart from the document shards (datasets globs *.arrow)
SIGNATURE_GLOBS = ("signatures-*.minhash", "signatures-*.arrow")  # the second: outputs of older cpm versions
ROWS_PER_INDEX_SHARD = 100_000  # ~60 MB of signatures per index shard


def index_paths(directory: str) -> list[str]:
    """The signature shards of an earlier build's output directory (``DIR/dedup/``)."""
    index_dir = os.path.join(directory, INDEX_DIR)
    if not os.path.isdir(index_dir):
        raise CpmError(f"{directory}: no signature index ({index_dir} does not exist); was it built by `cpm corpus build`?")
    return sorted(path for pattern in SIGNATURE_GLOBS for path in glob.glob(os.path.join(index_dir, pattern)))


def check_index(path: str, config: DedupConfig) -> None:
    """Raise :class:`CpmError` unless the shard at ``path`` was made with this config's hashing."""
    from cpm.schemas import schema_metadata
    from cpm.shards.io import open_shard

    meta = schema_metadata(open_shard(path, "signatures").schema)
    want = {"num_perm": str(config.num_perm), **config.index_metadata()}
    for name, value in want.items():
        if meta.get(name) != value:
            raise CpmError(
                f"{path}: signatures were made with {name}={meta.get(name)}, this build uses {name}={value}; "
                "rebuild one of them with the same --num-perm/--ngram"
            )


def index_nodes(batch) -> Iterator[tuple[bytes, tuple[str, bytes]]]:
    """(text digest, (node key, signature bytes)) of every document in a record batch of a signature shard."""
    ids = batch.column("id").to_pylist()
    chars = batch.column("num_chars").to_pylist()
    digests = batch.column("text_digest").to_pylist()
    sigs = batch.column("signature").flatten().to_numpy(zero_copy_only=False).astype(np.uint32)
    sigs = sigs.reshape(len(ids), -1)
    for row, (doc_id, num_chars, digest) in enumerate(zip(ids, chars, digests)):
        yield digest, (node_key(doc_id, num_chars, None, old=True), sigs[row].tobytes())


def read_index(path: str) -> Iterator[tuple[bytes, tuple[str, bytes]]]:
    """(text digest, (node key, signature bytes)) of every document in one signature shard.

    Read through :func:`cpm.shards.beam.read_shard_batches` (Beam's file systems, every record
    batch validated).
    """
    from cpm.shards.beam import read_shard_batches

    for batch in read_shard_batches(path, "signatures"):
        yield from index_nodes(batch)


def index_info(
    config: DedupConfig, shards: list[dict], kept: int, exact: int, near: int,
    largest: tuple[str, int] | None, unconverged: int,
) -> dict[str, Any]:
    """The content of ``dedup/index.json``: the config the signatures were made with, and the counts.

    ``largest`` is the largest cluster as (survivor id, size), or None.
    """
    return {
        "hash_scheme": minhash.HASH_SCHEME,
        "config": {k: v for k, v in asdict(config).items() if k != "against"},
        "bands": config.bands[0],
        "rows": config.bands[1],
        "against": list(config.against),
        "shards": shards,
        "kept": kept,
        "exact_duplicates": exact,
        "near_duplicates": near,
        "largest_cluster": None if largest is None else {"survivor": largest[0], "size": largest[1]},
        "unconverged_nodes": unconverged,
    }


def index_shard_of(doc_id: str, num_shards: int) -> int:
    """The index shard of a kept document."""
    return int(short_hash(doc_id, 8), 16) % num_shards


def index_sort_key(row: dict[str, Any]) -> tuple:
    """The order of rows in an index shard."""
    return (row["id"], row["num_chars"], row["text_digest"])


def signature_path(output_dir: str, shard: int, num_shards: int) -> str:
    return os.path.join(output_dir, INDEX_DIR, f"signatures-{shard:05d}-of-{num_shards:05d}{SIGNATURE_SUFFIX}")


def signature_batches(rows: Iterator[dict], config: DedupConfig, schema, batch_rows: int = 1024):
    """Sorted index rows -> the record batches of a signature shard (see
    :func:`~cpm.pipeline.rows.lookahead_batches`)."""
    import pyarrow as pa

    from cpm.pipeline.rows import lookahead_batches

    def table(batch: list[dict]):
        sigs = np.frombuffer(b"".join(r["signature"] for r in batch), dtype=np.uint32)
        return pa.table(
            {
                "id": pa.array([r["id"] for r in batch], pa.string()),
                "source": pa.array([r["source"] for r in batch], pa.string()),
                "num_chars": pa.array([r["num_chars"] for r in batch], pa.int32()),
                "text_digest": pa.array([r["text_digest"] for r in batch], pa.binary(16)),
                "signature": pa.FixedSizeListArray.from_arrays(pa.array(sigs, pa.uint32()), config.num_perm),
            },
            schema=schema,
        )

    yield from lookahead_batches(rows, table, batch_rows, ("id", "source"))
