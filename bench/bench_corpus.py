"""Throughput of ``cpm corpus build`` end to end (DirectRunner) beside a naive baseline.

Builds >= 20 MB of JSONL news documents from the shared People's Daily paragraphs (each
repetition shuffles the paragraphs before grouping 3-10 of them into a document, so
dedup does not eat the repetitions), then times:

* ``cpm corpus build --source news`` with ``--workers 1`` and ``--workers 2``, and with
  ``--workers 1 --no-dedup`` (a subprocess each; wall time and the CPU time of the job's
  processes);
Rates are MB of JSONL input per second per core: "wall" divides by wall time x workers
(meaningful only on an otherwise idle machine), "CPU" by the CPU seconds of the job's
processes: the launcher and, with ``--workers`` > 1, its pool of worker processes, which it waits
for, so ``wait4`` counts them (:mod:`proctree`, as ``bench_scale.py``; the polled ``/proc`` sum is
printed beside it as a check). CPU time is robust to other load only up to a point: on a
2-core machine whose other core is busy it reads about 5% higher (shared caches and memory bandwidth). The baseline and segmentation rows use CPU
time. The same builds on 20 documents give the fixed cost, the rest is the per-MB cost.

* the naive baseline, measured in the same run on a slice of the same documents:
  per-document ``jieba.cut`` + per-shingle ``datasketch.MinHash.update`` (5-char shingles);
* segmentation alone: ``cpm.tokenizer.segment.cut_batch`` against ``jieba.cut``.

Usage: python bench/bench_corpus.py [--mb 20] [--workers 1 2] [--baseline-mb 1]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "zh"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def read_paragraphs() -> list[str]:
    import zstandard

    path = SHARED / "people_daily_1998_paragraphs.txt.zst"
    if not path.is_file():
        sys.exit(f"{path} is missing: the benchmark needs the shared corpora")
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        return [line.strip() for line in io.TextIOWrapper(stream, encoding="utf-8") if line.strip()]


def make_documents(paragraphs: list[str], megabytes: float, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs: list[str] = []
    size = 0
    while size < megabytes * 1e6:
        order = paragraphs[:]
        rng.shuffle(order)
        i = 0
        while i < len(order) and size < megabytes * 1e6:
            n = rng.randint(3, 10)
            doc = "\n".join(order[i : i + n])
            i += n
            docs.append(doc)
            size += len(doc.encode("utf-8"))
    return docs


def time_build(jsonl: Path, workers: int, work: Path, *extra: str) -> dict:
    """One build, measured over its whole process tree as ``bench_scale.py`` does (:mod:`proctree`)."""
    from proctree import measure

    output = work / f"out-{workers}"
    cmd = [sys.executable, "-m", "cpm", "-q", "corpus", "build", "--source", "news", "--input", str(jsonl),
           "--output", str(output), "--workers", str(workers), "--overwrite", "--no-progress", *extra]
    usage = measure(cmd)
    if usage.returncode != 0:
        sys.exit(f"build failed:\n{usage.stderr[-3000:]}")
    counters = json.loads((output / "manifest.json").read_text())["counters"]
    return {"wall": usage.wall, "cpu": usage.cpu, "cpu_polled": usage.cpu_polled, "counters": counters}


def naive_baseline(docs: list[str]) -> float:
    """CPU seconds for per-document jieba.cut + per-shingle datasketch MinHash updates."""
    import jieba
    from datasketch import MinHash

    jieba.initialize()
    t0 = time.process_time()
    for doc in docs:
        list(jieba.cut(doc))
        sketch = MinHash(num_perm=128)
        for i in range(max(1, len(doc) - 4)):
            sketch.update(doc[i : i + 5].encode("utf-8"))
    return time.process_time() - t0


def segmentation(docs: list[str]) -> tuple[float, float]:
    import jieba

    from cpm.tokenizer.segment import cut, cut_batch

    jieba.initialize()
    cut("预热")
    t0 = time.process_time()
    ours = cut_batch(docs)
    t_ours = time.process_time() - t0
    t0 = time.process_time()
    theirs = [list(jieba.cut(d)) for d in docs]
    t_jieba = time.process_time() - t0
    assert ours == theirs, "segmentation differs from jieba.cut"
    return t_ours, t_jieba


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=20.0, help="MB of JSONL to build (default 20)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--baseline-mb", type=float, default=1.0, help="MB the (slow) naive baseline runs on")
    args = parser.parse_args()

    docs = make_documents(read_paragraphs(), args.mb)
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        work = Path(tmp)
        jsonl = work / "news.jsonl"
        with open(jsonl, "w", encoding="utf-8") as handle:
            for i, doc in enumerate(docs):
                handle.write(json.dumps({"id": f"bench-{i:07d}", "text": doc}, ensure_ascii=False) + "\n")
        mb = jsonl.stat().st_size / 1e6
        print(f"input: {len(docs):,} documents, {mb:.1f} MB of JSONL; {os.cpu_count()} CPUs on this machine")

        baseline_docs = make_documents(read_paragraphs(), args.baseline_mb, seed=1)
        baseline_mb = sum(len(d.encode()) for d in baseline_docs) / 1e6
        t_naive = naive_baseline(baseline_docs)
        naive_rate = baseline_mb / t_naive
        t_ours, t_jieba = segmentation(baseline_docs)

        rows = [("naive: jieba.cut + datasketch per shingle (1 core, CPU)", float("nan"), naive_rate, 1.0)]
        runs = [(w, ()) for w in args.workers] + [(1, ("--no-dedup",))]
        cpu_by_run: dict[tuple, float] = {}
        for workers, extra in runs:
            result = time_build(jsonl, workers, work, *extra)
            if workers == 1:
                cpu_by_run[extra] = result["cpu"]
            c = result["counters"]
            per_core_wall = mb / result["wall"] / workers
            per_core_cpu = mb / result["cpu"]
            name = f"cpm corpus build --workers {workers} {' '.join(extra)}".strip()
            rows.append((name, per_core_wall, per_core_cpu, per_core_cpu / naive_rate))
            print(f"  {name}: {result['wall']:.1f}s wall, {result['cpu']:.1f}s CPU ({result['cpu_polled']:.1f}s polled); "
                  f"read {c['records_read']:,} kept {c['kept']:,} rejected {c['rejected']:,} duplicates {c['duplicates']:,}")

        # fixed cost (imports, segmenter and MinHash tables, graph construction, per-stage overhead):
        # the same builds on 20 documents; the rest of a run's CPU is what grows with the input
        tiny = work / "tiny.jsonl"
        with open(jsonl, encoding="utf-8") as src, open(tiny, "w", encoding="utf-8") as dst:
            dst.writelines(line for _, line in zip(range(20), src))
        if () in cpu_by_run:  # needs a --workers 1 run with dedup
            fixed = {extra: time_build(tiny, 1, work, *extra)["cpu"] for extra in ((), ("--no-dedup",))}
            marginal = {extra: cpu - fixed[extra] for extra, cpu in cpu_by_run.items()}
            print(f"  fixed CPU (20 documents): {fixed[()]:.1f}s with dedup, {fixed[('--no-dedup',)]:.1f}s without; "
                  f"per MB: {marginal[()] / mb:.2f}s with dedup, {marginal[('--no-dedup',)] / mb:.2f}s without "
                  f"(dedup {(marginal[()] - marginal[('--no-dedup',)]) / mb:.2f} s/MB + {fixed[()] - fixed[('--no-dedup',)]:.1f}s fixed)")
        print()
        print(f"{'':58s} {'MB/s/core (wall)':>17s} {'MB/s/core (CPU)':>16s} {'vs naive':>9s}")
        for name, wall_rate, cpu_rate, ratio in rows:
            wall = "-" if wall_rate != wall_rate else f"{wall_rate:.2f}"
            print(f"{name:58s} {wall:>17s} {cpu_rate:16.2f} {ratio:8.1f}x")
        print()
        print(f"segmentation on {baseline_mb:.1f} MB: cpm.tokenizer.segment {baseline_mb / t_ours:.2f} MB/s, "
              f"jieba.cut {baseline_mb / t_jieba:.2f} MB/s -> {t_jieba / t_ours:.1f}x (identical output)")


if __name__ == "__main__":
    main()
