"""Throughput of ``cpm.tokenizer.segment.cut`` against ``jieba.cut`` (jieba 0.42.1), one core each.

Both segment every line of the shared corpora (``../shared/data/zh``) in this process (single-threaded):
``cut_batch`` (what the corpus job calls) 1,000 lines at a time, and ``cut`` one call per line. jieba and
ours take turns on each 1,000-line chunk, so both are timed on the same machine state (a shared
machine's speed drifts by tens of percent within minutes). Reported: MB/s of UTF-8 input over CPU time
of this process, ours and jieba's in the same pass, and the ratio -- starting from empty caches
("cold": one pass over a corpus never seen) and for a second pass ("warm", as in a long-running
worker); the best ratio of ``--repeat`` passes. Every pass is checked word for word against jieba.

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


def interleaved(ours, texts: list[str], cold: bool, chunk: int = 1000) -> tuple[float, float, list[list[str]]]:
    """(our CPU seconds, jieba's CPU seconds, our words) over ``texts`` in chunks of ``chunk`` lines, jieba
    and ``ours`` taking turns on each chunk, so both see the same machine (this one's speed drifts).

    ``ours(chunk_texts)`` returns the chunk's words; ``cold`` empties our caches before the pass.
    """
    import jieba

    from cpm.tokenizer import segment

    if cold:
        segment.clear_caches()
    t_ours = t_jieba = 0.0
    words: list[list[str]] = []
    for i in range(0, len(texts), chunk):
        part = texts[i : i + chunk]
        start = time.process_time()
        for text in part:
            list(jieba.cut(text))
        middle = time.process_time()
        words += ours(part)
        t_ours += time.process_time() - middle
        t_jieba += middle - start
    return t_ours, t_jieba, words


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

    rows = []
    for name in CORPORA:
        texts = read_lines(name)
        if args.lines:
            texts = texts[: args.lines]
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        reference = [list(jieba.cut(t)) for t in texts]
        passes = {
            "batch (cold)": (segment.cut_batch, True),  # what the corpus job calls, 1,000 texts at a time
            "batch (warm)": (segment.cut_batch, False),
            "cut (cold)": (lambda part: [segment.cut(t) for t in part], True),  # one call per line
            "cut (warm)": (lambda part: [segment.cut(t) for t in part], False),
        }
        for key, (fn, cold) in passes.items():
            best = None
            for _ in range(args.repeat):
                t_ours, t_jieba, words = interleaved(fn, texts, cold)
                bad = sum(a != b for a, b in zip(reference, words))
                if bad or len(words) != len(texts):
                    sys.exit(f"{name}: {bad} lines differ from jieba ({key})")
                if best is None or t_jieba / t_ours > best[1] / best[0]:
                    best = (t_ours, t_jieba)
            rows.append((name, len(texts), mb, key, mb / best[0], mb / best[1], best[1] / best[0]))
        slow = sum(segment.needs_block_split(t) for t in texts)
        print(f"{name}: identical to jieba on every line ({slow} lines took the block-split path)")

    header = f"{'corpus':30} {'lines':>6} {'MB':>6} {'segmenter':13} {'MB/s cpu':>9} {'jieba MB/s':>10} {'x jieba':>8}"
    print(header)
    print("-" * len(header))
    for name, n, mb, key, rate, jieba_rate, ratio in rows:
        print(f"{name:30} {n:6d} {mb:6.2f} {key:13} {rate:9.2f} {jieba_rate:10.2f} {ratio:8.1f}")


if __name__ == "__main__":
    main()
