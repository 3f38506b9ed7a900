"""``cpm shards export``: cpm shards as Parquet, for engines without an Arrow IPC reader (DuckDB, Spark, BigQuery).

Each shard becomes one zstd-compressed Parquet file at the same relative path (``shards/part-00000.arrow`` ->
``shards/part-00000.parquet``), written record batch by record batch (constant memory). The shard's
``cpm.*`` schema metadata (kind, schema version, and for sequences ``seq_len``, ``vocab_size``,
``eod_id``, tokenizer fingerprint) is kept in the Parquet file's key-value metadata, and the output
directory gets a ``manifest.json`` of its own (kind ``parquet``; the source manifest's config and
counters, each file's rows and sha256).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pyarrow as pa

from cpm.errors import CpmError
from cpm.shards.io import ShardInfo, iter_batches, open_shard, resolve_shard_paths, verify_checksums

log = logging.getLogger(__name__)

FORMATS = ("parquet",)
ROW_GROUP_ROWS = 64 * 1024
EXPORTED_KINDS = ("documents", "rejected", "sequences")


def source_shards(path: Path) -> tuple[Path, list[Path]]:
    """(base directory, shard files) of a shard file or a cpm output directory (every shard its manifest lists)."""
    from cpm.schemas.manifest import MANIFEST_NAME, read_manifest

    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        manifest = read_manifest(path)
        kinds = {s["path"]: s.get("kind", manifest["kind"]) for s in manifest["shards"]}
        return path, [path / p for p, kind in kinds.items() if kind in EXPORTED_KINDS]
    shards = resolve_shard_paths([path])
    return (path if path.is_dir() else path.parent), shards


def write_parquet(shard: Path, target: Path, compression: str = "zstd") -> ShardInfo:
    """One shard as one Parquet file (atomically), its ``cpm.*`` metadata in the key-value metadata."""
    import pyarrow.parquet as pq

    from cpm.schemas.manifest import sha256_file

    schema = open_shard(shard).schema
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    rows = 0
    try:
        with pq.ParquetWriter(str(tmp), schema, compression=compression) as writer:
            pending: list[pa.RecordBatch] = []
            for batch in iter_batches(shard):
                pending.append(batch)
                if sum(b.num_rows for b in pending) >= ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=ROW_GROUP_ROWS)
                    pending = []
                rows += batch.num_rows
            if pending:
                writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=ROW_GROUP_ROWS)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ShardInfo(str(target), rows, target.stat().st_size, sha256_file(target))


def export_shards(path: str | os.PathLike[str], output: str | os.PathLike[str], fmt: str = "parquet", overwrite: bool = False) -> Path:
    """Export a shard or an output directory's shards to ``output`` in ``fmt``; returns ``output``."""
    from cpm.schemas.manifest import MANIFEST_NAME, input_entry, new_manifest, read_manifest, write_manifest
    from cpm.shards.io import atomic_output_dir

    if fmt not in FORMATS:
        raise CpmError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise CpmError(f"{path}: no such file or directory")
    base, shards = source_shards(path)
    if not shards:
        raise CpmError(f"{path}: no shards to export")
    verify_checksums(shards)
    source = read_manifest(base) if (base / MANIFEST_NAME).is_file() else None
    with atomic_output_dir(output, overwrite, [path]) as work:
        entries = []
        for shard in shards:
            relative = shard.resolve().relative_to(base.resolve()).with_suffix(f".{fmt}")
            info = write_parquet(shard, work / relative)
            entries.append(info.entry(work, kind=open_shard(shard).schema.metadata[b"cpm.kind"].decode()))
            log.info("%s -> %s (%d rows)", shard, relative, info.rows)
        config = {"format": fmt, "compression": "zstd", "source": str(path), "source_kind": source["kind"] if source else None}
        manifest = new_manifest("parquet", "shards export", config)
        manifest["inputs"] = [input_entry(shard, checksum=False) for shard in shards]
        manifest["counters"] = source["counters"] if source else {}
        manifest["shards"] = entries
        write_manifest(work, manifest)
    return Path(output)
