"""Overlapped gradient buckets and ZeRO stage 1 against plain data parallelism (gloo, CPU, fp32).

Unit level: 2 spawned processes run the same steps with the end-of-backward all-reduce,
with hook-driven buckets and with the ZeRO optimizer. End to end: ``cpm train`` under
torchrun at TP1 x DP2 and TP2 x DP2, with and without ``--zero 1``; the ZeRO checkpoints
then resume in one process (another data-parallel size and another ``--tp``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cpm.trainer.checkpoint import load_training_state, unsharded_state_dict
from cpm.trainer.grad_buckets import GradBuckets
from cpm.trainer.model import GPT, GPTConfig
from cpm.trainer.parallel import ParallelContext, make_context
from cpm.trainer.train import TrainConfig, _forward_backward, build_data_parallel, build_optimizer, resolve_train_config, train, train_step
from cpm.trainer.zero import ZeroAdamW

sys.path.insert(0, str(Path(__file__).parent))
from test_tensor_parallel import _free_port  # noqa: E402
from test_train import MODEL, MODEL_FLAGS, read_metrics, write_packed  # noqa: E402

CONFIG = GPTConfig(vocab_size=300, n_positions=16, n_layer=2, n_head=4, d_model=32, dropout=0.0)
STEPS = 3

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ------------------------------------------------------------------------------ unit level


def _steps(ctx: ParallelContext, mode: str) -> dict:
    """STEPS steps of 2 micro-batches on this rank's half of the batch; ``mode``: allreduce, buckets, zero."""
    model = GPT(CONFIG, ctx)
    model.init_weights(3)
    cfg = TrainConfig(zero=int(mode == "zero"), bucket_mb=0.02)  # ~5 buckets
    if mode == "allreduce":
        optimizer, buckets = build_optimizer(model, cfg, "cpu"), None
    else:
        optimizer, buckets = build_data_parallel(model, cfg, ctx, "cpu")
    gen = torch.Generator().manual_seed(11)
    losses, launched = [], []
    for _ in range(STEPS):
        batches = [torch.randint(0, CONFIG.vocab_size, (4, 17), generator=gen) for _ in range(2)]
        mine = [b[ctx.dp_rank * 2 : ctx.dp_rank * 2 + 2] for b in batches]
        if buckets is not None:  # every bucket's collective starts inside the last backward pass
            _forward_backward(model, model, mine, "fp32", None, optimizer, buckets)
            launched.append(all(b.work is not None for b in buckets.buckets))
            buckets.finish()
        out = train_step(model, optimizer, mine, ctx, lr=1e-2, clip_grad=0.05, buckets=buckets)
        losses.append(out["loss"])
    moments = sum(s["exp_avg"].numel() for s in (optimizer.inner if isinstance(optimizer, ZeroAdamW) else optimizer).state.values())
    return {"losses": losses, "params": {n: p.detach().clone() for n, p in model.named_parameters()},
            "launched": launched, "moments": moments, "buckets": len(buckets.buckets) if buckets else 0}


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ctx = make_context(1)
        torch.save({mode: _steps(ctx, mode) for mode in ("allreduce", "buckets", "zero")}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def unit(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("zero-unit")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_bucketed_overlap_is_identical_to_the_end_of_backward_allreduce(unit):
    for result in unit:
        plain, hooked = result["allreduce"], result["buckets"]
        assert hooked["buckets"] >= 3 and all(hooked["launched"])  # communication started from hooks
        assert hooked["losses"] == plain["losses"]  # bit for bit, with accumulation over 2 micro-batches
        assert all(torch.equal(hooked["params"][n], p) for n, p in plain["params"].items())


def test_zero_matches_plain_adamw_with_half_the_moments(unit):
    for result in unit:
        plain, zero = result["allreduce"], result["zero"]
        assert zero["losses"] == pytest.approx(plain["losses"], rel=1e-6)
        for name, p in plain["params"].items():
            error = (zero["params"][name] - p).norm() / p.norm().clamp_min(1e-12)
            assert error <= 1e-6, name
        assert all(zero["launched"])
        assert zero["moments"] <= plain["moments"] / 2 + 2 * zero["buckets"]  # padding to a multiple of dp
    assert unit[0]["zero"]["moments"] + unit[1]["zero"]["moments"] >= unit[0]["allreduce"]["moments"]


def test_grad_buckets_hold_every_gradient_as_a_view():
    model = GPT(CONFIG)
    model.init_weights(3)
    buckets = GradBuckets(model, None, 1, 0, bucket_bytes=10_000)
    flat_bytes = sum(b.grad.numel() for b in buckets.buckets) * 4
    assert flat_bytes == sum(p.numel() for p in model.parameters()) * 4
    buckets.set_sync(False)  # accumulate only (no process group here)
    batch = torch.randint(0, CONFIG.vocab_size, (2, 17))
    model(batch[:, :-1], batch[:, 1:]).backward()
    for bucket in buckets.buckets:
        for p, offset in zip(bucket.params, bucket.offsets):
            assert torch.equal(p.grad.reshape(-1), bucket.grad[offset : offset + p.numel()])
    buckets.remove_hooks()


# ------------------------------------------------------------------------------ torchrun


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    return write_packed(tmp_path_factory.mktemp("packed"))


RUN_FLAGS = [*MODEL_FLAGS, "--max-steps", "4", "--global-batch", "16", "--micro-batch", "4", "--save-every", "2",
             "--keep-checkpoints", "0", "--eval-every", "0", "--dropout", "0", "--bucket-mb", "0.05", "--no-progress"]


def _torchrun(packed: Path, run: Path, tp: int, zero: int) -> Path:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(2 * tp),
         "-m", "cpm.cli", "train", "--size", "tiny", "--tp", str(tp), "--zero", str(zero),
         "--input", str(packed), "--output", str(run), *RUN_FLAGS],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def runs(packed, tmp_path_factory) -> dict[tuple[int, int], Path]:
    root = tmp_path_factory.mktemp("zero-runs")
    return {(tp, zero): _torchrun(packed, root / f"tp{tp}-zero{zero}", tp, zero) for tp in (1, 2) for zero in (0, 1)}


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run) if "loss" in r]


@pytest.mark.parametrize("tp", [1, 2])
def test_torchrun_zero_matches_plain_data_parallel(runs, tp):
    plain, zero = runs[(tp, 0)], runs[(tp, 1)]
    assert _losses(zero) == pytest.approx(_losses(plain), rel=1e-6) and len(_losses(zero)) == 4
    a, _ = unsharded_state_dict(plain)
    b, _ = unsharded_state_dict(zero)
    for name in a:
        assert (b[name] - a[name]).norm() <= 1e-6 * a[name].norm(), name
    ckpt = zero / "checkpoints" / "step-000004"
    assert json.loads((ckpt / "config.json").read_text())["zero_dp"] == 2
    assert sorted(p.name for p in ckpt.glob("optim-*")) == [
        f"optim-tp{t:02d}-of-{tp:02d}-dp{d:02d}-of-02.pt" for t in range(tp) for d in range(2)]


def _resume_in_one_process(packed: Path, run: Path, into: Path) -> Path:
    """Copy ``run`` as it was at step 2 and continue it to step 4 in this process (tp 1, dp 1)."""
    shutil.copytree(run, into)
    shutil.rmtree(into / "checkpoints" / "step-000004")
    (into / "checkpoints" / "latest").write_text("step-000002\n")
    cfg = resolve_train_config("tiny", input=str(packed), output=str(into), max_steps=4, global_batch=16, micro_batch=4,
                               save_every=2, keep_checkpoints=0, eval_every=0, progress=False, resume=True,
                               model=dict(MODEL, dropout=0.0))
    train(cfg)
    return into


@pytest.mark.parametrize("tp", [1, 2])
def test_zero_checkpoint_resumes_in_one_process(runs, packed, tmp_path, tp):
    """A TP{tp} x DP2 --zero 1 checkpoint continues at TP1 x DP1 without ZeRO: the same samples per
    step (summed in another order), so the losses agree to float rounding."""
    resumed = _resume_in_one_process(packed, runs[(tp, 1)], tmp_path / "resumed")
    assert _losses(resumed)[:2] == _losses(runs[(tp, 1)])[:2]
    assert _losses(resumed)[2:] == pytest.approx(_losses(runs[(tp, 1)])[2:], rel=1e-6)
    a, _ = unsharded_state_dict(runs[(tp, 1)])
    b, _ = unsharded_state_dict(resumed)
    for name in a:
        x, y = _without_key_bias(name, a[name]), _without_key_bias(name, b[name])
        assert (y - x).norm() <= 1e-5 * x.norm(), name


def _without_key_bias(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """The key bias has a zero gradient up to float noise, which Adam scales up to lr-sized
    steps: another summation order moves it by ~lr, so it is left out of the comparison."""
    if not name.endswith("c_attn.bias"):
        return tensor
    q, _k, v = tensor.chunk(3)
    return torch.cat([q, v])


def test_zero_and_plain_checkpoints_load_the_same_state(runs):
    """The moments a ZeRO checkpoint's fragments rebuild equal those of the plain run's
    checkpoint bit for bit (both runs computed the same numbers), at another tp and dp."""
    loaded = []
    for zero in (0, 1):
        model = GPT(GPTConfig(**json.loads((runs[(2, zero)] / "config.json").read_text())["model"]))
        optimizer = build_optimizer(model, TrainConfig(), "cpu")
        load_training_state(runs[(2, zero)] / "checkpoints" / "step-000004", model, optimizer, ParallelContext())
        names = {id(p): n for n, p in model.named_parameters()}
        loaded.append({names[id(p)]: s for p, s in optimizer.state.items()})
    assert loaded[0].keys() == loaded[1].keys() and len(loaded[0]) == len(list(model.parameters()))
    for name, state in loaded[0].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state[key], loaded[1][name][key]), (name, key)
