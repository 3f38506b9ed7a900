"""The staged graph of ``cpm corpus build``: stages of independent tasks over on-disk intermediates.

::

    read ──► clean ──► ids ──► [against] ► exact ──► lsh ──► components ──► fates ──► apply ──► shards
    (range)  (chunk)   (part)   (index)     (part)    (part)   (one)          (chunk)   (chunk)   (shard)

* **read** (one task per input file, or per line-aligned byte range of a large local JSONL
  file): the records, cut into *chunks* of about ``partition_bytes`` of text.
* **clean** (per chunk): read counters, cleaning, the chunk's documents with their node keys and
  MinHash signatures (an Arrow file), its rejections, and (id, position) / (digest, node) entries
  hash-partitioned into ``P`` partitions.
* **ids** (per partition): repeated ids; every copy but the first in input order is rejected
  (``duplicate_id``).
* **against / exact / lsh / components** (dedup, :mod:`cpm.pipeline.dedup_stages`).
* **fates** (per chunk): each document kept (with its cluster size) or rejected; the bytes that
  fix the number of shards.
* **apply** (per chunk): segmentation of the kept documents; rows, rejections and index rows
  sorted within each output shard.
* **shards** (per output shard): a k-way merge of the chunks' sorted pieces, written batch by batch.

Every task holds one chunk or one partition, never the corpus, so memory does not grow with the
input; a task's result is a small value in its completion marker (:mod:`cpm.pipeline.spill`).
The number of partitions and shards comes from sizes counted by earlier stages, and every row's
place from hashes of its own fields, so the output is the same for any partition size, runner
and worker count. Each stage is an ordinary Beam pipeline (``Create`` -> ``Reshuffle`` -> one
single-output ``ParDo`` running the tasks, :func:`add_stage`) that any runner can run.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from cpm.pipeline import spill
from cpm.pipeline.clean import CleanConfig
from cpm.pipeline.progress import ProgressFile
from cpm.pipeline.records import RawRecord, Rejection

log = logging.getLogger(__name__)

WORK_DIR = ".work"  # intermediates inside the hidden output directory
SEGMENT_BATCH = 256
SIGN_BATCH = 256
CHUNK_BATCH_ROWS = 1024  # rows per record batch of a chunk's documents file (random access by row)


@dataclass
class BuildJob:
    """Everything a ``corpus build`` run needs, resolved by the launcher (picklable)."""

    sources: list[str]
    inputs: list[tuple[str, str]]  # (file path or URL, source), sorted, unique
    output: str  # final output directory (local)
    work_dir: str  # hidden sibling directory the build writes into
    configs: dict[str, CleanConfig]
    dedup: Any = None  # DedupConfig, or None for no dedup
    shard_bytes: int = 256 << 20
    input_sizes: dict[str, int] = field(default_factory=dict)
    command_config: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest
    partition_bytes: int = 32 << 20  # text per chunk and per hash partition

    @property
    def dedup_enabled(self) -> bool:
        return self.dedup is not None and self.dedup.enabled

    def path(self, *parts: str) -> str:
        """A path of an intermediate file."""
        return os.path.join(self.work_dir, WORK_DIR, *parts)


def hash_partition(data: bytes, partitions: int) -> int:
    return zlib.crc32(data) % partitions


def chunk_name(index: int) -> str:
    return f"{index:06d}"


# --------------------------------------------------------------------------- read

def read_tasks(job: BuildJob) -> tuple[list[tuple[int, int]], dict[int, list]]:
    """The read stage's tasks, ``(input, range)``, and the byte ranges of the inputs read in parts:
    a large local JSONL file is cut into line-aligned ranges of about ``partition_bytes``
    (:mod:`cpm.pipeline.readers.ranges`), so that its reading is spread over the workers too."""
    from cpm.pipeline.readers import input_ranges

    tasks: list[tuple[int, int]] = []
    ranges: dict[int, list] = {}
    for index, (path, source) in enumerate(job.inputs):
        cut = input_ranges(path, source, job.input_sizes.get(path, 0), job.partition_bytes)
        if cut is not None:
            ranges[index] = cut
        tasks += [(index, part) for part in range(len(cut or [None]))]
    return tasks, ranges


def read_task(job: BuildJob, task: tuple[int, int], params: dict) -> list[tuple[str, int]]:
    """One input file, or one byte range of it -> chunk files of its records; [(chunk file, text bytes)]."""
    from cpm.pipeline.readers import read_input

    index, part = task
    path, source = job.inputs[index]
    byte_range = params["ranges"][index][part] if index in params["ranges"] else None
    chunks: list[tuple[str, int]] = []
    records: list[RawRecord | Rejection] = []
    size = 0

    def flush() -> None:
        name = job.path("read", f"{index:06d}-{part:05d}-{len(chunks):05d}")
        spill.write_rows(name, records)
        chunks.append((name, size))

    for record in read_input(path, source, max_record_chars=job.configs[source].max_record_chars, byte_range=byte_range):
        records.append(record)
        size += len((record.text or "").encode("utf-8", "replace")) + len((getattr(record, "html", None) or "").encode("utf-8", "replace"))
        if size >= job.partition_bytes:
            flush()
            records, size = [], 0
    if records or not chunks:
        flush()
    return chunks


# --------------------------------------------------------------------------- clean

def chunk_schema():
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("source", pa.string()), ("text", pa.string()), ("title", pa.string()),
        ("url", pa.string()), ("date", pa.string()), ("meta", pa.string()), ("num_chars", pa.int64()),
        ("cjk_ratio", pa.float64()), ("origin", pa.string()), ("node_key", pa.string()),
        ("text_digest", pa.binary()), ("signature", pa.binary()),
    ])


def clean_task(job: BuildJob, task: int, params: dict) -> dict:
    """Clean one chunk: its documents file, rejections, and id / digest entries by partition."""
    from cpm.pipeline.clean import clean_record
    from cpm.pipeline.rows import default_id, document_row, rejection_row, row_bytes

    counts: dict[tuple, int] = {}
    docs: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    progress = ProgressFile(job.work_dir, "read")

    def add(key: tuple, amount: int) -> None:
        counts[key] = counts.get(key, 0) + amount

    for record in spill.read_rows(params["chunks"][task]):
        source = record.source
        text = record.text if isinstance(record, Rejection) or record.text is not None else record.html
        size = len((text or "").encode("utf-8", "replace"))
        progress.add(1, size)
        add(("read", source), 1)
        add(("bytes_read", source), size)
        if isinstance(record, Rejection):
            rejected.append(rejection_row(record))
            continue
        record.id = default_id(source, record.origin) if record.id is None else str(record.id)
        result = clean_record(record, job.configs[source])
        if isinstance(result, Rejection):
            rejected.append(rejection_row(result))
        else:
            docs.append(document_row(result))
    progress.flush()
    name = chunk_name(task)
    write_chunk_docs(job, name, docs)
    spill.write_rows(job.path("clean", f"{name}.rej"), rejected)
    write_partition_entries(job, name, docs, params["partitions"])
    return {"counts": counts, "docs": len(docs), "rejected_bytes": sum(row_bytes(r) for r in rejected)}


def write_chunk_docs(job: BuildJob, name: str, docs: list[dict[str, Any]]) -> None:
    """A chunk's documents with node key, digest and signature: an uncompressed Arrow file."""
    import pyarrow as pa

    from cpm.pipeline.dedup import doc_node_key, sign_documents

    for doc in docs:
        doc["node_key"] = doc_node_key(doc)
        doc["text_digest"] = doc["signature"] = None
    if job.dedup_enabled:
        for start in range(0, len(docs), SIGN_BATCH):
            batch = docs[start : start + SIGN_BATCH]
            for doc, signed in zip(batch, sign_documents([d["text"] for d in batch], job.dedup)):
                doc["signature"], doc["text_digest"] = signed.signature, signed.digest
    schema = chunk_schema()
    table = pa.Table.from_pylist(docs, schema=schema)
    path = job.path("clean", f"{name}.arrow")
    tmp = f"{path}.tmp-{os.getpid()}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for batch in table.to_batches(max_chunksize=CHUNK_BATCH_ROWS):
            writer.write_batch(batch)
    os.replace(tmp, path)


def write_partition_entries(job: BuildJob, name: str, docs: list[dict[str, Any]], partitions: int) -> None:
    """(id, origin key, row) by id partition; with dedup, (digest, node key, chunk, row, signature)
    by digest partition."""
    from cpm.pipeline.dedup import ExactEntry
    from cpm.pipeline.rows import origin_key

    chunk = int(name)
    ids: dict[int, list] = {}
    for row, doc in enumerate(docs):
        part = hash_partition(doc["id"].encode("utf-8", "surrogatepass"), partitions)
        ids.setdefault(part, []).append((doc["id"], origin_key(doc["origin"]), row))
    spill.write_partitioned(job.path("clean", f"{name}.ids"), ids)
    if job.dedup_enabled:
        exact: dict[int, list] = {}
        for row, doc in enumerate(docs):
            digest = doc["text_digest"]
            exact.setdefault(hash_partition(digest, partitions), []).append(ExactEntry(digest, doc["node_key"], chunk, row, doc["signature"]))
        spill.write_partitioned(job.path("clean", f"{name}.exact"), exact)


def chunk_batches(path: str, columns: list[str] | None = None) -> Iterator[list[dict[str, Any]]]:
    """A chunk's documents as lists of row dicts, a record batch at a time (read, not memory-mapped,
    so the file's pages do not count as resident memory)."""
    import pyarrow as pa

    with pa.OSFile(path, "rb") as source:
        reader = pa.ipc.open_file(source)
        for index in range(reader.num_record_batches):
            batch = reader.get_batch(index)
            if columns is not None:
                batch = batch.select(columns)
            yield batch.to_pylist()


# --------------------------------------------------------------------------- ids

def ids_task(job: BuildJob, task: int, params: dict) -> dict[int, dict[int, str]]:
    """One id partition: {chunk: {row: first origin}} for every document whose id comes earlier."""
    entries: dict[str, list[tuple]] = {}
    for chunk in range(params["num_chunks"]):
        for doc_id, key, row in spill.read_partition(job.path("clean", f"{chunk_name(chunk)}.ids"), task):
            entries.setdefault(doc_id, []).append((key, chunk, row))
    losers: dict[int, dict[int, str]] = {}
    for copies in entries.values():
        if len(copies) < 2:
            continue
        winner = min(copies)[0]
        for key, chunk, row in copies:
            if key[2] != winner[2]:
                losers.setdefault(chunk, {})[row] = winner[2]
    return losers


LOSERS_FILE = "losers"


def merge_losers(job: BuildJob, partitions: int) -> None:
    """The ``ids`` results of every partition in one file, ``{chunk: {row: first origin}}`` (small:
    only the later copies of repeated ids)."""
    merged: dict[int, dict[int, str]] = {}
    for part in range(partitions):
        for chunk, rows in spill.read_object(spill.marker_path(job.work_dir, "ids", str(part))).items():
            merged.setdefault(chunk, {}).update(rows)
    spill.write_object(job.path(LOSERS_FILE), merged)


def all_losers(job: BuildJob) -> dict[int, dict[int, str]]:
    return spill.read_object(job.path(LOSERS_FILE))


# --------------------------------------------------------------------------- fates

def fates_task(job: BuildJob, task: int, params: dict) -> dict:
    """Each document of a chunk kept (cluster size) or rejected (:func:`~cpm.pipeline.dedup.choose_fate`);
    sizes and dedup counts."""
    from cpm.pipeline.dedup import RULE_DUPLICATE_ID, RULE_EXACT, RULE_NEAR, Components, choose_fate
    from cpm.pipeline.rows import MAX_REJECTED_TEXT_CHARS

    name = chunk_name(task)
    losers = all_losers(job).get(task, {})
    exact: dict = {}
    components = Components({}, {})
    config = job.dedup if job.dedup_enabled else None
    if config is not None:
        from cpm.pipeline.dedup_stages import exact_fates, load_components

        exact = exact_fates(job, task, params["partitions"])
        components = load_components(job)
    fates = []
    result = {"kept": 0, "kept_bytes": 0, "rejected_bytes": 0, "exact": 0, "near": 0, "largest": None}
    row = 0
    for batch in chunk_batches(job.path("clean", f"{name}.arrow"), ["id", "num_chars", "node_key"]):
        for doc in batch:
            fate = choose_fate(doc["node_key"], losers.get(row), exact.get(row), components, config)
            fates.append(fate)
            if fate.kept:
                result["kept"] += 1
                result["kept_bytes"] += doc["num_chars"] * 5 + 200
                candidate = (-fate.cluster_size, doc["id"])
                if config is not None and (result["largest"] is None or candidate < result["largest"]):
                    result["largest"] = candidate
            else:
                chars = min(doc["num_chars"], MAX_REJECTED_TEXT_CHARS) if fate.rule == RULE_DUPLICATE_ID else doc["num_chars"]
                result["rejected_bytes"] += chars * 5 + 200
                result["exact"] += fate.rule == RULE_EXACT
                result["near"] += fate.rule == RULE_NEAR
            row += 1
    spill.write_object(job.path("fates", name), fates)
    return result


# --------------------------------------------------------------------------- apply

def apply_task(job: BuildJob, task: int, params: dict) -> dict:
    """Segment a chunk's kept documents; its rows, rejections and index rows sorted per output shard."""
    from cpm.pipeline.dedup import index_row, kept_row, rejected_row
    from cpm.pipeline.rows import document_shard, document_sort_key, rejected_counts, rejected_shard, rejected_sort_key
    from cpm.tokenizer.segment import cut_batch

    name = chunk_name(task)
    fates = spill.read_object(job.path("fates", name))
    counts: dict[tuple, int] = {}
    rejected = list(spill.read_rows(job.path("clean", f"{name}.rej")))
    kept: list[dict[str, Any]] = []
    index_rows: list[dict[str, Any]] = []
    progress = ProgressFile(job.work_dir, "segmented")

    def add(key: tuple, amount: int) -> None:
        counts[key] = counts.get(key, 0) + amount

    def segment(batch: list[dict[str, Any]]) -> None:
        add_words(batch, cut_batch([doc["text"] for doc in batch]), add)
        kept.extend(batch)
        progress.add(len(batch), sum(len(doc["text"]) for doc in batch) * 3)

    pending: list[dict[str, Any]] = []
    row = 0
    for batch in chunk_batches(job.path("clean", f"{name}.arrow")):
        for doc in batch:
            fate = fates[row]
            row += 1
            if fate.kept:
                if job.dedup_enabled:
                    index_rows.append(index_row(doc))
                pending.append(kept_row(doc, fate))
                if len(pending) == SEGMENT_BATCH:
                    segment(pending)
                    pending = []
            else:
                rejected.append(rejected_row(doc, fate))
    if pending:
        segment(pending)
    progress.flush()
    for rejected_row in rejected:
        for key, amount in rejected_counts(rejected_row):
            add(key, amount)
    spill.write_partitioned(job.path("apply", f"{name}.documents"),
                            _by_shard(kept, params["n_documents"], document_shard, document_sort_key))
    spill.write_partitioned(job.path("apply", f"{name}.rejected"),
                            _by_shard(rejected, params["n_rejected"], rejected_shard, rejected_sort_key))
    if job.dedup_enabled:
        from cpm.pipeline.dedup_index import index_shard_of, index_sort_key

        spill.write_partitioned(job.path("apply", f"{name}.signatures"), _by_shard(
            index_rows, params["n_signatures"], lambda r, n: index_shard_of(r["id"], n), index_sort_key))
    return {"counts": counts}


def _by_shard(rows, n_shards: int, shard_of: Callable, sort_key: Callable) -> dict[int, list]:
    by_shard: dict[int, list] = {}
    for row in rows:
        by_shard.setdefault(shard_of(row, n_shards), []).append(row)
    return {shard: sorted(shard_rows, key=sort_key) for shard, shard_rows in by_shard.items()}


# --------------------------------------------------------------------------- shards

SORT_KEYS = {"documents": "document", "rejected": "rejected", "signatures": "index"}


def add_words(batch: list[dict[str, Any]], words: list[list[str]], add: Callable[[tuple, int], None]) -> None:
    """Store each kept document's words (packed, split as the shard lays them out) and count its documents, characters, bytes and
    words by source with ``add``."""
    from cpm.pipeline.rows import SplitWords, layout_words

    for doc, doc_words, split in zip(batch, words, layout_words([doc["text"] for doc in batch], words)):
        doc["words"] = split  # as the shard lays them out: its task only concatenates them
        doc["num_words"] = len(doc_words)
        source = doc["source"]
        add(("kept", source), 1)
        add(("chars_kept", source), doc["num_chars"])
        add(("bytes_kept", source), len(split.utf8) if isinstance(split, SplitWords) else len(doc["text"].encode("utf-8")))
        add(("words_kept", source), len(doc_words))


def shard_task(job: BuildJob, task: tuple[str, int], params: dict) -> dict:
    """Merge the chunks' sorted pieces of one output shard and write it, a record batch at a time."""
    from cpm.pipeline.rows import document_sort_key, rejected_sort_key, shard_batches
    from cpm.schemas import document_schema, rejected_schema
    from cpm.shards.io import shard_name, write_table

    kind, index = task
    pieces = [spill.read_partition(job.path("apply", f"{chunk_name(c)}.{kind}"), index) for c in range(params["num_chunks"])]
    if kind == "signatures":
        from cpm.pipeline.dedup_index import index_sort_key, signature_batches, signature_path
        from cpm.schemas import signature_schema

        rows = heapq.merge(*pieces, key=index_sort_key)
        path = signature_path(job.work_dir, index, params["n_signatures"])
        schema = signature_schema(job.dedup.num_perm, job.dedup.index_metadata())
        info = write_table(path, signature_batches(rows, job.dedup, schema), schema)
        return info.entry(job.work_dir)
    sort_key = document_sort_key if kind == "documents" else rejected_sort_key
    schema = document_schema() if kind == "documents" else rejected_schema()
    subdir = "shards" if kind == "documents" else "rejected"
    rows = heapq.merge(*pieces, key=sort_key)
    batches = prefetched(shard_batches(rows, kind))  # built while the writer compresses the one before
    info = write_table(os.path.join(job.work_dir, subdir, shard_name(index)), batches, schema, threads=True)
    return {**info.entry(job.work_dir), "kind": kind}


def prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items``, produced by a thread up to ``depth`` ahead of the consumer, in the same order.

    A shard's record batches are built in Python (holding the GIL) while Arrow's writer compresses
    the previous one without it: on a shard task, the longest task of its stage, the two overlap.
    """
    import queue
    import threading

    slots: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((True, end))
        except BaseException as error:  # handed to the consumer, raised there
            slots.put((False, error))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = slots.get()
            if not ok:
                raise item
            if item is end:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it finish
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(0.05)


# --------------------------------------------------------------------------- warm-up

def load_cleaning(job: BuildJob) -> None:
    """Load the cleaning and MinHash tables (and pandas, which pyarrow imports on its first
    conversion from Python objects, ~0.3 s) now: workers forked afterwards share them."""
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401 - the apply stage splits words with it

    from cpm.pipeline.clean import clean_record

    pa.array(["预热"])
    for source, config in job.configs.items():
        clean_record(RawRecord(source, "warm-up:1", text="预热。" * 20, id="warm-up"), config)
    if job.dedup_enabled:
        from cpm.pipeline.minhash import sign_batch

        sign_batch(["预热"], job.dedup.num_perm, job.dedup.ngram, job.dedup.seed)


def load_segmenter(job: BuildJob) -> None:
    """Load the segmenter's dictionary and model now: workers forked afterwards share them."""
    from cpm.tokenizer.segment import cut

    cut("预热")


# (the first stage that needs them, the loader): what a pool's launcher loads before forking its workers
PRELOADS: tuple[tuple[str, Callable[[BuildJob], None]], ...] = (("clean", load_cleaning), ("apply", load_segmenter))


# --------------------------------------------------------------------------- stages

def _dedup_stage(name: str) -> Callable:
    def run(job: BuildJob, task, params: dict):
        from cpm.pipeline import dedup_stages

        return getattr(dedup_stages, f"{name}_task")(job, task, params)

    run.__name__ = f"{name}_task"
    return run


STAGES: dict[str, Callable[[BuildJob, Any, dict], Any]] = {
    "read": read_task,
    "clean": clean_task,
    "ids": ids_task,
    "against": _dedup_stage("against"),
    "exact": _dedup_stage("exact"),
    "lsh": _dedup_stage("lsh"),
    "components": _dedup_stage("components"),
    "fates": fates_task,
    "apply": apply_task,
    "shards": shard_task,
}


def task_name(task: Any) -> str:
    return "-".join(map(str, task)) if isinstance(task, tuple) else str(task)


def run_task(job: BuildJob, stage: str, task: Any, params: dict) -> Any:
    """Run one task of ``stage`` and write its completion marker (its result) last.

    With ``cpm -v``, one line per task (process, wall and CPU seconds): the build's timeline per worker.
    """
    started, cpu = time.monotonic(), time.process_time()
    result = STAGES[stage](job, task, params)
    spill.write_object(spill.marker_path(job.work_dir, stage, task_name(task)), result)
    release_memory()
    log.debug("task %s/%s in process %d: %.2fs (%.2fs CPU)", stage, task_name(task), os.getpid(),
              time.monotonic() - started, time.process_time() - cpu)
    return result


RELEASE_ABOVE_BYTES = 512 << 20  # a worker's resident size above which a finished task's freed memory is returned


def resident_bytes() -> int | None:
    """This process's resident set size now (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_memory(above: int = RELEASE_ABOVE_BYTES) -> bool:
    """Give the memory finished tasks freed back to the system when the resident size is over
    ``above``, so that a worker's resident size does not creep up task after task (Arrow's pool and
    glibc's heap keep freed memory). Below it the memory stays for the next task: returning it after
    every task made the next one fault every page in again (~20% more CPU). Whether it was released."""
    rss = resident_bytes()
    if rss is not None and rss <= above:
        return False
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    return True


def task_done(job: BuildJob, stage: str, task: Any) -> bool:
    return os.path.exists(spill.marker_path(job.work_dir, stage, task_name(task)))


def task_result(job: BuildJob, stage: str, task: Any) -> Any:
    return spill.read_object(spill.marker_path(job.work_dir, stage, task_name(task)))


def add_stage(pipeline, job: BuildJob, stage: str, tasks: list, params: dict):
    """One stage as a Beam graph: its tasks, spread over workers, each run by a ``ParDo``.

    Only ``Create``, ``Reshuffle`` and a single-output ``ParDo`` without side inputs: what every
    runner supports (Beam's Dask runner mishandles multi-output ``ParDo`` and singleton side inputs).
    Beam is imported here only: a build on the DirectRunner runs its tasks without it.
    """
    import apache_beam as beam

    from cpm.pipeline.stage_dofn import RunTasks

    return (
        pipeline
        | f"{stage}Tasks" >> beam.Create(tasks)
        | f"{stage}Spread" >> beam.Reshuffle()
        | f"{stage}Run" >> beam.ParDo(RunTasks(job, stage, params))
    )


def num_partitions(chunk_bytes: int, partition_bytes: int) -> int:
    return max(1, math.ceil(chunk_bytes / partition_bytes))


BALANCE_CHUNKS = 16  # an input smaller than 16 partitions is cut into ~16 chunks ...
MIN_PARTITION_BYTES = 1 << 20  # ... of at least 1 MiB


def balanced_partition_bytes(partition_bytes: int, input_bytes: int) -> int:
    """The text per chunk for ``input_bytes`` of input: ``--partition-size``, or less for small inputs.

    A 40 MB input cut at 32 MB gives two unequal chunks, and two workers then wait on the larger one;
    ~16 chunks keep up to 16 workers busy to the end of each stage. It depends on the input's size
    only (never on ``--workers``), so a resumed build cuts the same chunks; the output does not
    depend on it at all.
    """
    return max(min(MIN_PARTITION_BYTES, partition_bytes), min(partition_bytes, input_bytes // BALANCE_CHUNKS))
