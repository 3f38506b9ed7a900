"""Exact and near-duplicate removal (``cpm.pipeline.dedup``) on the Beam DirectRunner.

Pipeline runs are few and shared through module fixtures: one in-process run, the same
documents shuffled on two worker processes, a ``--against`` run on top of the first output,
and a ``--no-dedup`` run.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from cpm.errors import CpmError
from cpm.pipeline import minhash
from cpm.pipeline.dedup import (
    MAX_BUCKET_PAIRS,
    RULE_EXACT,
    RULE_NEAR,
    BloomFilter,
    DedupConfig,
    Deduplicate,
    band_keys,
    bloom_contains,
    bucket_pairs,
    key_id,
    large_star,
    node_key,
    small_star,
)
from cpm.schemas import rejected_schema
from cpm.shards.io import read_table

ARTICLE = (
    "国家统计局今天发布数据，今年前三季度国内生产总值同比增长百分之七点八，经济运行总体平稳。"
    "专家认为，消费对经济增长的贡献继续提高，发展的协调性进一步增强。\n"
    "与此同时，各地加快推进产业结构调整，高新技术产业保持较快增长，就业形势基本稳定，居民收入稳步提高。\n"
    "在农村，粮食生产再获丰收，农民人均纯收入实际增长百分之六，农村基础设施建设不断加强，"
    "义务教育和基本医疗保障水平进一步提高，城乡差距有所缩小。\n"
    "国务院常务会议强调，要继续实施积极的财政政策和稳健的货币政策，保持政策的连续性和稳定性，"
    "着力扩大国内需求，推动经济平稳较快发展。"
)
BOILERPLATE = "\n（责任编辑：王晓明）本文来源：人民网"


def random_text(rng: random.Random, length: int) -> str:
    return "".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(length))


def make_doc(doc_id: str, text: str, source: str = "news") -> dict:
    return {"id": doc_id, "source": source, "text": text, "num_chars": len(text), "origin": f"input-{source}.jsonl:{doc_id}"}


def fixture_docs() -> list[dict]:
    import opencc

    rng = random.Random(7)
    docs = [
        make_doc("art", ARTICLE),
        make_doc("art-copy", ARTICLE),
        make_doc("art-halfwidth", ARTICLE.replace("，", ",").replace("。", ".")),
        make_doc("art-traditional", opencc.OpenCC("s2t").convert(ARTICLE)),
        make_doc("art-reflowed", "　　" + ARTICLE.replace("\n", "\n\n　　")),
        make_doc("art-web", ARTICLE + BOILERPLATE, source="webpage"),  # cross-source and the longest
    ]
    # a chain: J(a, b) ~ J(b, c) ~ 0.85 but J(a, c) ~ 0.7 < threshold
    chain = random_text(rng, 1300)
    docs += [make_doc("chain-a", chain[0:1000]), make_doc("chain-b", chain[80:1080]), make_doc("chain-c", chain[160:1160])]
    # a near duplicate with 1% typos, from another source
    story = random_text(rng, 800)
    typos = list(story)
    for k in rng.sample(range(len(typos)), 8):
        typos[k] = "错"
    docs += [make_doc("story", story, source="story"), make_doc("story-typos", "".join(typos), source="encyclopedia")]
    # borderline pairs (parameters found once by search; test_borderline_* checks the premise):
    # MinHash estimate 0.727 with exact Jaccard 0.812 (a duplicate), 0.797 with 0.742 and 0.836 with 0.777 (not)
    above, below, over = (random_text(random.Random(seed), 1000) for seed in (21, 22, 23))
    docs += [make_doc("border-above", above), make_doc("border-above-cut", above[:282] + above[462:])]
    docs += [make_doc("border-below", below), make_doc("border-below-cut", below[:261] + below[511:])]
    docs += [make_doc("border-over", over), make_doc("border-over-cut", over[:317] + over[532:])]
    # unique documents, some sharing a long template (J well below the threshold)
    template_head, template_tail = random_text(rng, 150), random_text(rng, 150)
    docs += [make_doc(f"unique-{i}", random_text(rng, rng.randrange(200, 900))) for i in range(20)]
    docs += [make_doc(f"templated-{i}", template_head + random_text(rng, 700) + template_tail, "webpage") for i in range(6)]
    return docs


def run_dedup(docs: list[dict], output_dir: Path, config: DedupConfig = DedupConfig(), args: tuple[str, ...] = ()) -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    results = output_dir.parent / f"{output_dir.name}-results"
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", *args])) as pipeline:
        out = pipeline | beam.Create(docs) | Deduplicate(config, str(output_dir))
        for name in ("kept", "rejected", "stats"):
            _ = (
                getattr(out, name)
                | f"{name}Json" >> beam.Map(lambda row: json.dumps(row, sort_keys=True, ensure_ascii=False, default=str))
                | f"{name}Write" >> beam.io.WriteToText(str(results / name))
            )

    def load(name: str) -> list[dict]:
        return [json.loads(line) for path in sorted(results.glob(f"{name}-*")) for line in path.read_text().splitlines()]

    return {
        "kept": {row["id"]: row for row in load("kept")},
        "rejected": {row["id"]: row for row in load("rejected")},
        "stats": load("stats"),
        "index": sorted((output_dir / "dedup").glob("signatures-*.minhash")),
    }


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return fixture_docs()


@pytest.fixture(scope="module")
def first(tmp_path_factory, docs) -> dict:
    out = tmp_path_factory.mktemp("first") / "build"
    return {"dir": out, **run_dedup(docs, out)}


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory, docs) -> dict:
    out = tmp_path_factory.mktemp("shuffled") / "build"
    order = list(reversed(docs))
    random.Random(1).shuffle(order)
    args = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
    return {"dir": out, **run_dedup(order, out, args=args)}


def by_id(result: dict, doc_id: str) -> dict:
    """The row of ``doc_id``, kept or rejected."""
    return result["kept"].get(doc_id) or result["rejected"][doc_id]


def survivor_of(result: dict, doc_id: str) -> str:
    return doc_id if doc_id in result["kept"] else result["rejected"][doc_id]["duplicate_of"]


# --------------------------------------------------------------------------- Beam runs


def test_accounting_and_rejected_rows(first, docs):
    kept, rejected = first["kept"], first["rejected"]
    assert len(kept) + len(rejected) == len(docs)
    assert set(kept) | set(rejected) == {d["id"] for d in docs} and not set(kept) & set(rejected)
    fields = {f.name for f in rejected_schema()}
    by_id = {d["id"]: d for d in docs}
    for row in rejected.values():
        assert set(row) == fields
        assert row["rule"] in (RULE_EXACT, RULE_NEAR)
        assert row["duplicate_of"] in kept  # always a survivor, never another rejected document
        assert (row["text"], row["source"], row["origin"]) == (by_id[row["id"]]["text"], by_id[row["id"]]["source"], by_id[row["id"]]["origin"])
    for row in kept.values():
        assert row["text"] == by_id[row["id"]]["text"]  # the stored text is never normalised
    assert sum(row["dup_cluster_size"] for row in kept.values()) == len(docs)


def test_reposts_collapse_to_one_survivor_chosen_by_the_rule(first):
    kept, rejected = first["kept"], first["rejected"]
    family = ["art", "art-copy", "art-halfwidth", "art-traditional", "art-reflowed", "art-web"]
    assert {survivor_of(first, d) for d in family} == {"art-web"}  # longest text, and from another source
    assert kept["art-web"]["dup_cluster_size"] == 6
    # punctuation, script and whitespace variants are exact duplicates of the normalised text: the
    # group's first node (the longest text) is its representative, a near duplicate of art-web;
    # the four others are exact duplicates
    exact_group = ["art", "art-copy", "art-halfwidth", "art-traditional", "art-reflowed"]
    assert len({minhash.normalize_for_hash(by_id(first, d)["text"]) for d in exact_group}) == 1
    assert max(exact_group, key=lambda d: len(by_id(first, d)["text"])) == "art-reflowed"
    assert rejected["art-reflowed"]["rule"] == RULE_NEAR
    assert {d: rejected[d]["rule"] for d in exact_group if d != "art-reflowed"} == dict.fromkeys(
        ["art", "art-copy", "art-halfwidth", "art-traditional"], RULE_EXACT)
    assert {rejected[d]["duplicate_of"] for d in exact_group} == {"art-web"}
    # cross-source near duplicate with 1% typos: equal length, so the smaller id hash survives
    pair = sorted(["story", "story-typos"], key=lambda i: hashlib.blake2b(i.encode(), digest_size=8).hexdigest())
    assert survivor_of(first, "story-typos") == survivor_of(first, "story") == pair[0]
    assert rejected[pair[1]]["rule"] == RULE_NEAR and kept[pair[0]]["dup_cluster_size"] == 2


def test_chain_is_one_cluster_with_one_survivor(first):
    a, b, c = (minhash.signature(first_text) for first_text in _chain_texts())
    assert minhash.exact_jaccard(*_chain_texts()[:2]) >= 0.8 and minhash.exact_jaccard(*_chain_texts()[1:]) >= 0.8
    assert minhash.exact_jaccard(_chain_texts()[0], _chain_texts()[2]) < 0.75
    assert minhash.estimated_jaccard(a, c) < 0.8
    survivors = {survivor_of(first, d) for d in ("chain-a", "chain-b", "chain-c")}
    assert len(survivors) == 1
    (survivor,) = survivors
    assert first["kept"][survivor]["dup_cluster_size"] == 3
    best = min(("chain-a", "chain-b", "chain-c"), key=lambda i: hashlib.blake2b(i.encode(), digest_size=8).hexdigest())
    assert survivor == best  # equal lengths: smallest id hash


def _chain_texts() -> list[str]:
    by_id = {d["id"]: d["text"] for d in fixture_docs()}
    return [by_id["chain-a"], by_id["chain-b"], by_id["chain-c"]]


def test_borderline_estimate_is_confirmed_by_exact_jaccard(first, docs, tmp_path):
    config = DedupConfig()
    low, high = config.exact_band
    assert 0.65 < low < 0.7 and high - config.threshold == pytest.approx(config.threshold - low)  # +-4 std at 0.8, 128 perms
    texts = {d["id"]: d["text"] for d in docs}
    bands, rows = config.bands
    cases = [("border-above", "border-above-cut", "under", True), ("border-below", "border-below-cut", "under", False)]
    cases += [("border-over", "border-over-cut", "over", False)]
    for a, b, side, duplicate in cases:
        sig_a, sig_b = minhash.signature(texts[a]), minhash.signature(texts[b])
        estimate = minhash.estimated_jaccard(sig_a, sig_b)
        assert low <= estimate < high and (estimate >= config.threshold) == (side == "over")  # the premise
        assert (minhash.exact_jaccard(texts[a], texts[b]) >= config.threshold) is duplicate
        assert set(band_keys(sig_a, bands, rows)) & set(band_keys(sig_b, bands, rows))  # an LSH candidate
    rejected = first["rejected"]["border-above-cut"]
    assert rejected["rule"] == RULE_NEAR and rejected["duplicate_of"] == "border-above"  # the longer text survives
    assert first["kept"]["border-above"]["dup_cluster_size"] == 2
    for doc_id in ("border-below", "border-below-cut", "border-over", "border-over-cut"):
        assert first["kept"][doc_id]["dup_cluster_size"] == 1

    border = [d for d in docs if d["id"].startswith("border-")]
    estimate_only = run_dedup(border, tmp_path / "estimate-only", DedupConfig(borderline_sigmas=0.0))
    # what estimate-only confirmation got wrong: kept a duplicate, merged a non-duplicate
    assert set(estimate_only["kept"]) == {d["id"] for d in border} - {"border-over-cut"}
    every_pair_exact = run_dedup(border, tmp_path / "exact", DedupConfig(exact_jaccard=True))
    assert set(every_pair_exact["kept"]) == {d["id"] for d in border} - {"border-above-cut"}


def test_bloom_filter_has_no_false_negatives_and_merges():
    keys = [node_key(f"doc-{i}", 100 + i, "o") for i in range(2000)]
    combine = BloomFilter()
    parts = [combine.create_accumulator(), combine.create_accumulator()]
    for i, key in enumerate(keys):
        parts[i % 2] = combine.add_input(parts[i % 2], key)
    bits = combine.extract_output(combine.merge_accumulators(parts))
    assert all(bloom_contains(bits, key) for key in keys)
    others = [node_key(f"other-{i}", 100, "o") for i in range(2000)]
    assert sum(bloom_contains(bits, key) for key in others) <= 2  # ~1e-9 false-positive rate at 2,000 keys
    assert combine.extract_output(combine.create_accumulator()) == b"" and not bloom_contains(b"", keys[0])


def test_unique_and_template_sharing_documents_survive(first, docs):
    for doc in docs:
        if doc["id"].startswith(("unique-", "templated-")):
            assert first["kept"][doc["id"]]["dup_cluster_size"] == 1


def test_stats_and_signature_index(first):
    (stats,) = first["stats"]
    assert stats["largest_cluster"] == {"survivor": "art-web", "size": 6}
    assert stats["kept"] == len(first["kept"])
    assert stats["exact_duplicates"] + stats["near_duplicates"] == len(first["rejected"])
    assert stats["unconverged_nodes"] == 0
    assert json.loads((first["dir"] / "dedup" / "index.json").read_text())["shards"] == stats["shards"]
    table = read_table(first["index"][0], "signatures")
    ids = table.column("id").to_pylist()
    assert sorted(ids) == ids and set(ids) == set(first["kept"])
    kept_text = first["kept"]["art-web"]["text"]
    row = ids.index("art-web")
    np.testing.assert_array_equal(np.array(table.column("signature")[row].as_py(), dtype=np.uint32), minhash.signature(kept_text))


def test_same_result_for_any_input_order_and_worker_count(first, shuffled):
    assert shuffled["kept"] == first["kept"]
    assert shuffled["rejected"] == first["rejected"]
    assert [p.name for p in shuffled["index"]] == [p.name for p in first["index"]]
    for a, b in zip(first["index"], shuffled["index"]):
        assert a.read_bytes() == b.read_bytes()
    assert (first["dir"] / "dedup" / "index.json").read_bytes() == (shuffled["dir"] / "dedup" / "index.json").read_bytes()


def test_against_removes_new_copies_of_old_documents_only(tmp_path, first, docs, caplog):
    import logging

    import opencc

    rng = random.Random(11)
    fresh = random_text(rng, 600)
    new_docs = [
        make_doc("new-art", opencc.OpenCC("s2t").convert(ARTICLE + BOILERPLATE), "webpage"),  # exact after normalisation
        make_doc("new-chain", random_text(random.Random(0), 5) + _chain_texts()[1][5:]),  # near copy of the old chain survivor's neighbour
        make_doc("new-unique", fresh),
        make_doc("new-unique-copy", fresh + "。"),
        make_doc("unique-0", next(d["text"] for d in docs if d["id"] == "unique-0") + "补充说明这是一段较长的新增内容" * 3),  # old id, new text
    ]
    with caplog.at_level(logging.WARNING, logger="cpm.pipeline.dedup"):
        result = run_dedup(new_docs, tmp_path / "second", DedupConfig(against=(str(first["dir"]),), huge_cluster=2))
    assert "huge duplicate cluster of 2 documents" in caplog.text  # the warning threshold is lowered to 2 here
    rejected, kept = result["rejected"], result["kept"]
    assert rejected["new-art"]["rule"] == RULE_EXACT and rejected["new-art"]["duplicate_of"] == "art-web"
    chain_survivor = survivor_of(first, "chain-b")
    assert rejected["new-chain"]["rule"] == RULE_NEAR and rejected["new-chain"]["duplicate_of"] == chain_survivor
    assert rejected["unique-0"]["duplicate_of"] == "unique-0"  # the old document, never removed
    # new documents still dedup among themselves; the old build is never part of the output
    assert len(kept) + len(rejected) == len(new_docs)
    assert set(kept) == {"new-unique"} or set(kept) == {"new-unique-copy"}
    assert next(iter(kept.values()))["dup_cluster_size"] == 2
    assert result["stats"][0]["largest_cluster"]["size"] == 2 and result["stats"][0]["against"] == [str(first["dir"])]


def test_no_dedup_keeps_everything_and_still_writes_an_index(tmp_path, docs):
    result = run_dedup(docs[:8], tmp_path / "plain", DedupConfig(enabled=False))
    assert set(result["kept"]) == {d["id"] for d in docs[:8]} and not result["rejected"]
    assert {row["dup_cluster_size"] for row in result["kept"].values()} == {1}
    assert read_table(result["index"][0], "signatures").num_rows == 8


# --------------------------------------------------------------------------- pure steps and errors


def test_against_with_other_hashing_parameters_is_a_user_error(first, tmp_path):
    with pytest.raises(CpmError, match="num_perm=128"):
        Deduplicate(DedupConfig(num_perm=64, against=(str(first["dir"]),)), str(tmp_path))
    with pytest.raises(CpmError, match="no signature index"):
        Deduplicate(DedupConfig(against=(str(tmp_path / "missing"),)), str(tmp_path))
    with pytest.raises(CpmError, match="dedup-threshold"):
        Deduplicate(DedupConfig(threshold=1.5), str(tmp_path))


def test_node_keys_order_survivors():
    old_short = node_key("x", 10, None, old=True)
    new_long = node_key("y", 5000, "a.txt:1")
    new_short = node_key("z", 10, "a.txt:2")
    assert old_short < new_long < new_short
    assert key_id(new_long) == "y" and key_id(old_short) == "x"


def _components_by_stars(edges: list[tuple[str, str]], rounds: int = 30) -> dict[str, str]:
    for _ in range(rounds):
        neighbours = defaultdict(set)
        for a, b in edges:
            neighbours[a].add(b)
            neighbours[b].add(a)
        large = [e for node, nb in neighbours.items() for e in large_star(node, nb)]
        smaller = defaultdict(set)
        for a, b in large:
            hi, lo = max(a, b), min(a, b)
            smaller[hi].add(lo)
        edges = [e for node, nb in smaller.items() for e in small_star(node, nb)]
    return {child: parent for child, parent in edges}


def test_large_star_small_star_finds_connected_components():
    rng = random.Random(5)
    nodes = [f"{rng.randrange(10**6):07d}" for _ in range(300)]
    nodes = sorted(set(nodes))
    edges = [tuple(sorted(rng.sample(nodes, 2))) for _ in range(220)]
    labels = _components_by_stars(edges)
    # reference: union-find
    parent = {n: n for n in nodes}

    def find(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in edges:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    for node in nodes:
        assert labels.get(node, node) == min((m for m in nodes if find(m) == find(node)))


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


def test_corpus_build_dedups_across_sources_and_against_an_earlier_build(tmp_path, first):
    """End to end through ``cpm corpus build --source all --against DIR`` (one job run)."""
    import opencc

    from cpm.cli import main

    rng = random.Random(3)
    story_a, story_b = random_text(rng, 400), random_text(rng, 500)
    news = tmp_path / "news.jsonl"
    encyclopedia = tmp_path / "baike.jsonl"
    news.write_text(
        "\n".join(
            json.dumps(obj, ensure_ascii=False)
            for obj in [
                {"id": "news-repost", "text": opencc.OpenCC("s2t").convert(ARTICLE + BOILERPLATE)},  # copy of the earlier build's art-web
                {"id": "news-story", "text": story_a + "。\n" + story_b + "。"},
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    encyclopedia.write_text(
        json.dumps({"id": "baike-story", "title": "故事", "text": "来源：百科\n" + story_a + "。\n" + story_b + "。"}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    output = tmp_path / "build"
    args = ["corpus", "build", "--source", "all", "--input", f"news={news}", "--input", f"encyclopedia={encyclopedia}"]
    assert main(args + ["--output", str(output), "--against", str(first["dir"]), "--no-progress"]) == 0
    rejected = {r["id"]: r for path in sorted((output / "rejected").glob("*.arrow")) for r in read_table(path).to_pylist()}
    kept = {r["id"]: r for path in sorted((output / "shards").glob("*.arrow")) for r in read_table(path).to_pylist()}
    assert rejected["news-repost"]["rule"] == RULE_EXACT and rejected["news-repost"]["duplicate_of"] == "art-web"
    assert rejected["news-story"]["rule"] == RULE_NEAR and rejected["news-story"]["duplicate_of"] == "baike-story"  # longer
    assert set(kept) == {"baike-story"} and kept["baike-story"]["dup_cluster_size"] == 2
    index = json.loads((output / "dedup" / "index.json").read_text())
    assert [e["rows"] for e in index["shards"]] == [1]


def test_too_few_component_rounds_warn_and_never_remove_a_whole_cluster(tmp_path, caplog):
    import logging

    rng = random.Random(9)
    text = random_text(rng, 2000)
    # a path of 10 documents in key order (equal lengths; ids chosen so that hash order is path order)
    ids = sorted((f"p{i}" for i in range(40)), key=lambda i: hashlib.blake2b(i.encode(), digest_size=8).hexdigest())[:10]
    docs = [make_doc(doc_id, text[80 * k : 80 * k + 1000]) for k, doc_id in enumerate(ids)]
    with caplog.at_level(logging.WARNING, logger="cpm.pipeline.dedup"):
        result = run_dedup(docs, tmp_path / "rounds", DedupConfig(cc_rounds=1))
    (stats,) = result["stats"]
    assert stats["unconverged_nodes"] > 0 and "did not converge" in caplog.text
    assert ids[0] in result["kept"]  # the cluster's smallest key always survives
    assert len(result["kept"]) + len(result["rejected"]) == len(docs)


def test_node_keys_clamp_lengths_and_pairs_at_the_threshold_or_with_one_old_document():
    assert node_key("a", 0, "o") == node_key("a", -5, "o") > node_key("a", 1, "o")  # 0 chars: the last, not below
    assert key_id(node_key("a", -5, "o")) == "a"
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2**32, size=128, dtype=np.uint32)
    other = base.copy()
    other[:32] += 1  # 96 of 128 min-hashes equal: an estimate of exactly 0.75
    new, old = node_key("n", 10, "o"), node_key("o", 10, None, old=True)
    assert list(bucket_pairs([(new, base.tobytes()), (node_key("m", 10, "o"), other.tobytes())], 0.75, 128)) == [
        (min(new, node_key("m", 10, "o")), max(new, node_key("m", 10, "o")), 0.75)]  # at the threshold: a pair
    assert list(bucket_pairs([(new, base.tobytes()), (old, base.tobytes())], 0.8, 128)) == [(old, new, 1.0)]
