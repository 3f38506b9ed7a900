"""Throughput of ``cpm.tokenizer.segment.cut`` against ``jieba.cut`` (jieba 0.42.1), one core each.

Both segment every line of the shared corpora (``../shared/data/zh``) one call per line, in this process
(single-threaded); ``cut_batch`` (what the corpus job calls) gets the same lines 1,000 at a time. Reported: MB/s of UTF-8 input over CPU time of this process (robust on a shared
machine; wall-clock MB/s alongside), for jieba, for ``cut`` starting from empty caches (the honest
number: a single pass over a corpus it has never seen) and for a second ``cut`` pass (warm caches, as in
a long-running worker). Also checks the words are identical and reports how many texts took the
block-split path and how large the caches grew.

Usage: python bench/bench_segment.py [--lines N] [--repeat R]
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "zh"
CORPORA = ["people_daily_1998_paragraphs", "product_reviews"]


def read_lines(name: str) -> list[str]:
    import zstandard

    path = SHARED / f"{name}.txt.zst"
    if not path.is_file():
        sys.exit(f"{path} is missing: the benchmark needs the shared corpora")
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        return io.TextIOWrapper(stream, encoding="utf-8", newline="").read().split("\n")


def timed(fn, texts: list[str]) -> tuple[float, float, list[list[str]]]:
    """(cpu seconds, wall seconds, outputs) of ``[fn(t) for t in texts]``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = [fn(t) for t in texts]
    return time.process_time() - cpu, time.perf_counter() - wall, out


def timed_batch(fn, texts: list[str], size: int = 1000) -> tuple[float, float, list[list[str]]]:
    """(cpu seconds, wall seconds, outputs) of ``fn`` over batches of ``size`` texts (as the corpus job does)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = [words for i in range(0, len(texts), size) for words in fn(texts[i : i + size])]
    return time.process_time() - cpu, time.perf_counter() - wall, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=0, help="only the first N lines of each corpus (0: all)")
    parser.add_argument("--repeat", type=int, default=1, help="best of R passes for each measurement")
    args = parser.parse_args()

    import jieba

    from cpm.tokenizer import segment

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    t0 = time.perf_counter()
    segment.cut("预热")  # builds the model: rjieba + jieba's dict + HMM tables
    print(f"segment model load: {time.perf_counter() - t0:.2f} s (once per process)")

    def jieba_cut(text: str) -> list[str]:
        return list(jieba.cut(text))

    rows = []
    for name in CORPORA:
        texts = read_lines(name)
        if args.lines:
            texts = texts[: args.lines]
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        best = {}
        for _ in range(args.repeat):
            results = {"jieba": timed(jieba_cut, texts)}
            segment.clear_caches()
            results["cut (cold)"] = timed(segment.cut, texts)
            results["cut (warm)"] = timed(segment.cut, texts)
            segment.clear_caches()
            results["batch (cold)"] = timed_batch(segment.cut_batch, texts)
            results["batch (warm)"] = timed_batch(segment.cut_batch, texts)
            for key, (cpu, wall, out) in results.items():
                if key not in best or cpu < best[key][0]:
                    best[key] = (cpu, wall, out)
        reference = best["jieba"][2]
        for key in ("cut (cold)", "cut (warm)", "batch (cold)", "batch (warm)"):
            bad = sum(a != b for a, b in zip(reference, best[key][2]))
            if bad:
                sys.exit(f"{name}: {bad} lines differ from jieba ({key})")
        slow = sum(segment.needs_block_split(t) for t in texts)
        for key, (cpu, wall, _) in best.items():
            rows.append((name, len(texts), mb, key, mb / cpu, mb / wall, best["jieba"][0] / cpu, slow))

    header = f"{'corpus':30} {'lines':>6} {'MB':>6} {'segmenter':13} {'MB/s cpu':>9} {'MB/s wall':>9} {'x jieba':>8}"
    print(header)
    print("-" * len(header))
    for name, n, mb, key, cpu_rate, wall_rate, ratio, _ in rows:
        print(f"{name:30} {n:6d} {mb:6.2f} {key:13} {cpu_rate:9.2f} {wall_rate:9.2f} {ratio:8.1f}")
    for name in CORPORA:
        slow = next(r[7] for r in rows if r[0] == name)
        print(f"{name}: identical to jieba on every line; {slow} lines took the block-split path")


if __name__ == "__main__":
    main()
