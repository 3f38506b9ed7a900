"""Each step of dedup (:mod:`cpm.pipeline.dedup`) alone, without Beam or files.

Expected values come from oracles written here: hand-computed fates, plain dicts and sets, a
breadth-first search for connected components, substring sets for Jaccard. The whole build:
``test_dedup.py``.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import defaultdict

import numpy as np
import pytest

from cpm.pipeline import dedup, minhash
from cpm.pipeline.dedup import (
    BAND_KEY_BYTES, KEEP, MAX_BUCKET_PAIRS, RULE_DUPLICATE_ID, RULE_EXACT, RULE_NEAR,
    Candidate, Components, DedupConfig, Edge, ExactEntry, ExactFate, Fate, Representative,
    band_entries, band_key_matrix, band_keys, band_partition, bucket_pairs, candidate_pairs, choose_fate,
    confirm_edges, connected_components, exact_groups, index_row, is_old, key_id, kept_row, node_key,
    rejected_row, route_candidate, shared_buckets, sign_documents,
)

NUM_PERM = 128


def random_text(rng: random.Random, length: int) -> str:
    return "".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(length))


def sig(seed: int, num_perm: int = NUM_PERM) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**32, size=num_perm, dtype=np.uint32)


# --------------------------------------------------------------------------- node keys


def test_node_keys_order_survivors():
    old_short = node_key("x", 10, None, old=True)
    new_long = node_key("y", 5000, "a.txt:1")
    new_short = node_key("z", 10, "a.txt:2")
    assert old_short < new_long < new_short
    assert key_id(new_long) == "y" and key_id(old_short) == "x"
    assert is_old(old_short) and not is_old(new_long)
    # equal lengths: the smaller BLAKE2b hash of the id first, then of the origin
    ids = ["a", "b", "c", "d"]
    by_hash = sorted(ids, key=lambda i: hashlib.blake2b(i.encode(), digest_size=8).hexdigest())
    assert sorted(ids, key=lambda i: node_key(i, 7, "o")) == by_hash
    origins = sorted(["f:1", "f:2", "f:3"], key=lambda o: hashlib.blake2b(o.encode(), digest_size=4).hexdigest())
    assert sorted(["f:1", "f:2", "f:3"], key=lambda o: node_key("same", 7, o)) == origins
    assert node_key("same", 7, None) < node_key("same", 7, origins[0])  # no origin: all zeros
    assert dedup.doc_node_key({"id": "y", "num_chars": 5000, "origin": "a.txt:1", "text": ""}) == new_long
    assert dedup.doc_node_key({"id": "q", "text": "甲乙丙"}) == node_key("q", 3, None)  # length from the text


def test_node_keys_clamp_lengths():
    assert node_key("a", 0, "o") == node_key("a", -5, "o") > node_key("a", 1, "o")  # 0 chars: the last, not below
    assert node_key("a", 2**40, "o") == node_key("a", 2**31 - 1, "o") < node_key("a", 2**31 - 2, "o")
    assert key_id(node_key("a", -5, "o")) == "a" and key_id(node_key("编号:1", 9, None)) == "编号:1"


# --------------------------------------------------------------------------- 1. sign


def test_signing_gives_each_text_its_signature_and_a_digest_of_its_hashing_form():
    texts = ["国家统计局今天发布数据，经济运行总体平稳。", "国家统计局今天发布数据,经济运行总体平稳.", "完全不同的一段文字内容在这里"]
    signed = sign_documents(texts, DedupConfig())
    assert [s.signature for s in signed] == [minhash.signature(t).tobytes() for t in texts]
    assert signed[0].digest == signed[1].digest != signed[2].digest  # width/punctuation folded
    assert len(signed[0].digest) == 16
    small = sign_documents(texts[:1], DedupConfig(num_perm=16, ngram=3, seed=4))[0]
    assert small.signature == minhash.signature(texts[0], 16, 3, 4).tobytes()


# --------------------------------------------------------------------------- 2. exact


def test_exact_groups_pick_the_smallest_key_and_count_new_members():
    a1, a2, a3 = (node_key(f"a{i}", 100 - i, "o") for i in range(3))  # a1 < a2 < a3 (longest first)
    old = node_key("old", 5, None, old=True)
    lone, old_only = node_key("lone", 50, "o"), node_key("gone", 5, None, old=True)
    entries = [
        ExactEntry(b"A", a3, 1, 7, b"s-a3"), ExactEntry(b"A", a1, 0, 2, b"s-a1"), ExactEntry(b"A", a2, 1, 0, b"s-a2"),
        ExactEntry(b"B", node_key("b", 900, "o"), 0, 5, b"s-b"), ExactEntry(b"B", old, 9, 0, b"s-old"),
        ExactEntry(b"C", lone, 1, 3, b"s-lone"),
        ExactEntry(b"D", old_only, 9, 1, b"s-gone"),
    ]
    groups = exact_groups(reversed(entries))
    assert groups.representatives == [  # in digest order
        Representative(0, 2, b"s-a1", 3), Representative(9, 0, b"s-old", 1),
        Representative(1, 3, b"s-lone", 1), Representative(9, 1, b"s-gone", 0),
    ]
    fates = {chunk: sorted(f) for chunk, f in groups.fates.items()}
    assert fates == {
        0: [ExactFate(2, a1, 3), ExactFate(5, old, 0)],  # a new copy of an old document points at it
        1: [ExactFate(0, a1, 0), ExactFate(3, lone, 1), ExactFate(7, a1, 0)],
    }
    assert exact_groups([]) == ([], {})


# --------------------------------------------------------------------------- 3. band keys


def test_band_keys_name_their_band_and_change_with_its_rows_only():
    bands, rows = 25, 5
    base = sig(0)
    keys = band_keys(base, bands, rows)
    assert len(keys) == bands and all(len(k) == BAND_KEY_BYTES for k in keys)
    assert [int.from_bytes(k[:2], "big") for k in keys] == list(range(bands))
    assert len(set(k[2:] for k in keys)) == bands  # different rows, different hashes
    for band in (0, 7, 24):
        for row in range(rows):
            changed = base.copy()
            changed[band * rows + row] ^= 1
            other = band_keys(changed, bands, rows)
            assert [i for i in range(bands) if other[i] != keys[i]] == [band]
    tail = base.copy()
    tail[bands * rows :] ^= 1  # min-hashes beyond bands x rows are in no band
    assert band_keys(tail, bands, rows) == keys
    matrix = band_key_matrix(np.stack([base, tail, sig(1)]), bands, rows)
    assert matrix.shape == (3, bands, BAND_KEY_BYTES) and [m.tobytes() for m in matrix[0]] == keys


def test_band_entries_put_every_band_of_every_representative_in_its_partition():
    bands, rows, partitions = 25, 5, 7
    reps = [Representative(c, r, sig(10 + i).tobytes(), m) for i, (c, r, m) in enumerate([(0, 4, 2), (3, 1, 1), (1, 0, 0)])]
    out = band_entries(reps, bands, rows, partitions)
    seen = []
    for part, entries in out.items():
        assert (band_partition(entries.keys, partitions) == part).all()
        for key, chunk, row, mult in zip(entries.keys, entries.chunks, entries.rows, entries.multiplicities):
            seen.append((key.tobytes(), int(chunk), int(row), int(mult)))
            assert int.from_bytes(key.tobytes()[2:6], "little") % partitions == part
    expected = [(k, r.chunk, r.row, r.multiplicity) for r in reps for k in band_keys(np.frombuffer(r.signature, np.uint32), bands, rows)]
    assert sorted(seen) == sorted(expected)
    assert band_entries([], bands, rows, partitions) == {}


# --------------------------------------------------------------------------- 4. candidates


def test_shared_buckets_are_the_keys_met_at_least_twice():
    rng = random.Random(2)
    pool = [bytes(rng.randrange(256) for _ in range(BAND_KEY_BYTES)) for _ in range(30)]
    keys = [rng.choice(pool) for _ in range(60)]
    expected = defaultdict(list)
    for i, key in enumerate(keys):
        expected[key].append(i)
    matrix = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), BAND_KEY_BYTES)
    found = [bucket.tolist() for bucket in shared_buckets(matrix)]
    assert found == [expected[k] for k in sorted(expected) if len(expected[k]) >= 2]
    assert list(shared_buckets(matrix[[0]])) == []


def test_bucket_pairs_compare_every_pair_of_a_small_bucket_with_its_estimate():
    """All pairs of a bucket at most MAX_BUCKET_PAIRS large, against the share of equal min-hashes
    computed pair by pair."""
    rng = np.random.default_rng(4)
    base = rng.integers(0, 2**32, size=NUM_PERM, dtype=np.uint32)
    members = []
    for i in range(12):
        s = base.copy()
        s[rng.choice(NUM_PERM, size=int(rng.integers(0, 60)), replace=False)] += 1
        members.append((node_key(f"m{i}", 10 + i % 3, "o"), s.tobytes()))
    members.append((node_key("old", 5, None, old=True), base.tobytes()))
    for threshold in (0.6, 0.75, 0.9):
        expected = set()
        for i, (ka, sa) in enumerate(members):
            for kb, sb in members[i + 1 :]:
                estimate = float((np.frombuffer(sa, np.uint32) == np.frombuffer(sb, np.uint32)).mean())
                if estimate >= threshold and not (is_old(ka) and is_old(kb)):
                    expected.add((min(ka, kb), max(ka, kb), estimate))
        assert set(bucket_pairs(members, threshold, NUM_PERM)) == expected
    at = base.copy()
    at[:32] += 1  # 96 of 128 min-hashes equal: an estimate of exactly 0.75
    new, other = node_key("n", 10, "o"), node_key("m", 10, "o")
    assert list(bucket_pairs([(new, base.tobytes()), (other, at.tobytes())], 0.75, 128)) == [
        (min(new, other), max(new, other), 0.75)]  # at the threshold: a pair
    assert list(bucket_pairs([(new, base.tobytes()), (other, at.tobytes())], 0.76, 128)) == []


def test_candidate_pairs_are_unique_and_sorted_across_buckets():
    s = sig(3).tobytes()
    x, y, z = (node_key(i, 10, "o") for i in "xyz")
    buckets = [[(y, s), (x, s)], [(x, s), (y, s), (z, s)], [(z, s)]]
    expected = sorted({(min(p), max(p), 1.0) for p in [(x, y), (x, z), (y, z)]})
    assert candidate_pairs(buckets, 0.8, NUM_PERM) == expected
    assert candidate_pairs([], 0.8, NUM_PERM) == []


# --------------------------------------------------------------------------- 5. confirm


def test_route_candidate_by_estimate_band_and_age():
    new_a, new_b, old = node_key("a", 10, "o"), node_key("b", 10, "o"), node_key("c", 10, None, old=True)
    assert route_candidate(Candidate(new_a, new_b, 0.95), 0.8, 0.94) == dedup.ACCEPT
    assert route_candidate(Candidate(new_a, new_b, 0.94), 0.8, 0.94) == dedup.ACCEPT  # the upper end accepts
    assert route_candidate(Candidate(new_a, new_b, 0.9399), 0.8, 0.94) == dedup.EXACT
    assert route_candidate(Candidate(new_a, new_b, 0.7), 0.8, 0.94) == dedup.EXACT
    assert route_candidate(Candidate(old, new_a, 0.8), 0.8, 0.94) == dedup.ACCEPT  # an old document: estimate alone
    assert route_candidate(Candidate(old, new_a, 0.79), 0.8, 0.94) == dedup.REJECT
    assert route_candidate(Candidate(new_a, old, 0.95), 0.8, 0.94) == dedup.ACCEPT
    assert route_candidate(Candidate(new_a, old, 0.5), 0.8, 0.94) == dedup.REJECT


def substring_jaccard(a: str, b: str, n: int = 5) -> float:
    """Jaccard of the sets of n-character substrings (texts without punctuation or whitespace)."""
    sa = {a[i : i + n] for i in range(len(a) - n + 1)}
    sb = {b[i : i + n] for i in range(len(b) - n + 1)}
    return len(sa & sb) / len(sa | sb)


def test_confirm_edges_decide_borderline_pairs_by_exact_jaccard():
    rng = random.Random(8)
    base = minhash.normalize_for_hash(random_text(rng, 1200))  # the hashing form: Jaccard of plain substrings
    texts = {
        node_key("dup", 1100, "o"): base[:1100],
        node_key("dup-cut", 1000, "o"): base[:1000],  # J with dup 0.91
        node_key("far", 900, "o"): base[:900],  # 0.82 with dup, 0.90 with dup-cut
        node_key("shifted", 1100, "o"): base[100:1200],  # 0.83 with dup
        node_key("below", 800, "o"): base[:800],  # 0.73 with dup, 0.89 with far
    }
    keys = sorted(texts)
    old = node_key("old", 5, None, old=True)
    candidates = sorted([Candidate(a, b, 0.75) for i, a in enumerate(keys) for b in keys[i + 1 :]] + [
        Candidate(old, keys[0], 0.85), Candidate(old, keys[1], 0.7)])
    calls = []

    def fetch(wanted):
        calls.append(list(wanted))
        return {k: texts[k] for k in wanted}

    config = DedupConfig()
    confirmed = confirm_edges(candidates, config, fetch)
    expected = [Edge(c.a, c.b) for c in candidates if (c.a == old and c.estimate >= 0.8)
                or (c.a != old and substring_jaccard(texts[c.a], texts[c.b]) >= 0.8)]
    assert confirmed.edges == expected and confirmed.borderline == len(keys) * (len(keys) - 1) // 2
    assert confirmed.by_exact == len([e for e in expected if e.a != old])
    assert len(calls) == 1 and set(calls[0]) == set(keys) and old not in calls[0]  # one fetch, texts of new documents only
    # above the band: accepted by the estimate, no text needed
    sure = [Candidate(keys[0], keys[4], 0.95)]
    assert confirm_edges(sure, config, fetch) == ([Edge(keys[0], keys[4])], 0, 0) and calls[-1] == []
    # exact_jaccard: every candidate is checked, however high its estimate
    below, dup = node_key("below", 800, "o"), node_key("dup", 1100, "o")
    strict = confirm_edges([Candidate(min(below, dup), max(below, dup), 0.99)], DedupConfig(exact_jaccard=True), fetch)
    assert strict == ([], 1, 0) and substring_jaccard(texts[below], texts[dup]) < 0.8


def test_an_exact_jaccard_equal_to_the_threshold_is_a_duplicate():
    base = minhash.normalize_for_hash(random_text(random.Random(13), 1004))
    a, b = node_key("a", 1004, "o"), node_key("b", 804, "o")
    texts = {a: base, b: base[:804]}  # 800 of 1000 five-grams: J = 0.8 exactly
    assert substring_jaccard(base, base[:804]) == 0.8
    confirmed = confirm_edges([Candidate(a, b, 0.75)], DedupConfig(), lambda keys: {k: texts[k] for k in keys})
    assert confirmed == ([Edge(a, b)], 1, 1)


def test_confirm_edges_uses_the_configured_ngram_and_threshold():
    rng = random.Random(12)
    base = minhash.normalize_for_hash(random_text(rng, 600))
    a, b = node_key("a", 600, "o"), node_key("b", 540, "o")
    texts = {a: base, b: base[:540]}
    for ngram, threshold in [(3, 0.9), (5, 0.9), (8, 0.85), (8, 0.95)]:
        config = DedupConfig(ngram=ngram, threshold=threshold)
        expected = substring_jaccard(base, base[:540], ngram) >= threshold
        confirmed = confirm_edges([Candidate(a, b, threshold - 0.01)], config, lambda keys: {k: texts[k] for k in keys})
        assert confirmed == (([Edge(a, b)] if expected else []), 1, int(expected)), (ngram, threshold)


# --------------------------------------------------------------------------- 6. components


def bfs_components(edges: list[tuple[str, str]]) -> list[set[str]]:
    neighbours = defaultdict(set)
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    seen: set[str] = set()
    out = []
    for start in sorted(neighbours):
        if start in seen:
            continue
        component, queue = {start}, [start]
        while queue:
            for other in neighbours[queue.pop()]:
                if other not in component:
                    component.add(other)
                    queue.append(other)
        seen |= component
        out.append(component)
    return out


def test_connected_components_label_every_node_with_its_smallest_and_sum_multiplicities():
    rng = random.Random(5)
    nodes = sorted({f"{rng.randrange(10**6):07d}" for _ in range(300)})
    edges = [tuple(rng.sample(nodes, 2)) for _ in range(220)]
    mult = {n: rng.randrange(0, 4) for n in nodes if rng.random() < 0.9}
    labels, sizes = connected_components(edges, mult)
    expected_labels, expected_sizes = {}, {}
    for component in bfs_components(edges):
        root = min(component)
        expected_labels.update({n: root for n in component if n != root})
        expected_sizes[root] = sum(mult.get(n, 0) for n in component)
    assert labels == expected_labels and sizes == expected_sizes


def test_a_long_path_converges_to_one_component():
    nodes = [f"n{i:05d}" for i in range(3000)]
    order = nodes[:]
    random.Random(1).shuffle(order)  # a path whose node order is unrelated to the key order
    edges = list(zip(order, order[1:]))
    labels, sizes = connected_components(reversed(edges), dict.fromkeys(nodes, 1))
    assert set(labels.values()) == {"n00000"} and len(labels) == 2999 and sizes == {"n00000": 3000}
    assert connected_components([], {}) == ({}, {})


# --------------------------------------------------------------------------- 7. fates


def test_choose_fate_of_every_kind():
    config = DedupConfig()
    survivor, rep, member, near = (node_key(i, 100, "o") for i in ("survivor", "rep", "member", "near"))
    components = Components({rep: survivor, near: survivor}, {survivor: 7})
    detail = "character 5-gram Jaccard >= 0.8 (num_perm=128) with a document of its cluster"
    assert choose_fate(member, "f.jsonl:3", ExactFate(0, rep, 0), components, config) == Fate(
        RULE_DUPLICATE_ID, 1, "member", "id also at f.jsonl:3")  # a repeated id comes first
    assert choose_fate(member, None, ExactFate(0, rep, 0), components, config) == Fate(
        RULE_EXACT, 1, "survivor", "exact copy of rep after normalisation")  # the cluster's survivor, not its rep
    assert choose_fate(member, None, ExactFate(0, near, 0), Components({}, {}), config) == Fate(
        RULE_EXACT, 1, "near", "exact copy of near after normalisation")
    assert choose_fate(near, None, ExactFate(0, near, 2), components, config) == Fate(RULE_NEAR, 1, "survivor", detail)
    assert choose_fate(survivor, None, ExactFate(0, survivor, 3), components, config) == Fate(KEEP, 7)
    assert choose_fate(rep, None, ExactFate(0, rep, 3), Components({}, {}), config) == Fate(KEEP, 3)  # exact copies only
    assert choose_fate(rep, None, None, components, config) == Fate(KEEP, 1)  # no exact group: kept, never lost
    assert choose_fate(rep, None, ExactFate(0, member, 0), components, None) == Fate(KEEP, 1)  # no dedup
    assert Fate().kept and not Fate(RULE_NEAR).kept
    other = DedupConfig(threshold=0.7, num_perm=64, ngram=4)
    assert choose_fate(near, None, ExactFate(0, near, 1), components, other).detail == (
        "character 4-gram Jaccard >= 0.7 (num_perm=64) with a document of its cluster")


def test_huge_clusters_are_logged(caplog):
    key = node_key("big", 100, "o")
    with caplog.at_level(logging.WARNING, logger="cpm.pipeline.dedup"):
        choose_fate(key, None, ExactFate(0, key, 4), Components({}, {key: 5}), DedupConfig(huge_cluster=6))
        assert caplog.text == ""
        choose_fate(key, None, ExactFate(0, key, 4), Components({}, {key: 5}), DedupConfig(huge_cluster=5))
    assert "huge duplicate cluster of 5 documents (survivor big)" in caplog.text


# --------------------------------------------------------------------------- 8. apply


def test_fates_applied_to_document_rows():
    from cpm.pipeline.rows import MAX_REJECTED_TEXT_CHARS

    doc = {"id": "d", "source": "news", "text": "甲" * (MAX_REJECTED_TEXT_CHARS + 5), "num_chars": MAX_REJECTED_TEXT_CHARS + 5,
           "origin": "f:1", "node_key": "k", "text_digest": b"\x01" * 16, "signature": b"\x02" * 8}
    assert index_row(doc) == {"id": "d", "source": "news", "num_chars": MAX_REJECTED_TEXT_CHARS + 5,
                              "text_digest": b"\x01" * 16, "signature": b"\x02" * 8}
    near = rejected_row(doc, Fate(RULE_NEAR, 1, "s", "why"))
    assert near == {"id": "d", "source": "news", "rule": RULE_NEAR, "detail": "why", "duplicate_of": "s",
                    "origin": "f:1", "text": doc["text"]}  # the whole text
    repeated = rejected_row(doc, Fate(RULE_DUPLICATE_ID, 1, "d", "id also at f:0"))
    assert (repeated["rule"], repeated["detail"], repeated["duplicate_of"], repeated["origin"]) == (
        RULE_DUPLICATE_ID, "id also at f:0", "d", "f:1")
    assert repeated["text"] == doc["text"][:MAX_REJECTED_TEXT_CHARS]
    assert rejected_row({**doc, "origin": None}, Fate(RULE_EXACT, 1, "s", "why"))["origin"] == ""
    kept = kept_row(dict(doc), Fate(KEEP, 4))
    assert kept == {"id": "d", "source": "news", "text": doc["text"], "num_chars": doc["num_chars"], "origin": "f:1",
                    "dup_cluster_size": 4}


@pytest.mark.parametrize("bad", [{"threshold": 0.0}, {"threshold": 1.0}, {"num_perm": 7}, {"num_perm": 1025}, {"ngram": 0},
                                 {"ngram": 65}, {"lsh_recall": 0.49}, {"lsh_recall": 1.0}, {"borderline_sigmas": -0.1}])
def test_config_validation(bad):
    from cpm.errors import CpmError

    with pytest.raises(CpmError):
        DedupConfig(**bad).validate()


def test_config_bounds_and_bands_are_accepted():
    for good in [{"threshold": 0.01}, {"threshold": 0.99}, {"num_perm": 8}, {"num_perm": 1024}, {"ngram": 1}, {"ngram": 64},
                 {"lsh_recall": 0.5}, {"borderline_sigmas": 0.0}]:
        DedupConfig(**good).validate()
    config = DedupConfig()
    low, high = config.exact_band
    margin = 4 * (0.8 * 0.2 / 128) ** 0.5
    assert (low, high) == pytest.approx((0.8 - margin, 0.8 + margin))
    assert DedupConfig(exact_jaccard=True).exact_band == (pytest.approx(0.8 - margin), 2.0)
    assert DedupConfig(threshold=0.05, borderline_sigmas=10).exact_band[0] == 0.0
    assert config.bands == (25, 5)
    assert config.index_metadata() == {"ngram": "5", "seed": "1", "hash_scheme": minhash.HASH_SCHEME}


def test_a_config_cannot_change_once_made():
    """One config is shared by every task of a build (and pickled to its workers)."""
    from dataclasses import FrozenInstanceError

    config = DedupConfig()
    with pytest.raises(FrozenInstanceError):
        config.threshold = 0.5  # type: ignore[misc]
    assert hash(config) == hash(DedupConfig()) and config == DedupConfig() != DedupConfig(ngram=4)


def test_defaults_are_the_documented_ones():
    """docs/dedup.md and the ``config`` block of every ``dedup/index.json`` written so far."""
    from dataclasses import asdict

    assert asdict(DedupConfig()) == {
        "enabled": True, "threshold": 0.8, "num_perm": 128, "ngram": 5, "against": (), "exact_jaccard": False,
        "seed": 1, "lsh_recall": 0.999, "borderline_sigmas": 4.0, "cc_rounds": 10, "huge_cluster": 1000,
    }
    assert MAX_BUCKET_PAIRS == 64 and BAND_KEY_BYTES == 10


# --------------------------------------------------------------------------- the slowest tests last (mutation runs stop at the first failure)


def test_bucket_pairs_bounds_work_in_large_buckets():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**32, size=128, dtype=np.uint32)
    count = MAX_BUCKET_PAIRS + 300
    members = [(node_key(f"d{i}", 100, "o"), base.tobytes()) for i in range(count)]
    random.Random(0).shuffle(members)
    pairs = list(bucket_pairs(members, 0.8, 128))
    assert len(pairs) == MAX_BUCKET_PAIRS * (MAX_BUCKET_PAIRS - 1) // 2 + (count - MAX_BUCKET_PAIRS) * MAX_BUCKET_PAIRS
    assert len(set((a, b) for a, b, _ in pairs)) == len(pairs) and all(a < b for a, b, _ in pairs)
    assert sorted(pairs) == sorted(bucket_pairs(list(reversed(members)), 0.8, 128))  # any member order
    pivots = sorted(k for k, _ in members)[:MAX_BUCKET_PAIRS]
    assert {a for a, _, _ in pairs} == set(pivots[:-1]) | set(pivots)  # every pair involves a pivot
    old = [(node_key("o1", 5, None, old=True), base.tobytes()), (node_key("o2", 5, None, old=True), base.tobytes())]
    assert list(bucket_pairs(old, 0.8, 128)) == []  # old documents never pair with each other
    other = rng.integers(0, 2**32, size=128, dtype=np.uint32)
    assert list(bucket_pairs([members[0], ("z", other.tobytes())], 0.8, 128)) == []  # below the threshold
    (a, _), (b, _) = sorted(members[:2])
    assert list(bucket_pairs(members[:2], 0.8, 128)) == [(a, b, 1.0)]  # the smallest bucket: one pair
    assert list(bucket_pairs(members[:1], 0.8, 128)) == []


def test_bucket_pairs_in_a_large_bucket_compare_every_member_with_every_pivot():
    """Beyond MAX_BUCKET_PAIRS members: pivot pairs, then each later member (in blocks) with each pivot."""
    rng = np.random.default_rng(5)
    base = rng.integers(0, 2**32, size=NUM_PERM, dtype=np.uint32)
    members = []
    for i in range(MAX_BUCKET_PAIRS + 600):  # more than two blocks beyond the pivots
        s = base.copy()
        s[rng.choice(NUM_PERM, size=int(rng.integers(0, 50)), replace=False)] += 1
        members.append((node_key(f"d{i:04d}", 100, "o"), s.tobytes()))
    pivots = sorted(members)[:MAX_BUCKET_PAIRS]
    expected = set()
    for ka, sa in pivots:
        for kb, sb in members:
            estimate = float((np.frombuffer(sa, np.uint32) == np.frombuffer(sb, np.uint32)).mean())
            if ka < kb and estimate >= 0.7:
                expected.add((ka, kb, estimate))
    assert set(bucket_pairs(members, 0.7, NUM_PERM)) == expected
