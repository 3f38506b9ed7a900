"""The dedup stages of the staged corpus build (see :mod:`cpm.pipeline.graph`).

The same decisions as :class:`cpm.pipeline.dedup.Deduplicate` (node keys, exact groups by
digest, LSH bands, :func:`~cpm.pipeline.dedup.bucket_pairs`, confirmation by estimate or exact
Jaccard, the survivor rule), computed partition by partition over files:

* **against** (per signature shard of an earlier build): its nodes as a pseudo-chunk.
* **exact** (per digest partition): each digest's representative (the smallest node key), the
  number of new documents it stands for, every other new member linked to it; the
  representatives' band keys, partitioned by LSH partition (a hash of the band key).
* **lsh** (per LSH partition): buckets met at least twice, their members' keys and signatures
  fetched by (chunk, row) from the memory-mapped chunk files, confirmed pairs as edges.
* **components** (one task): the connected components of the edges by union-find (always
  converges, unlike a fixed number of large-star/small-star rounds); each component's smallest
  node is its survivor. It holds the nodes that have an edge (the near-duplicates), not the corpus.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from cpm.pipeline import minhash, spill
from cpm.pipeline.dedup import (
    BAND_KEY_BYTES, band_key_matrix, bucket_pairs, is_old, read_index,
)
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
        exact.setdefault(hash_partition(digest, params["partitions"]), []).append((digest, key, chunk, row, sig))
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
    """One digest partition: representatives, links, and the representatives' band keys by LSH partition."""
    losers = all_losers(job)
    groups: dict[bytes, list[tuple]] = {}
    files = [job.path("clean", f"{chunk_name(c)}.exact") for c in range(params["num_chunks"])]
    files += [job.path("against", f"{chunk_name(j)}.exact") for j in range(len(params.get("against", ())))]
    for path in files:
        for digest, key, chunk, row, sig in spill.read_partition(path, task):
            if row not in losers.get(chunk, ()):
                groups.setdefault(digest, []).append((key, chunk, row, sig))
    reps: list[tuple[int, int, bytes, int]] = []
    fates: dict[int, list[tuple[int, str, int]]] = {}
    for digest in sorted(groups):
        members = groups[digest]
        best = min(members)
        new = sum(not is_old(m[0]) for m in members)
        reps.append((best[1], best[2], best[3], new))
        if new:
            for key, chunk, row, _ in members:
                if not is_old(key):
                    fates.setdefault(chunk, []).append((row, best[0], new if key == best[0] else 0))
    spill.write_partitioned(job.path("exact", f"{chunk_name(task)}.fates"), fates)
    spill.write_partitioned(job.path("exact", f"{chunk_name(task)}.bands"), band_entries(job, reps, params["partitions"]))
    return {"representatives": len(reps)}


def band_entries(job: BuildJob, reps: list[tuple[int, int, bytes, int]], partitions: int) -> dict[int, list]:
    """{LSH partition: [(band keys (n, 10) uint8, chunks, rows, multiplicities)]} of the representatives."""
    if not reps:
        return {}
    bands, rows = job.dedup.bands
    sigs = np.frombuffer(b"".join(r[2] for r in reps), dtype=np.uint32).reshape(len(reps), -1)
    keys = band_key_matrix(sigs, bands, rows).reshape(-1, BAND_KEY_BYTES)  # (rep, band) order
    parts = keys[:, 2:6].copy().view("<u4").ravel() % partitions
    chunks = np.repeat(np.array([r[0] for r in reps], np.int32), bands)
    rows_ = np.repeat(np.array([r[1] for r in reps], np.int32), bands)
    mults = np.repeat(np.array([r[3] for r in reps], np.int32), bands)
    out: dict[int, list] = {}
    for part in np.unique(parts).tolist():
        mask = parts == part
        out[part] = [(keys[mask], chunks[mask], rows_[mask], mults[mask])]
    return out


def exact_fates(job: BuildJob, chunk: int, partitions: int) -> dict[int, tuple[str, int]]:
    """{row: (representative key, multiplicity if the row is the representative else 0)} of a chunk."""
    out: dict[int, tuple[str, int]] = {}
    for part in range(partitions):
        for row, rep_key, mult in spill.read_partition(job.path("exact", f"{chunk_name(part)}.fates"), chunk):
            out[row] = (rep_key, mult)
    return out


# --------------------------------------------------------------------------- lsh

def shared_buckets(keys: np.ndarray) -> Iterator[np.ndarray]:
    """Index arrays of the entries of each band key met at least twice."""
    void = np.ascontiguousarray(keys).view(np.dtype((np.void, BAND_KEY_BYTES))).ravel()
    _, inverse, counts = np.unique(void, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    shared = np.flatnonzero(counts[inverse] >= 2)
    if not len(shared):
        return
    order = shared[np.argsort(inverse[shared], kind="stable")]
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    yield from np.split(order, bounds)


def lsh_task(job: BuildJob, task: int, params: dict) -> dict:
    """One LSH partition: confirmed duplicate edges among the members of its shared buckets."""
    config = job.dedup
    low, high = config.exact_band
    num_chunks = params["num_chunks"]
    parts = [e for p in range(params["partitions"]) for e in spill.read_partition(job.path("exact", f"{chunk_name(p)}.bands"), task)]
    edges: list[tuple[str, str]] = []
    mult: dict[str, int] = {}
    borderline = 0
    buckets = list(shared_buckets(np.concatenate([e[0] for e in parts]))) if parts else []
    if buckets:
        chunks, rows, mults = (np.concatenate([e[i] for e in parts]) for i in (1, 2, 3))
        members = np.unique(np.concatenate(buckets))
        handles = list(zip(chunks[members].tolist(), rows[members].tolist()))
        nodes = fetch_columns(job, num_chunks, handles, ["node_key", "signature"])
        handle_of = {nodes[h][0]: h for h in handles}
        for i, handle in zip(members.tolist(), handles):
            mult[nodes[handle][0]] = int(mults[i])
        chunks, rows = chunks.tolist(), rows.tolist()
        pairs: set[tuple[str, str, float]] = set()
        for bucket in buckets:
            pairs.update(bucket_pairs([nodes[(chunks[i], rows[i])] for i in bucket.tolist()], low, config.num_perm))
        decided: list[tuple[str, str, float | None]] = []
        for a, b, estimate in sorted(pairs):
            if is_old(a) or is_old(b):  # no text for a document of an earlier build: the estimate decides
                decided.append((a, b, None) if estimate >= config.threshold else (a, b, -1.0))
            elif estimate >= high:
                decided.append((a, b, None))
            else:
                decided.append((a, b, estimate))
        texts_needed = [handle_of[k] for a, b, e in decided if e is not None and e >= 0 for k in (a, b)]
        texts = fetch_columns(job, num_chunks, texts_needed, ["text"])
        shingles: dict[str, np.ndarray] = {}

        def shingle_set(key: str) -> np.ndarray:
            if key not in shingles:
                shingles[key] = minhash.shingle_set(texts[handle_of[key]][0] or "", config.ngram)
            return shingles[key]

        for a, b, estimate in decided:
            if estimate is None:
                edges.append((a, b))
            elif estimate >= 0:
                borderline += 1
                if minhash.set_jaccard(shingle_set(a), shingle_set(b)) >= config.threshold:
                    edges.append((a, b))
    endpoints = {key for edge in edges for key in edge}
    mult = {key: value for key, value in mult.items() if key in endpoints}
    spill.write_object(job.path("lsh", chunk_name(task)), {"edges": edges, "mult": mult})
    return {"edges": len(edges), "borderline": borderline}


# --------------------------------------------------------------------------- components

def components_task(job: BuildJob, task: int, params: dict) -> dict:
    """Union-find over every edge: {node: survivor} for non-survivors, {survivor: cluster size}."""
    parent: dict[str, str] = {}
    mult: dict[str, int] = {}

    def find(node: str) -> str:
        root = parent.setdefault(node, node)
        while root != parent[root]:
            parent[root] = parent[parent[root]]
            root = parent[root]
        return root

    for part in range(params["partitions"]):
        data = spill.read_object(job.path("lsh", chunk_name(part)))
        mult.update(data["mult"])
        for a, b in data["edges"]:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)  # the smallest node key of a component is its root
    labels: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for node in list(parent):
        root = find(node)
        if root != node:
            labels[node] = root
        sizes[root] = sizes.get(root, 0) + mult.get(node, 0)
    spill.write_object(job.path(COMPONENTS_FILE), {"labels": labels, "sizes": sizes})
    return {"nodes": len(parent), "labelled": len(labels)}


def load_components(job: BuildJob) -> tuple[dict[str, str], dict[str, int]]:
    data = spill.read_object(job.path(COMPONENTS_FILE))
    return data["labels"], data["sizes"]


# --------------------------------------------------------------------------- index shards

def signature_batches(rows: Iterator[dict], config, schema, batch_rows: int = 1024):
    """Sorted index rows -> the record batches of a signature shard (the bytes of
    :func:`~cpm.pipeline.dedup.write_index_shard`, see :func:`~cpm.pipeline.rows.lookahead_batches`)."""
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
