"""Scaling from 1 to 2 workers of every multi-core stage: corpus build, tokenizer train, data pack.

Builds JSONL news documents from the shared People's Daily paragraphs (``bench_corpus.py``), then
runs each stage with 1 and with 2 workers, measuring the stage's whole process tree
(:mod:`proctree`: wall time, CPU time from ``wait4``, the peak RSS of the largest process and of
all processes together):

* ``cpm corpus build --workers N`` on the DirectRunner (the launcher's pool of N processes);
* ``cpm corpus build --runner DaskRunner --workers N`` (a local Dask cluster of N worker processes);
* ``cpm tokenizer train --threads N`` (SentencePiece's own trainer threads), on the built corpus;
* ``cpm data pack --workers N`` (a process pool encoding documents), with that tokenizer.

Printed: wall and CPU seconds, peak RSS (largest process / whole tree), the wall speed-up of 2 workers over 1 and the CPU-time
ratio (the cost of parallelism). Wall speed-ups mean something only on an otherwise idle machine.

Usage: python bench/bench_workers.py [--mb 40] [--vocab-size 8000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import write_documents  # noqa: E402
from proctree import measure  # noqa: E402


def timed(args: list[str]) -> dict:
    usage = measure([sys.executable, "-m", "cpm", "-q", *args])
    if usage.returncode != 0:
        sys.exit(f"{' '.join(args[:2])} failed:\n{usage.stderr[-3000:]}")
    return {"wall": usage.wall, "cpu": usage.cpu, "rss": usage.rss, "tree_rss": usage.tree_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=40.0, help="MB of JSONL news (default 40)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--work", help="directory for inputs and outputs (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-workers-", dir=args.work) as tmp:
        work = Path(tmp)
        jsonl = work / "news.jsonl"
        write_documents(jsonl, args.mb)
        mb = jsonl.stat().st_size / 1e6
        print(f"{os.cpu_count()} CPUs on this machine; {mb:.0f} MB of JSONL news")
        def build(runner: str):
            return lambda n: ["corpus", "build", "--source", "news", "--input", str(jsonl), "--output",
                              str(work / f"corpus-{runner}-{n}"), "--workers", str(n), "--runner", runner, "--no-progress"]

        stages = {
            "corpus build": build("DirectRunner"),
            "corpus build Dask": build("DaskRunner"),
            "tokenizer train": lambda n: ["tokenizer", "train", "--input", str(work / "corpus-DirectRunner-1"), "--output",
                                          str(work / f"tok{n}"), "--vocab-size", str(args.vocab_size), "--threads", str(n),
                                          "--no-progress"],
            "data pack": lambda n: ["data", "pack", "--input", str(work / "corpus-DirectRunner-1"), "--tokenizer", str(work / "tok1"),
                                    "--output", str(work / f"packed{n}"), "--workers", str(n)],
        }
        rows = []
        for name, command in stages.items():
            results = {n: timed(command(n)) for n in (1, 2)}
            rows.append((name, results))
            print(f"  {name}: " + "; ".join(f"{n} worker(s) {r['wall']:.1f}s wall {r['cpu']:.1f}s CPU" for n, r in results.items()),
                  flush=True)
        print()
        print(f"{'stage':18s} {'wall 1':>7s} {'wall 2':>7s} {'CPU 1':>7s} {'CPU 2':>7s} {'RSS 1':>11s} {'RSS 2':>11s} "
              f"{'wall speed-up':>14s} {'CPU 2/1':>8s}")
        for name, r in rows:
            one, two = r[1], r[2]
            print(f"{name:18s} {one['wall']:7.1f} {two['wall']:7.1f} {one['cpu']:7.1f} {two['cpu']:7.1f} "
                  f"{one['rss'] / 2**30:5.2f}/{one['tree_rss'] / 2**30:4.2f}G {two['rss'] / 2**30:5.2f}/{two['tree_rss'] / 2**30:4.2f}G "
                  f"{one['wall'] / two['wall']:13.2f}x {two['cpu'] / one['cpu']:7.2f}x")
        print("\nRSS: the largest process / all processes of the stage's tree together, at their peak. CPU: user+sys of the "
              "whole tree (a local Dask cluster's workers included). Wall speed-ups need an otherwise idle machine.")


if __name__ == "__main__":
    main()
