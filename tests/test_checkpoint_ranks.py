"""Checkpoints of TP = 2 x DP = 2 on 4 real gloo ranks (forked: seconds), read back at other layouts.

The workers train one step with ``lr = 0`` (AdamW then leaves the weights exactly as
``init_weights`` made them, which do not depend on tp, and creates its moments), save a plain
and a ZeRO checkpoint, and load them back at the same layout and at TP = 1 x DP = 4. The tests
compare the files with what each rank held, the unsharded weights with a TP = 1 model
initialised alike, and the resharded moments with the shards concatenated by hand.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cpm.errors import CpmError
from cpm.trainer.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_model,
    load_training_state,
    read_checkpoint_config,
    resolve_checkpoint,
    rotated_checkpoints,
    save_checkpoint,
    save_unsharded,
    unsharded_state_dict,
)
from cpm.trainer.model import GPT, GPTConfig
from cpm.trainer.parallel import ParallelContext, make_context
from cpm.trainer.train import TrainConfig, build_data_parallel, build_optimizer, train_step

WORLD = 4
CONFIG = GPTConfig(vocab_size=200, n_positions=8, n_layer=1, n_head=2, d_model=16, dropout=0.0)
SEED = 5
HYPER = TrainConfig(weight_decay=0.05, beta1=0.8, beta2=0.9, adam_eps=1e-7)
MOMENTS = ("step", "exp_avg", "exp_avg_sq")
RUN_CONFIG = {"data": "语料/train", "note": "run config"}  # config.json keeps Chinese paths readable


def _batch(dp_rank: int) -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (2, CONFIG.n_positions + 1), generator=torch.Generator().manual_seed(dp_rank))


def _moments(model: GPT, optimizer) -> dict[str, dict[str, torch.Tensor]]:
    if hasattr(optimizer, "state_by_name"):  # ZeRO: this rank's flat fragments
        return {}
    return {n: {k: optimizer.state[p][k].clone() for k in MOMENTS} for n, p in model.named_parameters()}


def _train_and_save(ctx: ParallelContext, out: Path, zero: int, name: str = "") -> dict:
    model = GPT(CONFIG, ctx)
    model.init_weights(SEED)
    optimizer, buckets = build_data_parallel(model, TrainConfig(**{**HYPER.__dict__, "zero": zero}), ctx, "cpu")
    train_step(model, optimizer, [_batch(ctx.dp_rank)], ctx, lr=0.0, buckets=buckets)
    run = out / (name or f"run-zero{zero}")
    for step in (3, 5):  # keep=1: step 3 is rotated away once step 5 is complete
        state = {"step": step, "tokens_seen": 7 * step, "scaler": None, "rng": {"rank": ctx.rank},
                 "loader": {"dp": ctx.dp_rank, "tp": ctx.tp_rank}}
        save_checkpoint(run, step, model, optimizer, state, RUN_CONFIG, ctx, keep=1)
    return {"params": {n: p.detach().clone() for n, p in model.named_parameters()}, "moments": _moments(model, optimizer)}


def _load_back(ctx: ParallelContext, out: Path, zero: int, name: str = "") -> dict:
    model = GPT(CONFIG, ctx)
    optimizer = build_optimizer(model, TrainConfig(), "cpu")  # other hyperparameters until loaded
    state = load_training_state(out / (name or f"run-zero{zero}") / "checkpoints" / "step-000005", model, optimizer, ctx)
    return {"params": {n: p.detach().clone() for n, p in model.named_parameters()}, "moments": _moments(model, optimizer),
            "state": state, "hyper": [{k: g[k] for k in ("lr", "betas", "eps", "weight_decay")} for g in optimizer.param_groups]}


def _worker(rank: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))  # a mismatched collective fails instead of hanging
    try:
        tp2, tp1 = make_context(2), make_context(1)
        result = {}
        for zero in (0, 1):
            result[zero] = {"saved": _train_and_save(tp2, Path(out), zero), "same": _load_back(tp2, Path(out), zero),
                            "tp1": _load_back(tp1, Path(out), zero)}
        result["from_tp1"] = {"saved": _train_and_save(tp1, Path(out), 0, "run-tp1"), "tp2": _load_back(tp2, Path(out), 0, "run-tp1")}
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("checkpoint-ranks")
    mp.start_processes(_worker, args=(str(out),), nprocs=WORLD, join=True, start_method="fork")
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _tp1_weights() -> dict[str, torch.Tensor]:
    model = GPT(CONFIG)
    model.init_weights(SEED)
    return {n: p.detach()[: CONFIG.vocab_size] if n == "wte.weight" else p.detach() for n, p in model.named_parameters()}


def _split(name: str) -> tuple[int | None, int]:
    """The sharding rule written out for this model: (dim, chunks) of each parameter."""
    if name.endswith("c_attn.weight") or name.endswith("c_attn.bias"):
        return 0, 3
    if name == "wte.weight" or name.endswith("c_fc.weight") or name.endswith("c_fc.bias"):
        return 0, 1
    if name.endswith("c_proj.weight"):
        return 1, 1
    return None, 1


def _by_hand(name: str, shards: list[torch.Tensor]) -> torch.Tensor:
    """Unshard two TP shards: per chunk (Q, K, V of c_attn), rank 0's block then rank 1's."""
    dim, chunks = _split(name)
    if dim is None:
        return shards[0]
    blocks = [s.chunk(chunks, dim) for s in shards]
    return torch.cat([torch.cat([blocks[0][c], blocks[1][c]], dim) for c in range(chunks)], dim)


@pytest.mark.parametrize("zero", [0, 1])
def test_files_of_a_tp2_dp2_checkpoint(spawned, zero):
    out, ranks = spawned
    root = out / f"run-zero{zero}" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000005"]  # step 3 rotated, no .tmp left
    assert (root / "latest").read_text() == "step-000005\n"
    ckpt = root / "step-000005"
    optim = ([f"optim-tp{t:02d}-of-02-dp{d:02d}-of-02.pt" for t in (0, 1) for d in (0, 1)] if zero
             else ["optim-tp00-of-02.pt", "optim-tp01-of-02.pt"])
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(
        ["checksums.json", "config.json", "model-tp00-of-02.pt", "model-tp01-of-02.pt", "trainer_state.pt", *optim])
    for tp_rank in (0, 1):  # written by DP rank 0 of each TP rank: its live parameters
        saved = torch.load(ckpt / f"model-tp{tp_rank:02d}-of-02.pt", weights_only=True)
        live = ranks[tp_rank][zero]["saved"]["params"]
        assert saved.keys() == live.keys()
        for name, tensor in live.items():
            assert torch.equal(saved[name], tensor), name
            assert _split(name) == tuple(json.loads((ckpt / "config.json").read_text())["layout"][name])
    meta = read_checkpoint_config(ckpt)
    assert (meta["tp"], meta["step"], meta["run"], meta["zero_dp"], meta["model"]) == (2, 5, RUN_CONFIG, 2 if zero else 1,
                                                                                       CONFIG.to_dict())
    assert '"data": "语料/train"' in (ckpt / "config.json").read_text(encoding="utf-8")
    assert meta["padded_vocab"] == 256
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    assert state == {"step": 5, "tokens_seen": 35, "scaler": None, "tp": 2, "dp": 2,
                     "rng": {r: {"rank": r} for r in range(WORLD)}, "loader": {0: {"dp": 0, "tp": 0}, 1: {"dp": 1, "tp": 0}}}
    assert json.loads((ckpt / "checksums.json").read_text())["files"].keys() == {p.name for p in ckpt.iterdir()} - {"checksums.json"}


@pytest.mark.parametrize("zero", [0, 1])
def test_unsharded_weights_are_the_tp1_model_s(spawned, zero, tmp_path):
    out, _ = spawned
    expected = _tp1_weights()
    for source in (out / f"run-zero{zero}", out / f"run-zero{zero}" / "checkpoints",
                   out / f"run-zero{zero}" / "checkpoints" / "step-000005"):
        state, config = unsharded_state_dict(source)
        assert config == CONFIG and state.keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(state[name], tensor), name
    from safetensors import safe_open

    path = save_unsharded(out / f"run-zero{zero}", tmp_path / "model.safetensors")
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["cpm.model_config"]) == CONFIG.to_dict()
        for name, tensor in expected.items():
            assert torch.equal(f.get_tensor(name), tensor), name
    model, config = load_model(out / f"run-zero{zero}")
    assert config == CONFIG and not model.training
    for name, p in model.named_parameters():
        ref = expected[name]
        assert torch.equal(p[: ref.shape[0]].detach(), ref), name
        assert not p[ref.shape[0] :].any()  # the vocabulary padding at TP = 1 is zero
    with pytest.raises(ValueError, match="tp=2 but the parallel context has tp=1"):
        load_model(out / f"run-zero{zero}", tp=2)


def _merged_moments(ranks: list[dict]) -> dict[str, dict[str, torch.Tensor]]:
    """The plain run's moments of TP ranks 0 and 1 (DP rank 0), unsharded by hand."""
    shards = [ranks[t][0]["saved"]["moments"] for t in (0, 1)]
    out = {}
    for name in shards[0]:
        out[name] = {k: _by_hand(name, [s[name][k] for s in shards]) if shards[0][name][k].ndim else shards[0][name][k]
                     for k in MOMENTS}
        if name == "wte.weight":
            out[name] = {k: v[: CONFIG.vocab_size] if v.ndim else v for k, v in out[name].items()}
    return out


def _hyper_ok(hyper: list[dict]) -> None:
    assert {(g["betas"], g["eps"], g["weight_decay"]) for g in hyper} == {((0.8, 0.9), 1e-7, 0.05), ((0.8, 0.9), 1e-7, 0.0)}


@pytest.mark.parametrize("zero", [0, 1])
def test_a_checkpoint_resumes_at_the_same_layout(spawned, zero):
    _, ranks = spawned
    for rank in range(WORLD):
        got, saved = ranks[rank][zero]["same"], ranks[rank][zero]["saved"]
        for name, tensor in saved["params"].items():
            assert torch.equal(got["params"][name], tensor), name
        plain = ranks[rank][0]["saved"]["moments"]  # ZeRO fragments load into the plain optimizer's moments
        for name, moments in plain.items():
            for key in MOMENTS:
                torch.testing.assert_close(got["moments"][name][key], moments[key], rtol=1e-6, atol=1e-9, msg=(name, key))
        state = got["state"]
        assert (state["step"], state["tokens_seen"], state["rng"], state["loader"]) == (
            5, 35, {"rank": rank}, {"dp": rank // 2, "tp": 0})
        _hyper_ok(got["hyper"])


@pytest.mark.parametrize("zero", [0, 1])
def test_a_tp2_dp2_checkpoint_reshards_to_tp1(spawned, zero):
    _, ranks = spawned
    expected_weights, expected_moments = _tp1_weights(), _merged_moments(ranks)
    for rank in range(WORLD):  # TP = 1 x DP = 4: another topology, so no rng or loader state
        got = ranks[rank][zero]["tp1"]
        assert (got["state"]["rng"], got["state"]["loader"], got["state"]["step"]) == (None, None, 5)
        _hyper_ok(got["hyper"])
        for name, ref in expected_weights.items():
            assert torch.equal(got["params"][name][: ref.shape[0]], ref), name
            for key, value in expected_moments[name].items():
                loaded = got["moments"][name][key]
                if name == "wte.weight" and value.ndim:
                    assert not loaded[value.shape[0] :].any()
                    loaded = loaded[: value.shape[0]]
                torch.testing.assert_close(loaded, value, rtol=1e-6, atol=1e-9, msg=(name, key))
    model = GPT(CONFIG)  # and in this process, TP = 1 x DP = 1: the loader state is kept only at DP = 2
    state = load_training_state(latest_checkpoint(spawned[0] / f"run-zero{zero}"), model,
                                build_optimizer(model, TrainConfig(), "cpu"), ParallelContext())
    assert (state["rng"], state["loader"]) == (None, None)


def _shard_by_hand(name: str, full: torch.Tensor, rank: int) -> torch.Tensor:
    """TP rank ``rank``'s half of a full tensor: per chunk (Q, K, V of c_attn), its half of each."""
    dim, chunks = _split(name)
    if dim is None or full.ndim == 0:
        return full
    return torch.cat([block.chunk(2, dim)[rank] for block in full.chunk(chunks, dim)], dim)


def test_a_tp1_dp4_checkpoint_reshards_to_tp2(spawned):
    out, ranks = spawned
    full_params, full_moments = ranks[0]["from_tp1"]["saved"]["params"], ranks[0]["from_tp1"]["saved"]["moments"]
    assert full_params["wte.weight"].shape[0] == 256  # padded alike at TP = 1 and 2
    for rank in range(WORLD):
        got = ranks[rank]["from_tp1"]["tp2"]
        assert (got["state"]["rng"], got["state"]["loader"]) == (None, None)  # TP changed; DP changed
        _hyper_ok(got["hyper"])
        for name, full in full_params.items():
            assert torch.equal(got["params"][name], _shard_by_hand(name, full, rank % 2)), name
            for key in MOMENTS:
                expected = _shard_by_hand(name, full_moments[name][key], rank % 2)
                assert torch.equal(got["moments"][name][key], expected), (name, key)
    state_dict, _ = unsharded_state_dict(out / "run-tp1")  # one shard: nothing to merge
    for name, full in full_params.items():
        assert torch.equal(state_dict[name], full[: CONFIG.vocab_size] if name == "wte.weight" else full), name
    model = GPT(CONFIG)  # TP = 1 x DP = 1: the same TP but another DP size, so no rng state and no loader state
    ckpt = latest_checkpoint(out / "run-tp1")
    state = load_training_state(ckpt, model, build_optimizer(model, TrainConfig(), "cpu"), ParallelContext())
    assert (state["rng"], state["loader"], state["tp"], state["dp"]) == (None, None, 1, 4)


def test_a_checkpoint_without_checksums_or_zero_dp_still_loads(spawned, tmp_path):
    """As an older cpm wrote them: no checksums.json, no "zero_dp" in config.json."""
    import shutil

    old = tmp_path / "step-000005"
    shutil.copytree(latest_checkpoint(spawned[0] / "run-tp1"), old)
    (old / "checksums.json").unlink()
    meta = json.loads((old / "config.json").read_text())
    del meta["zero_dp"]
    (old / "config.json").write_text(json.dumps(meta))
    model = GPT(CONFIG)
    optimizer = build_optimizer(model, TrainConfig(), "cpu")
    assert load_training_state(old, model, optimizer, ParallelContext())["step"] == 5
    saved = spawned[1][0]["from_tp1"]["saved"]
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), saved["params"][name]), name
        assert torch.equal(optimizer.state[p]["exp_avg"], saved["moments"][name]["exp_avg"]), name


def test_the_default_is_to_keep_three_checkpoints(tmp_path):
    model = GPT(CONFIG)
    model.init_weights(SEED)
    optimizer = build_optimizer(model, TrainConfig(), "cpu")
    for step in (1, 2, 3, 4):
        state = {"step": step, "tokens_seen": 0, "scaler": None, "rng": None, "loader": None}
        save_checkpoint(tmp_path, step, model, optimizer, state, {}, ParallelContext())
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-000002", "step-000003", "step-000004"]


def test_a_checkpoint_of_another_model_is_an_error(spawned):
    other = GPT(GPTConfig(**{**CONFIG.to_dict(), "n_layer": 2}))
    with pytest.raises(CpmError, match="the checkpoint's model .* differs from this run's"):
        load_training_state(latest_checkpoint(spawned[0] / "run-zero0"), other,
                            build_optimizer(other, TrainConfig(), "cpu"), ParallelContext())


# ------------------------------------------------------------------------------- finding checkpoints


def _steps(root: Path, *steps: int) -> list[Path]:
    paths = [root / f"step-{s:06d}" for s in steps]
    for p in paths:
        p.mkdir(parents=True)
        (p / "trainer_state.pt").write_bytes(b"")
    return paths


def test_checkpoints_are_listed_by_step_and_rotated_to_keep(tmp_path):
    root = tmp_path / "checkpoints"
    paths = _steps(root, 1_000_000, 2, 999_999, 10)
    (root / "step-junk").mkdir()
    (root / "step-000011").write_text("a file")
    assert list_checkpoints(root) == [paths[1], paths[3], paths[2], paths[0]]
    assert rotated_checkpoints(root, paths[0], 2) == [paths[1], paths[3]]
    assert rotated_checkpoints(root, paths[1], 1) == [paths[3], paths[2]]  # the one just saved stays
    assert rotated_checkpoints(root, paths[0], 4) == []
    assert rotated_checkpoints(root, paths[0], 0) == []


def test_finding_the_latest_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert latest_checkpoint(run) is None
    with pytest.raises(CpmError, match="no checkpoint found"):
        resolve_checkpoint(run)
    (ckpt,) = _steps(run / "checkpoints", 7)
    with pytest.raises(CpmError, match="holds checkpoints but no 'latest' file"):
        latest_checkpoint(run)
    for text in ("", "step-000008\n"):
        (run / "checkpoints" / "latest").write_text(text)
        with pytest.raises(CpmError, match="which is not a complete checkpoint"):
            latest_checkpoint(run)
    with pytest.raises(CpmError, match="points to step-000008, which does not exist"):
        resolve_checkpoint(run)
    (run / "checkpoints" / "latest").write_text("step-000007\n")
    (run / "config.json").write_text("{}")  # a run directory holds its run config too
    assert latest_checkpoint(run) == ckpt
    assert resolve_checkpoint(run) == resolve_checkpoint(run / "checkpoints") == resolve_checkpoint(ckpt) == ckpt
    bare = tmp_path / "exported"  # a checkpoint directory without trainer_state.pt: config and model shards
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    (bare / "model-tp00-of-01.pt").write_bytes(b"")
    assert resolve_checkpoint(bare) == bare
    (bare / "config.json").write_text("{not json")
    with pytest.raises(CpmError, match=r"config\.json: unreadable checkpoint config"):
        read_checkpoint_config(bare)
    (bare / "config.json").unlink()
    (bare / "config.json").mkdir()  # unreadable: an OSError
    with pytest.raises(CpmError, match=r"config\.json: unreadable checkpoint config"):
        read_checkpoint_config(bare)


def test_a_shard_holding_arbitrary_objects_is_refused(tmp_path):
    """Shards load with ``weights_only``: a pickled object of any other class is an error, not code run."""
    import fractions

    from cpm.trainer.checkpoint import _load

    shard = tmp_path / "model-tp00-of-01.pt"
    torch.save({"wte.weight": torch.zeros(2), "extra": fractions.Fraction(1, 3)}, shard)
    with pytest.raises(CpmError) as error:
        _load(shard)
    assert str(error.value).startswith(f"{shard}: cannot read checkpoint shard (Weights only load failed.")
    assert "\n" not in str(error.value)


def _uneven_worker(rank: int, out: str) -> None:
    """Two ranks (TP = 2) that reach ``save_checkpoint`` half a second apart, rank 0 (which creates the
    temporary directory and renames it) last; each reads the checkpoint back as soon as the call returns."""
    import time

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        ctx = make_context(2)
        model = GPT(CONFIG, ctx)
        model.init_weights(SEED)
        optimizer = build_optimizer(model, TrainConfig(), "cpu")
        if rank == 0:
            time.sleep(0.5)
        state = {"step": 1, "tokens_seen": 0, "scaler": None, "rng": {}, "loader": {}}
        final = save_checkpoint(Path(out) / "run", 1, model, optimizer, state, RUN_CONFIG, ctx)
        assert latest_checkpoint(Path(out) / "run") == final  # complete on every rank once the call returns
        loaded, _ = load_model(final, tp=2, ctx=ctx)
        assert all(torch.equal(p, q) for p, q in zip(loaded.parameters(), model.parameters()))
    finally:
        dist.destroy_process_group()


def test_ranks_that_reach_a_save_at_different_times_write_one_checkpoint(tmp_path):
    """With two ranks, a rank that starts saving early waits for rank 0 to create the temporary
    directory, and no rank returns before the checkpoint is in place."""
    mp.start_processes(_uneven_worker, args=(str(tmp_path),), nprocs=2, join=True, start_method="fork")
    assert read_checkpoint_config(tmp_path / "run" / "checkpoints" / "step-000001")["tp"] == 2
