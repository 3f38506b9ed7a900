"""``cpm train`` end to end on sequence shards: CLI outputs, exact resume, torchrun with --tp 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from cpm.cli import main
from cpm.schemas import sequence_schema
from cpm.schemas.manifest import new_manifest, write_manifest
from cpm.shards.io import write_table
from cpm.trainer.checkpoint import load_model, unsharded_state_dict
from cpm.trainer.train import resolve_train_config, train

SEQ_LEN, VOCAB = 32, 500
MODEL = dict(n_layer=2, d_model=64, n_head=4, n_positions=32)
MODEL_FLAGS = ["--n-layer", "2", "--d-model", "64", "--n-head", "4", "--n-positions", "32"]


def write_packed(directory: Path, train_rows: int = 128, valid_rows: int = 16) -> Path:
    """A `cpm data pack`-shaped directory of learnable sequences (arithmetic progressions mod VOCAB)."""
    rng = np.random.default_rng(0)
    manifest = new_manifest("sequences", "data pack", {"seq_len": SEQ_LEN, "tokenizer": "tok/cpm.model",
                                                       "tokenizer_fingerprint": "abc", "vocab_size": VOCAB})
    for split, rows in (("train", train_rows), ("valid", valid_rows)):
        start = rng.integers(0, VOCAB, rows)
        stride = rng.integers(1, 4, rows)
        tokens = ((start[:, None] + stride[:, None] * np.arange(SEQ_LEN + 1)) % VOCAB).astype(np.uint16)
        schema = sequence_schema(SEQ_LEN, VOCAB, {"eod_id": 0, "split": split})
        table = pa.table(
            {
                "tokens": pa.FixedSizeListArray.from_arrays(pa.array(tokens.ravel(), pa.uint16()), SEQ_LEN + 1),
                "doc_ids": pa.array([[f"doc-{i}"] for i in range(rows)], pa.list_(pa.string())),
                "start_offset": pa.array(np.zeros(rows, np.int32)),
            },
            schema=schema,
        )
        info = write_table(directory / split / "part-00000.arrow", table, schema, compression=None)
        manifest["shards"].append(info.entry(directory, kind="sequences", split=split))
    write_manifest(directory, manifest)
    return directory


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    return write_packed(tmp_path_factory.mktemp("packed"))


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(straight: Path, resumed: Path, steps: int) -> None:
    """Bit for bit: the losses of every step, and the final weights."""
    expected = [r["loss"] for r in read_metrics(straight)]
    assert len(expected) == steps and [r["loss"] for r in read_metrics(resumed)] == expected
    a, _ = unsharded_state_dict(straight)
    b, _ = unsharded_state_dict(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


# the fast tests of the resume path first: the mutation run (mutation/run.py) stops at the first failure
def test_truncate_metrics_drops_later_steps_and_a_torn_line(tmp_path, caplog):
    from cpm.trainer.train import truncate_metrics

    caplog.set_level("INFO", logger="cpm")

    path = tmp_path / "metrics.jsonl"
    lines = ['{"step": 1, "loss": 2.0}', '{"step": 2, "val_loss": 1.5}', '"not a record"']
    path.write_text("\n".join(lines) + '\n{"step": 3, "lo')  # only a torn line after step 2
    truncate_metrics(path, 2)
    assert path.read_text().splitlines() == lines
    assert "dropped 1 records after step 2" in caplog.text
    path.write_text("\n".join(lines) + '\n{"step": 3, "loss": 1.0}\n')
    truncate_metrics(path, 3)  # nothing to drop: the file is left as it is
    assert path.read_text().splitlines()[-1] == '{"step": 3, "loss": 1.0}'
    truncate_metrics(path, 1)
    assert path.read_text().splitlines() == [lines[0], lines[2]]
    assert "dropped 2 records after step 1" in caplog.text
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 2, "loss": 1.5}\n')  # a torn line inside: only it goes
    truncate_metrics(path, 2)
    assert path.read_text().splitlines() == ['{"step": 1, "loss": 2.0}', '{"step": 2, "loss": 1.5}']
    truncate_metrics(tmp_path / "missing.jsonl", 1)  # no file: nothing to do
    assert not (tmp_path / "missing.jsonl").exists()


def test_resume_at_another_data_parallel_size_continues_the_sample_stream(packed, caplog):
    """A checkpoint without a data position for this topology (saved at dp=1, resumed at dp=2):
    the two ranks together read the samples that the dp=1 run reads next."""
    from cpm.trainer.data import SequenceLoader
    from cpm.trainer.train import restore_loader

    straight = iter(SequenceLoader(packed, micro_batch=4, seed=7))  # global batch 8 = 2 micro-batches at dp=1
    for _ in range(3 * 2):  # steps 1-3
        next(straight)
    expected = torch.cat([next(straight), next(straight)])  # step 4
    ranks = [SequenceLoader(packed, micro_batch=4, seed=7, dp_rank=rank, dp_world=2) for rank in range(2)]
    caplog.set_level("WARNING", logger="cpm")
    for loader in ranks:
        restore_loader(loader, None, 3, global_batch=8)
    assert "data stream continues at global sample 24" in caplog.text
    assert [loader.state_dict()["index"] for loader in ranks] == [24, 24]
    got = [next(iter(loader)) for loader in ranks]
    assert torch.equal(got[0], expected[0::2]) and torch.equal(got[1], expected[1::2])  # rank r: rows r::2

    restore_loader(ranks[0], None, 1, global_batch=12)  # not a whole number of dp=2 global batches (8): round down
    assert ranks[0].state_dict()["index"] == 8
    restore_loader(ranks[0], {"index": 40, "seed": 7, "num_samples": 128}, 3, global_batch=8)  # the saved position wins
    assert ranks[0].state_dict()["index"] == 40


def test_resume_without_a_checkpoint_starts_from_scratch(packed, tmp_path, caplog):
    caplog.set_level("WARNING", logger="cpm")
    summary = train(_config(packed, tmp_path / "run", max_steps=2, save_every=0, resume=True))
    assert "--resume: no checkpoint in" in caplog.text and summary["steps"] == 2
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2]


def test_cli_trains_logs_and_checkpoints(packed, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--size", "tiny", "--input", str(packed), "--output", str(run), *MODEL_FLAGS,
                 "--max-steps", "25", "--global-batch", "16", "--micro-batch", "8", "--lr", "3e-3",
                 "--warmup-steps", "5", "--save-every", "10", "--keep-checkpoints", "2", "--eval-every", "25",
                 "--dropout", "0", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 25 and "val_loss" in summary

    config = json.loads((run / "config.json").read_text())
    assert config["model"] == {"vocab_size": VOCAB, "n_positions": 32, "n_layer": 2, "n_head": 4, "d_model": 64,
                               "d_ff": 256, "dropout": 0.0, "layer_norm_eps": 1e-5, "init_std": 0.02}
    assert config["grad_accumulation"] == 2 and config["precision"] == "fp32"
    assert config["tokenizer"]["tokenizer"] == "tok/cpm.model"

    records = [r for r in read_metrics(run) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, 26))
    assert all({"step", "loss", "lr", "tokens_per_s", "grad_norm", "mfu"} <= set(r) for r in records)
    assert records[-1]["loss"] < records[0]["loss"] - 1.0  # the loss falls
    assert any("val_ppl" in r for r in read_metrics(run))
    assert any((run / "tensorboard").iterdir())

    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-000020", "step-000025"]  # keep the last 2
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000025"
    model, model_config = load_model(run)
    assert model_config.vocab_size == VOCAB
    state, _ = unsharded_state_dict(run)
    assert state["wte.weight"].shape == (VOCAB, 64)
    assert torch.equal(model.wte.weight[:VOCAB], state["wte.weight"])


def _config(packed: Path, run: Path, **options):
    values = dict(max_steps=8, global_batch=16, micro_batch=8, warmup_steps=3, save_every=4, eval_every=0,
                  progress=False, model=dict(MODEL))  # dropout stays 0.1: RNG states must resume too
    return resolve_train_config("tiny", input=str(packed), output=str(run), **(values | options))


def test_resume_is_bit_exact(packed, tmp_path):
    straight = tmp_path / "straight"
    train(_config(packed, straight))
    interrupted = tmp_path / "interrupted"
    train(_config(packed, interrupted, stop_at=5))  # checkpoints at 4 and 5, then "dies"
    assert (interrupted / "checkpoints" / "latest").read_text().strip() == "step-000005"
    with open(interrupted / "metrics.jsonl", "a") as handle:  # ... after logging steps 6-7 and half a line
        handle.write('{"step": 6, "loss": 1.0}\n{"step": 7, "loss": 1.0}\n{"step": 8, "lo')
    train(_config(packed, interrupted, resume=True))  # rewrites the metrics after step 5

    assert_same_run(straight, interrupted, steps=8)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _resume_worker(rank: int, packed: str, root: str, ports: list[int]) -> None:
    """One of 2 ranks: a straight TP=2 run, an interrupted one, and its resumption (dropout 0.1)."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1")
    runs = [("straight", {}), ("interrupted", dict(stop_at=3)), ("interrupted", dict(resume=True))]
    for port, (name, options) in zip(ports, runs):
        os.environ["MASTER_PORT"] = str(port)  # train() destroys its process group at the end
        train(_config(Path(packed), Path(root) / name, tp=2, max_steps=6, global_batch=8, save_every=3,
                      device="cpu", **options))


def test_resume_is_bit_exact_at_tp2_with_dropout(packed, tmp_path):
    """Both RNG streams (the default one and the model-parallel one of split attention heads) resume."""
    import torch.multiprocessing as mp

    mp.spawn(_resume_worker, args=(str(packed), str(tmp_path), [_free_port() for _ in range(3)]), nprocs=2, join=True)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    config = json.loads((interrupted / "config.json").read_text())
    assert config["model"]["dropout"] == 0.1 and config["tp"] == 2
    assert_same_run(straight, interrupted, steps=6)


def test_resume_of_a_finished_run_says_so(packed, tmp_path, caplog):
    run = tmp_path / "run"
    train(_config(packed, run, max_steps=2, save_every=2))
    before = (run / "metrics.jsonl").read_text()
    caplog.set_level("WARNING", logger="cpm")
    summary = train(_config(packed, run, max_steps=2, save_every=2, resume=True))
    assert summary["steps"] == 2
    assert "already at step 2 = --max-steps 2; nothing to do" in caplog.text
    assert (run / "metrics.jsonl").read_text() == before


def test_existing_run_dir_needs_resume_or_overwrite(packed, tmp_path, capsys):
    run = tmp_path / "run"
    train(_config(packed, run, max_steps=6, save_every=3, keep_checkpoints=3))
    args = ["train", "--size", "tiny", "--input", str(packed), "--output", str(run), *MODEL_FLAGS,
            "--max-steps", "3", "--save-every", "3", "--keep-checkpoints", "1", "--eval-every", "0", "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert main([*args, "--resume", "--overwrite"]) == 1
    assert "not both" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000003", "step-000006"]  # untouched

    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-000003"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000003"
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]


def test_checkpoint_rotation_by_step_keeps_the_one_just_saved(tmp_path):
    from cpm.trainer.checkpoint import list_checkpoints, rotated_checkpoints

    root = tmp_path / "checkpoints"
    for name in ("step-000006", "step-999999", "step-1000000", "step-000003", "step-junk"):
        (root / name).mkdir(parents=True)
    assert [p.name for p in list_checkpoints(root)] == ["step-000003", "step-000006", "step-999999", "step-1000000"]
    doomed = [p.name for p in rotated_checkpoints(root, root / "step-000003", keep=1)]
    assert doomed == ["step-000006", "step-999999"]  # the newest step stays, and so does the one just saved
    assert [p.name for p in rotated_checkpoints(root, root / "step-1000000", keep=2)] == ["step-000003", "step-000006"]
    assert rotated_checkpoints(root, root / "step-000003", keep=0) == []  # 0 = keep all


def test_resume_with_a_dangling_latest_is_an_error(packed, tmp_path):
    from cpm.errors import CpmError

    run = tmp_path / "run"
    train(_config(packed, run, max_steps=2, save_every=2))
    (run / "checkpoints" / "latest").write_text("step-000099\n")
    with pytest.raises(CpmError, match="step-000099.*not a complete checkpoint"):
        train(_config(packed, run, max_steps=4, resume=True))
    (run / "checkpoints" / "latest").unlink()
    with pytest.raises(CpmError, match="no 'latest' file"):
        train(_config(packed, run, max_steps=4, resume=True))
    assert [r["step"] for r in read_metrics(run)] == [1, 2]  # nothing restarted from scratch


@pytest.mark.parametrize("options, message", [
    (dict(tp=0), "--tp must be a positive integer"),
    (dict(tp=-1), "--tp must be a positive integer"),
    (dict(tp=2), "--tp 2 does not divide the world size 1"),
    (dict(micro_batch=0), "--micro-batch must be a positive integer"),
    (dict(global_batch=0), "--global-batch must be a positive integer"),
    (dict(global_batch=12), "--global-batch 12 is not a multiple of --micro-batch 8"),
    (dict(log_every=0), "--log-every must be a positive integer"),
    (dict(max_steps=-1), "--max-steps must be a positive integer"),
    (dict(max_steps=0), "--max-steps must be a positive integer"),
    (dict(lr=-1.0), "--lr must be positive"),
    (dict(eval_batches=0), "--eval-batches must be a positive integer"),
    (dict(save_every=-1), "--save-every must be 0 \\(off\\) or a positive integer"),
    (dict(eval_every=-5), "--eval-every must be 0"),
    (dict(keep_checkpoints=-1), "--keep-checkpoints must be 0"),
    (dict(warmup_steps=-1), "--warmup-steps must be 0"),
    (dict(beta2=1.0), "--beta2 must be in"),
    (dict(precision="fp8"), "--precision must be"),
])
def test_bad_options_are_one_line_errors(options, message, tmp_path):
    from cpm.errors import CpmError

    with pytest.raises(CpmError, match=message):
        resolve_train_config("tiny", input="x", output=str(tmp_path / "run"), **options)
    assert not (tmp_path / "run").exists()


def test_world_size_checks(monkeypatch):
    from cpm.errors import CpmError

    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_train_config("tiny", tp=2, global_batch=16, micro_batch=8).tp == 2  # dp 2 x 8
    with pytest.raises(CpmError, match="--tp 3 does not divide the world size 4"):
        resolve_train_config("tiny", tp=3)
    with pytest.raises(CpmError, match="not a multiple of --micro-batch 8 x data-parallel size 4"):
        resolve_train_config("tiny", tp=1, global_batch=16, micro_batch=8)


@pytest.mark.parametrize("flags", [["--tp", "0"], ["--micro-batch", "0"], ["--global-batch", "0"],
                                   ["--log-every", "0"], ["--lr", "-1"], ["--max-steps", "-1"]])
def test_cli_bad_options_exit_1_with_one_line(flags, packed, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--input", str(packed), "--output", str(run), *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and flags[0] in err
    assert not run.exists()


def test_torchrun_tp2_on_cpu(packed, tmp_path):
    run = tmp_path / "tp2"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "cpm.cli", "train", "--size", "tiny", "--tp", "2", "--input", str(packed), "--output", str(run),
         *MODEL_FLAGS, "--max-steps", "3", "--global-batch", "8", "--micro-batch", "8", "--save-every", "3",
         "--eval-every", "3", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len([r for r in read_metrics(run) if "loss" in r]) == 3
    step = run / "checkpoints" / "step-000003"
    assert (step / "model-tp00-of-02.pt").is_file() and (step / "model-tp01-of-02.pt").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["tp"] == 2 and config["world"] == 2 and config["dp"] == 1


def test_fp16_resume_restores_the_loss_scale(packed, tmp_path):
    """fp16 (CPU autocast): the loss scaler's state resumes too; a later fp32 resume of that run works."""
    options = dict(precision="fp16", max_steps=4, save_every=2)
    train(_config(packed, tmp_path / "straight", **options))
    train(_config(packed, tmp_path / "interrupted", stop_at=2, **options))
    train(_config(packed, tmp_path / "interrupted", resume=True, **options))

    def scaler(run: Path) -> dict:
        return torch.load(run / "checkpoints" / "step-000004" / "trainer_state.pt", weights_only=False)["scaler"]

    assert scaler(tmp_path / "straight") == scaler(tmp_path / "interrupted") and scaler(tmp_path / "straight")["good_steps"] == 4
    assert [r["loss"] for r in read_metrics(tmp_path / "interrupted")] == [r["loss"] for r in read_metrics(tmp_path / "straight")]
    summary = train(_config(packed, tmp_path / "interrupted", resume=True, **(options | dict(precision="fp32", max_steps=5))))
    assert summary["steps"] == 5
