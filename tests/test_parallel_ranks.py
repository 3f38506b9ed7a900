"""Every collective piece of ``cpm.trainer.parallel`` on 4 real gloo ranks, against plain torch.

One launch of 4 forked processes (no re-import of torch: about a second) runs each piece in
three layouts of the same ranks (TP = 4 x DP = 1, TP = 2 x DP = 2, TP = 1 x DP = 4); the
workers write what they computed to ``tmp_path`` and the tests compare it here with oracles
computed in one process: ``F.linear`` / ``F.embedding`` / ``F.cross_entropy`` on the unsplit
tensors, ``torch.nn.utils.clip_grad_norm_``, and the group layout written out by hand.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cpm.errors import CpmError
from cpm.trainer.parallel import (
    ColumnParallelLinear,
    ModelParallelRNG,
    ParallelContext,
    RowParallelLinear,
    VocabParallelEmbedding,
    _mark,
    allreduce_gradients,
    clip_gradients,
    gather_from_tp,
    grad_norm,
    init_parallel,
    make_context,
    seed_everything,
    shard_tensor,
    unshard_tensors,
    vocab_parallel_cross_entropy,
)

WORLD = 4
LAYOUTS = (4, 2, 1)  # tp; dp = WORLD // tp
VOCAB = 16  # 8 ids per shard at TP = 2, 4 at TP = 4
MAX_NORMS = (0.0, 0.3, 1e6)  # off; clipping; a bound above the norm


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------- inputs (the same everywhere)


def _linear_inputs(chunks: int) -> dict[str, torch.Tensor]:
    g = _gen(10 + chunks)
    return {"x": torch.randn(3, 2, 8, generator=g), "w": torch.randn(12, 8, generator=g),
            "b": torch.randn(12, generator=g), "up": torch.randn(3, 2, 12, generator=g)}


def _row_inputs() -> dict[str, torch.Tensor]:
    g = _gen(20)
    return {"x": torch.randn(3, 8, generator=g), "w": torch.randn(5, 8, generator=g), "b": torch.randn(5, generator=g),
            "up": torch.randn(3, 5, generator=g)}


def _embedding_inputs() -> dict[str, torch.Tensor]:
    g = _gen(30)
    ids = torch.cat([torch.arange(VOCAB), torch.arange(VOCAB).flip(0)]).view(4, 8)  # every id, every boundary
    return {"ids": ids, "w": torch.randn(VOCAB, 3, generator=g), "up": torch.randn(4, 8, 3, generator=g)}


def _ce_inputs() -> dict[str, torch.Tensor]:
    """Logits (2, 3*VOCAB/2, VOCAB) with every target id three times; one block with its max in the last shard."""
    g = _gen(40)
    target = torch.arange(VOCAB).repeat(3).view(2, -1)
    logits = torch.randn(*target.shape, VOCAB, generator=g) * 6.0
    logits[1].add_(50.0 * torch.arange(VOCAB) / VOCAB)  # exp(2 x max) overflows fp32: the shift must subtract
    return {"logits": logits, "target": target, "up": torch.rand(target.shape, generator=g) + 0.5}


def _grads(rank: int) -> list[torch.Tensor | None]:
    """This rank's gradients of 5 parameters: fp32, a missing one, fp64 (a dtype change cuts a bucket)."""
    g = _gen(50 + rank)
    return [torch.randn(3, 4, generator=g), None, torch.randn(5, generator=g),
            torch.randn(2, 3, generator=g, dtype=torch.float64), torch.randn(7, generator=g)]


def _norm_grads(rank: int, tp: int) -> list[tuple[int | None, torch.Tensor]]:
    """(tp_split_dim, gradient) of 4 parameters of this rank: split along 0 or 1 (a shard of this rank's
    own), or replicated (the same on every rank of a TP group)."""
    g, shared = _gen(60 + rank), _gen(70 + rank // tp)
    return [(0, torch.randn(2, 3, generator=g)), (None, torch.randn(4, generator=shared)),
            (1, torch.randn(3, 2, generator=g)), (None, torch.randn(2, 2, generator=shared))]


# ------------------------------------------------------------------------------- worker pieces


def _context(ctx: ParallelContext) -> dict:
    members = gather_from_tp(torch.tensor([ctx.rank]), ctx.tp_group, 0).tolist()
    onehot = torch.zeros(WORLD)
    onehot[ctx.rank] = 1.0
    if ctx.dp_group is not None:
        dist.all_reduce(onehot, group=ctx.dp_group)
    return {"fields": (ctx.tp_world, ctx.tp_rank, ctx.dp_world, ctx.dp_rank, ctx.rank, ctx.world, ctx.is_main),
            "tp_members": members, "dp_members": onehot.nonzero().flatten().tolist(),
            "groups": (ctx.tp_group is None, ctx.dp_group is None)}


def _column(ctx: ParallelContext, chunks: int) -> dict:
    inp = _linear_inputs(chunks)
    layer = ColumnParallelLinear(8, 12, ctx, chunks=chunks) if chunks > 1 else ColumnParallelLinear(8, 12, ctx)
    with torch.no_grad():
        layer.weight.copy_(shard_tensor(inp["w"], 0, ctx.tp_rank, ctx.tp_world, chunks))
        layer.bias.copy_(shard_tensor(inp["b"], 0, ctx.tp_rank, ctx.tp_world, chunks))
    x = inp["x"].clone().requires_grad_(True)
    y = layer(x)
    (y * shard_tensor(inp["up"], -1, ctx.tp_rank, ctx.tp_world, chunks)).sum().backward()
    return {"y": y.detach(), "x_grad": x.grad, "w_grad": layer.weight.grad, "b_grad": layer.bias.grad,
            "marks": (layer.weight.tp_split_dim, layer.weight.tp_chunks, layer.bias.tp_split_dim, layer.bias.tp_chunks)}


def _row(ctx: ParallelContext) -> dict:
    inp = _row_inputs()
    layer = RowParallelLinear(8, 5, ctx)
    with torch.no_grad():
        layer.weight.copy_(shard_tensor(inp["w"], 1, ctx.tp_rank, ctx.tp_world))
        layer.bias.copy_(inp["b"])
    x = shard_tensor(inp["x"], 1, ctx.tp_rank, ctx.tp_world).clone().requires_grad_(True)
    y = layer(x)
    (y * inp["up"]).sum().backward()
    no_bias = RowParallelLinear(8, 5, ctx, bias=False)
    with torch.no_grad():
        no_bias.weight.copy_(layer.weight)
        y_no_bias = no_bias(x.detach())
    return {"y": y.detach(), "y_no_bias": y_no_bias, "x_grad": x.grad, "w_grad": layer.weight.grad,
            "b_grad": layer.bias.grad,
            "marks": (layer.weight.tp_split_dim, layer.bias.tp_split_dim, layer.weight.tp_chunks, layer.bias.tp_chunks)}


def _embedding(ctx: ParallelContext) -> dict:
    inp = _embedding_inputs()
    layer = VocabParallelEmbedding(VOCAB, 3, ctx)
    with torch.no_grad():
        layer.weight.copy_(shard_tensor(inp["w"], 0, ctx.tp_rank, ctx.tp_world))
    out = layer(inp["ids"])
    (out * inp["up"]).sum().backward()
    return {"out": out.detach(), "w_grad": layer.weight.grad, "start": layer.vocab_start, "local": layer.local_vocab,
            "marks": (layer.weight.tp_split_dim, layer.weight.tp_chunks)}


def _cross_entropy(ctx: ParallelContext) -> dict:
    inp = _ce_inputs()
    local = VOCAB // ctx.tp_world
    shard = inp["logits"][..., ctx.tp_rank * local : (ctx.tp_rank + 1) * local].clone().requires_grad_(True)
    loss = vocab_parallel_cross_entropy(shard, inp["target"], ctx.tp_rank * local, ctx.tp_group)
    (loss * inp["up"]).sum().backward()
    return {"loss": loss.detach(), "grad": shard.grad}


def _allreduce(ctx: ParallelContext) -> dict:
    out = {}
    for bucket_bytes in (1, 40, 64 << 20):  # a bucket per tensor, some tensors per bucket, one bucket
        params = []
        for grad in _grads(ctx.rank):
            p = torch.nn.Parameter(torch.zeros(3) if grad is None else torch.zeros_like(grad))
            p.grad = grad
            params.append(p)
        allreduce_gradients(params, ctx, bucket_bytes)
        out[bucket_bytes] = [p.grad for p in params]
    return out


BUCKET_GRADS = ((4, torch.float32), (4, torch.float32), (8, torch.float32), (2, torch.float64), (2, torch.float64),
                (1, torch.float32))  # 16, 16, 32, 16, 16 and 4 bytes
# Each all-reduce's (numel, dtype) for a bucket size: a bucket takes the next gradient while it fits (31 bytes: one
# 16-byte gradient; 32 bytes: two) and holds one dtype; the default (64 MiB) takes every run of one dtype.
BUCKETS = {31: [(4, "float"), (4, "float"), (8, "float"), (2, "double"), (2, "double"), (1, "float")],
           32: [(8, "float"), (8, "float"), (4, "double"), (1, "float")],
           None: [(16, "float"), (4, "double"), (1, "float")]}


def _bucket_calls(ctx: ParallelContext) -> dict[int | None, list[tuple[int, str]]]:
    """The all-reduces that ``allreduce_gradients`` makes, as torch's profiler records them."""
    calls = {}
    for bucket_bytes in BUCKETS:
        params = []
        for numel, dtype in BUCKET_GRADS:
            p = torch.nn.Parameter(torch.zeros(numel, dtype=dtype))
            p.grad = torch.ones(numel, dtype=dtype)
            params.append(p)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            allreduce_gradients(params, ctx, *([bucket_bytes] if bucket_bytes else []))
        calls[bucket_bytes] = [(e.input_shapes[0][0], e.input_dtypes[0]) for e in prof.events() if e.name == "gloo:all_reduce"]
    return calls


def _norm_params(ctx: ParallelContext) -> list[torch.nn.Parameter]:
    params = []
    for dim, grad in _norm_grads(ctx.rank, ctx.tp_world):
        p = _mark(torch.nn.Parameter(torch.zeros(grad.shape)), dim)
        p.grad = grad.clone()
        params.append(p)
    return params


def _norms(ctx: ParallelContext) -> dict:
    out = {}
    for sharded in (False, True):
        flag = {"dp_sharded": True} if sharded else {}  # not sharded: the default
        out[("norm", sharded)] = float(grad_norm(_norm_params(ctx), ctx, **flag))
        for max_norm in MAX_NORMS:
            params = _norm_params(ctx)
            norm = clip_gradients(params, max_norm, ctx, **flag)
            out[(max_norm, sharded)] = (float(norm), [p.grad for p in params])
    return out


def _rng(ctx: ParallelContext) -> dict:
    rng = ModelParallelRNG("cpu")
    seed_everything(11, ctx, rng)
    default = torch.rand(3)
    with rng.fork():
        tracker = torch.rand(3)
    return {"default": default, "tracker": tracker}


def _worker(rank: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))  # a mismatched collective fails instead of hanging
    try:
        result = {}
        for tp in LAYOUTS:
            ctx = make_context(tp)
            result[tp] = {"context": _context(ctx), "column1": _column(ctx, 1), "column3": _column(ctx, 3),
                          "row": _row(ctx), "embedding": _embedding(ctx), "ce": _cross_entropy(ctx),
                          "allreduce": _allreduce(ctx), "buckets": _bucket_calls(ctx), "norms": _norms(ctx),
                          "rng": _rng(ctx)}
        rows = torch.arange(12.0).view(2, 2, 3) + 100 * rank  # 3-D: the last dimension is not dimension 1
        result["gather"] = {"last": gather_from_tp(rows, make_context(2).tp_group), "first": gather_from_tp(rows, make_context(4).tp_group, 0)}
        os.environ.pop("WORLD_SIZE", None)  # a default group made without torchrun's variables: still used
        result["init_parallel1"] = _context(init_parallel(1))
        os.environ["WORLD_SIZE"] = str(WORLD)  # as torchrun sets it; the default group already exists
        result["init_parallel"] = _context(init_parallel(2))
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _torchrun_worker(rank: int, port: int, out: str) -> None:
    """What ``torchrun --nproc-per-node 2`` gives each process: environment variables, no group yet."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = init_parallel(2, timeout_s=60)
    try:
        summed = torch.tensor([rank + 1.0])
        dist.all_reduce(summed, group=ctx.tp_group)
        torch.save({"backend": dist.get_backend(), "fields": (ctx.tp_world, ctx.tp_rank, ctx.dp_world, ctx.world),
                    "sum": summed.item()}, Path(out) / f"torchrun{rank}.pt")
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("parallel-ranks")
    mp.start_processes(_worker, args=(str(out),), nprocs=WORLD, join=True, start_method="fork")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory) -> list[dict]:
    import socket

    out = tmp_path_factory.mktemp("torchrun")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_torchrun_worker, args=(port, str(out)), nprocs=2, join=True, start_method="fork")
    return [torch.load(out / f"torchrun{r}.pt", weights_only=False) for r in range(2)]


def test_init_parallel_under_torchrun_creates_a_gloo_group_on_cpu(torchrun):
    for rank, got in enumerate(torchrun):
        assert got == {"backend": "gloo", "fields": (2, rank, 1, 2), "sum": 3.0}


def _close(got: torch.Tensor, expected: torch.Tensor, **tol) -> None:
    torch.testing.assert_close(got, expected, **({"atol": 1e-5, "rtol": 1e-5} | tol))


def _tp_ranks(tp: int) -> range:
    return range(tp)  # the first TP group (the others compute the same)


@pytest.mark.parametrize("tp", LAYOUTS)
def test_groups_are_consecutive_for_tp_and_strided_for_dp(ranks, tp):
    dp = WORLD // tp
    for rank in range(WORLD):
        got = ranks[rank][tp]["context"]
        assert got["fields"] == (tp, rank % tp, dp, rank // tp, rank, WORLD, rank == 0)
        assert got["tp_members"] == list(range(rank - rank % tp, rank - rank % tp + tp))
        assert got["dp_members"] == list(range(rank % tp, WORLD, tp))
        assert got["groups"] == (tp == 1, dp == 1)


def test_init_parallel_under_torchrun_uses_the_existing_group(ranks, monkeypatch):
    for rank in range(WORLD):
        assert ranks[rank]["init_parallel"] == ranks[rank][2]["context"]
        assert ranks[rank]["init_parallel1"] == ranks[rank][1]["context"]
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(CpmError, match="--tp 3 does not divide the world size 4"):
        init_parallel(3)


def test_gather_from_tp_concatenates_in_rank_order(ranks):
    rows = torch.arange(12.0).view(2, 2, 3)
    for rank in range(WORLD):
        pair = rank - rank % 2
        last = ranks[rank]["gather"]["last"]
        assert last.shape == (2, 2, 6)
        torch.testing.assert_close(last, torch.cat([rows + 100 * pair, rows + 100 * (pair + 1)], 2))
        torch.testing.assert_close(ranks[rank]["gather"]["first"], torch.cat([rows + 100 * r for r in range(WORLD)], 0))


@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("tp", LAYOUTS)
def test_column_parallel_linear_matches_f_linear(ranks, tp, chunks):
    inp = _linear_inputs(chunks)
    x = inp["x"].clone().requires_grad_(True)
    w, b = inp["w"].clone().requires_grad_(True), inp["b"].clone().requires_grad_(True)
    y = F.linear(x, w, b)
    (y * inp["up"]).sum().backward()
    got = [ranks[r][tp][f"column{chunks}"] for r in _tp_ranks(tp)]
    _close(unshard_tensors([g["y"] for g in got], -1, chunks), y.detach())
    _close(unshard_tensors([g["w_grad"] for g in got], 0, chunks), w.grad)
    _close(unshard_tensors([g["b_grad"] for g in got], 0, chunks), b.grad)
    for g in got:
        _close(g["x_grad"], x.grad)  # the input gradient is all-reduced over TP
        assert g["marks"] == (0, chunks, 0, chunks)


@pytest.mark.parametrize("tp", LAYOUTS)
def test_row_parallel_linear_matches_f_linear(ranks, tp):
    inp = _row_inputs()
    x, w, b = (inp[k].clone().requires_grad_(True) for k in ("x", "w", "b"))
    y = F.linear(x, w, b)
    (y * inp["up"]).sum().backward()
    got = [ranks[r][tp]["row"] for r in _tp_ranks(tp)]
    _close(unshard_tensors([g["x_grad"] for g in got], 1), x.grad)
    _close(unshard_tensors([g["w_grad"] for g in got], 1), w.grad)
    for g in got:
        _close(g["y"], y.detach())
        _close(g["y_no_bias"], F.linear(inp["x"], inp["w"]))
        _close(g["b_grad"], b.grad)  # replicated: the full gradient on every rank
        assert g["marks"] == (1, None, 1, 1)  # split along the input, one block; the bias replicated


@pytest.mark.parametrize("tp", LAYOUTS)
def test_vocab_parallel_embedding_matches_f_embedding(ranks, tp):
    inp = _embedding_inputs()
    w = inp["w"].clone().requires_grad_(True)
    out = F.embedding(inp["ids"], w)
    (out * inp["up"]).sum().backward()
    got = [ranks[r][tp]["embedding"] for r in _tp_ranks(tp)]
    for rank, g in enumerate(got):
        _close(g["out"], out.detach(), atol=0, rtol=0)
        assert (g["start"], g["local"]) == (rank * VOCAB // tp, VOCAB // tp)
        assert g["marks"] == (0, 1)  # split along the vocabulary, one block
    _close(unshard_tensors([g["w_grad"] for g in got], 0), w.grad)


@pytest.mark.parametrize("tp", LAYOUTS)
def test_vocab_parallel_cross_entropy_matches_f_cross_entropy(ranks, tp):
    inp = _ce_inputs()
    logits = inp["logits"].clone().requires_grad_(True)
    loss = F.cross_entropy(logits.flatten(0, 1), inp["target"].flatten(), reduction="none").view(inp["target"].shape)
    (loss * inp["up"]).sum().backward()
    local = VOCAB // tp
    for rank in _tp_ranks(tp):
        got = ranks[rank][tp]["ce"]
        assert got["loss"].shape == inp["target"].shape and got["loss"].dtype == torch.float32
        _close(got["loss"], loss.detach())
        _close(got["grad"], logits.grad[..., rank * local : (rank + 1) * local], atol=1e-6)


@pytest.mark.parametrize("tp", LAYOUTS)
def test_allreduce_gradients_averages_over_the_dp_group(ranks, tp):
    for rank in range(WORLD):
        group = range(rank % tp, WORLD, tp)
        for bucket_bytes, got in ranks[rank][tp]["allreduce"].items():
            for i, grad in enumerate(_grads(rank)):
                if grad is None:
                    assert got[i] is None
                    continue
                expected = torch.stack([_grads(r)[i] for r in group]).mean(0)
                assert got[i].dtype == grad.dtype
                _close(got[i], expected, atol=1e-6, rtol=1e-6, msg=f"rank {rank} bucket {bucket_bytes} grad {i}")


@pytest.mark.parametrize("tp", LAYOUTS)
def test_gradients_are_averaged_in_buckets_of_one_dtype_that_fit(ranks, tp):
    for rank in range(WORLD):
        expected = BUCKETS if tp < WORLD else {bucket_bytes: [] for bucket_bytes in BUCKETS}  # DP = 1: nothing to average
        assert ranks[rank][tp]["buckets"] == expected


def _full_norm_grads(tp: int, sharded: bool) -> list[torch.Tensor]:
    """The unsharded gradients the ranks' pieces make up.

    Split parameters: the TP shards of a DP rank concatenated along their split dim; replicated
    parameters: TP rank 0's copy (a TP group shares it). Sharded over DP (ZeRO): every DP rank
    holds a disjoint part, so the full set is all of them; otherwise DP rank 0's set."""
    full = []
    for dp_rank in range(WORLD // tp if sharded else 1):
        pieces = [_norm_grads(dp_rank * tp + t, tp) for t in range(tp)]
        for i, (dim, _) in enumerate(pieces[0]):
            full.append(pieces[0][i][1] if dim is None else torch.cat([p[i][1] for p in pieces], dim))
    return full


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("tp", LAYOUTS)
def test_grad_norm_and_clipping_match_clip_grad_norm_on_the_unsharded_gradients(ranks, tp, sharded):
    full = _full_norm_grads(tp, sharded)
    expected_norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in full]))
    for rank in range(WORLD) if sharded else _tp_ranks(tp):
        got = ranks[rank][tp]["norms"]
        assert got[("norm", sharded)] == pytest.approx(float(expected_norm), rel=1e-6)
        for max_norm in MAX_NORMS:
            norm, grads = got[(max_norm, sharded)]
            assert norm == pytest.approx(float(expected_norm), rel=1e-6)
            coef = min(1.0, max_norm / (float(expected_norm) + 1e-6)) if max_norm > 0 else 1.0
            assert (coef < 1.0) == (0 < max_norm < float(expected_norm))
            for got_grad, (_, raw) in zip(grads, _norm_grads(rank, tp)):  # the full set's coefficient on this rank's pieces
                _close(got_grad, raw * coef, atol=1e-7, rtol=1e-6)


def test_clipping_coefficient_is_clip_grad_norm_s(ranks):
    full = _full_norm_grads(2, False)
    params = [torch.nn.Parameter(torch.zeros(g.shape)) for g in full]
    for p, g in zip(params, full):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, 0.3)
    norm, grads = ranks[1][2]["norms"][(0.3, False)]
    pieces = _norm_grads(1, 2)
    for (dim, piece), got, p in zip(pieces, grads, params):
        expected = p.grad if dim is None else shard_tensor(p.grad, dim, 1, 2)
        _close(got, expected, atol=1e-7, rtol=1e-5)
        _close(got, piece * (0.3 / (norm + 1e-6)), atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("tp", LAYOUTS)
def test_default_stream_is_shared_within_tp_and_the_tracker_is_not(ranks, tp):
    for rank in range(WORLD):
        got = ranks[rank][tp]["rng"]
        torch.testing.assert_close(got["default"], torch.rand(3, generator=_gen(11 + 1000 * (rank // tp))), rtol=0, atol=0)
        torch.testing.assert_close(got["tracker"], torch.rand(3, generator=_gen(11 + 2718 + rank % tp)), rtol=0, atol=0)
