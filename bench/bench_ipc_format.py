"""Arrow IPC *file* (what cpm writes) against IPC *stream* (what ``datasets.Dataset.from_file`` reads).

The same table is written both ways (same compression, same record batches), then read back in the
ways cpm and its users read shards. CPU time (user + sys) per read, best of ``--repeat``, as a ratio to
the IPC-file read of the same kind:

* whole shard: memory-map + read every batch (``pa.ipc.open_file`` / ``pa.ipc.open_stream``);
* one batch: the last record batch (the trainer and ``cpm data pack`` seek batches by index; a stream
  must be scanned up to it);
* datasets: ``Dataset.from_file`` on the stream copy against ``load_dataset("arrow", data_files=FILE)``
  (which converts the file into datasets' cache; timed on a fresh cache).

Example: python bench/bench_ipc_format.py out/demo/corpus/shards/part-00000.arrow out/demo/packed/train/part-00000.arrow
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(function, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = cpu()
        function()
        best = min(best, cpu() - start)
    return best


def write_both(shard: Path, work: Path, copies: int) -> tuple[Path, Path]:
    """The shard's batches (repeated ``copies`` times) as an IPC file and an IPC stream."""
    reader = pa.ipc.open_file(pa.memory_map(str(shard)))
    batches = [reader.get_batch(i) for i in range(reader.num_record_batches)] * copies
    codec = (reader.schema.metadata or {}).get(b"cpm.compression", b"none").decode()
    options = pa.ipc.IpcWriteOptions(compression=None if codec == "none" else codec)
    file_path, stream_path = work / f"{shard.stem}.file.arrow", work / f"{shard.stem}.stream.arrow"
    with pa.OSFile(str(file_path), "wb") as sink, pa.ipc.new_file(sink, reader.schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    with pa.OSFile(str(stream_path), "wb") as sink, pa.ipc.new_stream(sink, reader.schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return file_path, stream_path


def read_file_all(path: Path) -> None:
    reader = pa.ipc.open_file(pa.memory_map(str(path)))
    for i in range(reader.num_record_batches):
        reader.get_batch(i).validate()


def read_stream_all(path: Path) -> None:
    for batch in pa.ipc.open_stream(pa.memory_map(str(path))):
        batch.validate()


def read_file_last(path: Path) -> None:
    reader = pa.ipc.open_file(pa.memory_map(str(path)))
    reader.get_batch(reader.num_record_batches - 1)


def read_stream_last(path: Path) -> None:
    last = None
    for last in pa.ipc.open_stream(pa.memory_map(str(path))):
        pass


def datasets_rows(file_path: Path, stream_path: Path, work: Path, repeat: int) -> list[tuple[str, float]]:
    from datasets import Dataset, load_dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()

    def from_stream() -> None:
        Dataset.from_file(str(stream_path))[-1]

    def from_file_via_cache() -> None:
        cache = Path(tempfile.mkdtemp(dir=work))
        load_dataset("arrow", data_files=str(file_path), split="train", cache_dir=str(cache))[-1]
        shutil.rmtree(cache)

    return [("load_dataset('arrow', data_files=FILE)", timed(from_file_via_cache, repeat)),
            ("Dataset.from_file(STREAM)", timed(from_stream, repeat))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shards", nargs="+", type=Path, help="cpm shards (a document shard, a sequence shard)")
    parser.add_argument("--copies", type=int, default=20, help="repeat the shard's batches this many times")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-datasets", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ipc-"))
    try:
        print(f"{'shard':<28} {'read':<40} {'CPU ms':>9} {'vs file':>8}")
        for shard in args.shards:
            file_path, stream_path = write_both(shard, work, args.copies)
            size = os.path.getsize(file_path) / 1e6
            name = f"{shard.parent.name}/{shard.name} ({size:.1f} MB)"
            pairs = [
                ("whole, IPC file", "whole, IPC stream", read_file_all, read_stream_all),
                ("last batch, IPC file", "last batch, IPC stream", read_file_last, read_stream_last),
            ]
            for file_label, stream_label, file_read, stream_read in pairs:
                base = timed(lambda: file_read(file_path), args.repeat)
                other = timed(lambda: stream_read(stream_path), args.repeat)
                print(f"{name:<28} {file_label:<40} {base * 1e3:>9.2f} {1.0:>8.2f}")
                print(f"{name:<28} {stream_label:<40} {other * 1e3:>9.2f} {other / max(base, 1e-9):>8.2f}")
            if not args.skip_datasets:
                rows = datasets_rows(file_path, stream_path, work, args.repeat)
                base = rows[0][1]
                for label, seconds in rows:
                    print(f"{name:<28} {label:<40} {seconds * 1e3:>9.2f} {seconds / max(base, 1e-9):>8.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
