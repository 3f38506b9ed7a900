"""How ``cpm corpus build`` scales: input size (x1, x5, x20) and workers (1, 2), CPU time, wall, peak RSS.

Writes JSONL news documents from the shared People's Daily paragraphs (as ``bench_corpus.py``:
each repetition shuffles the paragraphs before grouping 3-10 of them into a document) up to the
largest size; each smaller input is a prefix of it. Then runs, each under ``/usr/bin/time``
(CPU time and peak RSS of the build's whole process tree: the launcher and its workers):

* ``cpm corpus build --source news --workers 1`` at every size (with dedup, default settings);
* ``--workers 2`` at the smallest size (and any other ``--runner``, e.g. ``DaskRunner``, there too).

Printed per run: MB of input, wall seconds, CPU seconds, MB/s per core of CPU time, CPU seconds per
MB and its ratio to the smallest size's (the baseline measured in the same run), peak RSS and its
ratio to the smallest size's. For 2 workers: the speed-up of wall time and the CPU-time ratio over
1 worker. Wall times mean something only on an otherwise idle machine; CPU times do not need one.

Usage: python bench/bench_scale.py [--mb 50] [--factors 1 5 20] [--workers 1 2] [--runners DirectRunner]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_corpus import read_paragraphs  # noqa: E402


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
    stats = output.parent / f"{output.name}.time"
    cmd = ["/usr/bin/time", "-o", str(stats), "-f", "%e %U %S %M", sys.executable, "-m", "cpm", "-q", "corpus", "build",
           "--source", "news", "--input", str(jsonl), "--output", str(output), "--workers", str(workers),
           "--runner", runner, "--overwrite", "--no-progress", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    wall, user, system, rss_kb = stats.read_text().split()[-4:]
    counters = json.loads((output / "manifest.json").read_text())["counters"]
    return {"wall": float(wall), "cpu": float(user) + float(system), "rss": int(rss_kb) * 1024, "counters": counters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50.0, help="MB of JSONL of the smallest size (default 50)")
    parser.add_argument("--factors", type=float, nargs="+", default=[1, 5, 20], help="sizes as multiples of --mb")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts run at the smallest size")
    parser.add_argument("--runners", nargs="+", default=["DirectRunner"], help="runners compared at the smallest size")
    parser.add_argument("--work", help="directory for inputs and outputs (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="more build options, after --, e.g. -- --no-dedup")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.work) as tmp:
        work = Path(tmp)
        full = work / "news-full.jsonl"
        sizes = sorted(set(args.factors))
        ends = write_documents(full, args.mb * sizes[-1])
        inputs = []
        for factor in sizes:
            target = args.mb * factor * 1e6
            nbytes = next((end for end in ends if end >= target), ends[-1])
            path = work / f"news-x{factor:g}.jsonl"
            prefix(full, path, nbytes)
            inputs.append((factor, path, nbytes / 1e6))
        full.unlink()
        print(f"{os.cpu_count()} CPUs on this machine; inputs: " + ", ".join(f"x{f:g} = {mb:.0f} MB" for f, _, mb in inputs))

        runs = [(f, p, mb, 1, "DirectRunner") for f, p, mb in inputs]
        runs += [(inputs[0][0], inputs[0][1], inputs[0][2], w, r) for r in args.runners for w in args.workers
                 if (w, r) != (1, "DirectRunner")]
        results = []
        for factor, path, mb, workers, runner in runs:
            result = timed_build(path, work / "out", workers, runner, args.extra)
            results.append((factor, mb, workers, runner, result))
            if "error" in result:
                print(f"  x{factor:g} {runner} --workers {workers}: {result['error']}")
            else:
                c = result["counters"]
                print(f"  x{factor:g} {runner} --workers {workers}: {result['wall']:.1f}s wall, {result['cpu']:.1f}s CPU, "
                      f"{result['rss'] / 2**30:.2f} GiB peak; read {c['records_read']:,} kept {c['kept']:,} "
                      f"duplicates {c['duplicates']:,}", flush=True)

        base = results[0][4]
        print()
        print(f"{'run':34s} {'MB':>7s} {'wall s':>8s} {'CPU s':>8s} {'MB/s/core':>10s} {'CPU s/MB':>9s} {'vs x1':>6s} "
              f"{'peak RSS':>9s} {'vs x1':>6s} {'wall speed-up':>14s}")
        for factor, mb, workers, runner, r in results:
            name = f"x{factor:g} {runner} --workers {workers}"
            if "error" in r or "error" in base:
                print(f"{name:34s} {mb:7.0f}  {r.get('error', 'baseline failed')}")
                continue
            same_size_1 = next((x[4] for x in results if x[0] == factor and x[2] == 1 and x[3] == "DirectRunner"), None)
            speedup = f"{same_size_1['wall'] / r['wall']:.2f}x" if workers > 1 and same_size_1 else "-"
            per_mb = r["cpu"] / mb
            print(f"{name:34s} {mb:7.0f} {r['wall']:8.1f} {r['cpu']:8.1f} {mb / r['cpu']:10.2f} {per_mb:9.3f} "
                  f"{per_mb / (base['cpu'] / results[0][1]):5.2f}x {r['rss'] / 2**30:8.2f}G {r['rss'] / base['rss']:5.2f}x {speedup:>14s}")
        print("\nMB/s/core and CPU s/MB use CPU time (user+sys of the whole process tree); wall speed-up compares "
              "wall times, meaningful only on an otherwise idle machine.")


if __name__ == "__main__":
    main()
