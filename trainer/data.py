"""The training data loader: memory-mapped sequence shards, global shuffle, DP ranks, exact resume.

A :class:`SequenceLoader` opens the uncompressed sequence shards of ``cpm data pack`` with
``pa.memory_map`` and views each record batch's tokens as a ``(rows, seq_len + 1)`` numpy
array without copying, so the dataset never sits in RAM (the OS page cache holds what is hot).

Order: epoch ``e`` visits every sample once in the order of a pseudo-random permutation of
``[0, num_samples)`` keyed by ``(seed, e)``: a 6-round Feistel network on the smallest
even number of bits that covers ``num_samples``, with cycle-walking to stay in range. It is a
bijection computed from the position alone, so there is no permutation array in memory (a
numpy permutation of 1e8 samples would take 800 MB per rank) and resuming at any position
costs nothing.

Ranks: the sample stream is cut into global batches of ``micro_batch * dp_world`` positions;
rank ``r`` takes positions ``r, r + W, r + 2W, ...`` of each global batch, so ranks never
overlap and together they see exactly the permutation. With ``drop_last`` (the default) an
epoch ends at its last full global batch; otherwise batches run on into the next epoch.

State: ``state_dict()`` is ``{"index", "epoch", "seed", "num_samples"}``, where ``index``
counts global samples consumed since the start (all ranks together, so it is the same on
every rank); a loader built with ``start_index=index`` (or given ``load_state_dict``)
yields exactly the batches that would have followed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from cpm.errors import CpmError, ShardError
from cpm.shards.io import read_batch

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
FEISTEL_ROUNDS = 6
INDEX_BLOCK = 1 << 16  # sample positions permuted per numpy call while iterating


# ---------------------------------------------------------------------------- permutation


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _round_keys(seed: int, epoch: int) -> list[np.uint64]:
    import hashlib

    digest = hashlib.blake2b(f"cpm-shuffle:{seed}:{epoch}".encode(), digest_size=8 * FEISTEL_ROUNDS).digest()
    return [np.uint64(int.from_bytes(digest[8 * i : 8 * i + 8], "little")) for i in range(FEISTEL_ROUNDS)]


class Permutation:
    """A keyed pseudo-random bijection of ``[0, n)``, evaluated on arrays of positions."""

    def __init__(self, n: int, seed: int, epoch: int = 0) -> None:
        if n < 1:
            raise ValueError("a permutation needs n >= 1")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        bits += bits % 2
        self.half = np.uint64(bits // 2)
        self.low_mask = np.uint64((1 << (bits // 2)) - 1)
        self.keys = _round_keys(seed, epoch)

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.low_mask
        with np.errstate(over="ignore"):
            for key in self.keys:
                left, right = right, left ^ (_mix64(right ^ key) & self.low_mask)
        return (left << self.half) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """The permuted sample index of each position (``0 <= position < n``)."""
        x = self._feistel(np.asarray(positions, dtype=np.uint64))
        out = x >= self.n
        while out.any():  # cycle-walking: at most a few rounds since the domain is < 4n
            x[out] = self._feistel(x[out])
            out = x >= self.n
        return x.astype(np.int64)


# ---------------------------------------------------------------------------- shards


def split_shard_paths(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], split: str) -> list[Path]:
    """The sequence shards of ``split``: from pack output directories, or the shard files given."""
    items = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    shards: list[Path] = []
    for item in items:
        p = Path(item)
        if (p / "manifest.json").is_file():
            shards.extend(_manifest_shards(p, split))
        elif p.is_dir():
            found = sorted((p / split).glob("part-*.arrow")) if (p / split).is_dir() else sorted(p.glob("part-*.arrow"))
            if not found and not (p / split).is_dir():
                raise ShardError(f"{p}: no {split}/part-*.arrow sequence shards")
            shards.extend(found)
        elif p.is_file():
            shards.append(p)
        else:
            raise ShardError(f"{p}: no such file or directory")
    if not shards:
        raise ShardError(f"{', '.join(map(str, items))}: no {split} sequence shards (is the {split} split empty?)")
    return shards


def _manifest_shards(directory: Path, split: str) -> list[Path]:
    """The shards of ``split`` listed in a pack directory's manifest, checked to be there whole."""
    from cpm.schemas.manifest import read_manifest

    manifest = read_manifest(directory)
    if manifest["kind"] != "sequences":
        raise ShardError(f"{directory}: holds {manifest['kind']}, not sequences (run 'cpm data pack' first)")
    paths = []
    for entry in manifest["shards"]:
        if entry.get("split") != split:
            continue
        path = directory / entry["path"]
        if not path.is_file():
            raise ShardError(f"{path}: listed in {directory / 'manifest.json'} but missing")
        if path.stat().st_size != entry["bytes"]:
            raise ShardError(f"{path}: {path.stat().st_size} bytes, the manifest says {entry['bytes']} (truncated or replaced?)")
        paths.append(path)
    return paths


RANGE_CHECK_TOKENS = 1 << 24  # tokens compared per numpy pass of the range check


def check_token_range(block: np.ndarray, vocab_size: int, path: Path, first_row: int) -> None:
    """:class:`ShardError` naming the shard and row of the first token id in ``block`` (rows of
    ``seq_len + 1`` ids, memory-mapped) outside ``[0, vocab_size)``: such an id would crash the
    embedding lookup mid-run. A vectorised min/max per chunk; the row is searched only on failure."""
    step = max(1, RANGE_CHECK_TOKENS // max(1, block.shape[1]))
    for start in range(0, len(block), step):
        chunk = block[start : start + step]
        if len(chunk) == 0 or (int(chunk.max()) < vocab_size and int(chunk.min()) >= 0):
            continue
        bad = (chunk >= vocab_size) | (chunk < 0)
        row = int(np.argmax(bad.any(axis=1)))
        column = int(np.argmax(bad[row]))
        raise ShardError(f"{path}: row {first_row + start + row}: token id {int(chunk[row, column])} at position {column} "
                         f"is outside the vocabulary (size {vocab_size})")


class SequenceShards:
    """Every sample of some sequence shards, memory-mapped, addressable by global row index.

    Opening checks every token id against the shards' vocabulary size (:func:`check_token_range`).
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        from cpm.schemas import schema_metadata, validate_schema

        self.paths = list(paths)
        self._blocks: list[np.ndarray] = []  # (rows, seq_len + 1) views into the mapped files
        self._maps: list[pa.MemoryMappedFile] = []
        meta0: dict[str, str] | None = None
        for path in self.paths:
            try:
                source = pa.memory_map(str(path), "r")
                reader = pa.ipc.open_file(source)
            except (pa.ArrowInvalid, OSError) as exc:
                raise ShardError(f"{path}: not a readable Arrow shard: {exc}") from None
            validate_schema(reader.schema, str(path), "sequences")
            meta = schema_metadata(reader.schema)
            if meta0 is None:
                meta0 = meta
            elif any(meta.get(k) != meta0.get(k) for k in ("seq_len", "vocab_size", "eod_id")):
                raise ShardError(f"{path}: seq_len/vocab_size/eod_id differ from {self.paths[0]}")
            self._maps.append(source)
            source.seek(0)
            mapped = source.read_buffer(source.size())  # the whole file, zero-copy: batches must point into it
            width = int(meta["seq_len"]) + 1
            vocab_size, row = int(meta["vocab_size"]), 0
            for i in range(reader.num_record_batches):
                column = read_batch(reader, i, path).column(0)
                if len(column) == 0:
                    continue
                if column.null_count:
                    raise ShardError(f"{path}: record batch {i} has null samples")
                data = column.values.buffers()[1]
                if not mapped.address <= data.address < mapped.address + mapped.size:
                    raise ShardError(f"{path}: compressed sequence shard cannot be memory-mapped; re-pack it uncompressed")
                values = column.values.to_numpy(zero_copy_only=True)
                values = values[column.offset * width : (column.offset + len(column)) * width]
                block = values.reshape(len(column), width)
                check_token_range(block, vocab_size, path, row)
                self._blocks.append(block)
                row += len(block)
        if meta0 is None:
            raise ShardError("no sequence shards given")
        self.seq_len = int(meta0["seq_len"])
        self.vocab_size = int(meta0["vocab_size"])
        self.eod_id = int(meta0.get("eod_id", -1))
        self.metadata = meta0
        sizes = np.array([len(b) for b in self._blocks], dtype=np.int64)
        self._starts = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self._starts[1:])
        self.num_samples = int(self._starts[-1])

    def __len__(self) -> int:
        return self.num_samples

    def gather(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Copy the samples ``rows`` into an int64 array of shape ``(len(rows), seq_len + 1)``."""
        rows = np.asarray(rows, dtype=np.int64)
        if out is None:
            out = np.empty((len(rows), self.seq_len + 1), dtype=np.int64)
        blocks = np.searchsorted(self._starts, rows, side="right") - 1
        local = rows - self._starts[blocks]
        for i, (b, r) in enumerate(zip(blocks.tolist(), local.tolist())):
            out[i] = self._blocks[b][r]
        return out


# ---------------------------------------------------------------------------- loader


class SequenceLoader:
    """Endless, globally shuffled, rank-partitioned, resumable micro-batches of token samples.

    Iterating yields int64 tensors of shape ``(micro_batch, seq_len + 1)`` (input =
    ``[:, :-1]``, labels = ``[:, 1:]``) for this rank only, over epochs forever.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        split: str = "train",
        micro_batch: int,
        seed: int = 1234,
        dp_rank: int = 0,
        dp_world: int = 1,
        start_index: int = 0,
        drop_last: bool = True,
    ) -> None:
        if micro_batch < 1:
            raise CpmError(f"micro_batch must be >= 1, got {micro_batch}")
        if not 0 <= dp_rank < dp_world:
            raise CpmError(f"dp_rank {dp_rank} is not in [0, dp_world={dp_world})")
        self.data = SequenceShards(split_shard_paths(path, split))
        self.split = split
        self.micro_batch = micro_batch
        self.seed = seed
        self.dp_rank = dp_rank
        self.dp_world = dp_world
        self.drop_last = drop_last
        self.seq_len = self.data.seq_len
        self.vocab_size = self.data.vocab_size
        self.eod_id = self.data.eod_id
        self.num_samples = self.data.num_samples
        self.global_batch = micro_batch * dp_world
        self.epoch_samples = (self.num_samples // self.global_batch) * self.global_batch if drop_last else self.num_samples
        if self.epoch_samples == 0:
            raise CpmError(
                f"the {split} split has {self.num_samples} samples, fewer than one global batch "
                f"({micro_batch} x {dp_world} ranks); use a smaller micro batch or pack more data"
            )
        if start_index < 0 or start_index % self.global_batch:
            raise CpmError(f"start_index {start_index} must be a multiple of the global batch {self.global_batch}")
        self.index = start_index
        self._perm_epoch = -1
        self._perm: Permutation | None = None

    @property
    def epoch(self) -> int:
        return self.index // self.epoch_samples

    @property
    def batches_per_epoch(self) -> int:
        """Global batches (= micro-batches per rank) in one epoch (with ``drop_last=False``, about)."""
        return self.epoch_samples // self.global_batch

    def _permutation(self, epoch: int) -> Permutation:
        if epoch != self._perm_epoch:
            self._perm = Permutation(self.num_samples, self.seed, epoch)
            self._perm_epoch = epoch
        return self._perm  # type: ignore[return-value]

    def sample_indices(self, start: int, count: int) -> np.ndarray:
        """The dataset rows at global stream positions ``start .. start + count - 1`` (all ranks)."""
        positions = np.arange(start, start + count, dtype=np.int64)
        epochs = positions // self.epoch_samples
        within = positions % self.epoch_samples
        rows = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs).tolist():
            sel = epochs == epoch
            rows[sel] = self._permutation(epoch)(within[sel])
        return rows

    def rank_indices(self, global_start: int) -> np.ndarray:
        """This rank's dataset rows of the global batch that starts at stream position ``global_start``."""
        return self.sample_indices(global_start, self.global_batch)[self.dp_rank :: self.dp_world]

    def __iter__(self) -> Iterator["torch.Tensor"]:  # noqa: F821
        import torch

        block = max(1, min(INDEX_BLOCK, self.epoch_samples) // self.global_batch)  # global batches permuted at once
        while True:
            start = self.index
            rows = self.sample_indices(start, block * self.global_batch).reshape(block, self.global_batch)
            for b in range(block):
                if self.index != start + b * self.global_batch:  # load_state_dict() while iterating
                    break
                batch = self.data.gather(rows[b, self.dp_rank :: self.dp_world])
                self.index += self.global_batch
                yield torch.from_numpy(batch)

    def state_dict(self) -> dict:
        """``{"index": global samples consumed, "epoch", "seed", "num_samples"}``: the same on every rank."""
        return {"index": self.index, "epoch": self.epoch, "seed": self.seed, "num_samples": self.num_samples}

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state["index"]``; the seed and dataset size must match the checkpoint's."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise CpmError(f"data state was saved with seed {state['seed']}, this loader has seed {self.seed}")
        if int(state.get("num_samples", self.num_samples)) != self.num_samples:
            raise CpmError(
                f"data state was saved over {state['num_samples']} samples, this {self.split} split has "
                f"{self.num_samples}: the data changed since the checkpoint"
            )
        index = int(state["index"])
        if index < 0 or index % self.global_batch:
            raise CpmError(f"data state index {index} is not a multiple of the global batch {self.global_batch}")
        self.index = index


def evaluation_batches(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    micro_batch: int,
    split: str = "valid",
    dp_rank: int = 0,
    dp_world: int = 1,
) -> Iterator["torch.Tensor"]:  # noqa: F821
    """One unshuffled pass over a split, this rank's share, as int64 ``(rows, seq_len + 1)`` tensors.

    Global batches of ``micro_batch * dp_world`` samples in file order, rank ``r`` taking
    positions ``r, r + W, ...``. The last global batch may be partial: then a rank yields
    fewer rows, or nothing when its share is empty, so sum the loss and token counts
    locally and all-reduce once at the end rather than per batch.
    """
    import torch

    data = SequenceShards(split_shard_paths(path, split))
    step = micro_batch * dp_world
    for start in range(0, data.num_samples, step):
        rows = np.arange(start, min(start + step, data.num_samples), dtype=np.int64)[dp_rank::dp_world]
        if len(rows):
            yield torch.from_numpy(data.gather(rows))
