"""Exact and near-duplicate removal inside the ``cpm corpus build`` Beam job.

:class:`Deduplicate` is a Beam ``PTransform`` over document-row dicts. The steps, all
inside Beam (no step collects the corpus in one place, no all-pairs comparison):

1. **Sign** — batches of documents get a MinHash signature over character n-gram shingles
   of their *hashing form* (NFKC, width/punctuation/whitespace folding, traditional ->
   simplified; see :mod:`cpm.pipeline.minhash`) and a digest of that hashing form.
2. **Exact** — one ``GroupByKey`` per digest picks the representative (smallest node key),
   counts the new members and links the others to it (the group is iterated twice, never held).
3. **LSH** — representatives are grouped by band keys (``bands x rows`` derived from the
   threshold so that a pair exactly at the threshold becomes a candidate with probability
   >= ``lsh_recall`` = 0.999, :func:`~cpm.pipeline.minhash.lsh_bands`: 25 bands x 5 rows for 0.8
   and 128 permutations). The (band key, node key) entries travel batched per bundle and
   :data:`LSH_PARTITIONS` partition (a hash of the band key), a few hundred fat elements instead
   of ``bands`` small ones per document, and without signatures; a partition's shared band keys
   are found in two passes and only their buckets are held (singleton buckets, nearly all of
   them, never are). The members of shared buckets (the candidates) get their signatures back
   through a Bloom filter of their keys and one batched join, so a signature is shipped once
   per shared bucket of a candidate, not once per band of every document. Buckets larger than :data:`MAX_BUCKET_PAIRS` compare every member
   with the bucket's smallest keys only (:func:`bucket_pairs`), so no step is quadratic in a
   bucket or holds a whole bucket in memory.
4. **Confirm** — the signatures' estimated Jaccard decides a candidate pair only when it is
   clearly on one side of the threshold: >= ``threshold + margin`` is a duplicate edge,
   < ``threshold - margin`` is not (``margin`` = ``borderline_sigmas`` = 4 standard deviations
   of the estimate at the threshold, :func:`~cpm.pipeline.minhash.borderline_margin`: 0.141 for
   128 permutations at 0.8). A pair in the *borderline band* between them is decided by the
   exact Jaccard of the two texts' shingle sets. A pair at the threshold is thus misjudged with
   probability ~1e-4 on either side instead of ~0.5 (a repost at J = 0.81 kept, a template page
   at J = 0.70 merged with one chance in 150). Only the texts of borderline documents travel:
   a Bloom filter of their keys (fixed size, a side input) selects them, two joins of that
   small set bring each pair's shingle sets together (each text is shingled once per side).
   With ``exact_jaccard=True`` every candidate with an estimate >= ``threshold - margin`` is
   confirmed exactly. Documents of earlier builds have no text here: their pairs are decided by
   the estimate alone (>= threshold), as before.
5. **Connected components** of the confirmed edges by the large-star / small-star algorithm
   (Kiveris et al., 2014), unrolled for ``cc_rounds`` rounds in the graph, followed by a
   convergence check (a warning and a counter if a component did not converge; such a
   component then keeps more than one survivor, it never loses all of them). One join per
   representative then decides every fate; only cluster roots wait for the sum of their sizes.
6. **Survivor rule** — the node order is the survivor order: documents of earlier builds
   (``against``) first, then the longest text (``num_chars``), then the smallest 64-bit
   BLAKE2b hash of the id (then of the origin, only if ids repeat). Each component keeps its
   smallest node. This depends on nothing but the documents, so input order, runner and
   worker count cannot change the result.
7. Near-duplicates are the *transitive closure* of confirmed pairs: in a chain A~B, B~C with
   A !~ C, all three are one cluster and only the survivor stays; every removed document names
   the cluster's survivor in ``duplicate_of``. ``dup_cluster_size`` of a survivor counts every
   document of its cluster, exact copies included.
8. **Index** — the signatures of the kept documents are written to ``output_dir/dedup/``
   (``signatures-NNNNN-of-NNNNN.minhash``, Arrow IPC files, sharded by id hash and sorted by id, plus ``index.json``), so a
   later build can pass this directory to ``against`` and drop its copies of these documents
   without re-reading them. Documents of earlier builds are never removed.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from cpm.errors import CpmError
from cpm.pipeline import minhash
from cpm.pipeline.batching import MIN_BUCKETS, BatchedCoGroupByKey, BatchedGroupByKey, FixedBatches, global_window_value

logger = logging.getLogger(__name__)

NAMESPACE = "cpm.dedup"
INDEX_DIR = "dedup"
INDEX_FILE = "index.json"
SIGNATURE_SUFFIX = ".minhash"  # Arrow IPC files, named apart from the document shards (datasets globs *.arrow)
SIGNATURE_GLOBS = ("signatures-*.minhash", "signatures-*.arrow")  # the second: outputs of older cpm versions
RULE_EXACT = "exact_duplicate"
RULE_NEAR = "near_duplicate"
MAX_BUCKET_PAIRS = 64  # buckets up to this size compare all pairs; larger ones compare with their 64 smallest keys
ROWS_PER_INDEX_SHARD = 100_000  # ~60 MB of signatures sorted in memory per index shard
BLOOM_BITS = 1 << 24  # 2 MiB Bloom filter of borderline documents' keys: < 0.3% false positives up to 1M keys
_BLOOM_PROBES = 4
BAND_KEY_BYTES = 10  # band number (2) + 64-bit hash of its rows (8)
_KEY_PREFIX = 35  # tier (1) + inverted length (10) + id hash (16) + origin hash (8); the id follows
_NEW, _OLD = "1", "0"
STAT_KEEP, STAT_UNCONVERGED = "keep", "unconverged"  # kinds of the records DedupStats counts (besides the rules)
_MAX_CHARS = 2**31 - 1


@dataclass(frozen=True)
class DedupConfig:
    """Options of :class:`Deduplicate` (``cpm corpus build --dedup-threshold/--num-perm/--ngram/--no-dedup/--against``).

    Defaults measured with ``bench/bench_dedup_quality.py --sweep`` on People's Daily documents:
    character 5-grams (a CJK character carries about as much as a short English word; 3-grams let
    pages sharing a long site template merge, 7-grams let 1% typos push reposts towards the
    threshold) and 128 permutations (estimate std 0.035 at J = 0.8; 64 merged template pages,
    256 gains little recall for 2x the signature cost and index size). ``lsh_recall`` = 0.999 and
    ``borderline_sigmas`` = 4 make a pair exactly at the threshold a missed duplicate with
    probability ~1e-4 and a pair just below it a false edge with about the same probability
    (18 x 7 bands and estimate-only confirmation left 4-10 of 400 repost groups with two survivors,
    all at exact J 0.80-0.83, and merged up to 4 of 300 template pages at J ~0.7; now none).
    """

    enabled: bool = True
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5
    against: tuple[str, ...] = ()
    exact_jaccard: bool = False  # confirm every candidate exactly, not only the borderline ones
    seed: int = minhash.DEFAULT_SEED
    lsh_recall: float = 0.999  # candidate probability of a pair exactly at the threshold
    borderline_sigmas: float = 4.0  # half-width of the exactly-confirmed band around the threshold, in estimate std
    cc_rounds: int = 10  # large-star + small-star rounds unrolled in the graph; converge chains of ~1000 nodes
    huge_cluster: int = 1000  # warn about clusters of at least this many documents

    def validate(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise CpmError(f"--dedup-threshold must be between 0 and 1 (exclusive), got {self.threshold}")
        if not 8 <= self.num_perm <= 1024:
            raise CpmError(f"--num-perm must be between 8 and 1024, got {self.num_perm}")
        if not 1 <= self.ngram <= 64:
            raise CpmError(f"--ngram must be between 1 and 64, got {self.ngram}")
        if self.cc_rounds < 1:
            raise CpmError(f"cc_rounds must be >= 1, got {self.cc_rounds}")
        if not 0.5 <= self.lsh_recall < 1.0:
            raise CpmError(f"lsh_recall must be in [0.5, 1), got {self.lsh_recall}")
        if self.borderline_sigmas < 0:
            raise CpmError(f"borderline_sigmas must be >= 0, got {self.borderline_sigmas}")

    @property
    def bands(self) -> tuple[int, int]:
        """(bands, rows) of the LSH index for this threshold and number of permutations."""
        return minhash.lsh_bands(self.threshold, self.num_perm, self.lsh_recall)

    @property
    def exact_band(self) -> tuple[float, float]:
        """(low, high): estimates in ``[low, high)`` are confirmed by exact Jaccard, those below
        ``low`` rejected, those >= ``high`` accepted (``high`` > 1 with ``exact_jaccard``)."""
        margin = minhash.borderline_margin(self.threshold, self.num_perm, self.borderline_sigmas)
        return max(0.0, self.threshold - margin), (2.0 if self.exact_jaccard else self.threshold + margin)

    def index_metadata(self) -> dict[str, str]:
        """What signatures from another build must share with this one to be comparable."""
        return {
            "ngram": str(self.ngram),
            "seed": str(self.seed),
            "hash_scheme": minhash.HASH_SCHEME,
        }


class DedupOutputs(NamedTuple):
    """What :class:`Deduplicate` returns."""

    kept: Any  # PCollection of document dicts with dup_cluster_size set
    rejected: Any  # PCollection of rejected_schema() rows
    stats: Any  # PCollection of one dict: counts, largest cluster, index shards


# --------------------------------------------------------------------------- node keys


def _short_hash(text: str, size: int) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=size).hexdigest()


def node_key(doc_id: str, num_chars: int, origin: str | None, old: bool = False) -> str:
    """The sortable key of a document in the duplicate graph; the smallest key of a cluster survives.

    ``old`` documents (from an ``against`` index) sort before every new one, then longer texts
    before shorter ones, then by BLAKE2b hash of the id, then of the origin. The id follows the
    fixed-width prefix, so ``key_id(key)`` recovers it.
    """
    inverted = _MAX_CHARS - max(0, min(int(num_chars), _MAX_CHARS))
    origin_hash = "0" * 8 if origin is None else _short_hash(origin, 4)
    return f"{_OLD if old else _NEW}{inverted:010d}{_short_hash(doc_id, 8)}{origin_hash}{doc_id}"


def key_id(key: str) -> str:
    return key[_KEY_PREFIX:]


def is_old(key: str) -> bool:
    return key[0] == _OLD


def doc_node_key(doc: dict) -> str:
    num_chars = doc.get("num_chars")
    if num_chars is None:
        num_chars = len(doc["text"])
    return node_key(doc["id"], num_chars, doc.get("origin"))


# --------------------------------------------------------------------------- pure steps (testable without Beam)


_BAND_MULTIPLIERS = np.array(  # odd 64-bit constants of the band hash, one per row position (wraps mod 2**64)
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD,
     0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
    dtype=np.uint64,
)


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents, bands) 64-bit hashes of each band's rows, for a (documents, num_perm) uint32 matrix.

    One numpy pass for a whole batch: a multiply-xor chain over the rows followed by the
    splitmix64 finaliser. Equal bands always hash equal (no missed candidate); a collision of
    unequal ones only adds a candidate, which the signature comparison then rejects.
    """
    sigs = signatures[:, : bands * rows].astype(np.uint64).reshape(len(signatures), bands, rows)
    with np.errstate(over="ignore"):
        h = np.full(sigs.shape[:2], 0x6A09E667F3BCC908 ^ rows, dtype=np.uint64)
        for row in range(rows):
            h = (h ^ sigs[:, :, row]) * _BAND_MULTIPLIERS[row % len(_BAND_MULTIPLIERS)]
            h ^= h >> np.uint64(29)
    return minhash._mix64(h)


def band_key_matrix(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents, bands, :data:`BAND_KEY_BYTES`) uint8 bucket keys: band number (2 bytes, big-endian)
    and the band's 64-bit hash (little-endian)."""
    n = len(signatures)
    keys = np.empty((n, bands, BAND_KEY_BYTES), dtype=np.uint8)
    numbers = np.arange(bands, dtype=">u2").view(np.uint8).reshape(bands, 2)
    keys[:, :, :2] = numbers[None, :, :]
    keys[:, :, 2:] = band_hashes(signatures, bands, rows).astype("<u8").view(np.uint8).reshape(n, bands, 8)
    return keys


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[bytes]:
    """One bucket key per band: the band number and a 64-bit hash of its rows."""
    keys = band_key_matrix(np.asarray(signature, dtype=np.uint32).reshape(1, -1), bands, rows)[0]
    return [key.tobytes() for key in keys]


LSH_PARTITIONS = 512  # band keys are grouped by partition (a hash of the key), batched per bundle


def band_partition(band_key: bytes) -> int:
    """The LSH partition of a band key: every member of a bucket lands in the same one."""
    return int.from_bytes(band_key[2:6], "little") % LSH_PARTITIONS


class _BandBatches(beam.DoFn):
    """Batches of (rep key, signature) -> per bundle and LSH partition: (partition, (band keys, node keys)).

    One element per partition and bundle (at most :data:`_BAND_FLUSH` entries) instead of one per
    document and band: the band keys are shuffled in a few hundred fat elements, not millions of small
    ones. Signatures stay behind: only the members of shared buckets need theirs (see ``_candidate_edges``).
    """

    def __init__(self, bands: int, rows: int) -> None:
        self.bands, self.rows = bands, rows

    def start_bundle(self) -> None:
        self.keys: list[str] = []
        self.sigs: list[bytes] = []

    def process(self, nodes: list[tuple[str, bytes]]):
        for key, sig in nodes:
            self.keys.append(key)
            self.sigs.append(sig)
        if len(self.keys) * self.bands >= _BAND_FLUSH:
            yield from self._drain()

    def _drain(self) -> Iterator[tuple[int, tuple[bytes, list[str]]]]:
        keys, sig_list = self.keys, self.sigs
        self.keys, self.sigs = [], []
        if not keys:
            return
        sigs = np.frombuffer(b"".join(sig_list), dtype=np.uint32).reshape(len(keys), -1)
        band_matrix = band_key_matrix(sigs, self.bands, self.rows).reshape(-1, BAND_KEY_BYTES)  # (node, band) order
        partitions = band_matrix[:, 2:6].copy().view("<u4").ravel() % LSH_PARTITIONS
        order = np.argsort(partitions, kind="stable")  # per partition, entries in (node, band) order
        bounds = np.flatnonzero(np.diff(partitions[order])) + 1
        for chunk in np.split(order, bounds):
            nodes = chunk // self.bands
            yield int(partitions[chunk[0]]), (band_matrix[chunk].tobytes(), [keys[i] for i in nodes.tolist()])

    def finish_bundle(self):
        for element in self._drain():
            yield global_window_value(element)


_BAND_FLUSH = 200_000  # buffered (band, node) entries per worker before a flush: ~120 MB at 128 permutations


def _shared_band_keys(batches: Iterable[tuple[bytes, list[str]]]) -> set[bytes]:
    """The band keys met at least twice in one LSH partition's batches (the buckets worth comparing)."""
    seen: set[bytes] = set()
    shared: set[bytes] = set()
    for band_blob, keys in batches:
        for i in range(len(keys)):
            band = band_blob[i * BAND_KEY_BYTES : (i + 1) * BAND_KEY_BYTES]
            if band in seen:
                shared.add(band)
            else:
                seen.add(band)
    return shared


def bucket_pairs(members: Iterable[tuple[str, bytes]], threshold: float, num_perm: int) -> Iterator[tuple[str, str, float]]:
    """Confirmed pairs (smaller key, larger key, estimated Jaccard) among one LSH bucket's members.

    ``members`` are (node key, signature bytes), in any order; it is iterated twice and never
    held whole. The bucket's :data:`MAX_BUCKET_PAIRS` smallest keys are its pivots: pivots are
    compared with each other and every other member with every pivot, so a bucket of any size
    costs memory for its pivots and one block of members only (all pairs when it is no larger).
    Pairs of two old documents are skipped (old documents are never removed).
    """
    import heapq

    pivots = heapq.nsmallest(MAX_BUCKET_PAIRS, members, key=lambda m: m[0])
    if len(pivots) < 2:
        return
    pivot_keys = [k for k, _ in pivots]
    pivot_sigs = np.frombuffer(b"".join(sig for _, sig in pivots), dtype=np.uint32).reshape(len(pivots), num_perm)
    largest_pivot = pivot_keys[-1]

    def compare(block: list[tuple[str, bytes]]) -> Iterator[tuple[str, str, float]]:
        sigs = np.frombuffer(b"".join(sig for _, sig in block), dtype=np.uint32).reshape(len(block), num_perm)
        similarity = (sigs[:, None, :] == pivot_sigs[None, :, :]).mean(axis=2)  # (block, pivots)
        for i, j in zip(*np.nonzero(similarity >= threshold)):
            key, pivot = block[i][0], pivot_keys[j]
            if pivot < key and not (is_old(key) and is_old(pivot)):  # each unordered pair once
                yield pivot, key, float(similarity[i, j])

    yield from compare(pivots)
    block: list[tuple[str, bytes]] = []
    for member in members:  # second pass: the members beyond the pivots, a block at a time
        if member[0] > largest_pivot:
            block.append(member)
            if len(block) == 256:
                yield from compare(block)
                block = []
    if block:
        yield from compare(block)


def large_star(node: str, neighbours: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Large-star step: connect every larger neighbour of ``node`` to the smallest node in reach."""
    unique = set(neighbours)
    smallest = min(unique | {node})
    for other in unique:
        if other > node:
            yield other, smallest


def small_star(node: str, smaller_neighbours: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Small-star step: connect ``node`` and its smaller neighbours to the smallest of them."""
    group = set(smaller_neighbours) | {node}
    smallest = min(group)
    for other in group:
        if other != smallest:
            yield other, smallest


def _both_directions(edge: tuple[str, str]) -> Iterator[tuple[str, str]]:
    a, b = edge
    yield a, b
    yield b, a


def _larger_first(edge: tuple[str, str]) -> tuple[str, str]:
    a, b = edge
    return (a, b) if a > b else (b, a)


def _large_star_larger_first(node: str, neighbours: Iterable[str]) -> Iterator[tuple[str, str]]:
    """:func:`large_star`, its edges keyed by their larger end (the small-star step's input)."""
    for edge in large_star(node, neighbours):
        yield _larger_first(edge)


def _small_star_both_directions(node: str, smaller_neighbours: Iterable[str]) -> Iterator[tuple[str, str]]:
    """:func:`small_star`, each edge in both directions (the next round's large-star input)."""
    for edge in small_star(node, smaller_neighbours):
        yield from _both_directions(edge)


def _small_star_roles(node: str, smaller_neighbours: Iterable[str]) -> Iterator[tuple[str, tuple[str, str]]]:
    """:func:`small_star` of the last round, each edge (child, parent) keyed by both ends with its role."""
    for child, parent in small_star(node, smaller_neighbours):
        yield child, ("child", parent)
        yield parent, ("parent", child)


def bloom_positions(key: str) -> list[int]:
    """The :data:`BLOOM_BITS` bit positions of ``key`` in a Bloom filter (4 probes from BLAKE2b)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=4 * _BLOOM_PROBES).digest()
    return [int.from_bytes(digest[4 * k : 4 * k + 4], "little") % BLOOM_BITS for k in range(_BLOOM_PROBES)]


def bloom_contains(bloom: bytes, key: str) -> bool:
    return bool(bloom) and all(bloom[pos >> 3] >> (pos & 7) & 1 for pos in bloom_positions(key))


class BloomFilter(beam.CombineFn):
    """A fixed-size Bloom filter of string keys (bytes; empty when there are none).

    Bounded memory for any number of keys; a false positive only lets an extra document's text
    through a filter, so too many keys degrade cost, never the result.
    """

    def create_accumulator(self):
        return None

    def add_input(self, bits, key: str):
        if bits is None:
            bits = np.zeros(BLOOM_BITS // 8, dtype=np.uint8)
        for pos in bloom_positions(key):
            bits[pos >> 3] |= np.uint8(1 << (pos & 7))
        return bits

    def merge_accumulators(self, accumulators):
        merged = None
        for bits in accumulators:
            if bits is not None:
                merged = bits.copy() if merged is None else np.bitwise_or(merged, bits, out=merged)
        return merged

    def extract_output(self, bits) -> bytes:
        return b"" if bits is None else bits.tobytes()


# --------------------------------------------------------------------------- signature index


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


def read_index(path: str) -> Iterator[tuple[bytes, tuple[str, bytes]]]:
    """(text digest, (node key, signature bytes)) of every document in one signature shard.

    Read through :func:`cpm.shards.beam.read_shard_batches`, the reader of :class:`~cpm.shards.beam.ReadShards`
    (Beam's file systems, every record batch validated).
    """
    from cpm.shards.beam import read_shard_batches

    for batch in read_shard_batches(path, "signatures"):
        yield from index_nodes(batch)


def write_index_shard(item: tuple[int, Iterable[dict]], output_dir: str, config: DedupConfig, num_shards: int) -> dict:
    """Write one signature shard (rows sorted by id); return its manifest entry."""
    import pyarrow as pa

    from cpm.schemas import signature_schema
    from cpm.shards.io import write_table

    shard, rows = item
    rows = sorted(rows, key=lambda r: (r["id"], r["num_chars"], r["text_digest"]))
    schema = signature_schema(config.num_perm, config.index_metadata())
    sigs = np.frombuffer(b"".join(r["signature"] for r in rows), dtype=np.uint32)
    table = pa.table(
        {
            "id": pa.array([r["id"] for r in rows], pa.string()),
            "source": pa.array([r["source"] for r in rows], pa.string()),
            "num_chars": pa.array([r["num_chars"] for r in rows], pa.int32()),
            "text_digest": pa.array([r["text_digest"] for r in rows], pa.binary(16)),
            "signature": pa.FixedSizeListArray.from_arrays(pa.array(sigs, pa.uint32()), config.num_perm),
        },
        schema=schema,
    )
    path = os.path.join(output_dir, INDEX_DIR, f"signatures-{shard:05d}-of-{num_shards:05d}{SIGNATURE_SUFFIX}")
    return write_table(path, table, schema).entry(output_dir)


def _shard_of(doc_id: str, num_shards: int) -> int:
    return int(_short_hash(doc_id, 8), 16) % num_shards


# --------------------------------------------------------------------------- the transform


def _counter(name: str):
    return Metrics.counter(NAMESPACE, name)


class _Sign:
    """Batch of (node key, doc) -> (digest, (key, signature bytes, doc summary)) with vectorised MinHash."""

    def __init__(self, config: DedupConfig) -> None:
        self.config = config
        self.documents = _counter("signed_documents")
        self.chars = _counter("signed_chars")

    def __call__(self, keyed_docs: list[tuple[str, dict]]) -> Iterator[tuple[bytes, tuple[str, bytes, dict]]]:
        docs = [doc for _, doc in keyed_docs]
        sigs, digests = minhash.sign_batch([d["text"] for d in docs], self.config.num_perm, self.config.ngram, self.config.seed)
        self.documents.inc(len(docs))
        self.chars.inc(sum(len(doc["text"]) for doc in docs))
        for (key, doc), sig, digest in zip(keyed_docs, sigs, digests):
            summary = {"id": doc["id"], "source": doc["source"], "num_chars": int(doc.get("num_chars") or len(doc["text"]))}
            yield digest, (key, sig.tobytes(), summary)


def _exact_group(item: tuple[bytes, Iterable[tuple[str, bytes, dict | None]]]) -> Iterator[Any]:
    """One text digest's members (node key, signature, summary or None for old documents).

    Main output, for a group with new members: (rep key, (new members, digest, rep signature, rep summary));
    ``lsh``: (rep key, rep signature) for every group (old-only ones too: new documents may match them);
    ``link``: (rep key, member key) for every other new member. The members are iterated twice, never held.
    """
    digest, members = item
    best = None
    new = 0
    for member in members:
        if best is None or member[0] < best[0]:
            best = member
        new += not is_old(member[0])
    rep_key, rep_sig, summary = best
    yield pvalue.TaggedOutput("lsh", (rep_key, rep_sig))
    if new:
        yield rep_key, (new, digest, rep_sig, summary)
        if new > 1 or is_old(rep_key):  # otherwise the representative is the only new member
            for key, _, _ in members:
                if key != rep_key and not is_old(key):
                    yield pvalue.TaggedOutput("link", (rep_key, key))


class Deduplicate(beam.PTransform):
    """Remove exact and near-duplicate documents; see the module docstring.

    Input: a PCollection of document-row dicts (``id``, ``source``, ``text``, ``num_chars``,
    ``origin``, ...). Output: :class:`DedupOutputs` — ``kept`` (the same dicts with
    ``dup_cluster_size``), ``rejected`` (``rejected_schema()`` rows, rule ``exact_duplicate``
    or ``near_duplicate``, ``duplicate_of`` = the survivor's id) and ``stats``. Writes the
    signature index of the kept documents under ``output_dir/dedup/``.
    """

    def __init__(self, config: DedupConfig, output_dir: str, buckets: int = MIN_BUCKETS) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.output_dir = str(output_dir)
        self.buckets = buckets  # of the per-document shuffles (see cpm.pipeline.batching)
        self.against_paths: list[str] = []
        for directory in config.against:
            paths = index_paths(directory)
            for path in paths:
                check_index(path, config)
            self.against_paths.extend(paths)

    # ----------------------------------------------------------------- expand

    def expand(self, docs):
        config = self.config
        keyed_docs = docs | "KeyDocs" >> beam.Map(lambda d: (doc_node_key(d), d))
        keyed_batches = keyed_docs | "BatchKeyedDocs" >> beam.ParDo(FixedBatches(256))
        signed = keyed_batches | "Sign" >> beam.FlatMap(_Sign(config))
        if not config.enabled:
            return self._pass_through(docs, signed)

        new_nodes = signed
        groups = [new_nodes]
        if self.against_paths:
            from cpm.shards.beam import ReadShards

            old_nodes = (
                docs.pipeline
                | "ReadAgainst" >> ReadShards(self.against_paths, kind="signatures", rows=False)
                | "AgainstNodes" >> beam.FlatMap(lambda batch: ((d, (k, s, None)) for d, (k, s) in index_nodes(batch)))
            )
            groups.append(old_nodes)
        nodes = groups | "AllNodes" >> beam.Flatten()
        exact = (
            nodes
            | "ExactGroups" >> BatchedGroupByKey(self.buckets)
            | "ExactRepresentatives" >> beam.FlatMap(_exact_group).with_outputs("lsh", "link", main="rep")
        )
        links = exact.link
        edges = self._candidate_edges(exact.lsh, keyed_batches)
        components = self._components(edges)
        return self._assign(keyed_docs, exact.rep, links, components.labels, components.unconverged)

    def _pass_through(self, docs, signed):
        """``enabled=False``: every document kept (cluster size 1); the index is still written."""
        kept = docs | "Unique" >> beam.Map(lambda d: {**d, "dup_cluster_size": 1})
        rejected = docs.pipeline | "NoRejections" >> beam.Create([])
        index_rows = signed | "IndexRows" >> beam.Map(lambda kv: {**kv[1][2], "text_digest": kv[0], "signature": kv[1][1]})
        stats = self._write_index([index_rows], [docs | "AllKept" >> beam.Map(lambda _: (STAT_KEEP, None, 1))])
        return DedupOutputs(kept, rejected, stats)

    # ----------------------------------------------------------------- LSH

    def _candidate_edges(self, lsh_nodes, keyed_batches):
        """Duplicate edges (smaller key, larger key): LSH candidates confirmed as in step 4."""
        config = self.config
        bands, rows = config.bands
        low, high = config.exact_band
        threshold = config.threshold
        num_perm = config.num_perm
        bucket_sizes = beam.metrics.Metrics.distribution(NAMESPACE, "bucket_size")
        oversized = _counter("oversized_buckets")
        compared = _counter("compared_pairs")
        by_estimate = _counter("edges_by_estimate")
        borderline = _counter("borderline_pairs")

        def shared_buckets(item) -> Iterator[tuple[bytes, list[str]]]:
            _, batches = item  # one LSH partition: batches of (band keys, node keys)
            shared = _shared_band_keys(batches)
            if not shared:
                return
            buckets: dict[bytes, list[str]] = {}
            for band_blob, keys in batches:  # second pass: only the members of shared buckets
                for i, key in enumerate(keys):
                    band = band_blob[i * BAND_KEY_BYTES : (i + 1) * BAND_KEY_BYTES]
                    if band in shared:
                        buckets.setdefault(band, []).append(key)
            for band, members in buckets.items():
                bucket_sizes.update(len(members))
                if len(members) > MAX_BUCKET_PAIRS:
                    oversized.inc()
                yield band, members

        def confirm(item) -> Iterator[tuple[str, str, float]]:
            _, members = item  # one shared bucket: (node key, signature) of each member
            for pair in bucket_pairs(members, low, num_perm):
                compared.inc()
                yield pair

        def route(pair: tuple[str, str, float]):
            a, b, estimate = pair
            if is_old(a) or is_old(b):  # no text for a document of an earlier build: the estimate decides
                if estimate >= threshold:
                    by_estimate.inc()
                    yield a, b
            elif estimate >= high:
                by_estimate.inc()
                yield a, b
            else:
                borderline.inc()
                yield pvalue.TaggedOutput("borderline", pair)

        # Band keys travel without signatures; the members of shared buckets (candidates, few unless the
        # corpus is full of duplicates) get theirs back through a Bloom filter and one batched join.
        lsh_batches = lsh_nodes | "BatchLshNodes" >> beam.ParDo(FixedBatches(1024))
        buckets = (
            lsh_batches
            | "BandKeys" >> beam.ParDo(_BandBatches(bands, rows))
            | "GroupByBandPartition" >> beam.GroupByKey()
            | "SharedBuckets" >> beam.FlatMap(shared_buckets)
        )
        candidates = (
            buckets
            | "CandidateKeys" >> beam.FlatMap(lambda bucket: bucket[1])
            | "CandidateBloom" >> beam.CombineGlobally(BloomFilter())
        )
        candidate_sigs = lsh_batches | "CandidateSignatures" >> beam.FlatMap(
            lambda batch, bits: [(key, sig) for key, sig in batch if bloom_contains(bits, key)],
            bits=beam.pvalue.AsSingleton(candidates),
        )
        memberships = buckets | "Memberships" >> beam.FlatMap(lambda bucket: [(key, bucket[0]) for key in bucket[1]])
        routed = (
            {"sig": candidate_sigs, "band": memberships}
            | "JoinSignatures" >> BatchedCoGroupByKey(self.buckets)
            | "MembersWithSignatures" >> beam.FlatMap(
                lambda item: [(band, (item[0], item[1]["sig"][0])) for band in item[1]["band"]] if item[1]["sig"] else []
            )
            | "GroupBuckets" >> BatchedGroupByKey(self.buckets)
            | "ConfirmPairs" >> beam.FlatMap(confirm)
            | "UniquePairs" >> beam.Distinct()  # a pair met in several bands: same keys, same estimate
            | "RouteByEstimate" >> beam.FlatMap(route).with_outputs("borderline", main="edges")
        )
        confirmed = self._exact_confirm(routed.borderline, keyed_batches)
        return (routed.edges, confirmed) | "AllEdges" >> beam.Flatten()

    def _exact_confirm(self, pairs, keyed_batches):
        """Edges among borderline ``pairs`` (a, b, estimate) whose exact shingle Jaccard reaches the threshold.

        Only the texts of documents in such pairs are joined in: a Bloom filter of their keys (a
        small side input) selects them from ``keyed_batches`` (lists of (node key, document)).
        """
        config = self.config
        accepted = _counter("edges_by_exact_jaccard")
        rejected_edges = _counter("edges_below_exact_threshold")

        bloom = (
            pairs
            | "BorderlineKeys" >> beam.FlatMap(lambda pair: pair[:2])
            | "BorderlineBloom" >> beam.CombineGlobally(BloomFilter())
        )
        texts = keyed_batches | "BorderlineTexts" >> beam.FlatMap(
            lambda batch, bits: [(key, doc["text"]) for key, doc in batch if bloom_contains(bits, key)],
            bits=beam.pvalue.AsSingleton(bloom),
        )

        def shingles(texts: Iterable[str]) -> bytes | None:
            text = next(iter(texts), None)  # node keys are unique per document; a repeated one has the same text
            return None if text is None else minhash.shingle_set(text, config.ngram).tobytes()

        def attach_first(item):
            key, groups = item
            first_set = shingles(groups["text"])  # once per document, however many pairs it is in
            for other in groups["edge"]:
                yield other, (key, first_set)

        def check(item):
            key, groups = item
            second_set: bytes | None = None
            for index, (first, first_set) in enumerate(groups["edge"]):
                if index == 0:
                    second_set = shingles(groups["text"])  # lazily: most texts here are only in first position
                similarity = -1.0  # a missing text (cannot happen: the filter has no false negatives) rejects
                if first_set is not None and second_set is not None:
                    similarity = minhash.set_jaccard(np.frombuffer(first_set, np.uint64), np.frombuffer(second_set, np.uint64))
                if similarity >= config.threshold:
                    accepted.inc()
                    yield first, key
                else:
                    rejected_edges.inc()

        with_first = (
            {"edge": pairs | "KeyByFirst" >> beam.Map(lambda pair: (pair[0], pair[1])), "text": texts}
            | "JoinFirstText" >> beam.CoGroupByKey()
            | "AttachFirstText" >> beam.FlatMap(attach_first)
        )
        return (
            {"edge": with_first, "text": texts}
            | "JoinSecondText" >> beam.CoGroupByKey()
            | "CheckExactJaccard" >> beam.FlatMap(check)
        )

    # ----------------------------------------------------------------- connected components

    def _components(self, edges):
        """(node, label) for every non-survivor node: label = the smallest node of its component."""
        # Each round is two GroupByKeys; the element-wise steps between them are fused into one
        # FlatMap each (the small-star output of one round emits the next round's large-star input).
        current = edges | "LargeStarEmit0" >> beam.FlatMap(_both_directions)
        last = self.config.cc_rounds - 1
        for round_no in range(self.config.cc_rounds):
            stars = (
                current
                | f"LargeStarGroup{round_no}" >> beam.GroupByKey()
                | f"LargeStar{round_no}" >> beam.FlatMapTuple(_large_star_larger_first)
                | f"SmallStarGroup{round_no}" >> beam.GroupByKey()
            )
            if round_no < last:
                current = stars | f"SmallStar{round_no}" >> beam.FlatMapTuple(_small_star_both_directions)
            else:
                current = stars | f"SmallStar{round_no}" >> beam.FlatMapTuple(_small_star_roles)
        rounds = self.config.cc_rounds
        unconverged = _counter("unconverged_nodes")

        def label(item):
            node, relations = item
            relations = list(relations)
            parents = [other for role, other in relations if role == "child"]
            if parents and any(role == "parent" for role, _ in relations):
                # not a star yet: this component may keep more than one survivor (never none)
                unconverged.inc()
                logger.warning("dedup: connected components did not converge in %d rounds at %s", rounds, key_id(node))
                yield pvalue.TaggedOutput("unconverged", (STAT_UNCONVERGED,))
            if parents:
                yield node, min(parents)

        return (
            current
            | "GroupRoles" >> beam.GroupByKey()
            | "Label" >> beam.FlatMap(label).with_outputs("unconverged", main="labels")
        )

    # ----------------------------------------------------------------- assignment

    def _assign(self, keyed_docs, reps, links, labels, unconverged):
        config = self.config
        detail = f"character {config.ngram}-gram Jaccard >= {config.threshold} (num_perm={config.num_perm})"

        # One join per representative decides every fate but the survivors of multi-representative
        # clusters (the "roots": labels of other nodes), whose size needs the sum of their cluster.
        def decide(item):
            key, groups = item
            label = next(iter(groups["label"]), None)
            survivor = label or key
            for member in groups["link"]:
                yield member, ("reject", RULE_EXACT, key_id(survivor), f"exact copy of {key_id(key)} after normalisation")
            for multiplicity, digest, sig, summary in groups["rep"]:  # at most one
                if label is not None:
                    yield pvalue.TaggedOutput("size_part", (label, multiplicity))
                    if summary is not None:  # old representatives are never removed
                        yield key, ("reject", RULE_NEAR, key_id(label), f"{detail} with a document of its cluster")
                elif summary is not None:
                    row = {**summary, "text_digest": digest, "signature": sig}
                    if not any(groups["root"]):  # a cluster of its own exact copies
                        yield key, ("keep", multiplicity, row)
                    else:
                        yield pvalue.TaggedOutput("size_part", (key, multiplicity))
                        yield pvalue.TaggedOutput("root", (key, row))

        roots = labels | "Roots" >> beam.Map(lambda kv: (kv[1], True))
        decided = (
            {"rep": reps, "label": labels, "link": links, "root": roots}
            | "JoinRepLabel" >> BatchedCoGroupByKey(self.buckets)
            | "Decide" >> beam.FlatMap(decide).with_outputs("size_part", "root", main="fate")
        )
        sizes = decided.size_part | "ClusterSizes" >> beam.CombinePerKey(sum)

        def root_fate(item):
            key, groups = item
            size = next(iter(groups["size"]), 1)  # always there: a root sends its own multiplicity
            for row in groups["root"]:
                yield key, ("keep", size, row)

        root_fates = (
            {"root": decided.root, "size": sizes}
            | "JoinRootSizes" >> beam.CoGroupByKey()
            | "RootFates" >> beam.FlatMap(root_fate)
        )
        exact_count = _counter("exact_duplicates")
        near_count = _counter("near_duplicates")
        missing = _counter("documents_without_fate")

        def apply(item):
            key, groups = item
            decision = next(iter(groups["fate"]), None) or next(iter(groups["root_fate"]), None)
            for doc in groups["doc"]:
                if decision is None:  # cannot happen; keep rather than lose a document
                    missing.inc()
                    yield {**doc, "dup_cluster_size": 1}
                elif decision[0] == "keep":
                    yield {**doc, "dup_cluster_size": int(decision[1])}
                else:
                    _, rule, survivor, why = decision
                    (exact_count if rule == RULE_EXACT else near_count).inc()
                    yield pvalue.TaggedOutput(
                        "rejected",
                        {
                            "id": doc["id"],
                            "source": doc["source"],
                            "rule": rule,
                            "detail": why,
                            "duplicate_of": survivor,
                            "origin": doc.get("origin") or "",
                            "text": doc.get("text"),
                        },
                    )

        result = (
            {"doc": keyed_docs, "fate": decided.fate, "root_fate": root_fates}
            | "JoinDocs" >> BatchedCoGroupByKey(self.buckets)
            # the main output type, declared: Beam 2.78 infers Union[TaggedOutput, dict] from the yields
            | "Apply" >> beam.FlatMap(apply).with_output_types(dict[str, Any]).with_outputs("rejected", main="kept")
        )
        cluster_dist = Metrics.distribution(NAMESPACE, "cluster_size")
        huge = config.huge_cluster

        def split_fate(item):
            """A fate -> its stats record; a kept document's index row goes to ``index``."""
            key, decision = item
            if decision[0] != "keep":
                yield (decision[1],)
                return
            survivor, size = key_id(key), int(decision[1])
            cluster_dist.update(size)
            if size >= huge:
                logger.warning("dedup: huge duplicate cluster of %d documents (survivor %s); check for templated pages", size, survivor)
            yield pvalue.TaggedOutput("index", decision[2])
            yield STAT_KEEP, survivor, size

        split = decided.fate | "SplitFates" >> beam.FlatMap(split_fate).with_outputs("index", main="stats")
        split_roots = root_fates | "SplitRootFates" >> beam.FlatMap(split_fate).with_outputs("index", main="stats")
        stats = self._write_index([split.index, split_roots.index], [split.stats, split_roots.stats, unconverged])
        return DedupOutputs(result.kept, result.rejected, stats)

    # ----------------------------------------------------------------- index + stats

    def _write_index(self, index_rows: list, stat_records: list):
        """Write the signature index of the ``index_rows`` PCollections and ``index.json``; return the
        stats PCollection.

        ``stat_records``: PCollections of one record per fate, ``(STAT_KEEP, survivor id or None,
        cluster size)`` or ``(rule,)``, and ``(STAT_UNCONVERGED,)`` per unconverged node, all counted
        by one combine. Both are batched before they are merged, so no step downstream reads them
        one document at a time.
        """
        config = self.config
        output_dir = self.output_dir

        stats = (
            [records | f"BatchStatRecords{i}" >> beam.ParDo(FixedBatches(4096)) for i, records in enumerate(stat_records)]
            | "AllStatRecords" >> beam.Flatten()
            | "DedupStats" >> beam.CombineGlobally(DedupStats())
        )

        def keyed_by_shard(rows, stats):
            shards = max(1, -(-stats["counts"].get(STAT_KEEP, 0) // ROWS_PER_INDEX_SHARD))
            by_shard: dict[int, list] = {}
            for row in rows:
                by_shard.setdefault(_shard_of(row["id"], shards), []).append(row)
            return [((shard, shards), shard_rows) for shard, shard_rows in by_shard.items()]

        def write(item):
            (shard, shards), batches = item
            return write_index_shard((shard, [row for rows in batches for row in rows]), output_dir, config, shards)

        shard_entries = (
            [rows | f"BatchIndexRows{i}" >> beam.ParDo(FixedBatches(512)) for i, rows in enumerate(index_rows)]
            | "AllIndexRows" >> beam.Flatten()
            | "ShardIndexRows" >> beam.FlatMap(keyed_by_shard, stats=beam.pvalue.AsSingleton(stats))
            | "GroupIndexShards" >> beam.GroupByKey()
            | "WriteIndexShards" >> beam.Map(write)
            | "CollectShards" >> beam.combiners.ToList()
        )

        def finish(stats, shards):
            counts_dict, largest_one = stats["counts"], stats["largest"]
            info = index_info(
                config, sorted(shards, key=lambda e: e["path"]), int(counts_dict.get(STAT_KEEP, 0)),
                int(counts_dict.get(RULE_EXACT, 0)), int(counts_dict.get(RULE_NEAR, 0)),
                None if largest_one is None else (largest_one[0], int(largest_one[1])),
                int(counts_dict.get(STAT_UNCONVERGED, 0)),
            )
            logger.info("dedup: largest cluster %s", info["largest_cluster"])
            path = os.path.join(output_dir, INDEX_DIR, INDEX_FILE)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(info, handle, ensure_ascii=False, indent=2, sort_keys=True)
                handle.write("\n")
            os.replace(tmp, path)
            return info

        return stats | "WriteIndexInfo" >> beam.Map(finish, shards=beam.pvalue.AsSingleton(shard_entries))


class DedupStats(beam.CombineFn):
    """Lists of stats records -> {"counts": {kind: n}, "largest": (survivor, size) or None}.

    The largest cluster is the one with the most documents, then the smallest survivor id.
    """

    def create_accumulator(self):
        return {}, None

    def add_input(self, accumulator, records):
        """``records``: a list of stats records."""
        counts, best = accumulator
        for record in records:
            counts[record[0]] = counts.get(record[0], 0) + 1
            if record[0] == STAT_KEEP and record[1] is not None:
                candidate = (-record[2], record[1])
                if best is None or candidate < best:
                    best = candidate
        return counts, best

    def merge_accumulators(self, accumulators):
        merged: dict[str, int] = {}
        best = None
        for counts, other in accumulators:
            for kind, n in counts.items():
                merged[kind] = merged.get(kind, 0) + n
            if other is not None and (best is None or other < best):
                best = other
        return merged, best

    def extract_output(self, accumulator):
        counts, best = accumulator
        return {"counts": counts, "largest": None if best is None else (best[1], -best[0])}
