"""The training data loader: memory-mapped sequence shards, global shuffle, DP ranks, exact resume.

A :class:`SequenceLoader` reads the uncompressed sequence shards of ``cpm data pack`` through
:class:`cpm.shards.sequences.SequenceShards`, which memory-maps them and views each record batch's
tokens as a ``(rows, seq_len + 1)`` numpy array without copying, so the dataset never sits in RAM
(the OS page cache holds what is hot).

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
from typing import Iterator, Sequence

import numpy as np

from cpm.errors import CpmError
from cpm.shards.sequences import SequenceShards, split_shard_paths

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
