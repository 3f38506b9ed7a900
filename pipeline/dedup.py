"""Exact and near-duplicate removal of ``cpm corpus build``: the algorithm as named steps.

Each step is a plain function over plain values (no Beam, no files); the build's dedup stages
(:mod:`cpm.pipeline.dedup_stages`, run by :mod:`cpm.pipeline.graph`) read their inputs from the
intermediate files, call these steps and write what they return. In order:

1. **sign** (:func:`sign_documents`, per chunk) — a MinHash signature over character n-gram
   shingles of each document's *hashing form* (NFKC, width/punctuation/whitespace folding,
   traditional -> simplified; :mod:`cpm.pipeline.minhash`) and a digest of that form; each
   document's :func:`node_key` fixes the survivor order.
2. **exact** (:func:`exact_groups`, per digest partition) — documents with the same digest are
   exact duplicates: the smallest node key is the group's *representative*, it stands for the
   number of new documents of the group (its multiplicity), the others get an :class:`ExactFate`
   pointing at it. Only representatives go on.
3. **band keys** (:func:`band_key_matrix`, :func:`band_entries`) — ``bands x rows`` LSH bucket keys
   per representative (:func:`~cpm.pipeline.minhash.lsh_bands`: a pair exactly at the threshold
   becomes a candidate with probability >= ``lsh_recall`` = 0.999; 25 x 5 for 0.8 and 128
   permutations), partitioned by a hash of the key.
4. **candidates** (:func:`shared_buckets`, :func:`bucket_pairs`, :func:`candidate_pairs`, per LSH
   partition) — the members of each bucket met at least twice are compared by signature; a
   bucket larger than :data:`MAX_BUCKET_PAIRS` compares every member with its smallest keys only,
   so no step is quadratic in a bucket. Pairs with an estimate below ``threshold - margin`` drop out.
5. **confirm** (:func:`route_candidate`, :func:`confirm_edges`) — an estimate >= ``threshold +
   margin`` is a duplicate edge; a pair in the *borderline band* between is decided by the exact
   Jaccard of the two texts' shingle sets (``margin`` = 4 standard deviations of the estimate at
   the threshold, :func:`~cpm.pipeline.minhash.borderline_margin`: 0.141 for 128 permutations at
   0.8). A pair with a document of an earlier build (no text here) is decided by the estimate alone.
6. **components** (:func:`connected_components`, one task) — union-find over every edge; each
   component's smallest node key is its survivor, its size the sum of its members' multiplicities.
   Near-duplicates are the *transitive closure* of the edges: in a chain A~B, B~C with A !~ C all
   three are one cluster with one survivor.
7. **fates** (:func:`choose_fate`, per chunk) — each document's :class:`Fate`: kept with its
   cluster size, or rejected (``exact_duplicate`` / ``near_duplicate``, ``duplicate_of`` = the
   survivor's id). Documents of earlier builds (``against``) are never removed.
8. **apply** (:func:`kept_row`, :func:`rejected_row`, :func:`index_row`) — the fate applied to a
   document row; the kept documents' signatures make the index of this build
   (:mod:`cpm.pipeline.dedup_index`), which a later build can pass to ``--against``.

The survivor order (documents of earlier builds first, then the longest text, then the smallest
64-bit BLAKE2b hash of the id, then of the origin) depends on nothing but the documents, so input
order, partitioning, runner and worker count cannot change the result.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from cpm.errors import CpmError
from cpm.pipeline import minhash

logger = logging.getLogger(__name__)

RULE_EXACT = "exact_duplicate"
RULE_NEAR = "near_duplicate"
RULE_DUPLICATE_ID = "duplicate_id"  # a repeated id (the build's ids stage), every copy but the first
KEEP = "keep"
MAX_BUCKET_PAIRS = 64  # buckets up to this size compare all pairs; larger ones compare with their 64 smallest keys
BAND_KEY_BYTES = 10  # band number (2) + 64-bit hash of its rows (8)
_COMPARE_BLOCK = 256  # members of a large bucket compared with its pivots at a time (a memory bound)
_KEY_PREFIX = 35  # tier (1) + inverted length (10) + id hash (16) + origin hash (8); the id follows
_NEW, _OLD = "1", "0"
_MAX_CHARS = 2**31 - 1


@dataclass(frozen=True)
class DedupConfig:
    """Options of dedup (``cpm corpus build --dedup-threshold/--num-perm/--ngram/--no-dedup/--against``).

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
    cc_rounds: int = 10  # not used (components come from union-find); recorded in index.json as by earlier builds
    huge_cluster: int = 1000  # warn about clusters of at least this many documents

    def validate(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise CpmError(f"--dedup-threshold must be between 0 and 1 (exclusive), got {self.threshold}")
        if not 8 <= self.num_perm <= 1024:
            raise CpmError(f"--num-perm must be between 8 and 1024, got {self.num_perm}")
        if not 1 <= self.ngram <= 64:
            raise CpmError(f"--ngram must be between 1 and 64, got {self.ngram}")
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


# --------------------------------------------------------------------------- node keys


def short_hash(text: str, size: int) -> str:
    """The hex BLAKE2b digest of ``size`` bytes of a string (node keys, index shards)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=size).hexdigest()


def node_key(doc_id: str, num_chars: int, origin: str | None, old: bool = False) -> str:
    """The sortable key of a document in the duplicate graph; the smallest key of a cluster survives.

    ``old`` documents (from an ``against`` index) sort before every new one, then longer texts
    before shorter ones, then by BLAKE2b hash of the id, then of the origin. The id follows the
    fixed-width prefix, so ``key_id(key)`` recovers it.
    """
    inverted = _MAX_CHARS - max(0, min(int(num_chars), _MAX_CHARS))
    origin_hash = "0" * 8 if origin is None else short_hash(origin, 4)
    return f"{_OLD if old else _NEW}{inverted:010d}{short_hash(doc_id, 8)}{origin_hash}{doc_id}"


def key_id(key: str) -> str:
    """The document id of a node key."""
    return key[_KEY_PREFIX:]


def is_old(key: str) -> bool:
    """Whether a node key is a document of an earlier build (``against``)."""
    return key[0] == _OLD


def doc_node_key(doc: dict) -> str:
    num_chars = doc.get("num_chars")
    if num_chars is None:
        num_chars = len(doc["text"])
    return node_key(doc["id"], num_chars, doc.get("origin"))


# --------------------------------------------------------------------------- 1. sign


class Signed(NamedTuple):
    """What :func:`sign_documents` gives each document."""

    signature: bytes  # num_perm uint32 min-hashes
    digest: bytes  # 16-byte digest of the hashing form (equal for exact duplicates)


def sign_documents(texts: Sequence[str], config: DedupConfig) -> list[Signed]:
    """The signature and hashing-form digest of each text (vectorised over the batch)."""
    sigs, digests = minhash.sign_batch(list(texts), config.num_perm, config.ngram, config.seed)
    return [Signed(sig.tobytes(), digest) for sig, digest in zip(sigs, digests)]


# --------------------------------------------------------------------------- 2. exact


class ExactEntry(NamedTuple):
    """A document in its digest partition (new documents, and those of earlier builds)."""

    digest: bytes
    key: str  # node key
    chunk: int
    row: int
    signature: bytes


class Representative(NamedTuple):
    """The smallest node of an exact group, which goes on to the LSH steps for the whole group."""

    chunk: int
    row: int
    signature: bytes
    multiplicity: int  # new documents of its group (0: a group of earlier builds' documents only)


class ExactFate(NamedTuple):
    """A new document's exact group: its representative's key; the group's multiplicity for the
    representative itself, 0 for the others (its exact duplicates)."""

    row: int
    representative: str
    multiplicity: int


class ExactGroups(NamedTuple):
    representatives: list[Representative]  # in digest order
    fates: dict[int, list[ExactFate]]  # by chunk; new documents only


def exact_groups(entries: Iterable[ExactEntry]) -> ExactGroups:
    """Group documents by digest: each group's representative and the fate of its new members."""
    groups: dict[bytes, list[ExactEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.digest, []).append(entry)
    representatives: list[Representative] = []
    fates: dict[int, list[ExactFate]] = {}
    for digest in sorted(groups):
        members = groups[digest]
        best = min(members, key=lambda m: (m.key, m.chunk, m.row))
        new = sum(not is_old(m.key) for m in members)
        representatives.append(Representative(best.chunk, best.row, best.signature, new))
        for member in members:
            if not is_old(member.key):
                fates.setdefault(member.chunk, []).append(
                    ExactFate(member.row, best.key, new if member.key == best.key else 0))
    return ExactGroups(representatives, fates)


# --------------------------------------------------------------------------- 3. band keys


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


class BandEntries(NamedTuple):
    """Band keys of representatives, one entry per (representative, band), as parallel arrays."""

    keys: np.ndarray  # (n, BAND_KEY_BYTES) uint8
    chunks: np.ndarray  # int32
    rows: np.ndarray  # int32
    multiplicities: np.ndarray  # int32


def band_partition(keys: np.ndarray, partitions: int) -> np.ndarray:
    """The LSH partition of each band key (bytes 2-5, a part of its hash): a bucket's members share one."""
    return keys[:, 2:6].copy().view("<u4").ravel() % partitions


def band_entries(reps: Sequence[Representative], bands: int, rows: int, partitions: int) -> dict[int, BandEntries]:
    """{LSH partition: the band entries of ``reps`` that fall in it}, in (representative, band) order."""
    if not reps:
        return {}
    sigs = np.frombuffer(b"".join(r.signature for r in reps), dtype=np.uint32).reshape(len(reps), -1)
    keys = band_key_matrix(sigs, bands, rows).reshape(-1, BAND_KEY_BYTES)  # (rep, band) order
    parts = band_partition(keys, partitions)
    columns = [np.repeat(np.array([getattr(r, name) for r in reps], np.int32), bands)
               for name in ("chunk", "row", "multiplicity")]
    out: dict[int, BandEntries] = {}
    for part in np.unique(parts).tolist():
        mask = parts == part
        out[part] = BandEntries(keys[mask], *(column[mask] for column in columns))
    return out


# --------------------------------------------------------------------------- 4. candidates


def shared_buckets(keys: np.ndarray) -> Iterator[np.ndarray]:
    """Index arrays (into ``keys``, ascending) of the entries of each band key met at least twice,
    in key order."""
    void = np.ascontiguousarray(keys).view(np.dtype((np.void, BAND_KEY_BYTES))).ravel()
    _, inverse, counts = np.unique(void, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    shared = np.flatnonzero(counts[inverse] >= 2)
    if not len(shared):
        return
    order = shared[np.argsort(inverse[shared], kind="stable")]
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    yield from np.split(order, bounds)


class Candidate(NamedTuple):
    """A pair of nodes whose signatures agree on at least the lower end of the borderline band."""

    a: str  # the smaller node key
    b: str
    estimate: float  # estimated Jaccard (share of equal min-hashes)


def bucket_pairs(members: Iterable[tuple[str, bytes]], threshold: float, num_perm: int) -> Iterator[Candidate]:
    """Confirmed pairs (smaller key, larger key, estimated Jaccard) among one LSH bucket's members.

    ``members`` are (node key, signature bytes), in any order; it is iterated twice and never
    held whole. The bucket's :data:`MAX_BUCKET_PAIRS` smallest keys are its pivots: pivots are
    compared with each other and every other member with every pivot, so a bucket of any size
    costs memory for its pivots and one block of members only (all pairs when it is no larger).
    Pairs of two old documents are skipped (old documents are never removed).
    """
    pivots = heapq.nsmallest(MAX_BUCKET_PAIRS, members, key=lambda m: m[0])
    if len(pivots) < 2:
        return
    pivot_keys = [k for k, _ in pivots]
    pivot_sigs = np.frombuffer(b"".join(sig for _, sig in pivots), dtype=np.uint32).reshape(len(pivots), num_perm)
    largest_pivot = pivot_keys[-1]

    def compare(block: list[tuple[str, bytes]]) -> Iterator[Candidate]:
        sigs = np.frombuffer(b"".join(sig for _, sig in block), dtype=np.uint32).reshape(len(block), num_perm)
        similarity = (sigs[:, None, :] == pivot_sigs[None, :, :]).mean(axis=2)  # (block, pivots)
        for i, j in zip(*np.nonzero(similarity >= threshold)):
            key, pivot = block[i][0], pivot_keys[j]
            if pivot < key and not (is_old(key) and is_old(pivot)):  # each unordered pair once
                yield Candidate(pivot, key, float(similarity[i, j]))

    yield from compare(pivots)
    block: list[tuple[str, bytes]] = []
    for member in members:  # second pass: the members beyond the pivots, a block at a time
        if member[0] > largest_pivot:
            block.append(member)
            if len(block) == _COMPARE_BLOCK:
                yield from compare(block)
                block = []
    if block:
        yield from compare(block)


def candidate_pairs(buckets: Iterable[Sequence[tuple[str, bytes]]], low: float, num_perm: int) -> list[Candidate]:
    """Every pair of :func:`bucket_pairs` over ``buckets`` ((node key, signature) members each),
    once however many buckets share it, sorted."""
    pairs: set[Candidate] = set()
    for members in buckets:
        pairs.update(bucket_pairs(members, low, num_perm))
    return sorted(pairs)


# --------------------------------------------------------------------------- 5. confirm


ACCEPT, EXACT, REJECT = "accept", "exact", "reject"  # routes of a candidate pair


class Edge(NamedTuple):
    """A confirmed duplicate pair (smaller node key first)."""

    a: str
    b: str


def route_candidate(candidate: Candidate, threshold: float, accept_at: float) -> str:
    """:data:`ACCEPT` (an edge by its estimate), :data:`EXACT` (decided by exact Jaccard) or :data:`REJECT`.

    ``accept_at`` is the upper end of the borderline band (``config.exact_band[1]``; above 1 with
    ``exact_jaccard``). A pair with a document of an earlier build has no text here: its estimate
    decides against ``threshold``.
    """
    if is_old(candidate.a) or is_old(candidate.b):
        return ACCEPT if candidate.estimate >= threshold else REJECT
    return ACCEPT if candidate.estimate >= accept_at else EXACT


class Confirmed(NamedTuple):
    edges: list[Edge]  # in candidate order
    borderline: int  # candidates decided by exact Jaccard
    by_exact: int  # of them, the edges (exact Jaccard >= threshold)


def confirm_edges(
    candidates: Sequence[Candidate], config: DedupConfig, fetch_texts: Callable[[list[str]], dict[str, str | None]],
) -> Confirmed:
    """The duplicate edges among ``candidates``: by estimate, or by the exact Jaccard of the two texts'
    shingle sets in the borderline band. ``fetch_texts(keys)`` gives the texts of node keys, called
    once with every key that needs one."""
    accept_at = config.exact_band[1]
    routes = [route_candidate(c, config.threshold, accept_at) for c in candidates]
    texts = fetch_texts([key for c, route in zip(candidates, routes) if route == EXACT for key in (c.a, c.b)])
    shingles: dict[str, np.ndarray] = {}

    def shingle_set(key: str) -> np.ndarray:
        if key not in shingles:
            shingles[key] = minhash.shingle_set(texts[key] or "", config.ngram)
        return shingles[key]

    edges: list[Edge] = []
    borderline = by_exact = 0
    for candidate, route in zip(candidates, routes):
        if route == EXACT:
            borderline += 1
            if minhash.set_jaccard(shingle_set(candidate.a), shingle_set(candidate.b)) < config.threshold:
                continue
            by_exact += 1
        elif route == REJECT:
            continue
        edges.append(Edge(candidate.a, candidate.b))
    return Confirmed(edges, borderline, by_exact)


# --------------------------------------------------------------------------- 6. components


class Components(NamedTuple):
    labels: dict[str, str]  # node -> its component's survivor (the smallest node), for every other node
    sizes: dict[str, int]  # survivor -> documents of its cluster (the sum of its nodes' multiplicities)


def connected_components(edges: Iterable[tuple[str, str]], multiplicity: dict[str, int]) -> Components:
    """Union-find over ``edges`` (always converges); the smallest node key of a component is its root.

    ``multiplicity``: the new documents each node stands for (its exact group); missing means 0.
    """
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        root = parent.setdefault(node, node)
        while root != parent[root]:
            parent[root] = parent[parent[root]]
            root = parent[root]
        return root

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    labels: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for node in list(parent):
        root = find(node)
        if root != node:
            labels[node] = root
        sizes[root] = sizes.get(root, 0) + multiplicity.get(node, 0)
    return Components(labels, sizes)


# --------------------------------------------------------------------------- 7. fates


class Fate(NamedTuple):
    """What the build does with one document."""

    rule: str = KEEP  # KEEP, or the rule that rejects it: RULE_EXACT, RULE_NEAR, RULE_DUPLICATE_ID
    cluster_size: int = 1  # kept: the documents of its cluster, itself and its exact copies included
    duplicate_of: str = ""  # rejected: the id of the document that stays
    detail: str = ""  # rejected: why

    @property
    def kept(self) -> bool:
        return self.rule == KEEP


def near_duplicate_detail(config: DedupConfig) -> str:
    return f"character {config.ngram}-gram Jaccard >= {config.threshold} (num_perm={config.num_perm})"


def choose_fate(
    key: str, first_origin: str | None, exact: ExactFate | None, components: Components, config: DedupConfig | None,
) -> Fate:
    """The fate of the document with node ``key``.

    ``first_origin``: where the first copy of a repeated id is (the ids stage), None if the id is
    unique; ``exact``: the document's exact group; ``config``: None without dedup (every document
    with its own id is kept).
    """
    if first_origin is not None:
        return Fate(RULE_DUPLICATE_ID, 1, key_id(key), f"id also at {first_origin}")
    if config is None or exact is None:  # exact is never None with dedup; keep rather than lose a document
        return Fate()
    rep = exact.representative
    if rep != key:
        survivor = components.labels.get(rep, rep)
        return Fate(RULE_EXACT, 1, key_id(survivor), f"exact copy of {key_id(rep)} after normalisation")
    if key in components.labels:
        return Fate(RULE_NEAR, 1, key_id(components.labels[key]), f"{near_duplicate_detail(config)} with a document of its cluster")
    size = int(components.sizes.get(key, exact.multiplicity))
    if size >= config.huge_cluster:
        logger.warning("dedup: huge duplicate cluster of %d documents (survivor %s); check for templated pages", size, key_id(key))
    return Fate(KEEP, size)


# --------------------------------------------------------------------------- 8. apply


def index_row(doc: dict) -> dict:
    """A kept document's row of the signature index."""
    return {"id": doc["id"], "source": doc["source"], "num_chars": int(doc["num_chars"]),
            "text_digest": doc["text_digest"], "signature": doc["signature"]}


def kept_row(doc: dict, fate: Fate) -> dict:
    """A kept document as a document row: the dedup columns dropped, ``dup_cluster_size`` set (in place)."""
    for extra in ("node_key", "text_digest", "signature"):
        doc.pop(extra, None)
    doc["dup_cluster_size"] = fate.cluster_size
    return doc


def rejected_row(doc: dict, fate: Fate) -> dict:
    """A rejected document as a row of ``rejected_schema()``; the text of a dedup rejection is kept whole."""
    if fate.rule == RULE_DUPLICATE_ID:
        from cpm.pipeline.records import Rejection
        from cpm.pipeline.rows import rejection_row

        return rejection_row(Rejection(doc["source"], fate.rule, doc["origin"], fate.detail, doc["id"], doc["text"], fate.duplicate_of))
    return {"id": doc["id"], "source": doc["source"], "rule": fate.rule, "detail": fate.detail,
            "duplicate_of": fate.duplicate_of, "origin": doc.get("origin") or "", "text": doc.get("text")}
