"""``cpm data pack``: document shards -> ``<eod>``-joined, fixed-length training sequences.

The job is a short list of named steps, each with its counters in the manifest:

1. **tokenize**: every document's ``words`` (already ``jieba.cut``) are encoded with
   :meth:`cpm.tokenizer.Tokenizer.encode_words_batch` and ``<eod>`` is appended; work units
   (a few record batches of one input shard) run in a process pool and are merged in input
   order, so the result does not depend on the number of workers.
2. **split**: a document is in ``valid`` when ``blake2b("cpm-split:" + id)`` (64 bits, read
   as a fraction of 2**64) is below ``valid_fraction``. The rule depends on the id only (not
   on the seed or on the other documents), so a document never changes split when the
   corpus grows.
3. **mix** (train only): a source of weight ``w`` keeps ``floor(w)`` copies of each document
   plus one more when ``hash(seed, id, "extra")`` falls below ``frac(w)``; copies are separate
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
:mod:`cpm.pipeline.pack_stream`).

Output: ``DIR/train/part-NNNNN.arrow``, ``DIR/valid/part-NNNNN.arrow`` (uncompressed
:func:`cpm.schemas.sequence_schema` shards) and ``DIR/manifest.json``. The same input and
options give byte-identical shards.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from cpm.errors import CpmError
from cpm.schemas import SOURCES, schema_metadata, sequence_schema, token_type

log = logging.getLogger(__name__)

SPLITS = ("train", "valid")
# The CPM-1 paper's corpus mix (encyclopedia : webpage : story : news : dialog), as token shares.
PAPER_MIX = {"encyclopedia": 40.0, "webpage": 39.0, "story": 10.0, "news": 10.0, "dialog": 1.0}
EOD_MARK = "⟨eod⟩"
UNIT_BATCHES = 8  # record batches of an input shard per tokenization work unit
SAMPLES_PER_BATCH = 1024  # samples per Arrow record batch of a sequence shard


# ---------------------------------------------------------------------------- hashing rules


def numpy_token_dtype(vocab_size: int) -> np.dtype:
    """The numpy twin of :func:`cpm.schemas.token_type`: uint16, or uint32 for vocabularies over 65,536."""
    return np.dtype(np.uint16 if token_type(vocab_size) == pa.uint16() else np.uint32)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def split_of(doc_id: str, valid_fraction: float) -> str:
    """The split of a document: ``valid`` iff ``blake2b("cpm-split:" + id) / 2**64 < valid_fraction``."""
    return "valid" if _hash64("cpm-split:" + doc_id) < valid_fraction * 2.0**64 else "train"


def copies_of(doc_id: str, weight: float, seed: int) -> int:
    """How many times a document of source weight ``weight`` appears in the train stream."""
    whole = math.floor(weight)
    frac = weight - whole
    if frac > 0 and _hash64(f"cpm-mix:{seed}:{doc_id}") < frac * 2.0**64:
        whole += 1
    return whole


def order_key(doc_id: str, copy: int, seed: int) -> int:
    """The sort key that places a document copy in the stream (a 64-bit hash of seed, copy, id)."""
    return _hash64(f"cpm-order:{seed}:{copy}:{doc_id}")


def parse_weights(spec: str | None, option: str = "--source-weights") -> dict[str, float]:
    """``"encyclopedia=40,webpage=39"`` -> ``{"encyclopedia": 40.0, "webpage": 39.0}``."""
    weights: dict[str, float] = {}
    if not spec:
        return weights
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in SOURCES:
            raise CpmError(f"{option}: {item!r} is not SOURCE=NUMBER with SOURCE one of {', '.join(SOURCES)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise CpmError(f"{option}: {value!r} is not a number (in {item!r})") from None
        if not math.isfinite(weights[name]) or weights[name] < 0:
            raise CpmError(f"{option}: the weight of {name} must be a finite number >= 0, got {value}")
    return weights


def weights_from_mix(mix: dict[str, float], train_tokens: dict[str, int]) -> dict[str, float]:
    """Per-source repeat factors that turn the measured train token counts into the shares of ``mix``.

    The total number of train tokens stays about the same. A source with a share but no
    documents is left out (with a warning) and the other shares are scaled up; a source
    without a share is dropped (weight 0).
    """
    missing = sorted(s for s, share in mix.items() if share > 0 and not train_tokens.get(s))
    if missing:
        log.warning("--source-mix: the input has no %s documents; mixing the other sources in their ratio", ", ".join(missing))
    present = {s: share for s, share in mix.items() if train_tokens.get(s)}
    total_share = sum(present.values())
    if total_share <= 0:
        raise CpmError(f"--source-mix: no source with a share > 0 has documents (the input has {', '.join(sorted(train_tokens)) or 'none'})")
    total_tokens = sum(train_tokens.values())
    return {
        source: present.get(source, 0.0) / total_share * total_tokens / have
        for source, have in sorted(train_tokens.items())
        if have
    }


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
    from cpm.shards.io import open_shard, read_batch

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
    from cpm.pipeline.pack_stream import write_meta

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
    from cpm.shards.io import open_shard

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


# ---------------------------------------------------------------------------- steps 2-5


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
    token shares of the train split (e.g. :data:`PAPER_MIX`); give at most one of them.
    A non-empty ``output`` is refused unless ``overwrite`` (then replaced atomically).
    """
    from cpm.schemas.manifest import input_entry, new_manifest, write_manifest
    from cpm.shards.io import ShardWriter, atomic_output_dir, check_output_dir, resolve_shard_paths, verify_checksums
    from tqdm import tqdm

    from cpm.pipeline.pack_stream import TokenFiles, count_duplicate_ids, cut_stream, distribute, ordered_copies, survey
    from cpm.tokenizer import Tokenizer

    if seq_len < 1:
        raise CpmError(f"--seq-len must be >= 1, got {seq_len}")
    if not 0.0 <= valid_fraction < 1.0:
        raise CpmError(f"--valid-fraction must be in [0, 1), got {valid_fraction}")
    if workers is not None and workers < 1:
        raise CpmError(f"--workers must be >= 1, got {workers}")
    if shard_bytes < 1:
        raise CpmError(f"--shard-mb must be >= 1, got {shard_bytes >> 20}")
    if source_weights and source_mix:
        raise CpmError("give --source-weights or --source-mix, not both")
    shards = resolve_shard_paths([str(p) for p in inputs])
    check_output_dir(output, overwrite, [*shards, tokenizer_path])  # fail before the long work
    tokenizer_path = os.path.abspath(tokenizer_path)  # recorded in the manifest; the trainer and generator look it up later
    tokenizer = Tokenizer.load(tokenizer_path)
    vocab_size, eod_id = int(tokenizer.vocab_size), int(tokenizer.eod_id)
    fingerprint = str(getattr(tokenizer, "fingerprint", ""))
    verify_checksums(shards)
    output = Path(output)
    workers = workers if workers is not None else max(1, (os.cpu_count() or 1))
    with atomic_output_dir(output, overwrite, [*shards, tokenizer_path]) as work:
        tmp_dir = work / ".pack-tmp"
        tmp_dir.mkdir()
        try:
            units = tokenize_all(shards, tokenizer_path, tmp_dir, workers=workers, progress=progress)
            metas = [u.meta_path for u in units]
            total_docs = sum(u.documents for u in units)
            surveyed = survey(metas, valid_fraction, total_docs, tmp_dir)
            weights = dict(source_weights or {})
            if source_mix:
                weights = weights_from_mix(source_mix, surveyed.train_tokens)
            counters: dict[str, Any] = {
                "documents_read": total_docs + sum(u.empty for u in units),
                "documents_empty": sum(u.empty for u in units),
                "documents_with_eod_inside": sum(u.eod_inside for u in units),
                "duplicate_ids": count_duplicate_ids(surveyed.ids),
                "source_weights": {s: float(weights.get(s, 0.0 if source_mix else 1.0)) for s in SOURCES},
            }
            if counters["documents_with_eod_inside"]:
                log.warning(
                    "%d documents contain <eod> in their own tokens (the text '<eod>' in cpm mode): "
                    "the trainer and the Megatron export will see them as several documents",
                    counters["documents_with_eod_inside"],
                )
            if counters["duplicate_ids"]:
                log.warning("%d documents share an id with another one (the same shard given twice?)", counters["duplicate_ids"])
            buckets, totals = distribute(metas, surveyed, weights, seed, tmp_dir)
            for split in SPLITS:
                counters[split] = totals[split].counters(seq_len)
            train = counters["train"]
            if train["samples"] == 0:
                raise CpmError(
                    f"{', '.join(map(str, inputs))}: the train split has no sample: its {train['stream_tokens']:,} tokens "
                    f"({sum(train['documents'].values()):,} documents) do not fill one sample of --seq-len {seq_len} "
                    f"(+1) tokens; use a smaller --seq-len or more documents"
                )
            tokens = TokenFiles([u.tokens_path for u in units], numpy_token_dtype(vocab_size))
            manifest_shards = []
            try:
                for split in SPLITS:
                    schema = sequence_schema(
                        seq_len,
                        vocab_size,
                        {"eod_id": eod_id, "split": split, "tokenizer_fingerprint": fingerprint, "seed": seed},
                    )
                    docs = ((c.id, tokens.read(c.unit, c.offset, c.length)) for c in ordered_copies(buckets[split]))
                    writer = ShardWriter(work / split, schema, compression=None, target_bytes=shard_bytes)
                    with tqdm(total=counters[split]["samples"], desc=f"pack {split}", unit="sample", disable=not progress) as bar:
                        for batch in cut_stream(docs, counters[split]["stream_tokens"], seq_len, schema, SAMPLES_PER_BATCH):
                            writer.write_batch(batch)
                            bar.update(batch.num_rows)
                    manifest_shards += [info.entry(work, kind="sequences", split=split) for info in writer.close()]
                    log.info("%s: %d samples of %d tokens from %d document copies", split, counters[split]["samples"], seq_len + 1,
                             sum(counters[split]["documents"].values()))
            finally:
                tokens.close()
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        config = {
            "seq_len": seq_len,
            "valid_fraction": valid_fraction,
            "source_weights": source_weights or None,
            "source_mix": source_mix or None,
            "seed": seed,
            "tokenizer": tokenizer_path,
            "tokenizer_fingerprint": fingerprint,
            "vocab_size": vocab_size,
            "eod_id": eod_id,
            "pad_id": int(tokenizer.pad_id),
            "token_type": str(token_type(vocab_size)),
        }
        manifest = new_manifest("sequences", "data pack", config)
        manifest["inputs"] = [input_entry(p, checksum=False) | {"kind": "documents"} for p in shards]
        manifest["counters"] = counters
        manifest["shards"] = manifest_shards
        write_manifest(work, manifest)
    return manifest


# ---------------------------------------------------------------------------- inspect


def sequence_stats(paths: Iterable[str | os.PathLike[str]], tokenizer=None, rows: int = 3) -> dict[str, Any]:
    """Statistics of sequence shards for ``cpm shards inspect``.

    Token count, ``<eod>`` share, documents per sample (mean, max), and the first ``rows``
    samples decoded (``<eod>`` shown as ``⟨eod⟩``) when a ``tokenizer`` (loaded, or its path) is given.
    """
    from cpm.shards.io import open_shard, read_batch

    if isinstance(tokenizer, (str, os.PathLike)):
        from cpm.tokenizer import Tokenizer

        tokenizer = Tokenizer.load(tokenizer)
    samples = tokens = eods = docs_total = docs_max = 0
    shown: list[dict[str, Any]] = []
    meta: dict[str, str] = {}
    for path in paths:
        reader = open_shard(path, kind="sequences")
        meta = meta or schema_metadata(reader.schema)
        eod = int(schema_metadata(reader.schema).get("eod_id", -1))
        packed_with = schema_metadata(reader.schema).get("tokenizer_fingerprint", "")
        if tokenizer is not None and packed_with and packed_with != tokenizer.fingerprint:
            raise CpmError(
                f"{path}: packed with tokenizer fingerprint {packed_with}, but --tokenizer {tokenizer.path} has "
                f"fingerprint {tokenizer.fingerprint}; give the tokenizer the data was packed with"
            )
        for i in range(reader.num_record_batches):
            batch = read_batch(reader, i, path)
            column = batch.column(0)
            values = column.values.to_numpy(zero_copy_only=True)
            samples += batch.num_rows
            tokens += len(values)
            eods += int(np.count_nonzero(values == eod))
            per_sample = np.diff(batch.column(1).offsets.to_numpy())
            docs_total += int(per_sample.sum())
            docs_max = max(docs_max, int(per_sample.max(initial=0)))
            for r in range(min(batch.num_rows, rows - len(shown))):
                ids = column[r].values.to_numpy().tolist()
                entry: dict[str, Any] = {"doc_ids": batch.column(1)[r].as_py(), "start_offset": batch.column(2)[r].as_py()}
                entry["tokens"] = ids
                if tokenizer is not None:
                    entry["text"] = decode_marked(tokenizer, ids, eod)
                shown.append(entry)
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


def decode_marked(tokenizer, ids: Sequence[int], eod_id: int) -> str:
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
