"""The dedup stages of the staged corpus build (see :mod:`cpm.pipeline.graph`): file I/O around the
steps of :mod:`cpm.pipeline.dedup`, partition by partition.

* **against** (per signature shard of an earlier build): its nodes as a pseudo-chunk.
* **exact** (per digest partition): :func:`~cpm.pipeline.dedup.exact_groups`, then the
  representatives' :func:`~cpm.pipeline.dedup.band_entries` by LSH partition.
* **lsh** (per LSH partition): :func:`~cpm.pipeline.dedup.shared_buckets`, their members' keys and
  signatures fetched by (chunk, row) from the memory-mapped chunk files,
  :func:`~cpm.pipeline.dedup.candidate_pairs` and :func:`~cpm.pipeline.dedup.confirm_edges`.
* **components** (one task): :func:`~cpm.pipeline.dedup.connected_components` of every edge. It
  holds the nodes that have an edge (the near-duplicates), not the corpus.
"""

from __future__ import annotations

import os

import numpy as np

from cpm.pipeline import dedup, spill
from cpm.pipeline.dedup import Components, ExactEntry, ExactFate
from cpm.pipeline.dedup_index import read_index
from cpm.pipeline.graph import CHUNK_BATCH_ROWS, BuildJob, all_losers, chunk_name, hash_partition

COMPONENTS_FILE = "components"


# --------------------------------------------------------------------------- against

def against_task(job: BuildJob, task: int, params: dict) -> dict:
    """One signature shard of an earlier build -> a nodes file and digest entries (chunk ``C + task``)."""
    import pyarrow as pa

    from cpm.pipeline.graph import chunk_schema

    chunk = params["num_chunks"] + task
    keys, sigs, exact = [], [], {}
    for row, (digest, (key, sig)) in enumerate(read_index(params["against"][task])):
        keys.append(key)
        sigs.append(sig)
        exact.setdefault(hash_partition(digest, params["partitions"]), []).append(ExactEntry(digest, key, chunk, row, sig))
    schema = chunk_schema()
    columns = {name: pa.nulls(len(keys), schema.field(name).type) for name in schema.names}
    columns["node_key"] = pa.array(keys, pa.string())
    columns["signature"] = pa.array(sigs, pa.binary())
    _write_arrow(node_path(job, chunk, params["num_chunks"]), pa.table(columns, schema=schema))
    spill.write_partitioned(job.path("against", f"{chunk_name(task)}.exact"), exact)
    return {"nodes": len(keys)}


def _write_arrow(path: str, table) -> None:
    import pyarrow as pa

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=CHUNK_BATCH_ROWS):
            writer.write_batch(batch)
    os.replace(tmp, path)


def node_path(job: BuildJob, chunk: int, num_chunks: int) -> str:
    """The documents (or, for an earlier build's shard, nodes) file of a chunk number."""
    if chunk < num_chunks:
        return job.path("clean", f"{chunk_name(chunk)}.arrow")
    return job.path("against", f"{chunk_name(chunk - num_chunks)}.arrow")


def fetch_columns(job: BuildJob, num_chunks: int, handles: list[tuple[int, int]], columns: list[str]) -> dict:
    """{(chunk, row): (values of ``columns``)} read from the chunk files, a chunk at a time.

    Each chunk file is memory-mapped only while its rows are taken, so only the pages of those
    rows are touched and none stay mapped (resident) afterwards.
    """
    import pyarrow as pa

    by_chunk: dict[int, list[int]] = {}
    for chunk, row in handles:
        by_chunk.setdefault(chunk, []).append(row)
    out: dict[tuple[int, int], tuple] = {}
    for chunk, rows in sorted(by_chunk.items()):
        rows = sorted(set(rows))
        with pa.memory_map(node_path(job, chunk, num_chunks), "r") as source:
            table = pa.ipc.open_file(source).read_all().select(columns)
            taken = table.take(pa.array(rows, pa.int64())).to_pydict()
            del table
        for i, row in enumerate(rows):
            out[(chunk, row)] = tuple(taken[name][i] for name in columns)
    return out


# --------------------------------------------------------------------------- exact

def exact_task(job: BuildJob, task: int, params: dict) -> dict:
    """One digest partition: representatives, exact fates, and the representatives' band keys by LSH partition."""
    losers = all_losers(job)
    files = [job.path("clean", f"{chunk_name(c)}.exact") for c in range(params["num_chunks"])]
    files += [job.path("against", f"{chunk_name(j)}.exact") for j in range(len(params.get("against", ())))]
    entries = (ExactEntry(*entry) for path in files for entry in spill.read_partition(path, task))
    groups = dedup.exact_groups(entry for entry in entries if entry.row not in losers.get(entry.chunk, ()))
    spill.write_partitioned(job.path("exact", f"{chunk_name(task)}.fates"), groups.fates)
    bands, rows = job.dedup.bands
    partitions = dedup.band_entries(groups.representatives, bands, rows, params["partitions"])
    spill.write_partitioned(job.path("exact", f"{chunk_name(task)}.bands"), {p: [e] for p, e in partitions.items()})
    return {"representatives": len(groups.representatives)}


def exact_fates(job: BuildJob, chunk: int, partitions: int) -> dict[int, ExactFate]:
    """{row: its exact fate} of a chunk's documents."""
    out: dict[int, ExactFate] = {}
    for part in range(partitions):
        for fate in spill.read_partition(job.path("exact", f"{chunk_name(part)}.fates"), chunk):
            out[fate.row] = fate
    return out


# --------------------------------------------------------------------------- lsh

def lsh_task(job: BuildJob, task: int, params: dict) -> dict:
    """One LSH partition: confirmed duplicate edges among the members of its shared buckets."""
    config = job.dedup
    num_chunks = params["num_chunks"]
    parts = [e for p in range(params["partitions"]) for e in spill.read_partition(job.path("exact", f"{chunk_name(p)}.bands"), task)]
    buckets = list(dedup.shared_buckets(np.concatenate([e.keys for e in parts]))) if parts else []
    edges: list[dedup.Edge] = []
    mult: dict[str, int] = {}
    candidates: list[dedup.Candidate] = []
    borderline = by_exact = 0
    if buckets:
        chunks, rows, mults = (np.concatenate([getattr(e, name) for e in parts]) for name in ("chunks", "rows", "multiplicities"))
        members = np.unique(np.concatenate(buckets))
        handles = list(zip(chunks[members].tolist(), rows[members].tolist()))
        nodes = fetch_columns(job, num_chunks, handles, ["node_key", "signature"])
        handle_of = {nodes[h][0]: h for h in handles}
        for i, handle in zip(members.tolist(), handles):
            mult[nodes[handle][0]] = int(mults[i])
        chunks, rows = chunks.tolist(), rows.tolist()
        candidates = dedup.candidate_pairs(
            ([nodes[(chunks[i], rows[i])] for i in bucket.tolist()] for bucket in buckets), config.exact_band[0], config.num_perm)

        def fetch_texts(keys: list[str]) -> dict[str, str | None]:
            texts = fetch_columns(job, num_chunks, [handle_of[k] for k in keys], ["text"])
            return {key: texts[handle_of[key]][0] for key in keys}

        edges, borderline, by_exact = dedup.confirm_edges(candidates, config, fetch_texts)
    endpoints = {key for edge in edges for key in edge}
    mult = {key: value for key, value in mult.items() if key in endpoints}
    spill.write_object(job.path("lsh", chunk_name(task)), {"edges": edges, "mult": mult})
    return {"candidates": len(candidates), "edges": len(edges), "borderline": borderline, "by_exact": by_exact}


# --------------------------------------------------------------------------- components

def components_task(job: BuildJob, task: int, params: dict) -> dict:
    """The connected components of every LSH partition's edges: {node: survivor}, {survivor: cluster size}."""
    edges: list[dedup.Edge] = []
    mult: dict[str, int] = {}
    for part in range(params["partitions"]):
        data = spill.read_object(job.path("lsh", chunk_name(part)))
        mult.update(data["mult"])
        edges.extend(data["edges"])
    components = dedup.connected_components(edges, mult)
    spill.write_object(job.path(COMPONENTS_FILE), components)
    return {"nodes": len(components.labels) + len(components.sizes), "labelled": len(components.labels)}


def load_components(job: BuildJob) -> Components:
    return spill.read_object(job.path(COMPONENTS_FILE))
