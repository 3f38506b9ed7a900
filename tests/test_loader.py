"""``cpm.trainer.data``: memory-mapped loading, global shuffle, DP partitioning, exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cpm.errors import CpmError, ShardError
from cpm.schemas import sequence_schema
from cpm.shards.io import write_table
from cpm.shards.sequences import SequenceShards
from cpm.trainer.data import Permutation, SequenceLoader, evaluation_batches

SEQ_LEN = 15


def write_numbered_shards(directory: Path, sizes: list[int], seq_len: int = SEQ_LEN, split: str = "train",
                          batch_rows: int = 7, compression: str | None = None) -> int:
    """Sequence shards whose sample ``i`` starts with tokens ``(i % 1000, i // 1000)``; returns the count."""
    schema = sequence_schema(seq_len, 1000, {"eod_id": 999, "split": split})
    first = 0
    for n, size in enumerate(sizes):
        rows = np.arange(first, first + size)
        tokens = np.tile(np.arange(seq_len + 1, dtype=np.uint16) % 900, (size, 1))
        tokens[:, 0], tokens[:, 1] = rows % 1000, rows // 1000
        table = pa.table(
            {
                "tokens": pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1)), seq_len + 1),
                "doc_ids": pa.array([[f"d{i}"] for i in rows], pa.list_(pa.string())),
                "start_offset": pa.array(np.zeros(size, np.int32)),
            }
        )
        write_table(directory / split / f"part-{n:05d}.arrow", table, schema, compression=compression, batch_rows=batch_rows)
        first += size
    return first


def sample_ids(batch) -> list[int]:
    array = batch.numpy()
    return (array[:, 0] + 1000 * array[:, 1]).tolist()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("seq")
    write_numbered_shards(directory, [50, 23, 30])  # 103 samples, uneven record batches
    write_numbered_shards(directory, [10], split="valid")
    return directory


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 17, 103, 1000, 4099])
def test_permutation_is_a_bijection(n):
    perm = Permutation(n, seed=7, epoch=3)(np.arange(n))
    assert sorted(perm.tolist()) == list(range(n))


def test_permutation_depends_on_seed_and_epoch():
    base = Permutation(1000, seed=1, epoch=0)(np.arange(1000))
    assert (base != np.arange(1000)).mean() > 0.9
    assert (base != Permutation(1000, seed=1, epoch=1)(np.arange(1000))).mean() > 0.9
    assert (base != Permutation(1000, seed=2, epoch=0)(np.arange(1000))).mean() > 0.9
    assert (base == Permutation(1000, seed=1, epoch=0)(np.arange(1000))).all()


def test_memory_mapped_without_copy(data_dir):
    data = SequenceShards(sorted((data_dir / "train").glob("*.arrow")))
    assert data.num_samples == 103 and data.seq_len == SEQ_LEN and data.eod_id == 999
    for block in data._blocks:
        assert not block.flags.owndata and not block.flags.writeable  # views into read-only mapped files
    rows = data.gather(np.array([0, 49, 50, 102, 7]))
    assert rows.dtype == np.int64 and (rows[:, 0] + 1000 * rows[:, 1]).tolist() == [0, 49, 50, 102, 7]


def test_one_epoch_visits_every_sample_once_then_reshuffles(data_dir):
    loader = SequenceLoader(data_dir, micro_batch=1, seed=5)
    it = iter(loader)
    first = [sample_ids(next(it))[0] for _ in range(103)]
    second = [sample_ids(next(it))[0] for _ in range(103)]
    assert sorted(first) == sorted(second) == list(range(103))
    assert first != second and first != list(range(103))
    assert loader.state_dict() == {"index": 206, "epoch": 2, "seed": 5, "num_samples": 103}
    batch = next(iter(SequenceLoader(data_dir, micro_batch=4)))
    assert tuple(batch.shape) == (4, SEQ_LEN + 1) and str(batch.dtype) == "torch.int64"


def test_ranks_partition_the_global_order_without_overlap(data_dir):
    world, micro = 3, 4
    single = SequenceLoader(data_dir, micro_batch=micro * world, seed=11)
    ranks = [iter(SequenceLoader(data_dir, micro_batch=micro, seed=11, dp_rank=r, dp_world=world)) for r in range(world)]
    assert single.batches_per_epoch == 103 // 12 == 8
    it = iter(single)
    for _ in range(2 * single.batches_per_epoch + 1):  # crosses two epoch boundaries
        per_rank = [sample_ids(next(r)) for r in ranks]
        flat = [s for ids in per_rank for s in ids]
        assert len(set(flat)) == len(flat) == micro * world  # no overlap within a step
        global_ids = sample_ids(next(it))
        for r in range(world):
            assert per_rank[r] == global_ids[r::world]  # rank r takes positions r, r+W, ... of the global batch


def test_resume_at_an_exact_index_reproduces_the_following_batches(data_dir):
    loader = SequenceLoader(data_dir, micro_batch=5, seed=3, dp_rank=1, dp_world=2)
    it = iter(loader)
    for _ in range(13):  # past the first epoch (10 global batches of 10)
        next(it)
    state = loader.state_dict()
    expected = [sample_ids(next(it)) for _ in range(12)]
    resumed = SequenceLoader(data_dir, micro_batch=5, seed=3, dp_rank=1, dp_world=2)
    resumed.load_state_dict(state)
    assert [sample_ids(b) for b, _ in zip(resumed, range(12))] == expected
    started = SequenceLoader(data_dir, micro_batch=5, seed=3, dp_rank=1, dp_world=2, start_index=state["index"])
    assert [sample_ids(b) for b, _ in zip(started, range(12))] == expected
    with pytest.raises(CpmError, match="seed"):
        SequenceLoader(data_dir, micro_batch=5, seed=4).load_state_dict(state)
    with pytest.raises(CpmError, match="multiple of the global batch"):
        SequenceLoader(data_dir, micro_batch=5, start_index=7)


def test_drop_last_false_runs_into_the_next_epoch(data_dir):
    loader = SequenceLoader(data_dir, micro_batch=10, seed=2, drop_last=False)
    it = iter(loader)
    seen = [s for _ in range(11) for s in sample_ids(next(it))]  # 110 = 103 + 7 of epoch 1
    assert sorted(seen[:103]) == list(range(103)) and len(set(seen[103:])) == 7


def test_evaluation_batches_cover_the_split_once_in_order(data_dir):
    per_rank = [[s for b in evaluation_batches(data_dir, micro_batch=3, dp_rank=r, dp_world=2) for s in sample_ids(b)]
                for r in range(2)]
    assert sorted(per_rank[0] + per_rank[1]) == list(range(10)) and not set(per_rank[0]) & set(per_rank[1])
    assert [s for b in evaluation_batches(data_dir, micro_batch=4) for s in sample_ids(b)] == list(range(10))


def test_bad_inputs_are_clear_errors(tmp_path, data_dir):
    write_numbered_shards(tmp_path / "zstd", [20], compression="zstd")
    with pytest.raises(ShardError, match="memory-mapped"):
        SequenceLoader(tmp_path / "zstd", micro_batch=2)
    with pytest.raises(CpmError, match="fewer than one global batch"):
        SequenceLoader(data_dir, split="valid", micro_batch=8, dp_world=2)
    with pytest.raises(ShardError, match="no such"):
        SequenceLoader(tmp_path / "nothing", micro_batch=1)
    with pytest.raises(CpmError, match="dp_rank"):
        SequenceLoader(data_dir, micro_batch=1, dp_rank=2, dp_world=2)


def test_a_pack_directory_is_read_through_its_manifest(tmp_path):
    from cpm.schemas.manifest import new_manifest, write_manifest
    from cpm.shards.io import ShardInfo
    from cpm.schemas.manifest import sha256_file

    write_numbered_shards(tmp_path, [12, 9])
    manifest = new_manifest("sequences", "data pack", {})
    for path in sorted((tmp_path / "train").glob("*.arrow")):
        info = ShardInfo(str(path), 0, path.stat().st_size, sha256_file(path))
        manifest["shards"].append(info.entry(tmp_path, kind="sequences", split="train"))
    write_manifest(tmp_path, manifest)
    assert SequenceLoader(tmp_path, micro_batch=3).num_samples == 21
    (tmp_path / "train" / "part-00001.arrow").unlink()
    with pytest.raises(ShardError, match="part-00001.arrow: listed in .* but missing"):
        SequenceLoader(tmp_path, micro_batch=3)
