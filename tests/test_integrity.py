"""Every integrity promise on the training path: packed shards are checked against their manifest
(size, sha256) and their token ids against the vocabulary before training or evaluation, and a
checkpoint's files against the sha256s recorded when it was saved, wherever it is loaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cpm.cli import main
from cpm.schemas import sequence_schema
from cpm.schemas.manifest import read_manifest, sha256_file, write_manifest
from cpm.shards.io import read_table, write_table
from test_train import MODEL_FLAGS, SEQ_LEN, VOCAB, write_packed
from tiny_gpt import save_run, save_run_tp, tiny_model, train_tiny_vocab

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY_RUN = ["--size", "tiny", *MODEL_FLAGS, "--max-steps", "2", "--global-batch", "8", "--micro-batch", "8",
            "--warmup-steps", "1", "--eval-every", "0", "--no-progress", "--device", "cpu"]
TRAIN = [*TINY_RUN, "--save-every", "0"]


def flip_token(shard: Path, row: int = 0) -> tuple[int, int]:
    """Flip the lowest bit of the first token of ``row`` in place (same size, a token still < VOCAB)."""
    tokens = read_table(shard).column("tokens")[row].values.to_numpy()
    data = bytearray(shard.read_bytes())
    offset = data.find(tokens.astype("<u2").tobytes())
    assert offset > 0 and data.find(tokens.astype("<u2").tobytes(), offset + 1) < 0
    data[offset] ^= 1
    shard.write_bytes(bytes(data))
    return int(tokens[0]), int(tokens[0]) ^ 1


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def corrupted(tmp_path) -> Path:
    packed = write_packed(tmp_path / "packed")
    flip_token(packed / "train" / "part-00000.arrow", row=3)
    flip_token(packed / "valid" / "part-00000.arrow", row=1)
    return packed


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny checkpoint over VOCAB ids (so that it can score the packed data)."""
    root = tmp_path_factory.mktemp("ckpt")
    vocab = train_tiny_vocab(root / "tiny.model")
    model = tiny_model(VOCAB, n_positions=SEQ_LEN)
    save_run(root / "run", model, vocab)
    save_run_tp(root / "run-tp2", model, vocab, tp=2)
    return root


# -- packed shards: size and sha256 -------------------------------------------------------------


def test_train_refuses_a_flipped_byte(corrupted, tmp_path, capsys):
    assert main(["train", "--input", str(corrupted), "--output", str(tmp_path / "run"), *TRAIN]) == 1
    error = one_line_error(capsys)
    assert f"{corrupted / 'train' / 'part-00000.arrow'}: corrupted: its sha256 differs" in error
    assert not (tmp_path / "run").exists()  # before any work


def test_skip_verify_trains_with_a_warning(corrupted, tmp_path, caplog):
    caplog.set_level("WARNING", logger="cpm")
    assert main(["train", "--input", str(corrupted), "--output", str(tmp_path / "run"), *TRAIN, "--skip-verify"]) == 0
    assert any("--skip-verify" in r.getMessage() and "not checked" in r.getMessage() for r in caplog.records)


def test_eval_ppl_refuses_a_flipped_byte(corrupted, run, capsys):
    assert main(["eval", "ppl", "-c", str(run / "run"), "--data", str(corrupted), "--device", "cpu"]) == 1
    assert f"{corrupted / 'valid' / 'part-00000.arrow'}: corrupted" in one_line_error(capsys)
    assert main(["eval", "ppl", "-c", str(run / "run"), "--data", str(corrupted), "--device", "cpu", "--skip-verify"]) == 0


def test_truncated_shard_is_named_by_size(tmp_path, capsys):
    from cpm.shards.verify import verify_data

    packed = write_packed(tmp_path / "packed")
    shard = packed / "valid" / "part-00000.arrow"
    shard.write_bytes(shard.read_bytes()[:-8])
    with pytest.raises(Exception, match=r"valid/part-00000.arrow: \d+ bytes, .*manifest.json says \d+"):
        verify_data([shard])
    intact = packed / "train" / "part-00000.arrow"
    assert verify_data([intact], progress=False).shards == 1


# -- packed shards: token ids in range ------------------------------------------------------------


def write_out_of_range(directory: Path, row: int, position: int, value: int) -> Path:
    """A packed directory (its manifest up to date) whose train shard has ``value`` at ``[row, position]``."""
    write_packed(directory)
    shard = directory / "train" / "part-00000.arrow"
    table = read_table(shard)
    tokens = table.column("tokens").combine_chunks().values.to_numpy().reshape(-1, SEQ_LEN + 1).copy()
    tokens[row, position] = value
    schema = sequence_schema(SEQ_LEN, VOCAB, {"eod_id": 0, "split": "train"})
    table = table.set_column(0, "tokens", pa.FixedSizeListArray.from_arrays(pa.array(tokens.ravel(), pa.uint16()), SEQ_LEN + 1))
    info = write_table(shard, table, schema, compression=None, batch_rows=16)  # several record batches
    manifest = read_manifest(directory)
    manifest["shards"] = [info.entry(directory, kind="sequences", split="train"), *manifest["shards"][1:]]
    write_manifest(directory, manifest)
    return directory


def test_out_of_range_token_is_named_before_training(tmp_path, capsys):
    # it used to crash `cpm train` mid-run with an IndexError traceback
    packed = write_out_of_range(tmp_path / "packed", row=37, position=5, value=VOCAB + 100)
    assert main(["train", "--input", str(packed), "--output", str(tmp_path / "run"), *TRAIN]) == 1
    error = one_line_error(capsys)
    assert f"{packed / 'train' / 'part-00000.arrow'}: row 37: token id {VOCAB + 100} at position 5 is outside the vocabulary (size {VOCAB})" in error
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_token_range_check_over_chunks(monkeypatch):
    from cpm.errors import ShardError
    from cpm.shards import sequences as data

    block = np.arange(40 * 9, dtype=np.int32).reshape(40, 9) % 50
    monkeypatch.setattr(data, "RANGE_CHECK_TOKENS", 20)  # two rows per pass
    data.check_token_range(block, 50, Path("x.arrow"), 0)
    block[33, 7] = -1
    with pytest.raises(ShardError, match=r"^x.arrow: row 133: token id -1 at position 7 "):
        data.check_token_range(block, 50, Path("x.arrow"), 100)


# -- checkpoints: sha256 of every file, recorded at save, checked at load ------------------------


def flip_in_weights(path: Path) -> None:
    """Flip a byte in the middle of a torch.save file (tensor data: the file still loads)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_checkpoint_records_sha256_of_its_files(run):
    import json

    step = run / "run" / "checkpoints" / "step-000005"
    sums = json.loads((step / "checksums.json").read_text())["files"]
    assert sorted(sums) == sorted(p.name for p in step.iterdir() if p.name != "checksums.json")
    assert all(sums[name]["sha256"] == sha256_file(step / name) for name in sums)
    tp2 = run / "run-tp2" / "checkpoints" / "step-000005"
    assert {"model-tp00-of-02.pt", "model-tp01-of-02.pt", "config.json"} <= set(json.loads((tp2 / "checksums.json").read_text())["files"])


@pytest.fixture
def corrupted_run(run, tmp_path) -> tuple[Path, Path]:
    copy = tmp_path / "run"
    shutil.copytree(run / "run", copy)
    shard = copy / "checkpoints" / "step-000005" / "model-tp00-of-01.pt"
    flip_in_weights(shard)
    return copy, shard


def test_corrupted_checkpoint_is_refused_everywhere(corrupted_run, run, tmp_path, capsys):
    copy, shard = corrupted_run
    packed = write_packed(tmp_path / "packed")
    commands = [
        ["generate", "-c", str(copy), "--prompt", "今天", "--max-new-tokens", "2", "--device", "cpu"],
        ["eval", "ppl", "-c", str(copy), "--data", str(packed), "--device", "cpu"],
        ["eval", "choice", "-c", str(copy), "--task", "tnews", "--limit", "2", "--device", "cpu"],
        ["export", "hf", "-c", str(copy), "-o", str(tmp_path / "hf")],
    ]
    for command in commands:
        assert main(command) == 1, command
        assert f"{shard}: corrupted checkpoint file: its sha256 differs" in one_line_error(capsys), command
    assert not (tmp_path / "hf").exists()


def test_corrupted_shard_is_refused_when_resharding(run, tmp_path):
    from cpm.errors import CpmError
    from cpm.trainer.checkpoint import load_model

    copy = tmp_path / "run-tp2"
    shutil.copytree(run / "run-tp2", copy)
    load_model(copy)  # tp=2 -> tp=1, intact
    shard = copy / "checkpoints" / "step-000005" / "model-tp01-of-02.pt"
    flip_in_weights(shard)
    with pytest.raises(CpmError, match=f"^{shard}: corrupted checkpoint file"):
        load_model(copy)
    (copy / "checkpoints" / "step-000005" / "config.json").write_text("{}")
    with pytest.raises(CpmError, match="config.json: corrupted checkpoint file: .* bytes"):
        load_model(copy)


def test_resume_refuses_a_corrupted_checkpoint(tmp_path, capsys):
    packed = write_packed(tmp_path / "packed")
    out = tmp_path / "train-run"
    base = ["train", "--input", str(packed), "--output", str(out), *TINY_RUN]
    assert main([*base, "--save-every", "1", "--stop-at", "1"]) == 0
    step = out / "checkpoints" / "step-000001"
    assert (step / "checksums.json").is_file()
    flip_in_weights(step / "optim-tp00-of-01.pt")
    capsys.readouterr()
    assert main([*base, "--resume"]) == 1
    assert f"{step / 'optim-tp00-of-01.pt'}: corrupted checkpoint file" in one_line_error(capsys)


def test_checkpoint_without_checksums_loads_with_a_warning(run, tmp_path, caplog):
    from cpm.trainer.checkpoint import load_model

    copy = tmp_path / "old"
    shutil.copytree(run / "run", copy)
    (copy / "checkpoints" / "step-000005" / "checksums.json").unlink()
    caplog.set_level("WARNING", logger="cpm")
    load_model(copy)
    assert any("no checksums.json" in r.getMessage() for r in caplog.records)
