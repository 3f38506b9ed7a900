"""Tensor-parallel pieces against plain torch on 4 gloo processes (CPU, fp32).

* the vocab-parallel cross-entropy at TP = 2 and 4 against ``F.cross_entropy`` on the full
  logits, with a target at every id (so at both sides of every shard boundary);
* gradient clipping at TP = 2 against ``torch.nn.utils.clip_grad_norm_`` on the unsharded model.

One launch of 4 processes runs both layouts (TP = 4 x DP = 1, then TP = 2 x DP = 2); the
workers write what they computed to ``tmp_path`` and the test process compares.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cpm.trainer.model import GPT, GPTConfig
from cpm.trainer.parallel import ParallelContext, clip_gradients, make_context, unshard_tensors, vocab_parallel_cross_entropy

WORLD = 4
VOCAB = 48  # 24 ids per shard at TP = 2, 12 at TP = 4
CONFIG = GPTConfig(vocab_size=300, n_positions=16, n_layer=2, n_head=4, d_model=32, dropout=0.0)
SEED = 3
MAX_NORMS = (0.05, 1e6, 0.0)  # clipping active; a bound above the norm (no change); 0 = off


def _ce_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits for three copies of every target id; large spreads so that the max shift matters."""
    gen = torch.Generator().manual_seed(1)
    target = torch.arange(VOCAB).repeat(3)
    logits = torch.randn(len(target), VOCAB, generator=gen) * 8.0
    logits[VOCAB : 2 * VOCAB, :].add_(30.0 * torch.arange(VOCAB) / VOCAB)  # the max in the last shard
    return logits, target


def _batch() -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (3, CONFIG.n_positions + 1), generator=torch.Generator().manual_seed(2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cross_entropy(ctx: ParallelContext) -> dict:
    logits, target = _ce_inputs()
    local = VOCAB // ctx.tp_world
    start = ctx.tp_rank * local
    shard = logits[:, start : start + local].clone().requires_grad_(True)
    loss = vocab_parallel_cross_entropy(shard, target, start, ctx.tp_group)
    (loss * torch.linspace(0.5, 1.5, len(loss))).sum().backward()  # a non-uniform upstream gradient
    return {"loss": loss.detach(), "grad": shard.grad}


def _clipping(ctx: ParallelContext) -> dict:
    model = GPT(CONFIG, ctx)
    model.init_weights(SEED)
    batch = _batch()
    model(batch[:, :-1], batch[:, 1:]).backward()
    params = list(model.parameters())
    raw = [p.grad.clone() for p in params]
    result = {}
    for max_norm in MAX_NORMS:
        for p, g in zip(params, raw):
            p.grad = g.clone()
        norm = clip_gradients(params, max_norm, ctx)
        result[max_norm] = {"norm": float(norm), "grads": {n: p.grad.clone() for n, p in model.named_parameters()}}
    return result


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        tp4 = make_context(4)
        tp2 = make_context(2)
        result = {"ce4": _cross_entropy(tp4), "ce2": _cross_entropy(tp2), "clip2": _clipping(tp2)}
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("tp-oracles")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("tp", [2, 4])
def test_vocab_parallel_cross_entropy_at_every_shard_boundary(ranks, tp):
    logits, target = _ce_inputs()
    logits.requires_grad_(True)
    expected = F.cross_entropy(logits, target, reduction="none")
    (expected * torch.linspace(0.5, 1.5, len(expected))).sum().backward()
    local = VOCAB // tp
    boundaries = {start + d for start in range(0, VOCAB, local) for d in (-1, 0)} - {-1}
    assert boundaries <= set(target.tolist())
    for rank in range(tp):  # the first TP group (at TP = 2 the second one computes the same)
        got = ranks[rank][f"ce{tp}"]
        torch.testing.assert_close(got["loss"], expected.detach(), atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(got["grad"], logits.grad[:, rank * local : (rank + 1) * local], atol=1e-6, rtol=1e-5)


def _reference_clipping(max_norm: float) -> tuple[float, dict[str, torch.Tensor]]:
    """The same model and batch in one process, clipped by torch (``max_norm`` 0 = no clipping)."""
    model = GPT(CONFIG, ParallelContext())
    model.init_weights(SEED)
    batch = _batch()
    model(batch[:, :-1], batch[:, 1:]).backward()
    if max_norm > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    else:
        norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))
    return norm, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("max_norm", MAX_NORMS)
def test_tp2_clipping_matches_clip_grad_norm_on_the_unsharded_model(ranks, max_norm):
    ref_norm, ref_grads = _reference_clipping(max_norm)
    assert max_norm != 0.05 or ref_norm > 10 * max_norm  # the bound really clips
    layout = {n: (p.tp_split_dim, p.tp_chunks) for n, p in GPT(CONFIG, ParallelContext()).named_parameters()}
    for rank in (0, 1):
        assert ranks[rank]["clip2"][max_norm]["norm"] == pytest.approx(ref_norm, rel=1e-5)
    for name, ref in ref_grads.items():
        dim, chunks = layout[name]
        merged = unshard_tensors([ranks[r]["clip2"][max_norm]["grads"][name] for r in (0, 1)], dim, chunks)
        if name == "wte.weight":  # padded to 384 rows at TP = 1, 512 at TP = 2; padding gets no gradient
            merged, ref = merged[: CONFIG.vocab_size], ref[: CONFIG.vocab_size]
        torch.testing.assert_close(merged, ref, atol=1e-7, rtol=1e-4, msg=name)
