"""Near-duplicate removal quality on a labelled Chinese set built from real news paragraphs.

Documents are runs of 4-9 consecutive People's Daily 1998 paragraphs (``../shared/data/zh``).
Some originals get variants made the way reposts differ in the wild; others stay unique;
a third group are different articles wrapped in the same long site template (negatives).
The set goes through the stages of ``cpm corpus build`` on the DirectRunner (cleaning skipped,
:mod:`cpm.pipeline.prepared`, so that the variants stay as made), and the table reports, per
category, the share of documents removed. Ground truth:

* a repost counts as removed when it and its original end up with the same survivor (either
  may be the survivor: the rule keeps the longest text, often the repost with boilerplate);
  for unique and template documents, "removed" means wrongly removed; a unique or template
  page whose exact hashing-form 5-gram Jaccard to another page reaches the threshold (two short
  articles in one long template: seed 2 has one such pair, J = 0.813) is a near-duplicate by
  the definition, not a negative: the table excludes and counts it;
* ``J raw``: exact Jaccard of the character 5-gram sets of the variant and its original, on
  the raw text with whitespace removed (no other normalisation) — the issue's "variants whose
  character-5-gram Jaccard to the original is >= 0.8";
* one survivor per group: the original and its reposts whose exact hashing-form 5-gram
  Jaccard to it reaches the threshold must end with exactly one kept document (the table
  counts groups with one, none and more than one);
* precision / recall: against the exact 5-gram Jaccard of the *hashing form* over all pairs
  (sparse matrix product): documents linked by J >= threshold form ground-truth clusters; a
  removal is correct when its survivor is in the same ground-truth cluster; recall counts, per
  cluster, ``size - 1`` removable documents.

The summary also gives the LSH work (pairs compared, pairs in the borderline band that were
checked exactly) and the Beam time, against a baseline measured in the same run: the previous
default (LSH recall 0.95 at the threshold, estimate-only confirmation).

Usage::

    python bench/bench_dedup_quality.py                 # default + baseline, ~1 min on 1 core
    python bench/bench_dedup_quality.py --seed 1        # another labelled set
    python bench/bench_dedup_quality.py --sweep         # also ngram 3/4/7, num_perm 64/256, exact_jaccard (~6 min)
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "zh" / "people_daily_1998_paragraphs.txt.zst"

BOILERPLATE_HEAD = ["来源：新华网", "本文来源：人民网-人民日报", "转自：中国新闻网", "【环球时报综合报道】"]
BOILERPLATE_TAIL = [
    "（责任编辑：王晓明）",
    "本文来源：人民日报 作者：记者 张伟 编辑：李娜",
    "声明：本文转载自其他媒体，转载目的在于传递更多信息，并不代表本网赞同其观点和对其真实性负责。",
    "（完）\n扫一扫，关注我们的微信公众号",
]
TEMPLATE_HEAD = (
    "首页 | 新闻中心 | 国内新闻 | 国际新闻 | 财经频道 | 体育频道 | 娱乐频道 | 科技频道 | 教育频道 | 健康频道 | 汽车频道 | 房产频道\n"
    "您当前的位置：首页 > 新闻中心 > 国内新闻 > 正文\n"
    "字号：大 中 小　打印本页　关闭窗口　分享到：微博 微信 QQ空间\n"
)
TEMPLATE_TAIL = (
    "\n相关新闻：\n热点推荐：本站精选每日要闻，欢迎订阅我们的新闻快讯服务\n"
    "关于我们 | 联系我们 | 广告服务 | 招聘信息 | 网站地图 | 法律声明 | 隐私保护 | 意见反馈\n"
    "版权所有 © 1998-2024 某某新闻网 未经授权禁止转载、摘编、复制或建立镜像。违者将依法追究法律责任。\n"
    "地址：北京市朝阳区某某路某某号 邮编：100000 电话：010-12345678 举报邮箱：jubao@example.com\n"
    "互联网新闻信息服务许可证编号：10120170000 京ICP备00000000号 京公网安备11000000000000号\n"
)
HALF_WIDTH = str.maketrans({"，": ",", "。": ".", "：": ":", "；": ";", "！": "!", "？": "?", "“": '"', "”": '"', "（": "(", "）": ")", "、": ",", "《": "<", "》": ">"})

POSITIVE = ["exact", "boilerplate", "drop_paragraph", "typos_1pct", "whitespace", "truncation", "halfwidth_punct", "traditional", "trad+boilerplate"]


def load_paragraphs() -> list[str]:
    import zstandard

    if not DATA.is_file():
        sys.exit(f"{DATA} not found: this benchmark needs ../shared/data/zh next to the repository")
    text = zstandard.ZstdDecompressor().decompress(DATA.read_bytes(), max_output_size=1 << 30).decode("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def make_documents(paragraphs: list[str], rng: random.Random) -> list[list[str]]:
    """Runs of 4-9 consecutive paragraphs with at least 300 characters, no paragraph used twice."""
    docs, i = [], 0
    while i < len(paragraphs):
        take = rng.randint(4, 9)
        doc = paragraphs[i : i + take]
        i += take
        if len(doc) >= 4 and sum(map(len, doc)) >= 300 and len(set(doc)) == len(doc):
            docs.append(doc)
    return docs


def make_variant(category: str, paras: list[str], rng: random.Random, alphabet: list[str], s2t) -> str:
    text = "\n".join(paras)
    if category == "exact":
        return text
    if category == "boilerplate":
        return f"{rng.choice(BOILERPLATE_HEAD)}\n{text}\n{rng.choice(BOILERPLATE_TAIL)}"
    if category == "drop_paragraph":
        drop = rng.randrange(1, len(paras))
        return "\n".join(p for k, p in enumerate(paras) if k != drop)
    if category == "typos_1pct":
        chars = list(text)
        positions = [k for k, c in enumerate(chars) if "\u4e00" <= c <= "\u9fff"]
        for k in rng.sample(positions, max(1, len(chars) // 100)):
            chars[k] = rng.choice(alphabet)
        return "".join(chars)
    if category == "whitespace":
        return "\n\n".join("　　" + " ".join(p[k : k + 20] for k in range(0, len(p), 20)) for p in paras)
    if category == "truncation":
        return text[: int(len(text) * rng.uniform(0.88, 0.95))]
    if category == "halfwidth_punct":
        return text.translate(HALF_WIDTH)
    if category == "traditional":
        return s2t.convert(text)
    if category == "trad+boilerplate":
        return s2t.convert(f"{rng.choice(BOILERPLATE_HEAD)}\n{text}\n{rng.choice(BOILERPLATE_TAIL)}")
    raise ValueError(category)


SIDEBAR_PARAGRAPHS = 12  # the corpus's first paragraphs become the template's "hot news" sidebar


def site_template(paragraphs: list[str]) -> tuple[str, str]:
    """A long site template (navigation, a sidebar of other headlines, footer): ~1,500 characters."""
    sidebar = "\n".join(f"· {p}" for p in paragraphs[:SIDEBAR_PARAGRAPHS])
    return TEMPLATE_HEAD, f"{TEMPLATE_TAIL}\n热门文章：\n{sidebar}\n"


def build_set(seed: int, groups: int, uniques: int, templated: int) -> list[dict]:
    import opencc

    rng = random.Random(seed)
    paragraphs = load_paragraphs()
    head, tail = site_template(paragraphs)
    docs = make_documents(paragraphs[SIDEBAR_PARAGRAPHS:], rng)
    rng.shuffle(docs)
    need = groups + uniques + templated
    if len(docs) < need:
        raise SystemExit(f"only {len(docs)} documents, need {need}")
    alphabet = sorted({c for d in docs for p in d for c in p if "\u4e00" <= c <= "\u9fff"})
    s2t = opencc.OpenCC("s2t")
    rows: list[dict] = []

    def add(doc_id: str, text: str, category: str, group: str | None, original: str | None = None) -> None:
        rows.append({"id": doc_id, "source": "news", "text": text, "num_chars": len(text), "origin": f"bench:{len(rows) + 1}",
                     "category": category, "group": group, "original": original})

    for g, paras in enumerate(docs[:groups]):
        original = "\n".join(paras)
        add(f"g{g:04d}-original", original, "original", f"g{g}")
        for category in rng.sample(POSITIVE, 4):  # each group: the original and 4 kinds of repost
            add(f"g{g:04d}-{category}", make_variant(category, paras, rng, alphabet, s2t), category, f"g{g}", original)
    for u, paras in enumerate(docs[groups : groups + uniques]):
        add(f"u{u:04d}", "\n".join(paras), "unique", None)
    for t, paras in enumerate(docs[groups + uniques : need]):
        add(f"t{t:04d}", head + "\n".join(paras) + tail, "template_negative", None)
    rng.shuffle(rows)
    return rows


def shingle_set(text: str, n: int = 5) -> set[str]:
    return {text[k : k + n] for k in range(max(1, len(text) - n + 1))}


def raw_jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set("".join(a.split())), shingle_set("".join(b.split()))
    return len(sa & sb) / len(sa | sb)


def ground_truth_clusters(rows: list[dict], threshold: float, ngram: int = 5) -> list[int]:
    """Cluster number of every row: connected components of exact hashing-form Jaccard >= threshold."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    from cpm.pipeline.minhash import shingle_hashes

    vocab: dict[int, int] = {}
    indptr, indices = [0], []
    for row in rows:
        hashes = set(shingle_hashes(row["text"], ngram).tolist())
        indices.extend(vocab.setdefault(h, len(vocab)) for h in hashes)
        indptr.append(len(indices))
    matrix = csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(rows), len(vocab)))
    sizes = np.diff(indptr)
    inter = (matrix @ matrix.T).tocoo()
    union = sizes[inter.row] + sizes[inter.col] - inter.data
    keep = (inter.row != inter.col) & (inter.data >= threshold * union)
    graph = csr_matrix((np.ones(keep.sum()), (inter.row[keep], inter.col[keep])), shape=(len(rows), len(rows)))
    return connected_components(graph, directed=False)[1].tolist()


def run_build(rows: list[dict], config, workdir: Path) -> tuple[dict[str, int], dict[str, str], float, dict[str, int]]:
    """The staged build of ``cpm corpus build`` (cleaning skipped, :mod:`cpm.pipeline.prepared`) on the
    DirectRunner, in this process: kept {id: cluster size}, rejected {id: survivor}, seconds, LSH counts."""
    from cpm.pipeline import graph
    from cpm.pipeline.graph import BuildJob
    from cpm.pipeline.launcher import BeamStages
    from cpm.pipeline.prepared import build_prepared
    from cpm.shards.io import read_table

    out = workdir / f"out-{config.ngram}-{config.num_perm}-{config.exact_jaccard}-{config.lsh_recall}-{config.borderline_sigmas}"
    shutil.rmtree(out, ignore_errors=True)
    docs = [{k: r[k] for k in ("id", "source", "text", "origin")} for r in rows]
    job = BuildJob(sorted({d["source"] for d in docs}), [], str(out), str(out), {}, config)
    start, cpu_start = time.perf_counter(), time.process_time()
    build_prepared([docs], job, BeamStages(["--runner=DirectRunner", "--no_pipeline_type_check"]))
    seconds = time.perf_counter() - start
    counters: dict[str, float] = Counter(cpu_seconds=time.process_time() - cpu_start)  # the DirectRunner runs in this process
    part = 0
    while graph.task_done(job, "lsh", part):
        counters.update(graph.task_result(job, "lsh", part))
        part += 1
    kept = {r["id"]: r["dup_cluster_size"] for f in sorted((out / "shards").glob("*.arrow")) for r in read_table(f).to_pylist()}
    rejected = {r["id"]: r["duplicate_of"] for f in sorted((out / "rejected").glob("*.arrow")) for r in read_table(f).to_pylist()}
    return kept, rejected, seconds, dict(counters)


def evaluate(rows: list[dict], kept: dict[str, int], rejected: dict[str, str], clusters: list[int], threshold: float) -> dict:
    assert len(kept) + len(rejected) == len(rows), "accounting: kept + rejected != input"
    def survivor(doc_id: str) -> str:
        return doc_id if doc_id in kept else rejected[doc_id]

    original_id = {row["group"]: row["id"] for row in rows if row["category"] == "original"}
    cluster_of = {row["id"]: c for row, c in zip(rows, clusters)}
    cluster_size = Counter(clusters)
    table = []
    by_category: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_category[row["category"]].append(row)
    for category in [*POSITIVE, "unique", "template_negative"]:
        members = by_category.get(category, [])
        if not members:
            continue
        if category in POSITIVE:  # caught = the repost and its original end with the same survivor
            removed = [survivor(r["id"]) == survivor(original_id[r["group"]]) for r in members]
        else:  # wrongly removed; a page whose exact hashing-form J to another reaches the threshold is no negative
            true_duplicates = [r for r in members if cluster_size[cluster_of[r["id"]]] > 1]
            members = [r for r in members if cluster_size[cluster_of[r["id"]]] == 1]
            removed = [r["id"] in rejected for r in members]
        entry = {"category": category, "docs": len(members), "removed": float(np.mean(removed))}
        if category not in POSITIVE and true_duplicates:
            entry["excluded"] = len(true_duplicates)
        if category in POSITIVE:
            jaccards = [raw_jaccard(r["text"], r["original"]) for r in members]
            high = [rem for rem, j in zip(removed, jaccards) if j >= threshold]
            entry.update(mean_j=float(np.mean(jaccards)), high=len(high), removed_high=float(np.mean(high)) if high else None)
        table.append(entry)

    # exactly one survivor per duplicate group: the original and its reposts whose exact 5-gram
    # Jaccard to it, on the hashing form (the form the dedup compares), reaches the threshold
    from cpm.pipeline.minhash import exact_jaccard

    group_members: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["group"] is not None:
            group_members[row["group"]].append(row)
    one_survivor = no_survivor = more_survivors = 0
    for members in group_members.values():
        original = next(r for r in members if r["category"] == "original")
        dups = [r for r in members if r is original or exact_jaccard(r["text"], original["text"]) >= threshold]
        survivors = sum(r["id"] in kept for r in dups)
        one_survivor += survivors == 1
        no_survivor += survivors == 0
        more_survivors += survivors > 1

    # precision / recall against exact hashing-form Jaccard clusters
    correct = sum(cluster_of[doc] == cluster_of.get(survivor, -1) for doc, survivor in rejected.items())
    removable = sum(size - 1 for size in cluster_size.values())
    removed_in = Counter(cluster_of[doc] for doc, survivor in rejected.items() if cluster_of[doc] == cluster_of.get(survivor, -1))
    recalled = sum(min(count, cluster_size[c] - 1) for c, count in removed_in.items())
    template_rows = [r for r in rows if r["category"] == "template_negative"]
    max_template_j = 0.0
    for i in range(min(len(template_rows), 60)):
        for j in range(i + 1, min(len(template_rows), 60)):
            max_template_j = max(max_template_j, raw_jaccard(template_rows[i]["text"], template_rows[j]["text"]))
    return {
        "table": table,
        "groups": len(group_members),
        "one_survivor": one_survivor,
        "no_survivor": no_survivor,
        "more_survivors": more_survivors,
        "precision": correct / max(1, len(rejected)),
        "recall": recalled / max(1, removable),
        "largest_cluster": max(kept.values()),
        "max_template_pair_j": max_template_j,
    }


def ngram_margin(rows: list[dict], ngram: int) -> tuple[float, float]:
    """(5th percentile J_n of 1%-typo reposts to their original, max J_n between two template pages)."""
    from cpm.pipeline.minhash import exact_jaccard

    typos = [exact_jaccard(r["text"], r["original"], ngram) for r in rows if r["category"] == "typos_1pct"]
    pages = [r["text"] for r in rows if r["category"] == "template_negative"][:50]
    template = max(exact_jaccard(a, b, ngram) for i, a in enumerate(pages) for b in pages[i + 1 :])
    return float(np.percentile(typos, 5)), template


def print_report(name: str, config, rows: list[dict], result: dict, seconds: float) -> None:
    mb = sum(len(r["text"].encode("utf-8")) for r in rows) / 1e6
    bands, rowsper = config.bands
    print(f"\n## {name}: ngram={config.ngram} num_perm={config.num_perm} threshold={config.threshold} "
          f"(LSH {bands} bands x {rowsper} rows), {len(rows)} docs, {mb:.2f} MB, Beam DirectRunner {seconds:.1f} s\n")
    print("| category | docs | mean J raw 5-gram | docs with J >= t | removed (merged with original) | removed (J >= t) |")
    print("|---|---:|---:|---:|---:|---:|")
    for e in result["table"]:
        mean_j = f"{e['mean_j']:.3f}" if "mean_j" in e else "-"
        high = str(e["high"]) if "high" in e else "-"
        rem_high = f"{100 * e['removed_high']:.1f}%" if e.get("removed_high") is not None else "-"
        docs = f"{e['docs']} (+{e['excluded']} at exact J >= t to another: not negatives)" if e.get("excluded") else e["docs"]
        print(f"| {e['category']} | {docs} | {mean_j} | {high} | {100 * e['removed']:.1f}% | {rem_high} |")
    print(f"\ngroups with exactly one survivor: {result['one_survivor']}/{result['groups']} (none: {result['no_survivor']}, "
          f"more than one: {result['more_survivors']}); "
          f"precision {result['precision']:.4f}, recall {result['recall']:.4f} (vs exact 5-gram Jaccard >= {config.threshold} "
          f"of the hashing form); largest cluster {result['largest_cluster']}; max raw J between two template pages "
          f"{result['max_template_pair_j']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--groups", type=int, default=400, help="originals that get 4 reposts each")
    parser.add_argument("--uniques", type=int, default=1500)
    parser.add_argument("--templated", type=int, default=300)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--sweep", action="store_true", help="also run other --ngram / --num-perm values")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

    from cpm.pipeline.dedup import DedupConfig

    rows = build_set(args.seed, args.groups, args.uniques, args.templated)
    clusters = ground_truth_clusters(rows, args.threshold)
    configs = [DedupConfig(threshold=args.threshold)]
    # baseline: the previous default, LSH recall 0.95 at the threshold and no borderline exact check
    configs += [DedupConfig(threshold=args.threshold, lsh_recall=0.95, borderline_sigmas=0.0)]
    if args.sweep:
        configs += [DedupConfig(threshold=args.threshold, ngram=n) for n in (3, 4, 7)]
        configs += [DedupConfig(threshold=args.threshold, num_perm=p) for p in (64, 256)]
        configs += [DedupConfig(threshold=args.threshold, exact_jaccard=True)]
    workdir = Path(tempfile.mkdtemp(prefix="cpm-dedup-bench-"))
    try:
        summary = []
        for config in configs:
            kept, rejected, seconds, counters = run_build(rows, config, workdir)
            result = evaluate(rows, kept, rejected, clusters, args.threshold)
            name = "default" if config == configs[0] else "baseline (previous default)" if config == configs[1] else "sweep"
            print_report(name, config, rows, result, seconds)
            by = {e["category"]: e for e in result["table"]}
            high = [by[c] for c in POSITIVE if c in by and c not in ("halfwidth_punct", "traditional", "trad+boilerplate") and by[c]["high"]]
            removed_high = sum(e["removed_high"] * e["high"] for e in high) / max(1, sum(e["high"] for e in high))
            margin = ngram_margin(rows, config.ngram)
            confirm = "exact" if config.exact_jaccard else "estimate" if config.borderline_sigmas == 0 else f"exact in [{config.exact_band[0]:.3f}, {config.exact_band[1]:.3f})"
            work = (f"{config.bands[0]}x{config.bands[1]}", f"{result['one_survivor']}/{result['no_survivor']}/{result['more_survivors']}",
                    counters.get("candidates", 0), counters.get("borderline", 0), counters.get("by_exact", 0), counters["cpu_seconds"])
            summary.append((*work, config.ngram, f"{config.num_perm} {confirm}", removed_high, min(by[c]["removed"] for c in ("halfwidth_punct", "traditional", "trad+boilerplate") if c in by),
                            by["unique"]["removed"], by["template_negative"]["removed"], result["precision"], result["recall"], seconds, *margin))
        print("\n## summary (targets: J>=0.8 removed >= 95%, punct/trad removed >= 90%, unique <= 0.5%, template 0)\n")
        print("| ngram | num_perm, confirmation | LSH bands x rows | groups one/none/more survivors | removed J>=0.8 | min punct/trad removed | unique removed | template removed | precision | recall | pairs compared | borderline pairs | of them exact J >= t | Beam s (CPU s) | CPU vs baseline | 5th pct J_n typos_1pct | max J_n template pair |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        base_cpu = summary[1][5]
        for bxr, groups, compared, borderline, exact_ok, cpu, n, p, rh, pt, u, t, pr, rc, s, typo_j, template_j in summary:
            print(f"| {n} | {p} | {bxr} | {groups} | {100 * rh:.1f}% | {100 * pt:.1f}% | {100 * u:.2f}% | {100 * t:.2f}% | {pr:.4f} | {rc:.4f} | "
                  f"{compared} | {borderline} | {exact_ok} | {s:.1f} ({cpu:.1f}) | {cpu / base_cpu:.2f}x | {typo_j:.3f} | {template_j:.3f} |")
        print("\nJ_n: exact Jaccard of the hashing form's character n-grams (n = the row's ngram). The wider the gap between"
              " the two last columns around the threshold, the safer the choice of n.")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
