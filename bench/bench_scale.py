"""How ``cpm corpus build`` scales: input size (x1, x5, x20) for every runner and worker count.

Writes JSONL news documents from the shared People's Daily paragraphs (as ``bench_corpus.py``:
each repetition shuffles the paragraphs before grouping 3-10 of them into a document) up to the
largest size; each smaller input is a prefix of it. Then runs every configuration (default:
DirectRunner with 1 worker, a local Dask cluster with 1 and with 2 worker processes) at every
size, ``cpm corpus build --source news`` with dedup and default settings, measuring the build's
whole process tree (:mod:`proctree`: the launcher, its pool of workers, the Dask scheduler's
worker processes; CPU from ``wait4`` and, as a check, from polling ``/proc``).

Printed per run: MB of input, wall seconds, CPU seconds, MB/s per core of CPU time, CPU seconds per
MB and its ratio to the smallest size's of the same configuration (target <= 1.15x), the peak RSS
of the largest process and of the whole tree. Then, per size, the wall speed-up of Dask with 2
workers over Dask with 1. Wall times mean something only on an otherwise idle machine; CPU times
do not need one.

Usage: python bench/bench_scale.py [--mb 50] [--factors 1 5 20] [--configs DirectRunner:1 DaskRunner:1 DaskRunner:2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_corpus import read_paragraphs  # noqa: E402
from proctree import measure  # noqa: E402


def write_documents(path: Path, megabytes: float, seed: int = 0) -> list[int]:
    """Write documents until ``megabytes``; the byte offset after each line (for prefixes)."""
    paragraphs = read_paragraphs()
    rng = random.Random(seed)
    ends, size, n = [], 0, 0
    with open(path, "w", encoding="utf-8") as handle:
        while size < megabytes * 1e6:
            order = paragraphs[:]
            rng.shuffle(order)
            i = 0
            while i < len(order) and size < megabytes * 1e6:
                count = rng.randint(3, 10)
                line = json.dumps({"id": f"bench-{n:08d}", "text": "\n".join(order[i : i + count])}, ensure_ascii=False) + "\n"
                handle.write(line)
                size += len(line.encode("utf-8"))
                ends.append(size)
                i += count
                n += 1
    return ends


def prefix(source: Path, target: Path, nbytes: int) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        remaining = nbytes
        while remaining:
            block = src.read(min(remaining, 1 << 24))
            if not block:
                break
            dst.write(block)
            remaining -= len(block)


def timed_build(jsonl: Path, output: Path, workers: int, runner: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "cpm", "-q", "corpus", "build", "--source", "news", "--input", str(jsonl),
           "--output", str(output), "--workers", str(workers), "--runner", runner, "--overwrite", "--no-progress", *extra]
    usage = measure(cmd)
    if usage.returncode != 0:
        return {"error": (usage.stderr.strip().splitlines() or ["failed"])[-1]}
    counters = json.loads((output / "manifest.json").read_text())["counters"]
    return {"wall": usage.wall, "cpu": usage.cpu, "cpu_polled": usage.cpu_polled, "rss": usage.rss,
            "tree_rss": usage.tree_rss, "counters": counters}


def parse_config(text: str) -> tuple[str, int]:
    runner, _, workers = text.partition(":")
    return runner, int(workers or 1)


def write_inputs(work: Path, megabytes: float, factors: list[float]) -> list[tuple[float, Path, float]]:
    """Inputs of ``megabytes`` x every factor, each a prefix of the largest: (factor, path, MB)."""
    full = work / "news-full.jsonl"
    ends = write_documents(full, megabytes * factors[-1])
    inputs = []
    for factor in factors:
        target = megabytes * factor * 1e6
        nbytes = next((end for end in ends if end >= target), ends[-1])
        path = work / f"news-x{factor:g}.jsonl"
        prefix(full, path, nbytes)
        inputs.append((factor, path, nbytes / 1e6))
    full.unlink()
    return inputs


def print_table(results: list[tuple], configs: list[tuple[str, int]]) -> None:
    print()
    print(f"{'run':32s} {'MB':>7s} {'wall s':>8s} {'CPU s':>8s} {'polled':>7s} {'MB/s/core':>10s} {'CPU s/MB':>9s} "
          f"{'vs x1':>6s} {'peak RSS':>9s} {'tree RSS':>9s}")
    for runner, workers in configs:
        rows = [r for r in results if (r[2], r[3]) == (runner, workers)]
        base = next((r for r in rows if "error" not in r[4]), None)
        for factor, mb, _, _, r in rows:
            name = f"x{factor:g} {runner} --workers {workers}"
            if "error" in r:
                print(f"{name:32s} {mb:7.0f}  {r['error']}")
                continue
            per_mb = r["cpu"] / mb
            base_per_mb = base[4]["cpu"] / base[1]
            print(f"{name:32s} {mb:7.0f} {r['wall']:8.1f} {r['cpu']:8.1f} {r['cpu_polled']:7.1f} {mb / r['cpu']:10.2f} "
                  f"{per_mb:9.3f} {per_mb / base_per_mb:5.2f}x {r['rss'] / 2**30:8.2f}G {r['tree_rss'] / 2**30:8.2f}G")
    by_key = {(f, runner, w): r for f, _, runner, w, r in results if "error" not in r}
    for runner in sorted({c[0] for c in configs}):
        for factor in sorted({r[0] for r in results}):
            one, two = by_key.get((factor, runner, 1)), by_key.get((factor, runner, 2))
            if one and two:
                print(f"x{factor:g} {runner}: 2 workers {one['wall'] / two['wall']:.2f}x as fast (wall) as 1, "
                      f"CPU {two['cpu'] / one['cpu']:.2f}x")
    print("\nMB/s/core and CPU s/MB use CPU time (user+sys of the whole process tree, from wait4; 'polled' sums "
          "/proc over the tree as a check); peak RSS: the largest process; tree RSS: all processes together. "
          "Wall times are meaningful only on an otherwise idle machine.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50.0, help="MB of JSONL of the smallest size (default 50)")
    parser.add_argument("--factors", type=float, nargs="+", default=[1, 5, 20], help="sizes as multiples of --mb")
    parser.add_argument("--configs", nargs="+", default=["DirectRunner:1", "DaskRunner:1", "DaskRunner:2"],
                        help="RUNNER:WORKERS configurations, each run at every size")
    parser.add_argument("--work", help="directory for inputs and outputs (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="more build options, after --, e.g. -- --no-dedup")
    args = parser.parse_args()
    configs = [parse_config(c) for c in args.configs]

    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.work) as tmp:
        work = Path(tmp)
        inputs = write_inputs(work, args.mb, sorted(set(args.factors)))
        print(f"{os.cpu_count()} CPUs on this machine; inputs: " + ", ".join(f"x{f:g} = {mb:.0f} MB" for f, _, mb in inputs))
        results = []
        for factor, path, mb in inputs:
            for runner, workers in configs:
                result = timed_build(path, work / "out", workers, runner, args.extra)
                results.append((factor, mb, runner, workers, result))
                if "error" in result:
                    print(f"  x{factor:g} {runner} --workers {workers}: {result['error']}", flush=True)
                    continue
                c = result["counters"]
                print(f"  x{factor:g} {runner} --workers {workers}: {result['wall']:.1f}s wall, {result['cpu']:.1f}s CPU "
                      f"({result['cpu_polled']:.1f}s polled), {result['rss'] / 2**30:.2f} GiB peak "
                      f"({result['tree_rss'] / 2**30:.2f} GiB tree); read {c['records_read']:,} kept {c['kept']:,} "
                      f"duplicates {c['duplicates']:,}", flush=True)
        print_table(results, configs)


if __name__ == "__main__":
    main()
