"""Exact and near-duplicate removal end to end: the staged build of ``cpm corpus build`` on chosen texts.

The documents skip cleaning (:mod:`cpm.pipeline.prepared`) so that every text is what the test wrote;
every other stage is the build's own. Builds are few and shared through module fixtures: one on the
DirectRunner, the same documents shuffled into other chunks and partitions on two worker processes,
the same in four chunks with every task in this process (``quick``: what mutation testing of
``dedup_stages.py`` runs), and ``--against`` builds on top of them. Each step alone: ``test_dedup_steps.py``.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from cpm.errors import CpmError
from cpm.pipeline import minhash
from cpm.pipeline.dedup import RULE_EXACT, RULE_NEAR, DedupConfig, band_keys
from cpm.pipeline.dedup_index import check_index, index_paths
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


def run_dedup(docs: list[dict], output_dir: Path, config: DedupConfig | None = DedupConfig(), chunks: int = 2,
              workers: int = 1, partition_bytes: int = 8192) -> dict:
    """The staged build (:func:`cpm.pipeline.launcher.run_stages`) on ``docs``, as they are, in ``chunks``
    chunks: on the DirectRunner with one worker, on a pool of local processes with more, every task in
    this process with none."""
    from cpm.pipeline import graph
    from cpm.pipeline.graph import BuildJob
    from cpm.pipeline.launcher import BeamStages, LocalPool
    from cpm.pipeline.prepared import build_prepared

    sources = sorted({d["source"] for d in docs})
    job = BuildJob(sources, [], str(output_dir), str(output_dir), {}, config, partition_bytes=partition_bytes)
    if workers == 0:
        inner = InProcess()
    elif workers == 1:
        inner = BeamStages(["--runner=DirectRunner", "--no_pipeline_type_check"])
    else:
        inner = LocalPool(workers, job)
    manifest = build_prepared([docs[i::chunks] for i in range(chunks)], job, inner)

    def rows(kind: str) -> dict[str, dict]:
        return {r["id"]: r for path in sorted((output_dir / kind).glob("*.arrow")) for r in read_table(path).to_pylist()}

    index_file = output_dir / "dedup" / "index.json"
    lsh = []
    while config is not None and graph.task_done(job, "lsh", len(lsh)):
        lsh.append(graph.task_result(job, "lsh", len(lsh)))
    return {
        "lsh": lsh,
        "components": graph.task_result(job, "components", 0) if config is not None else None,
        "dir": output_dir,
        "workers": workers,
        "kept": rows("shards"),
        "rejected": rows("rejected"),
        "manifest": manifest,
        "stats": json.loads(index_file.read_text()) if index_file.exists() else None,
        "index": sorted((output_dir / "dedup").glob("signatures-*.minhash")),
    }


class InProcess:
    """Runs each task of a stage in this process, one after the other (the quickest executor)."""

    def run(self, job, stage: str, tasks: list, params: dict) -> None:
        from cpm.pipeline import graph

        for task in tasks:
            graph.run_task(job, stage, task, params)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return fixture_docs()


@pytest.fixture(scope="module")
def first(tmp_path_factory, docs) -> dict:
    return run_dedup(docs, tmp_path_factory.mktemp("first") / "build")


@pytest.fixture(scope="module")
def quick(tmp_path_factory, docs) -> dict:
    """The same documents in 4 chunks and more partitions, every task in this process."""
    return run_dedup(docs, tmp_path_factory.mktemp("quick") / "build", chunks=4, workers=0, partition_bytes=5000)


@pytest.fixture(params=["first", "quick"])
def build(request) -> dict:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory, docs) -> dict:
    order = list(reversed(docs))
    random.Random(1).shuffle(order)
    return run_dedup(order, tmp_path_factory.mktemp("shuffled") / "build", chunks=3, workers=2, partition_bytes=30000)


def by_id(result: dict, doc_id: str) -> dict:
    """The row of ``doc_id``, kept or rejected."""
    return result["kept"].get(doc_id) or result["rejected"][doc_id]


def survivor_of(result: dict, doc_id: str) -> str:
    return doc_id if doc_id in result["kept"] else result["rejected"][doc_id]["duplicate_of"]


# --------------------------------------------------------------------------- Beam runs


def test_accounting_and_rejected_rows(build, docs):
    kept, rejected = build["kept"], build["rejected"]
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


def test_reposts_collapse_to_one_survivor_chosen_by_the_rule(build):
    kept, rejected = build["kept"], build["rejected"]
    family = ["art", "art-copy", "art-halfwidth", "art-traditional", "art-reflowed", "art-web"]
    assert {survivor_of(build, d) for d in family} == {"art-web"}  # longest text, and from another source
    assert kept["art-web"]["dup_cluster_size"] == 6
    # punctuation, script and whitespace variants are exact duplicates of the normalised text: the
    # group's first node (the longest text) is its representative, a near duplicate of art-web;
    # the four others are exact duplicates
    exact_group = ["art", "art-copy", "art-halfwidth", "art-traditional", "art-reflowed"]
    assert len({minhash.normalize_for_hash(by_id(build, d)["text"]) for d in exact_group}) == 1
    assert max(exact_group, key=lambda d: len(by_id(build, d)["text"])) == "art-reflowed"
    assert rejected["art-reflowed"]["rule"] == RULE_NEAR
    assert {d: rejected[d]["rule"] for d in exact_group if d != "art-reflowed"} == dict.fromkeys(
        ["art", "art-copy", "art-halfwidth", "art-traditional"], RULE_EXACT)
    assert {rejected[d]["duplicate_of"] for d in exact_group} == {"art-web"}
    # cross-source near duplicate with 1% typos: equal length, so the smaller id hash survives
    pair = sorted(["story", "story-typos"], key=lambda i: hashlib.blake2b(i.encode(), digest_size=8).hexdigest())
    assert survivor_of(build, "story-typos") == survivor_of(build, "story") == pair[0]
    assert rejected[pair[1]]["rule"] == RULE_NEAR and kept[pair[0]]["dup_cluster_size"] == 2


def test_chain_is_one_cluster_with_one_survivor(build):
    a, b, c = (minhash.signature(first_text) for first_text in _chain_texts())
    assert minhash.exact_jaccard(*_chain_texts()[:2]) >= 0.8 and minhash.exact_jaccard(*_chain_texts()[1:]) >= 0.8
    assert minhash.exact_jaccard(_chain_texts()[0], _chain_texts()[2]) < 0.75
    assert minhash.estimated_jaccard(a, c) < 0.8
    survivors = {survivor_of(build, d) for d in ("chain-a", "chain-b", "chain-c")}
    assert len(survivors) == 1
    (survivor,) = survivors
    assert build["kept"][survivor]["dup_cluster_size"] == 3
    best = min(("chain-a", "chain-b", "chain-c"), key=lambda i: hashlib.blake2b(i.encode(), digest_size=8).hexdigest())
    assert survivor == best  # equal lengths: smallest id hash


def _chain_texts() -> list[str]:
    by_id = {d["id"]: d["text"] for d in fixture_docs()}
    return [by_id["chain-a"], by_id["chain-b"], by_id["chain-c"]]


def test_borderline_estimate_is_confirmed_by_exact_jaccard(build, docs, tmp_path):
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
    rejected = build["rejected"]["border-above-cut"]
    assert rejected["rule"] == RULE_NEAR and rejected["duplicate_of"] == "border-above"  # the longer text survives
    assert build["kept"]["border-above"]["dup_cluster_size"] == 2
    for doc_id in ("border-below", "border-below-cut", "border-over", "border-over-cut"):
        assert build["kept"][doc_id]["dup_cluster_size"] == 1

    border = [d for d in docs if d["id"].startswith("border-")]
    estimate_only = run_dedup(border, tmp_path / "estimate-only", DedupConfig(borderline_sigmas=0.0), workers=build["workers"])
    # what estimate-only confirmation got wrong: kept a duplicate, merged a non-duplicate
    assert set(estimate_only["kept"]) == {d["id"] for d in border} - {"border-over-cut"}
    every_pair_exact = run_dedup(border, tmp_path / "exact", DedupConfig(exact_jaccard=True), workers=build["workers"])
    assert set(every_pair_exact["kept"]) == {d["id"] for d in border} - {"border-above-cut"}


def test_lsh_tasks_count_their_candidates_and_decisions(build):
    """Each LSH partition's counts (``bench_dedup_quality.py`` reports them): the edges come from the
    candidates, some by exact Jaccard in the borderline band; a partition without a shared bucket
    counts nothing."""
    assert len(build["lsh"]) > 1
    for counts in build["lsh"]:
        assert 0 <= counts["by_exact"] <= counts["borderline"] <= counts["candidates"]
        assert counts["by_exact"] <= counts["edges"] <= counts["candidates"]
    total = {name: sum(c[name] for c in build["lsh"]) for name in ("candidates", "edges", "borderline", "by_exact")}
    assert total["borderline"] >= 3 and total["by_exact"] >= 1  # the border-* pairs; border-above is a duplicate
    # the components task: every node with an edge; all but each cluster's survivor are near duplicates
    near = [row for row in build["rejected"].values() if row["rule"] == RULE_NEAR]
    assert build["components"] == {"nodes": len(near) + len({row["duplicate_of"] for row in near}), "labelled": len(near)}


def test_quick_build_of_unique_documents_compares_nothing(tmp_path):
    rng = random.Random(4)
    docs = [make_doc(f"u{i}", random_text(rng, 300)) for i in range(4)]
    result = run_dedup(docs, tmp_path / "unique", chunks=2, workers=0, partition_bytes=600)
    assert set(result["kept"]) == {d["id"] for d in docs} and not result["rejected"]
    assert len(result["lsh"]) > 1 and all(
        c == {"candidates": 0, "edges": 0, "borderline": 0, "by_exact": 0} for c in result["lsh"])


def test_unique_and_template_sharing_documents_survive(build, docs):
    for doc in docs:
        if doc["id"].startswith(("unique-", "templated-")):
            assert build["kept"][doc["id"]]["dup_cluster_size"] == 1


def test_stats_and_signature_index(build):
    stats = build["stats"]
    assert stats["largest_cluster"] == {"survivor": "art-web", "size": 6}
    assert stats["kept"] == len(build["kept"])
    rules = [row["rule"] for row in build["rejected"].values()]
    assert (stats["exact_duplicates"], stats["near_duplicates"]) == (rules.count(RULE_EXACT), rules.count(RULE_NEAR))
    assert stats["unconverged_nodes"] == 0 and stats["config"]["threshold"] == 0.8 and (stats["bands"], stats["rows"]) == DedupConfig().bands
    counters = build["manifest"]["counters"]["dedup"]
    assert (counters["exact_duplicates"], counters["near_duplicates"], counters["largest_cluster_size"]) == (
        stats["exact_duplicates"], stats["near_duplicates"], 6)
    assert [e["path"] for e in stats["shards"]] == [str(p.relative_to(build["dir"])) for p in build["index"]]
    table = read_table(build["index"][0], "signatures")
    ids = table.column("id").to_pylist()
    assert sorted(ids) == ids and set(ids) == set(build["kept"])
    kept_text = build["kept"]["art-web"]["text"]
    row = ids.index("art-web")
    np.testing.assert_array_equal(np.array(table.column("signature")[row].as_py(), dtype=np.uint32), minhash.signature(kept_text))


@pytest.mark.parametrize("other", ["shuffled", "quick"])
def test_same_result_for_any_input_order_chunking_and_worker_count(first, other, request):
    other = request.getfixturevalue(other)
    assert other["kept"] == first["kept"]
    assert other["rejected"] == first["rejected"]
    assert [p.name for p in other["index"]] == [p.name for p in first["index"]]
    for a, b in zip(first["index"], other["index"]):
        assert a.read_bytes() == b.read_bytes()
    assert (first["dir"] / "dedup" / "index.json").read_bytes() == (other["dir"] / "dedup" / "index.json").read_bytes()


def test_against_removes_new_copies_of_old_documents_only(tmp_path, build, docs, caplog):
    """Against two earlier builds: the shared one, and one of a single document."""
    import logging

    import opencc

    rng = random.Random(11)
    fresh, other = random_text(rng, 600), random_text(rng, 700)
    earlier = run_dedup([make_doc("old-other", other)], tmp_path / "other", workers=build["workers"])["dir"]
    new_docs = [
        make_doc("new-other", other[:-10] + random_text(rng, 10)),  # a near copy of the other build's document
        make_doc("new-art", opencc.OpenCC("s2t").convert(ARTICLE + BOILERPLATE), "webpage"),  # exact after normalisation
        make_doc("new-chain", random_text(random.Random(0), 5) + _chain_texts()[1][5:]),  # near copy of the old chain survivor's neighbour
        make_doc("new-unique", fresh),
        make_doc("new-unique-copy", fresh + "。"),
        make_doc("unique-0", next(d["text"] for d in docs if d["id"] == "unique-0") + "补充说明这是一段较长的新增内容" * 3),  # old id, new text
    ]
    with caplog.at_level(logging.WARNING, logger="cpm.pipeline.dedup"):
        config = DedupConfig(against=(str(build["dir"]), str(earlier)), huge_cluster=2)
        result = run_dedup(new_docs, tmp_path / "second", config, chunks=1, workers=build["workers"])
    assert "huge duplicate cluster of 2 documents" in caplog.text  # the warning threshold is lowered to 2 here
    rejected, kept = result["rejected"], result["kept"]
    assert rejected["new-art"]["rule"] == RULE_EXACT and rejected["new-art"]["duplicate_of"] == "art-web"
    chain_survivor = survivor_of(build, "chain-b")
    assert rejected["new-chain"]["rule"] == RULE_NEAR and rejected["new-chain"]["duplicate_of"] == chain_survivor
    assert rejected["unique-0"]["duplicate_of"] == "unique-0"  # the old document, never removed
    assert (rejected["new-other"]["rule"], rejected["new-other"]["duplicate_of"]) == (RULE_NEAR, "old-other")
    # new documents still dedup among themselves; the old build is never part of the output
    assert len(kept) + len(rejected) == len(new_docs)
    assert set(kept) == {"new-unique-copy"}  # the longer text of two exact duplicates
    assert (rejected["new-unique"]["rule"], rejected["new-unique"]["duplicate_of"]) == (RULE_EXACT, "new-unique-copy")
    assert next(iter(kept.values()))["dup_cluster_size"] == 2
    assert result["stats"]["largest_cluster"]["size"] == 2 and result["stats"]["against"] == [str(build["dir"]), str(earlier)]


def test_no_dedup_keeps_every_copy_and_writes_no_index(tmp_path, docs):
    result = run_dedup(docs[:8], tmp_path / "plain", None)
    assert set(result["kept"]) == {d["id"] for d in docs[:8]} and not result["rejected"]
    assert {row["dup_cluster_size"] for row in result["kept"].values()} == {1}
    assert result["stats"] is None and result["index"] == [] and "dedup" not in result["manifest"]["counters"]


def test_against_with_other_hashing_parameters_is_a_user_error(first, tmp_path):
    (path,) = index_paths(str(first["dir"]))
    check_index(path, DedupConfig())
    with pytest.raises(CpmError, match="num_perm=128"):
        check_index(path, DedupConfig(num_perm=64))
    with pytest.raises(CpmError, match="ngram=5"):
        check_index(path, DedupConfig(ngram=4))
    with pytest.raises(CpmError, match="no signature index"):
        index_paths(str(tmp_path / "missing"))
    with pytest.raises(CpmError, match="dedup-threshold"):
        DedupConfig(threshold=1.5).validate()


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


def test_a_path_of_near_duplicates_is_one_cluster_with_one_survivor(tmp_path):
    rng = random.Random(9)
    text = random_text(rng, 2000)
    # a path of 10 documents (each overlaps the next, not the one after), spread over 3 chunks
    ids = [f"p{i}" for i in range(10)]
    docs = [make_doc(doc_id, text[80 * k : 80 * k + 1000]) for k, doc_id in enumerate(ids)]
    result = run_dedup(docs, tmp_path / "path", chunks=3)
    best = min(ids, key=lambda i: hashlib.blake2b(i.encode(), digest_size=8).hexdigest())  # equal lengths
    assert set(result["kept"]) == {best} and result["kept"][best]["dup_cluster_size"] == 10
    assert {row["duplicate_of"] for row in result["rejected"].values()} == {best}
    assert {row["rule"] for row in result["rejected"].values()} == {RULE_NEAR}
