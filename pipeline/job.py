"""The Apache Beam job of ``cpm corpus build``.

::

    input files ──read_input──► records ──clean──► documents ──duplicate ids──► Deduplicate
        │                          │                   │                            │
        └──────── rejections ──────┴───────────────────┴──────────── rejected ◄─────┤
                                                                                    ▼
    manifest.json ◄── counters + shard infos ◄── write shards ◄── shard by id ◄── segment

Nothing is held in the launching process: the number of shards comes from the total size
(a combine, used as a side input), every document goes to shard ``hash(id) % n``, a
shard's rows are sorted by id before :func:`cpm.shards.io.write_table`, so its bytes depend
only on the input and config, never on the runner or worker count. The manifest is
assembled inside the pipeline from combined counters and shard infos and written last.
Everything goes to a temporary sibling directory that the launcher renames into place
when the job has succeeded: a directory with a manifest is complete.

Duplicate ids: when several cleaned documents share an id, the one from the first input
position (path, then line) is kept and the others are rejected with rule ``duplicate_id``.
Records without an id get ``<source>-<16 hex digits of blake2b(origin)>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import threading
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from cpm.errors import CpmError
from cpm.pipeline.batching import global_window_value
from cpm.pipeline.clean import STEP_NAMES, CleanConfig, cjk_ratio, clean_record
from cpm.pipeline.records import RawRecord, Rejection

log = logging.getLogger(__name__)

DUPLICATE_RULES = ("exact_duplicate", "near_duplicate")
MAX_REJECTED_TEXT_CHARS = 1_000_000  # rejected rows keep at most this much of a record's text
PROGRESS_DIR = ".progress"


@dataclass
class BuildJob:
    """Everything a ``corpus build`` run needs, resolved by the launcher (picklable)."""

    sources: list[str]
    inputs: list[tuple[str, str]]  # (file path or URL, source), sorted, unique
    output: str  # final output directory (local)
    work_dir: str  # temporary sibling directory the pipeline writes into
    configs: dict[str, CleanConfig]
    dedup: Any = None  # DedupConfig, or None for no dedup
    shard_bytes: int = 256 << 20
    input_sizes: dict[str, int] = field(default_factory=dict)
    command_config: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest


# --------------------------------------------------------------------------- small helpers

def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def default_id(source: str, origin: str) -> str:
    return f"{source}-{hashlib.blake2b(origin.encode('utf-8'), digest_size=8).hexdigest()}"


def origin_key(origin: str) -> tuple[str, int, str]:
    """Sort key of an ``"path:line"`` origin: path, then line number as an integer."""
    path, _, line = origin.rpartition(":")
    return (path, int(line), origin) if line.isdigit() else (origin, -1, origin)


def valid_utf8(value: str | None) -> str | None:
    """``value`` with lone surrogates (from JSON ``\\udxxx`` escapes) replaced, so Arrow can store it."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")


def rejection_row(rejection: Rejection) -> dict[str, Any]:
    row = {k: valid_utf8(v) for k, v in rejection.row().items()}
    if row["text"] is not None and len(row["text"]) > MAX_REJECTED_TEXT_CHARS:
        row["text"] = row["text"][:MAX_REJECTED_TEXT_CHARS]
    return row


def document_row(record: RawRecord) -> dict[str, Any]:
    """A cleaned record as a document row (without ``words``, ``num_words``, ``dup_cluster_size``)."""
    text = record.text or ""
    return {
        "id": valid_utf8(record.id),
        "source": record.source,
        "text": text,
        "title": valid_utf8(record.title),
        "url": valid_utf8(record.url),
        "date": valid_utf8(record.date),
        "meta": valid_utf8(json.dumps(record.meta or {}, ensure_ascii=False, sort_keys=True, default=str)),
        "num_chars": len(text),
        "cjk_ratio": cjk_ratio(text),
        "origin": valid_utf8(record.origin),
    }


def row_bytes(row: dict[str, Any]) -> int:
    """Estimated uncompressed bytes of a row in its shard (text, words and the small fields)."""
    return len(row.get("text") or "") * 5 + 200


WORD_SEPARATOR = "\x00"  # never in a cleaned text (unicode_repair removes it): words travel as one string


def pack_words(words: list[str]) -> str | list[str]:
    packed = WORD_SEPARATOR.join(words)
    return packed if len(packed) - len(words) + 1 == sum(map(len, words)) else words


def unpack_words(words: str | list[str]) -> list[str]:
    if isinstance(words, list):
        return words
    return words.split(WORD_SEPARATOR) if words else []


class ProgressFile:
    """Throttled per-worker progress numbers in ``work_dir/.progress`` for the launcher's display."""

    def __init__(self, work_dir: str, kind: str) -> None:
        self.path = os.path.join(work_dir, PROGRESS_DIR, f"{kind}-{os.getpid()}-{id(self):x}")
        self.docs = self.bytes = 0
        self.last = 0.0

    def add(self, docs: int, nbytes: int) -> None:
        self.docs += docs
        self.bytes += nbytes
        now = time.monotonic()
        if now - self.last > 0.5:
            self.flush()
            self.last = now

    def flush(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as handle:
                handle.write(f"{self.docs} {self.bytes}")
            os.replace(tmp, self.path)
        except OSError:  # a remote worker without the launcher's file system: no display
            pass


def read_progress(work_dir: str) -> dict[str, tuple[int, int]]:
    """Sum of the progress files by kind: ``{"read": (docs, bytes), "segmented": (...)}``."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    folder = os.path.join(work_dir, PROGRESS_DIR)
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    for name in names:
        if name.endswith(".tmp"):
            continue
        try:
            docs, nbytes = open(os.path.join(folder, name)).read().split()
        except (OSError, ValueError):
            continue
        kind = name.split("-", 1)[0]
        totals[kind][0] += int(docs)
        totals[kind][1] += int(nbytes)
    return {k: (v[0], v[1]) for k, v in totals.items()}


# --------------------------------------------------------------------------- DoFns

class ReadFile(beam.DoFn):
    """One input file -> its records (RawRecord or Rejection), via the readers."""

    def __init__(self, configs: dict[str, CleanConfig]) -> None:
        self.configs = configs

    def process(self, element: tuple[str, str]) -> Iterator[RawRecord | Rejection]:
        from cpm.pipeline.readers import read_input

        path, source = element
        yield from read_input(path, source, max_record_chars=self.configs[source].max_record_chars)


class CleanRecords(beam.DoFn):
    """Thin wrapper around :func:`cpm.pipeline.clean.clean_record`: one counter per step.

    Main output: document rows; ``rejected``: rejected rows; ``counts``: one dict of sums per bundle.
    """

    def __init__(self, configs: dict[str, CleanConfig], work_dir: str) -> None:
        self.configs = configs
        self.work_dir = work_dir

    def setup(self) -> None:
        self.ran = {name: Metrics.counter("cpm.steps", name) for name in STEP_NAMES}
        self.dropped = {name: Metrics.counter("cpm.rejected", name) for name in STEP_NAMES}
        self.read = Metrics.counter("cpm", "records_read")
        self.progress = ProgressFile(self.work_dir, "read")

    def _on_step(self, name: str, rejected: bool) -> None:
        # summed per bundle and added to the Beam counters in finish_bundle (one inc per step name)
        ran = self.ran_in_bundle
        ran[name] = ran.get(name, 0) + 1
        if rejected:
            self.dropped_in_bundle[name] = self.dropped_in_bundle.get(name, 0) + 1

    def process(self, record: RawRecord | Rejection):
        self.read.inc()
        source = record.source
        if isinstance(record, Rejection):
            size = len((record.text or "").encode("utf-8", "replace"))
            self.progress.add(1, size)
            self.counts.add(("read", source), 1)
            self.counts.add(("bytes_read", source), size)
            yield beam.pvalue.TaggedOutput("rejected", rejection_row(record))
            return
        size = len((record.text if record.text is not None else record.html or "").encode("utf-8", "replace"))
        self.progress.add(1, size)
        self.counts.add(("read", source), 1)
        self.counts.add(("bytes_read", source), size)
        if record.id is None:
            record.id = default_id(source, record.origin)
        else:
            record.id = str(record.id)
        result = clean_record(record, self.configs[source], self._on_step)
        if isinstance(result, Rejection):
            yield beam.pvalue.TaggedOutput("rejected", rejection_row(result))
        else:
            yield document_row(result)

    def start_bundle(self) -> None:
        self.counts = BundleCounts()
        self.ran_in_bundle: dict[str, int] = {}
        self.dropped_in_bundle: dict[str, int] = {}

    def teardown(self) -> None:
        if hasattr(self, "progress"):
            self.progress.flush()

    def finish_bundle(self):
        for name, n in self.ran_in_bundle.items():
            self.ran[name].inc(n)
        for name, n in self.dropped_in_bundle.items():
            self.dropped[name].inc(n)
        self.ran_in_bundle, self.dropped_in_bundle = {}, {}
        self.progress.flush()
        yield from self.counts.emit("counts")


def first_origins(item: tuple[str, list[tuple]]):
    """(id, origin keys of its documents) -> (id, the first origin key) when the id is repeated."""
    doc_id, origins = item
    if len(origins) > 1:
        yield doc_id, min(origins)


def resolve_duplicate_ids(rows: list[dict[str, Any]], winners: dict[str, tuple]):
    """Keep each document of a batch unless another one with its id comes first in the input."""
    for row in rows:
        winner = winners.get(row["id"])
        if winner is not None and winner[2] != row["origin"]:
            yield beam.pvalue.TaggedOutput(
                "rejected",
                rejection_row(
                    Rejection(row["source"], "duplicate_id", row["origin"], f"id also at {winner[2]}", row["id"], row["text"], row["id"])
                ),
            )
        else:
            yield row


class Segment(beam.DoFn):
    """Adds ``words`` (exactly ``jieba.cut(text)``, via :mod:`cpm.tokenizer.segment`) to batches of rows."""

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir

    def setup(self) -> None:
        from cpm.tokenizer.segment import cut_batch

        self.cut_batch = cut_batch
        self.counter = Metrics.counter("cpm.steps", "segmentation")
        self.progress = ProgressFile(self.work_dir, "segmented")

    def process(self, rows: list[dict[str, Any]], n_shards: int):
        """A batch of rows -> (shard, the batch's rows of that shard) for each shard it has rows of."""
        words = self.cut_batch([row["text"] for row in rows])
        by_shard: dict[int, list[dict[str, Any]]] = {}
        for row, row_words in zip(rows, words):
            row = dict(row)  # never mutate an input element
            row["words"] = pack_words(row_words)  # one string is far cheaper to shuffle than a list
            row["num_words"] = len(row_words)
            row.setdefault("dup_cluster_size", 1)
            source = row["source"]
            self.counts.add(("kept", source), 1)
            self.counts.add(("chars_kept", source), row["num_chars"])
            self.counts.add(("bytes_kept", source), len(row["text"].encode("utf-8")))
            self.counts.add(("words_kept", source), len(row_words))
            by_shard.setdefault(stable_hash(row["id"]) % n_shards, []).append(row)
        yield from by_shard.items()
        self.counter.inc(len(rows))
        self.progress.add(len(rows), sum(len(r["text"]) for r in rows) * 3)

    def start_bundle(self) -> None:
        self.counts = BundleCounts()

    def finish_bundle(self):
        self.progress.flush()
        yield from self.counts.emit("counts")


class BundleCounts:
    """Counts summed within a bundle and emitted once, at its end (far fewer elements than one per record)."""

    def __init__(self) -> None:
        self.sums: dict[tuple, int] = {}

    def add(self, key: tuple, amount: int) -> None:
        self.sums[key] = self.sums.get(key, 0) + amount

    def emit(self, tag: str):
        if self.sums:
            yield beam.pvalue.TaggedOutput(tag, global_window_value(self.sums))
        self.sums = {}


class SumCounts(beam.CombineFn):
    """Sum of count dicts (or single ``(key, amount)`` pairs) into one dict."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, element):
        if isinstance(element, dict):
            for key, amount in element.items():
                acc[key] = acc.get(key, 0) + amount
        else:
            key, amount = element
            acc[key] = acc.get(key, 0) + amount
        return acc

    def merge_accumulators(self, accs):
        out: dict = {}
        for acc in accs:
            for key, amount in acc.items():
                out[key] = out.get(key, 0) + amount
        return out

    def extract_output(self, acc):
        return acc


def rejected_counts(row: dict[str, Any]) -> Iterator[tuple[tuple, int]]:
    kind = "duplicates" if row["rule"] in DUPLICATE_RULES else "rejected"
    yield (kind, row["source"], row["rule"]), 1


def num_shards(total_bytes: int, shard_bytes: int) -> int:
    return max(1, math.ceil(total_bytes / shard_bytes))


def write_shard(
    element: tuple[int, Iterable[dict[str, Any]]], work_dir: str, subdir: str, kind: str
) -> dict[str, Any]:
    """Write one shard's rows, sorted, with ``write_table``; its manifest entry."""
    import pyarrow as pa

    from cpm.schemas import document_schema, rejected_schema
    from cpm.shards.io import shard_name, write_table

    index, rows = element
    schema = document_schema() if kind == "documents" else rejected_schema()
    if kind == "documents":
        table = documents_table(sorted(rows, key=lambda r: r["id"]), schema)
    else:
        rows = sorted(rows, key=lambda r: (origin_key(r["origin"]), r["rule"], r["id"] or ""))
        table = pa.Table.from_pylist(rows, schema=schema)
    info = write_table(os.path.join(work_dir, subdir, shard_name(index)), table, schema)
    return {**info.entry(work_dir), "kind": kind, "index": index}


def documents_table(rows: list[dict[str, Any]], schema):
    """The document rows as an Arrow table, column by column; packed ``words`` are split by Arrow.

    Splitting in Arrow avoids one Python string per word (millions per shard).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = {name: [row.get(name) for row in rows] for name in schema.names if name != "words"}
    packed = [row["words"] for row in rows]
    if all(isinstance(words, str) for words in packed):
        counts = [row["num_words"] for row in rows]
        joined = WORD_SEPARATOR.join(words for words in packed if words)
        flat = pc.split_pattern(pa.array([joined], pa.large_string()), WORD_SEPARATOR).flatten() if joined else pa.array([], pa.large_string())
        offsets = [0]
        for count in counts:
            offsets.append(offsets[-1] + count)
        if offsets[-1] != len(flat):
            raise AssertionError(f"words do not match num_words ({len(flat)} != {offsets[-1]})")
        words = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), flat).cast(schema.field("words").type)
    else:  # a word contains the separator (never for cleaned text): plain lists
        words = pa.array([unpack_words(w) for w in packed], schema.field("words").type)
    arrays = [words if name == "words" else pa.array(columns[name], schema.field(name).type) for name in schema.names]
    return pa.Table.from_arrays(arrays, schema=schema)


class Finalize(beam.DoFn):
    """Fill shard-number gaps with empty shards and write ``manifest.json`` (last)."""

    def __init__(self, job: BuildJob) -> None:
        self.job = job

    def process(self, _, doc_shards, rej_shards, n_doc, n_rej, counts, dedup_stats):
        from cpm.schemas import document_schema, rejected_schema
        from cpm.schemas.manifest import new_manifest, write_manifest

        entries = []
        for shards, n, kind, subdir, schema in (
            (doc_shards, n_doc, "documents", "shards", document_schema()),
            (rej_shards, n_rej, "rejected", "rejected", rejected_schema()),
        ):
            by_index = {s["index"]: s for s in shards}
            for index in range(n):
                if index not in by_index:
                    by_index[index] = write_shard((index, []), self.job.work_dir, subdir, kind)
            entries += [{k: v for k, v in by_index[i].items() if k != "index"} for i in range(n)]
        for shard in (dedup_stats or {}).get("shards", []):  # the dedup signature index of this build
            entries.append({k: shard[k] for k in ("path", "rows", "bytes", "sha256")} | {"kind": "signatures"})
        manifest = new_manifest("documents", "corpus build", self.job.command_config)
        manifest["inputs"] = [input_entry(path, source, self.job.input_sizes.get(path)) for path, source in self.job.inputs]
        manifest["counters"] = assemble_counters(counts, self.job.sources)
        if dedup_stats:
            largest = dedup_stats.get("largest_cluster") or {}
            manifest["counters"]["dedup"] = {
                "index": "dedup/index.json",
                "exact_duplicates": dedup_stats.get("exact_duplicates", 0),
                "near_duplicates": dedup_stats.get("near_duplicates", 0),
                "largest_cluster_size": largest.get("size", 1),
                "unconverged_nodes": dedup_stats.get("unconverged_nodes", 0),
            }
        manifest["shards"] = entries
        write_manifest(self.job.work_dir, manifest)
        yield manifest["counters"]


def input_entry(path: str, source: str, size: int | None) -> dict[str, Any]:
    """Manifest entry of an input file: path, bytes and sha256 (read through Beam's file systems)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.io.filesystem import CompressionTypes

    entry: dict[str, Any] = {"path": path, "kind": source}
    if size is not None:
        entry["bytes"] = size
    digest = hashlib.sha256()
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        entry["sha256"] = digest.hexdigest()
    except Exception as exc:  # noqa: BLE001 - recorded, the job's own counters say what was read
        log.warning("%s: cannot checksum (%s)", path, exc)
    return entry


def assemble_counters(counts: dict[tuple, int], sources: list[str]) -> dict[str, Any]:
    """Nested manifest counters from the flat ``(kind, source[, rule]) -> n`` sums."""
    def empty() -> dict[str, Any]:
        return {
            "records_read": 0, "kept": 0, "rejected": 0, "duplicates": 0,
            "bytes_read": 0, "chars_kept": 0, "bytes_kept": 0, "words_kept": 0,
            "rejected_by_rule": {}, "duplicates_by_rule": {},
        }

    total = empty()
    by_source = {s: empty() for s in sources}
    names = {"read": "records_read", "bytes_read": "bytes_read", "kept": "kept", "chars_kept": "chars_kept",
             "bytes_kept": "bytes_kept", "words_kept": "words_kept"}
    for key, amount in sorted(counts.items()):
        kind, source = key[0], key[1]
        targets = [total, by_source.setdefault(source, empty())]
        for target in targets:
            if kind in names:
                target[names[kind]] += amount
            else:  # rejected / duplicates by rule
                rule = key[2]
                target[kind] += amount
                bucket = target[f"{kind}_by_rule"]
                bucket[rule] = bucket.get(rule, 0) + amount
    for target in [total, *by_source.values()]:
        target["rejected_by_rule"] = dict(sorted(target["rejected_by_rule"].items()))
        target["duplicates_by_rule"] = dict(sorted(target["duplicates_by_rule"].items()))
    return {**total, "by_source": by_source}


# --------------------------------------------------------------------------- the pipeline

def _pass_through_dedup(docs):
    """No dedup (``--no-dedup``): every document is its own cluster."""
    kept = docs | "NoDedup" >> beam.Map(lambda row: {**row, "dup_cluster_size": 1})
    rejected = docs.pipeline | "NoDedupRejected" >> beam.Create([])
    return kept, rejected


def build_pipeline(pipeline: beam.Pipeline, job: BuildJob) -> None:
    """Add the whole ``corpus build`` graph to ``pipeline``."""
    from cpm.pipeline.batching import BatchedGroupByKey, FixedBatches, shuffle_buckets

    files = (
        pipeline
        | "Inputs" >> beam.Create(job.inputs)
        | "SpreadFiles" >> beam.Reshuffle()
    )
    records = files | "Read" >> beam.ParDo(ReadFile(job.configs))
    cleaned = records | "Clean" >> beam.ParDo(CleanRecords(job.configs, job.work_dir)).with_outputs(
        "rejected", "counts", main="docs"
    )

    # Documents travel in batches wherever a step downstream reads them from another stage (a side
    # input or a shuffle): a runner's cost is per element (see cpm.pipeline.batching).
    buckets = shuffle_buckets(sum(job.input_sizes.values()))
    clean_batches = cleaned.docs | "BatchCleaned" >> beam.ParDo(FixedBatches(256))

    # duplicate ids: only (id, origin key) pairs are shuffled; the docs stay where they are
    winners = (
        clean_batches
        | "IdKeys" >> beam.FlatMap(lambda rows: [(row["id"], origin_key(row["origin"])) for row in rows])
        | "IdGroups" >> BatchedGroupByKey(buckets)
        | "RepeatedIds" >> beam.FlatMap(first_origins)
    )
    unique = clean_batches | "DuplicateIds" >> beam.FlatMap(
        resolve_duplicate_ids, winners=beam.pvalue.AsDict(winners)
    ).with_outputs("rejected", main="docs")

    if job.dedup is not None and job.dedup.enabled:
        from cpm.pipeline.dedup import Deduplicate

        deduped = unique.docs | "Dedup" >> Deduplicate(job.dedup, job.work_dir, buckets)
        kept, dup_rejected, dedup_stats = deduped.kept, deduped.rejected, deduped.stats
    else:
        kept, dup_rejected = _pass_through_dedup(unique.docs)
        dedup_stats = pipeline | "NoDedupStats" >> beam.Create([{}])

    # the number of document shards comes from the kept documents' total size (a side input)
    doc_shards = (
        kept
        | "DocsBytes" >> beam.Map(row_bytes)
        | "DocsTotalBytes" >> beam.CombineGlobally(sum)
        | "DocsNumShards" >> beam.Map(num_shards, job.shard_bytes)
    )
    segmented = (
        kept
        | "Batch" >> beam.ParDo(FixedBatches(256))
        | "Segment" >> beam.ParDo(Segment(job.work_dir), n_shards=beam.pvalue.AsSingleton(doc_shards)).with_outputs(
            "counts", main="rows"
        )
    )

    rejected = (
        cleaned.rejected,
        unique.rejected,
        dup_rejected,
    ) | "AllRejected" >> beam.Flatten()

    counts = (
        (
            cleaned.counts,
            segmented.counts,
            rejected | "RejectedCounts" >> beam.FlatMap(rejected_counts),
        )
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombineGlobally(SumCounts())
    )

    infos = {
        "documents": (
            segmented.rows
            | "DocsGroupShards" >> beam.GroupByKey()
            | "DocsWriteShards" >> beam.Map(
                lambda item: write_shard((item[0], [row for rows in item[1] for row in rows]), job.work_dir, "shards", "documents")
            )
        )
    }
    n_shards = {"documents": doc_shards}
    rejected_shards = (
        rejected
        | "RejectedBytes" >> beam.Map(row_bytes)
        | "RejectedTotalBytes" >> beam.CombineGlobally(sum)
        | "RejectedNumShards" >> beam.Map(num_shards, job.shard_bytes)
    )
    infos["rejected"] = (
        rejected
        | "RejectedShardKey" >> beam.Map(
            lambda row, n: (stable_hash(f"{row['origin']}\0{row['rule']}") % n, row), n=beam.pvalue.AsSingleton(rejected_shards)
        )
        | "RejectedGroupShards" >> beam.GroupByKey()
        | "RejectedWriteShards" >> beam.Map(write_shard, job.work_dir, "rejected", "rejected")
    )
    n_shards["rejected"] = rejected_shards

    _ = (
        pipeline
        | "Start" >> beam.Create([None])
        | "Finalize" >> beam.ParDo(
            Finalize(job),
            doc_shards=beam.pvalue.AsList(infos["documents"]),
            rej_shards=beam.pvalue.AsList(infos["rejected"]),
            n_doc=beam.pvalue.AsSingleton(n_shards["documents"]),
            n_rej=beam.pvalue.AsSingleton(n_shards["rejected"]),
            counts=beam.pvalue.AsSingleton(counts),
            dedup_stats=beam.pvalue.AsSingleton(dedup_stats),
        )
    )


# --------------------------------------------------------------------------- the launcher

def resolve_inputs(specs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Expand ``(pattern, source)`` through Beam's file systems; a pattern matching nothing is an error."""
    from apache_beam.io.filesystems import FileSystems

    found: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for pattern, source in specs:
        if "://" not in pattern:
            pattern = os.path.abspath(os.path.expanduser(pattern))
        if "://" not in pattern and os.path.isdir(pattern):  # a local directory: every file under it
            files = sorted(
                (os.path.join(root, name), os.path.getsize(os.path.join(root, name)))
                for root, dirs, names in os.walk(pattern)
                for name in names
                if not name.startswith(".") and not any(part.startswith(".") for part in os.path.relpath(root, pattern).split(os.sep) if part != ".")
            )
        else:
            if pattern.endswith("/"):  # a remote "directory": everything under the prefix
                pattern += "**"
            try:
                result = FileSystems.match([pattern])[0]
            except Exception as exc:  # noqa: BLE001 - Beam raises BeamIOError and friends
                raise CpmError(f"{pattern}: cannot list input ({exc})") from None
            files = sorted((m.path, m.size_in_bytes) for m in result.metadata_list)
        files = [(p, s) for p, s in files if not os.path.basename(p).startswith(".") and not p.endswith("/")]
        if not files:
            raise CpmError(f"{pattern}: no such input file")
        for path, size in files:
            if path in found and found[path] != source:
                raise CpmError(f"{path}: given as input of both {found[path]!r} and {source!r}")
            found[path] = source
            sizes[path] = size
    return sorted(found.items()), sizes


def prepare_output(output: str, overwrite: bool) -> str:
    """Refuse an existing non-empty ``output`` unless ``overwrite``; the temporary sibling to write into."""
    if "://" in output:
        raise CpmError(f"{output}: the output must be a local (or mounted) directory")
    out = Path(output).resolve()
    if out.exists() and not out.is_dir():
        raise CpmError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CpmError(f"{out}: exists and is not empty (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed run of this output
        pid = stale.name.rsplit(".tmp-", 1)[-1].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    work = out.parent / f".{out.name}.tmp-{os.getpid()}-{int(time.time())}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return str(work)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish_output(work_dir: str, output: str) -> None:
    """Move the finished ``work_dir`` into place (replacing an old ``output``)."""
    shutil.rmtree(os.path.join(work_dir, PROGRESS_DIR), ignore_errors=True)
    from cpm.shards.io import replace_dir

    replace_dir(work_dir, Path(output).resolve())


class ProgressDisplay:
    """A background thread showing documents/s and MB/s from the workers' progress files."""

    def __init__(self, work_dir: str, total_bytes: int, enabled: bool = True) -> None:
        self.work_dir, self.total_bytes, self.enabled = work_dir, total_bytes, enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ProgressDisplay":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    def _run(self) -> None:
        from cpm.console import make_console
        from rich.live import Live

        console = make_console(stderr=True)
        start = time.monotonic()
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            while not self._stop.wait(0.5):
                live.update(self.render(time.monotonic() - start))
        console.print(self.render(time.monotonic() - start))

    def render(self, elapsed: float) -> str:
        progress = read_progress(self.work_dir)
        docs, nbytes = progress.get("read", (0, 0))
        seg_docs, _ = progress.get("segmented", (0, 0))
        rate = max(elapsed, 1e-6)
        return (
            f"read {docs:,} records ({docs / rate:,.0f} docs/s, {nbytes / 1e6 / rate:.2f} MB/s)"
            f"  segmented {seg_docs:,} ({seg_docs / rate:,.0f} docs/s)  {elapsed:.0f}s"
        )


_OPTION_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class JobOptions(PipelineOptions):
    """``PipelineOptions`` whose views are made once per options class.

    Beam makes a new view (an argparse parser over the flags) on every ``view_as`` call, and calls it
    ~600 times while building and running this job: ~0.5 s of CPU a run. Views share the options'
    values (``_all_options``), so handing out the same view again changes nothing else.
    """

    def view_as(self, cls):
        views = _OPTION_VIEWS.setdefault(self, {})
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view


def _memoize_dofn_specs() -> None:
    """Make Beam compute each DoFn's state and timer specs once, not ~8 times.

    ``apache_beam.transforms.userstate.get_dofn_specs`` inspects the signature of every method of a DoFn
    and is called again for the same DoFn from ``ParDo``, the runner and ``to_runner_api``: ~1.5 s of
    CPU for this job's ~120 ParDos, every run.  The specs of a DoFn object never change, so they are
    remembered per object (weakly); if Beam's internals differ from what this expects, nothing is changed.
    """
    from apache_beam.transforms import userstate

    original = getattr(userstate, "get_dofn_specs", None)
    if original is None or getattr(original, "cpm_memoized", False):
        return
    specs_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get_dofn_specs(dofn):
        try:
            return specs_of[dofn]
        except (KeyError, TypeError):
            pass
        specs = original(dofn)
        try:
            specs_of[dofn] = specs
        except TypeError:  # not weakly referenceable: just not remembered
            pass
        return specs

    get_dofn_specs.cpm_memoized = True
    userstate.get_dofn_specs = get_dofn_specs


def run_build(job: BuildJob, beam_args: list[str], progress: bool = True) -> dict[str, Any]:
    """Run the Beam job, publish the output directory, return its manifest."""
    from cpm.schemas.manifest import read_manifest

    if not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
        beam_args = [*beam_args, "--default_sdk_harness_log_level=WARNING"]
    if "--pipeline_type_check" in beam_args:  # cpm's flag for Beam's default (Beam only has --no_pipeline_type_check)
        beam_args = [a for a in beam_args if a != "--pipeline_type_check"]
    elif not any(a.startswith("--no_pipeline_type_check") for a in beam_args):
        # Construction-time type checks of this fixed graph cost ~0.8 s a run (tests/test_corpus_build.py
        # builds it with them on); --pipeline_type_check turns them back on.
        beam_args = [*beam_args, "--no_pipeline_type_check"]
    _memoize_dofn_specs()
    if log.getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        logging.getLogger("jieba").setLevel(logging.WARNING)
    from cpm.pipeline.runners import is_direct, open_runner, runner_name, start_error

    options = JobOptions(beam_args)
    name = runner_name(options)
    try:
        with open_runner(options) as runner, ProgressDisplay(job.work_dir, sum(job.input_sizes.values()), enabled=progress):
            pipeline = beam.Pipeline(runner=runner, options=options)
            build_pipeline(pipeline, job)
            try:
                result = pipeline.run()
            except Exception as exc:  # noqa: BLE001 - a runner that cannot start: one line, not its traceback
                if is_direct(name) or isinstance(exc, CpmError):
                    raise
                log.debug("the runner failed to start", exc_info=True)
                raise start_error(name, exc) from exc
            state = result.wait_until_finish()
        if state is not None and str(state) not in ("DONE", "PipelineState.DONE"):
            raise CpmError(f"the Beam job ended in state {state}")
        manifest = read_manifest(job.work_dir)
        publish_output(job.work_dir, job.output)
    except BaseException:
        shutil.rmtree(job.work_dir, ignore_errors=True)
        raise
    return manifest
