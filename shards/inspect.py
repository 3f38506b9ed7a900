"""What ``cpm shards inspect`` reports about a shard or an output directory.

Everything is computed into plain dicts (the ``--json`` output); :mod:`cpm.shards.cli`
renders them as tables.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cpm.errors import ShardError
from cpm.schemas import schema_kind, schema_metadata, schema_version
from cpm.schemas.manifest import MANIFEST_NAME, read_manifest, sha256_file
from cpm.shards.io import COMPRESSION_KEY, open_shard, read_batch
from cpm.shards.sequences import Decoder, sequence_stats

TEXT_PREVIEW_CHARS = 160
WORDS_PREVIEW = 24


def _length_stats(lengths: pa.Array) -> dict[str, Any]:
    valid = pc.drop_null(lengths)
    if len(valid) == 0:
        return {"min": None, "mean": None, "max": None}
    bounds = pc.min_max(valid)

    def tidy(value: Any) -> Any:
        return round(value, 4) if isinstance(value, float) else value

    return {
        "min": tidy(bounds["min"].as_py()),
        "mean": round(pc.mean(valid).as_py(), 2),
        "max": tidy(bounds["max"].as_py()),
    }


def column_summary(column: pa.ChunkedArray, name: str) -> dict[str, Any]:
    """Nulls and, by type, length or value statistics of one column; value counts for ``source``/``rule``."""
    summary: dict[str, Any] = {"type": str(column.type), "nulls": column.null_count}
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        summary["chars"] = _length_stats(pc.utf8_length(column).combine_chunks())
        if name in ("source", "rule"):
            counts = pc.value_counts(column.combine_chunks()).to_pylist()
            summary["counts"] = {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: -c["counts"])}
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        summary["items"] = _length_stats(pc.list_value_length(column).combine_chunks())
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        summary["values"] = _length_stats(column.combine_chunks())
    return summary


def _preview_row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, str) and len(value) > TEXT_PREVIEW_CHARS:
            value = value[:TEXT_PREVIEW_CHARS] + f"… (+{len(value) - TEXT_PREVIEW_CHARS} chars)"
        elif isinstance(value, list) and key == "words":
            more = f" … (+{len(value) - WORDS_PREVIEW} words)" if len(value) > WORDS_PREVIEW else ""
            value = " / ".join(value[:WORDS_PREVIEW]) + more
        elif isinstance(value, float):
            value = round(value, 4)
        elif isinstance(value, list) and key == "tokens":
            value = f"{value[:16]}… ({len(value)} tokens)"
        out[key] = value
    return out


def inspect_shard(path: str | os.PathLike[str], rows: int = 3, tokenizer: Decoder | None = None) -> dict[str, Any]:
    """Schema, sizes, compression, per-column summary and sample rows of one shard."""
    path = Path(path)
    reader = open_shard(path)
    table = pa.Table.from_batches([read_batch(reader, i, path) for i in range(reader.num_record_batches)], schema=reader.schema)
    meta = schema_metadata(reader.schema)
    kind = schema_kind(reader.schema)
    report: dict[str, Any] = {
        "path": str(path),
        "kind": kind,
        "schema_version": schema_version(reader.schema),
        "schema": [f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in reader.schema],
        "metadata": {k: v for k, v in meta.items() if k not in ("kind", "schema_version", "compression")},
        "rows": table.num_rows,
        "record_batches": reader.num_record_batches,
        "bytes_on_disk": path.stat().st_size,
        "bytes_uncompressed": table.nbytes,
        "compression": (reader.schema.metadata or {}).get(COMPRESSION_KEY, b"unknown").decode(),
        "columns": {name: column_summary(table.column(name), name) for name in table.column_names},
    }
    if kind == "sequences":
        report["sequences"] = sequence_stats([path], tokenizer=tokenizer, rows=rows)
    report["sample_rows"] = [_preview_row(r) for r in table.slice(0, rows).to_pylist()] if rows else []
    return report


def verify_manifest(directory: str | os.PathLike[str], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Check every shard listed in the manifest: present, same size, same sha256.

    Returns one entry per shard with ``ok`` and, when not ok, ``problem``; ``.arrow`` files on
    disk that the manifest does not list are reported too.
    """
    directory = Path(directory)
    results = []
    listed = set()
    for shard in manifest["shards"]:
        path = directory / shard["path"]
        listed.add(path.resolve())
        entry = {"path": shard["path"], "ok": False}
        if not path.is_file():
            entry["problem"] = "missing"
        elif path.stat().st_size != shard["bytes"]:
            entry["problem"] = f"size {path.stat().st_size} != manifest {shard['bytes']}"
        elif sha256_file(path) != shard["sha256"]:
            entry["problem"] = "sha256 differs from the manifest"
        else:
            entry["ok"] = True
        results.append(entry)
    for path in sorted(directory.rglob("*.arrow")):
        if path.resolve() not in listed and not path.name.startswith("."):
            results.append({"path": str(path.relative_to(directory)), "ok": False, "problem": "not in the manifest"})
    return results


def rows_by_kind(directory: Path, manifest: dict[str, Any]) -> dict[str, int]:
    """Rows of the manifest's shards per kind (``documents``, ``rejected``, ...; ``train sequences`` per split)."""
    counts: dict[str, int] = {}
    for shard in manifest["shards"]:
        kind = shard.get("kind") or (directory / shard["path"]).parent.name
        if shard.get("split"):
            kind = f"{shard['split']} {kind}"
        counts[kind] = counts.get(kind, 0) + shard["rows"]
    return counts


def inspect_path(
    path: str | os.PathLike[str],
    rows: int = 3,
    verify: bool = False,
    tokenizer: Decoder | None = None,
    all_shards: bool = False,
) -> dict[str, Any]:
    """Inspect a shard file, or an output directory.

    For a directory: its manifest (counters, totals), with ``verify`` the checksum check of
    every shard, and the detailed report of the first shard of each kind (every shard with
    ``all_shards``). Sequence samples are decoded with ``tokenizer`` (a loaded one) when given.
    """
    path = Path(path)
    if path.is_file():
        report = {"shards": [inspect_shard(path, rows, tokenizer)]}
        if verify:
            raise ShardError(f"{path}: --verify needs an output directory with a {MANIFEST_NAME}")
        return report
    if not path.is_dir():
        raise ShardError(f"{path}: no such shard file or directory")
    manifest = read_manifest(path)
    report: dict[str, Any] = {
        "directory": str(path),
        "manifest": {k: manifest[k] for k in ("kind", "command", "tool_version", "schema_version") if k in manifest},
        "counters": manifest["counters"],
        "inputs": len(manifest["inputs"]),
        "totals": {
            "shards": len(manifest["shards"]),
            "rows": sum(s["rows"] for s in manifest["shards"]),
            "rows_by_kind": rows_by_kind(path, manifest),
            "bytes": sum(s["bytes"] for s in manifest["shards"]),
        },
    }
    failed: set[str] = set()
    if verify:  # first, so that a damaged shard shows in the report instead of stopping it
        report["verify"] = verify_manifest(path, manifest)
        failed = {v["path"] for v in report["verify"] if not v["ok"]}
    shards = []
    seen_kinds: set[str] = set()
    for shard in manifest["shards"]:
        shard_path = path / shard["path"]
        kind = shard.get("kind") or shard_path.parent.name
        if shard_path.suffix != ".arrow" or not shard_path.is_file() or shard["path"] in failed:
            continue
        if all_shards or kind not in seen_kinds:
            shards.append(inspect_shard(shard_path, rows if kind not in seen_kinds else 0, tokenizer))
            seen_kinds.add(kind)
    report["shards"] = shards
    return report


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, indent=2, default=str)
