"""``cpm data pack``: document shards -> ``<eod>``-joined, fixed-length training sequences.

The job is a short list of named steps, each with its counters in the manifest (the rules of steps 2-4
are in :mod:`cpm.data.rules`):

1. **tokenize**: every document's ``words`` (already ``jieba.cut``) are encoded with
   :meth:`cpm.tokenizer.Tokenizer.encode_words_batch` and ``<eod>`` is appended; work units
   (a few record batches of one input shard) run in a process pool and are merged in input
   order, so the result does not depend on the number of workers.
2. **split**: a document is in ``valid`` when ``blake2b("cpm-split:" + id)`` (64 bits, read
   as a fraction of 2**64) is below ``valid_fraction``. The rule depends on the id only (not
   on the seed or on the other documents), so a document never changes split when the
   corpus grows.
3. **mix** (train only): a source of weight ``w`` keeps ``floor(w)`` copies of each document
   plus one more when ``hash("cpm-mix", seed, id)`` falls below ``frac(w)``; copies are separate
   documents in the stream. ``--source-mix`` gives target token shares instead and turns them
   into such weights from the measured token counts.
4. **order**: documents (and their copies) are sorted by ``hash(seed, copy, id)`` so the
   samples mix sources; the validation split is ordered the same way, never resampled.
5. **cut**: the split's stream ``doc_0 <eod> doc_1 <eod> ...`` is cut into samples of
   ``seq_len + 1`` tokens, sample ``k`` = ``stream[k*seq_len : k*seq_len + seq_len + 1]``
   (consecutive samples share one token: input = tokens[:-1], labels = tokens[1:]). The tail
   that does not fill a last sample is dropped and counted (``dropped_tail_tokens``), as in
   Megatron-LM; nothing is padded.

Memory does not grow with the number of documents: tokenized units live on disk, the order of
step 4 is an external (bucket) sort and step 5 cuts the stream while reading it (see
:mod:`cpm.data.pack_stream`).

Output: ``DIR/train/part-NNNNN.arrow``, ``DIR/valid/part-NNNNN.arrow`` (uncompressed
:func:`cpm.schemas.sequence_schema` shards) and ``DIR/manifest.json``. The same input and
options give byte-identical shards.
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from cpm.data.pack_stream import Buckets, TokenFiles, count_duplicate_ids, cut_stream, distribute, ordered_copies, survey, write_meta
from cpm.data.rules import SPLITS, numpy_token_dtype, weights_from_mix
from cpm.errors import CpmError
from cpm.schemas import SOURCES, sequence_schema, token_type
from cpm.schemas.manifest import input_entry, new_manifest, write_manifest
from cpm.shards.io import ShardWriter, atomic_output_dir, check_output_dir, open_shard, read_batch, resolve_shard_paths, verify_checksums

log = logging.getLogger(__name__)

UNIT_BATCHES = 8  # record batches of an input shard per tokenization work unit
SAMPLES_PER_BATCH = 1024  # samples per Arrow record batch of a sequence shard


# ---------------------------------------------------------------------------- options and tokenizer


@dataclass(frozen=True)
class PackOptions:
    """The options of ``cpm data pack`` (see :func:`pack`)."""

    seq_len: int = 1024
    valid_fraction: float = 0.005
    source_weights: dict[str, float] | None = None
    source_mix: dict[str, float] | None = None
    seed: int = 1234
    workers: int | None = None
    shard_bytes: int = 256 << 20
    progress: bool = True

    def check(self) -> None:
        """:class:`CpmError` naming the first option out of range."""
        if self.seq_len < 1:
            raise CpmError(f"--seq-len must be >= 1, got {self.seq_len}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise CpmError(f"--valid-fraction must be in [0, 1), got {self.valid_fraction}")
        if self.workers is not None and self.workers < 1:
            raise CpmError(f"--workers must be >= 1, got {self.workers}")
        if self.shard_bytes < 1:
            raise CpmError(f"--shard-mb must be >= 1, got {self.shard_bytes >> 20}")
        if self.source_weights and self.source_mix:
            raise CpmError("give --source-weights or --source-mix, not both")

    @property
    def pool_size(self) -> int:
        """Tokenizer processes: ``workers``, by default one per core."""
        return self.workers if self.workers is not None else max(1, (os.cpu_count() or 1))


@dataclass(frozen=True)
class Vocabulary:
    """What packing records of the tokenizer: its absolute path, size, special ids and fingerprint."""

    path: str
    size: int
    eod_id: int
    pad_id: int
    fingerprint: str


def load_vocabulary(tokenizer_path: str | os.PathLike[str]) -> Vocabulary:
    """Load the tokenizer once to read what the manifest and the shard metadata record of it."""
    from cpm.tokenizer import Tokenizer

    path = os.path.abspath(tokenizer_path)  # recorded in the manifest; the trainer and generator look it up later
    tokenizer = Tokenizer.load(path)
    return Vocabulary(path, int(tokenizer.vocab_size), int(tokenizer.eod_id), int(tokenizer.pad_id),
                      str(getattr(tokenizer, "fingerprint", "")))


# ---------------------------------------------------------------------------- step 1: tokenize


@dataclass
class TokenizedUnit:
    """One tokenized work unit, on disk: every document's tokens with ``<eod>`` (raw, flat) and its documents."""

    tokens_path: str  # raw tokens (numpy_token_dtype), documents one after the other
    meta_path: str  # Arrow IPC file: id, source code, length (tokens including <eod>) per document
    documents: int
    empty: int = 0  # documents with no tokens, skipped
    eod_inside: int = 0  # documents whose own tokens contain <eod> (cpm mode encodes the text "<eod>" so)


_WORKER_TOKENIZER: dict[str, Any] = {}


def _load_tokenizer(path: str):
    if path not in _WORKER_TOKENIZER:
        from cpm.tokenizer import Tokenizer

        _WORKER_TOKENIZER.clear()
        _WORKER_TOKENIZER[path] = Tokenizer.load(path)
    return _WORKER_TOKENIZER[path]


def _read_unit(shard: str, batch_indices: Sequence[int]) -> tuple[list[str], list[str], list[list[str]]]:
    reader = open_shard(shard, kind="documents")
    ids: list[str] = []
    sources: list[str] = []
    words: list[list[str]] = []
    for i in batch_indices:
        batch = read_batch(reader, i, shard).select(["id", "source", "words"])
        ids.extend(batch.column(0).to_pylist())
        sources.extend(batch.column(1).to_pylist())
        words.extend(batch.column(2).to_pylist())
    for doc_id, source in zip(ids, sources):
        if source not in SOURCES:
            raise CpmError(f"{shard}: document {doc_id!r} has unknown source {source!r}")
    return ids, sources, words


def tokenize_unit(tokenizer_path: str, shard: str, batch_indices: Sequence[int], tokens_path: str) -> TokenizedUnit:
    """Tokenize the documents of some record batches of one shard; write their tokens to ``tokens_path`` and their
    ids, sources and lengths next to it."""
    tokenizer = _load_tokenizer(tokenizer_path)
    ids, sources, words = _read_unit(shard, batch_indices)
    encoded = tokenizer.encode_words_batch(words)
    dtype = numpy_token_dtype(tokenizer.vocab_size)
    keep = [i for i, ids_ in enumerate(encoded) if len(ids_) > 0]
    lengths = np.fromiter((len(encoded[i]) + 1 for i in keep), dtype=np.int64, count=len(keep))
    flat = np.empty(int(lengths.sum()), dtype=dtype)
    ends = np.cumsum(lengths)
    eod = tokenizer.eod_id
    for n, i in enumerate(keep):
        end = int(ends[n])
        flat[end - int(lengths[n]) : end - 1] = encoded[i]
        flat[end - 1] = eod
    flat.tofile(tokens_path)
    meta_path = tokens_path + ".meta.arrow"
    write_meta(meta_path, [ids[i] for i in keep], [sources[i] for i in keep], lengths)
    eod_inside = int(np.count_nonzero(flat == eod)) - len(keep)
    return TokenizedUnit(
        tokens_path=tokens_path,
        meta_path=meta_path,
        documents=len(keep),
        empty=len(encoded) - len(keep),
        eod_inside=sum(1 for i in keep if eod in encoded[i]) if eod_inside else 0,
    )


def _tokenize_task(args: tuple) -> TokenizedUnit:
    return tokenize_unit(*args)


def work_units(shards: Sequence[Path], unit_batches: int = UNIT_BATCHES) -> list[tuple[str, list[int]]]:
    """Split input shards into work units of ``unit_batches`` record batches, in input order."""
    units = []
    for shard in shards:
        reader = open_shard(shard, kind="documents")
        n = reader.num_record_batches
        for start in range(0, n, unit_batches):
            units.append((str(shard), list(range(start, min(n, start + unit_batches)))))
    return units


def tokenize_all(
    shards: Sequence[Path], tokenizer_path: str, tmp_dir: Path, workers: int = 1, progress: bool = True
) -> list[TokenizedUnit]:
    """Tokenize every document of ``shards`` (in a process pool when ``workers > 1``), in input order."""
    from tqdm import tqdm

    units = work_units(shards)
    tasks = [(tokenizer_path, shard, batches, str(tmp_dir / f"unit-{i:06d}.tok")) for i, (shard, batches) in enumerate(units)]
    bar = tqdm(total=len(tasks), desc="tokenize", unit="unit", disable=not progress)
    results: list[TokenizedUnit] = []
    try:
        if len(tasks) <= 1:  # a pool even for one worker: the words of every unit stay out of this process
            for task in tasks:
                results.append(_tokenize_task(task))
                bar.update()
        else:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                for result in pool.map(_tokenize_task, tasks, chunksize=1):
                    results.append(result)
                    bar.update()
    finally:
        bar.close()
    return results


# ---------------------------------------------------------------------------- steps 2-4: plan the streams


class Plan(NamedTuple):
    """Every document copy of each split in the bucket of its order key, and the manifest's counters."""

    buckets: dict[str, Buckets]
    counters: dict[str, Any]


def plan_streams(units: Sequence[TokenizedUnit], options: PackOptions, tmp_dir: Path) -> Plan:
    """Split, mix and order the tokenized documents (on disk), counting what the manifest reports."""
    metas = [u.meta_path for u in units]
    total_docs = sum(u.documents for u in units)
    surveyed = survey(metas, options.valid_fraction, total_docs, tmp_dir)
    weights = dict(options.source_weights or {})
    if options.source_mix:
        weights = weights_from_mix(options.source_mix, surveyed.train_tokens)
    counters: dict[str, Any] = {
        "documents_read": total_docs + sum(u.empty for u in units),
        "documents_empty": sum(u.empty for u in units),
        "documents_with_eod_inside": sum(u.eod_inside for u in units),
        "duplicate_ids": count_duplicate_ids(surveyed.ids),
        "source_weights": {s: float(weights.get(s, 0.0 if options.source_mix else 1.0)) for s in SOURCES},
    }
    _warn_about(counters)
    buckets, totals = distribute(metas, surveyed, weights, options.seed, tmp_dir)
    for split in SPLITS:
        counters[split] = totals[split].counters(options.seq_len)
    return Plan(buckets, counters)


def _warn_about(counters: dict[str, Any]) -> None:
    if counters["documents_with_eod_inside"]:
        log.warning(
            "%d documents contain <eod> in their own tokens (the text '<eod>' in cpm mode): "
            "the trainer and the Megatron export will see them as several documents",
            counters["documents_with_eod_inside"],
        )
    if counters["duplicate_ids"]:
        log.warning("%d documents share an id with another one (the same shard given twice?)", counters["duplicate_ids"])


def check_train_has_a_sample(train: dict[str, Any], inputs: Sequence[str | os.PathLike[str]], seq_len: int) -> None:
    """:class:`CpmError` when the train stream does not fill one sample."""
    if train["samples"] == 0:
        raise CpmError(
            f"{', '.join(map(str, inputs))}: the train split has no sample: its {train['stream_tokens']:,} tokens "
            f"({sum(train['documents'].values()):,} documents) do not fill one sample of --seq-len {seq_len} "
            f"(+1) tokens; use a smaller --seq-len or more documents"
        )


# ---------------------------------------------------------------------------- step 5: cut and write


def write_splits(work: Path, units: Sequence[TokenizedUnit], plan: Plan, vocab: Vocabulary, options: PackOptions) -> list[dict]:
    """Write ``work/train`` and ``work/valid``; return their manifest entries."""
    tokens = TokenFiles([u.tokens_path for u in units], numpy_token_dtype(vocab.size))
    try:
        return [entry for split in SPLITS for entry in write_split(work, split, tokens, plan, vocab, options)]
    finally:
        tokens.close()


def write_split(work: Path, split: str, tokens: TokenFiles, plan: Plan, vocab: Vocabulary, options: PackOptions) -> list[dict]:
    """Cut the ordered stream of ``split`` into samples and write them as uncompressed sequence shards."""
    from tqdm import tqdm

    seq_len, counters = options.seq_len, plan.counters[split]
    metadata = {"eod_id": vocab.eod_id, "split": split, "tokenizer_fingerprint": vocab.fingerprint, "seed": options.seed}
    schema = sequence_schema(seq_len, vocab.size, metadata)
    docs = ((c.id, tokens.read(c.unit, c.offset, c.length)) for c in ordered_copies(plan.buckets[split]))
    writer = ShardWriter(work / split, schema, compression=None, target_bytes=options.shard_bytes)
    with tqdm(total=counters["samples"], desc=f"pack {split}", unit="sample", disable=not options.progress) as bar:
        for batch in cut_stream(docs, counters["stream_tokens"], seq_len, schema, SAMPLES_PER_BATCH):
            writer.write_batch(batch)
            bar.update(batch.num_rows)
    entries = [info.entry(work, kind="sequences", split=split) for info in writer.close()]
    log.info("%s: %d samples of %d tokens from %d document copies", split, counters["samples"], seq_len + 1,
             sum(counters["documents"].values()))
    return entries


# ---------------------------------------------------------------------------- the job


def pack(
    inputs: Sequence[str | os.PathLike[str]],
    tokenizer_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    seq_len: int = 1024,
    valid_fraction: float = 0.005,
    source_weights: dict[str, float] | None = None,
    source_mix: dict[str, float] | None = None,
    seed: int = 1234,
    workers: int | None = None,
    shard_bytes: int = 256 << 20,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Pack document shards into sequence shards under ``output``; return the manifest written.

    ``source_weights`` are repeat factors per source (default 1); ``source_mix`` are target
    token shares of the train split (e.g. :data:`cpm.data.rules.PAPER_MIX`); give at most one of them.
    A non-empty ``output`` is refused unless ``overwrite`` (then replaced atomically).
    """
    options = PackOptions(seq_len, valid_fraction, source_weights, source_mix, seed, workers, shard_bytes, progress)
    options.check()
    shards = resolve_shard_paths([str(p) for p in inputs])
    check_output_dir(output, overwrite, [*shards, tokenizer_path])  # fail before the long work
    vocab = load_vocabulary(tokenizer_path)
    verify_checksums(shards)
    with atomic_output_dir(output, overwrite, [*shards, vocab.path]) as work:
        packed = pack_into(work, shards, vocab, options, inputs)
        manifest = new_manifest("sequences", "data pack", pack_config(options, vocab))
        manifest["inputs"] = [input_entry(p, checksum=False) | {"kind": "documents"} for p in shards]
        manifest["counters"] = packed.counters
        manifest["shards"] = packed.shards
        write_manifest(work, manifest)
    return manifest


class Packed(NamedTuple):
    """What :func:`pack_into` wrote: the manifest's counters and its entries of the sequence shards."""

    counters: dict[str, Any]
    shards: list[dict]


def pack_into(
    work: Path, shards: Sequence[Path], vocab: Vocabulary, options: PackOptions, inputs: Sequence[str | os.PathLike[str]]
) -> Packed:
    """Steps 1-5 with a scratch folder in ``work``: the counters and the manifest entries of the shards written."""
    tmp_dir = work / ".pack-tmp"
    tmp_dir.mkdir()
    try:
        units = tokenize_all(shards, vocab.path, tmp_dir, workers=options.pool_size, progress=options.progress)
        plan = plan_streams(units, options, tmp_dir)
        check_train_has_a_sample(plan.counters["train"], inputs, options.seq_len)
        return Packed(plan.counters, write_splits(work, units, plan, vocab, options))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def pack_config(options: PackOptions, vocab: Vocabulary) -> dict[str, Any]:
    """The manifest's ``config``: the options and the tokenizer the sequences were packed with."""
    return {
        "seq_len": options.seq_len,
        "valid_fraction": options.valid_fraction,
        "source_weights": options.source_weights or None,
        "source_mix": options.source_mix or None,
        "seed": options.seed,
        "tokenizer": vocab.path,
        "tokenizer_fingerprint": vocab.fingerprint,
        "vocab_size": vocab.size,
        "eod_id": vocab.eod_id,
        "pad_id": vocab.pad_id,
        "token_type": str(token_type(vocab.size)),
    }
