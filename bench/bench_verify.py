"""Cost of the checks ``cpm train`` / ``cpm eval ppl`` run before the first step, in seconds per GB.

Writes synthetic sequence shards with cpm's own writer (and a manifest listing their sha256s)
into a temporary directory, then times, in the same run, with the pages cached:

* ``read (baseline)``: reading every shard once in 8 MiB chunks, nothing else;
* ``sha256 verify``: :func:`cpm.shards.verify.verify_data` (sizes, then a streamed sha256);
* ``token range check``: opening the shards (:class:`cpm.shards.sequences.SequenceShards`), which
  checks every token id against the vocabulary over the memory map;

and ``sha256 verify (cold)``: the verification again after evicting the files from the page cache
(``posix_fadvise(DONTNEED)``), so it reads from disk. CPU time is user+sys of this process.

Usage: python bench/bench_verify.py [--mb 1024] [--seq-len 1024]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from bench_loader import evict, write_shards


def write_manifest_for(directory: Path, seq_len: int, vocab_size: int) -> list[Path]:
    from cpm.schemas.manifest import new_manifest, sha256_file, write_manifest

    shards = sorted((directory / "train").glob("part-*.arrow"))
    manifest = new_manifest("sequences", "data pack", {"seq_len": seq_len, "vocab_size": vocab_size})
    manifest["shards"] = [
        {"path": str(p.relative_to(directory)), "rows": 0, "bytes": p.stat().st_size, "sha256": sha256_file(p),
         "kind": "sequences", "split": "train"}
        for p in shards
    ]
    write_manifest(directory, manifest)
    return shards


def read_all(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(8 << 20):
                pass


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``action()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="size of the synthetic shards in MB")
    parser.add_argument("--seq-len", type=int, default=1024)
    args = parser.parse_args()

    from cpm.shards.sequences import SequenceShards
    from cpm.shards.verify import verify_data

    vocab = 30000
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        directory = Path(tmp)
        write_shards(directory, args.mb, args.seq_len, vocab)
        shards = write_manifest_for(directory, args.seq_len, vocab)
        gb = sum(p.stat().st_size for p in shards) / 1e9
        read_all(shards)  # warm the page cache
        results = {
            "read (baseline)": timed(lambda: read_all(shards)),
            "sha256 verify": timed(lambda: verify_data(shards, progress=False)),
            "token range check": timed(lambda: SequenceShards(shards)),
        }
        evict(directory)
        results["sha256 verify (cold)"] = timed(lambda: verify_data(shards, progress=False))
    base = results["read (baseline)"][1]
    print(f"{len(shards)} shard(s), {gb:.2f} GB, seq_len {args.seq_len}, {os.cpu_count()} cores")
    print(f"{'check':<22} {'wall s/GB':>10} {'CPU s/GB':>10} {'CPU vs read':>12}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<22} {wall / gb:>10.3f} {cpu / gb:>10.3f} {cpu / base:>11.1f}x")


if __name__ == "__main__":
    main()
