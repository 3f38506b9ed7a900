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

Usage: python bench/bench_workers.py [--mb 40] [--vocab-size 8000] [--stages STAGE ...] [--baseline DIR] [--repeat N]
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


STAGES = ("corpus build", "corpus build Dask", "tokenizer train", "data pack")


def timed(args: list[str], env: dict | None = None) -> dict:
    usage = measure([sys.executable, "-m", "cpm", "-q", *args], env=env)
    if usage.returncode != 0:
        sys.exit(f"{' '.join(args[:2])} failed:\n{usage.stderr[-3000:]}")
    return {"wall": usage.wall, "cpu": usage.cpu, "rss": usage.rss, "tree_rss": usage.tree_rss}


def baseline_env(checkout: Path, work: Path) -> dict:
    """An environment whose ``import cpm`` is ``checkout`` (another version's source tree)."""
    path = work / "path"
    path.mkdir(parents=True)
    (path / "cpm").symlink_to(checkout.resolve(), target_is_directory=True)
    return {**os.environ, "PYTHONPATH": str(path)}


def best(runs: list[dict]) -> dict:
    """The run of least wall time (the least disturbed by the machine's other work)."""
    return min(runs, key=lambda r: r["wall"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=40.0, help="MB of JSONL news (default 40)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--work", help="directory for inputs and outputs (default: a temporary one)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), metavar="STAGE",
                        help=f"stages to time (default all: {', '.join(STAGES)}; the last two need 'corpus build')")
    parser.add_argument("--baseline", type=Path, help="a source tree of another cpm version: its corpus builds are timed too, "
                        "interleaved with this version's (e.g. git archive main | tar -x -C DIR)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the one of least wall time is shown (default 1)")
    args = parser.parse_args()
    if {"tokenizer train", "data pack"} & set(args.stages) and "corpus build" not in args.stages:
        parser.error("tokenizer train and data pack run on the output of 'corpus build'")

    with tempfile.TemporaryDirectory(prefix="bench-workers-", dir=args.work) as tmp:
        work = Path(tmp)
        jsonl = work / "news.jsonl"
        write_documents(jsonl, args.mb)
        mb = jsonl.stat().st_size / 1e6
        print(f"{os.cpu_count()} CPUs on this machine; {mb:.0f} MB of JSONL news")
        def build(runner: str, tag: str = ""):
            return lambda n: ["corpus", "build", "--source", "news", "--input", str(jsonl), "--output",
                              str(work / f"corpus-{runner}{tag}-{n}"), "--workers", str(n), "--runner", runner, "--no-progress",
                              "--overwrite"]

        commands = {
            "corpus build": build("DirectRunner"),
            "corpus build Dask": build("DaskRunner"),
            "tokenizer train": lambda n: ["tokenizer", "train", "--input", str(work / "corpus-DirectRunner-1"), "--output",
                                          str(work / f"tok{n}"), "--vocab-size", str(args.vocab_size), "--threads", str(n),
                                          "--no-progress", "--overwrite"],
            "data pack": lambda n: ["data", "pack", "--input", str(work / "corpus-DirectRunner-1"), "--tokenizer", str(work / "tok1"),
                                    "--output", str(work / f"packed{n}"), "--workers", str(n), "--overwrite"],
        }
        versions = {"": None}
        if args.baseline:  # both versions imported the same way, through PYTHONPATH
            versions = {"baseline: ": baseline_env(args.baseline, work / "baseline"),
                        "": baseline_env(Path(__file__).resolve().parents[1], work / "this")}
        rows = []
        for name in args.stages:
            for label, env in versions.items():
                if label and not name.startswith("corpus build"):
                    continue
                command = build("DirectRunner" if name == "corpus build" else "DaskRunner", "-baseline") if label else commands[name]
                runs: dict[int, list[dict]] = {1: [], 2: []}
                for _ in range(args.repeat):
                    for n in (1, 2):
                        runs[n].append(timed(command(n), env))
                results = {n: best(r) for n, r in runs.items()}
                rows.append((label + name, results))
                print(f"  {label}{name}: " + "; ".join(
                    f"{n} worker(s) " + ", ".join(f"{r['wall']:.1f}" for r in runs[n]) + "s wall" for n in runs), flush=True)
        print()
        print(f"{'stage':28s} {'wall 1':>7s} {'wall 2':>7s} {'CPU 1':>7s} {'CPU 2':>7s} {'RSS 1':>11s} {'RSS 2':>11s} "
              f"{'wall speed-up':>14s} {'CPU 2/1':>8s}")
        for name, r in rows:
            one, two = r[1], r[2]
            print(f"{name:28s} {one['wall']:7.1f} {two['wall']:7.1f} {one['cpu']:7.1f} {two['cpu']:7.1f} "
                  f"{one['rss'] / 2**30:5.2f}/{one['tree_rss'] / 2**30:4.2f}G {two['rss'] / 2**30:5.2f}/{two['tree_rss'] / 2**30:4.2f}G "
                  f"{one['wall'] / two['wall']:13.2f}x {two['cpu'] / one['cpu']:7.2f}x")
        print("\nRSS: the largest process / all processes of the stage's tree together, at their peak. CPU: user+sys of the "
              "whole tree (a local Dask cluster's workers included). Wall speed-ups need an otherwise idle machine; "
              "with --repeat, the run of least wall time of each.")


if __name__ == "__main__":
    main()
