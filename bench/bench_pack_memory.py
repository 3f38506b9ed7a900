"""Peak RSS of ``cpm data pack`` as the number of documents grows (target: flat).

The corpus (a ``cpm corpus build`` output) is replicated ×1, ×4, ×16 with renamed ids, each size is
packed with one tokenizer process under ``/usr/bin/time -v``, and the table gives peak RSS, CPU time
and both as ratios to ×1 (measured in the same run).

Example:
    cpm corpus build --source all --input news=news.jsonl --input webpage=reviews.jsonl --output out/c --no-dedup
    python bench/bench_pack_memory.py --corpus out/c --tokenizer ../shared/data/cpm1/chinese_vocab.model
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def replicate(corpus: Path, times: int, out: Path) -> int:
    """``times`` copies of the corpus's document shards (ids suffixed ``~k``) under ``out/shards``; documents."""
    import pyarrow as pa

    from cpm.schemas import document_schema
    from cpm.shards.io import read_table, write_table

    (out / "shards").mkdir(parents=True)
    n = docs = 0
    for k in range(times):
        for path in sorted((corpus / "shards").glob("part-*.arrow")):
            table = read_table(path)
            ids = pa.array([f"{i}~{k}" for i in table.column("id").to_pylist()], pa.string())
            table = table.set_column(table.schema.get_field_index("id"), "id", ids)
            write_table(out / "shards" / f"part-{n:05d}.arrow", table, document_schema())
            n, docs = n + 1, docs + table.num_rows
    return docs


def measure(corpus: Path, tokenizer: str, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of one ``cpm data pack`` run."""
    command = [
        "/usr/bin/time", "-v", sys.executable, "-m", "cpm", "-q", "data", "pack", "--input", str(corpus),
        "--tokenizer", tokenizer, "--output", str(out), "--seq-len", "1024", "--valid-fraction", "0.01",
        "--source-weights", "news=2.5,webpage=0.5", "--workers", "1", "--shard-mb", "16",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    field = lambda name: float(re.search(rf"{name}: ([\d.]+)", result.stderr).group(1))  # noqa: E731
    return field(r"Maximum resident set size \(kbytes\)") / 1024, field(r"User time \(seconds\)") + field(r"System time \(seconds\)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, type=Path, help="a corpus build output directory")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory or CPM-1 .model file")
    parser.add_argument("--sizes", default="1,4,16", help="replication factors (default 1,4,16)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for times in [int(x) for x in args.sizes.split(",")]:
            docs = replicate(args.corpus, times, Path(tmp) / f"x{times}")
            rss, cpu = measure(Path(tmp) / f"x{times}", args.tokenizer, Path(tmp) / f"packed{times}")
            rows.append((times, docs, rss, cpu))
    base_rss, base_cpu = rows[0][2], rows[0][3] / rows[0][1]
    print(f"{'size':>5} {'documents':>10} {'peak RSS MB':>12} {'× ×1':>6} {'CPU s':>7} {'CPU/doc × ×1':>13}")
    for times, docs, rss, cpu in rows:
        print(f"{'×' + str(times):>5} {docs:>10,} {rss:>12.0f} {rss / base_rss:>6.2f} {cpu:>7.1f} {cpu / docs / base_cpu:>13.2f}")


if __name__ == "__main__":
    main()
