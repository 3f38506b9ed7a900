"""Megatron-style tensor parallelism on plain ``torch.distributed``.

Why plain ``torch.distributed`` and not DTensor: the same explicit collectives run
unchanged on gloo (CPU, where the correctness tests run) and NCCL (GPU); every
collective is one visible line that a test can check; and the vocab-parallel
cross-entropy (logits never gathered) is a dozen lines here, where DTensor's loss
parallelism is newer and less tested on gloo.

Layout of ``world = tp * dp`` ranks: tensor-parallel groups are consecutive ranks
(``[0, 1], [2, 3]`` for tp=2, so they share a node and its fast links); data-parallel
groups are strided (``[0, 2], [1, 3]``).

Each layer below says which dimension of its weight it splits and where its
collective happens:

=========================  ==========================  ===============================================
layer                      weight split                 collective
=========================  ==========================  ===============================================
ColumnParallelLinear       output dim (weight dim 0)    backward all-reduce of the input grad
RowParallelLinear          input dim (weight dim 1)     forward all-reduce of the output
VocabParallelEmbedding     vocabulary (weight dim 0)    forward all-reduce of the embeddings
vocab_parallel_cross_entropy  logits' vocabulary dim    3 all-reduces per token (max, sum-exp, target)
=========================  ==========================  ===============================================

Every parameter carries ``tp_split_dim`` (``None`` = replicated on every TP rank) and
``tp_chunks`` (3 for the fused QKV projection, whose Q, K and V blocks are each split
so that a rank holds whole heads): :func:`shard_tensor` and :func:`unshard_tensors` map
between a full tensor and its TP shards with exactly that rule, and checkpoints,
resharding and the gradient norm all use it.

Randomness (:class:`ModelParallelRNG`): dropout on replicated activations (embeddings,
residual branches) uses the default generator, seeded the same on every TP rank and
differently on every DP rank; dropout on split activations (attention probabilities,
whose heads are split) runs under a second "model-parallel" state seeded
``seed + 2718 + tp_rank``. It works on CPU and CUDA alike.

Data parallelism averages the gradients over the DP group. The trainer does it from
backward hooks, bucket by bucket, while the backward pass goes on
(:mod:`cpm.trainer.grad_buckets`; reduce-scattered under ZeRO, :mod:`cpm.trainer.zero`);
:func:`allreduce_gradients` is the same sum done in one go after the last micro-batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------
# Process groups
# --------------------------------------------------------------------------------------


@dataclass
class ParallelContext:
    """Where this process sits in the ``tp x dp`` grid; ``groups`` are None when size 1."""

    tp_world: int = 1
    tp_rank: int = 0
    dp_world: int = 1
    dp_rank: int = 0
    rank: int = 0
    world: int = 1
    tp_group: Any = None
    dp_group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_parallel(tp: int, backend: str | None = None, timeout_s: int = 1800) -> ParallelContext:
    """Create the TP and DP process groups (one process without torchrun: world 1).

    Under ``torchrun`` (``WORLD_SIZE`` set) this calls ``init_process_group`` with NCCL on
    GPU and gloo on CPU unless ``backend`` says otherwise. ``world`` must be a multiple of ``tp``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world % tp:
        from cpm.errors import CpmError

        raise CpmError(f"--tp {tp} does not divide the world size {world} (torchrun --nproc-per-node x nodes)")
    if world == 1 and not dist.is_initialized():
        return ParallelContext()
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return make_context(tp)


def make_context(tp: int) -> ParallelContext:
    """Build the groups of an already-initialised default process group."""
    rank, world = dist.get_rank(), dist.get_world_size()
    dp = world // tp
    ctx = ParallelContext(tp_world=tp, tp_rank=rank % tp, dp_world=dp, dp_rank=rank // tp, rank=rank, world=world)
    for i in range(dp):  # every rank must create every group, in the same order
        ranks = list(range(i * tp, (i + 1) * tp))
        group = dist.new_group(ranks) if tp > 1 else None
        if rank in ranks:
            ctx.tp_group = group
    for j in range(tp):
        ranks = list(range(j, world, tp))
        group = dist.new_group(ranks) if dp > 1 else None
        if rank in ranks:
            ctx.dp_group = group
    return ctx


# --------------------------------------------------------------------------------------
# Collectives as autograd functions
# --------------------------------------------------------------------------------------


class _CopyToTensorParallel(torch.autograd.Function):
    """Enter a TP region: identity forward, all-reduce of the gradient backward."""

    @staticmethod  # pragma: no mutate (autograd takes forward/backward from the class: the same function undecorated)
    def forward(ctx, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod  # pragma: no mutate (as above)
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReduceFromTensorParallel(torch.autograd.Function):
    """Leave a TP region: all-reduce (sum) forward, identity backward."""

    @staticmethod  # pragma: no mutate (as above)
    def forward(ctx, x: torch.Tensor, group: Any) -> torch.Tensor:
        x = x.contiguous().clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod  # pragma: no mutate (as above)
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def copy_to_tp(x: torch.Tensor, group: Any) -> torch.Tensor:
    return x if group is None else _CopyToTensorParallel.apply(x, group)


def reduce_from_tp(x: torch.Tensor, group: Any) -> torch.Tensor:
    return x if group is None else _ReduceFromTensorParallel.apply(x, group)


# --------------------------------------------------------------------------------------
# Sharding rule
# --------------------------------------------------------------------------------------


def shard_tensor(full: torch.Tensor, dim: int | None, rank: int, world: int, chunks: int = 1) -> torch.Tensor:
    """This rank's slice of ``full``: split ``dim`` into ``chunks`` blocks, take the rank's part of each."""
    if dim is None or world == 1:
        return full
    parts = [block.chunk(world, dim)[rank] for block in full.chunk(chunks, dim)]
    return torch.cat(parts, dim) if chunks > 1 else parts[0]


def unshard_tensors(shards: list[torch.Tensor], dim: int | None, chunks: int = 1) -> torch.Tensor:
    """Inverse of :func:`shard_tensor` given every rank's shard, in rank order."""
    if dim is None or len(shards) == 1:
        return shards[0]
    per_rank = [s.chunk(chunks, dim) for s in shards]
    return torch.cat([torch.cat([blocks[c] for blocks in per_rank], dim) for c in range(chunks)], dim)


def padded_vocab_size(vocab_size: int, tp: int, multiple: int = 128) -> int:
    """The vocabulary padded to a multiple of ``multiple * tp`` (equal, aligned shards)."""
    step = multiple * tp
    return int(math.ceil(vocab_size / step) * step)


def _mark(param: nn.Parameter, dim: int | None, chunks: int = 1) -> nn.Parameter:
    param.tp_split_dim = dim  # type: ignore[attr-defined]
    param.tp_chunks = chunks  # type: ignore[attr-defined]
    return param


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


class ColumnParallelLinear(nn.Module):
    """``y = x A^T + b`` with A split along its output dimension (weight dim 0).

    Input replicated, output split (each rank computes ``out_features / tp`` columns).
    Collective: the all-reduce of the input gradient in the backward pass.
    ``chunks=3`` keeps whole heads of a fused QKV weight on each rank.
    """

    def __init__(self, in_features: int, out_features: int, ctx: ParallelContext, chunks: int = 1, bias: bool = True):
        super().__init__()
        assert out_features % (ctx.tp_world * chunks) == 0, "output features must split evenly"
        self.group = ctx.tp_group
        local = out_features // ctx.tp_world
        self.weight = _mark(nn.Parameter(torch.empty(local, in_features)), 0, chunks)
        self.bias = _mark(nn.Parameter(torch.empty(local)), 0, chunks) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(copy_to_tp(x, self.group), self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """``y = x A^T + b`` with A split along its input dimension (weight dim 1).

    Input split (the output of a ColumnParallelLinear), output replicated.
    Collective: the all-reduce of the partial products in the forward pass; the bias is
    replicated and added once, after it.
    """

    def __init__(self, in_features: int, out_features: int, ctx: ParallelContext, bias: bool = True):
        super().__init__()
        assert in_features % ctx.tp_world == 0, "input features must split evenly"
        self.group = ctx.tp_group
        self.weight = _mark(nn.Parameter(torch.empty(out_features, in_features // ctx.tp_world)), 1)
        self.bias = _mark(nn.Parameter(torch.empty(out_features)), None) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = reduce_from_tp(F.linear(x, self.weight), self.group)
        return y + self.bias if self.bias is not None else y


class VocabParallelEmbedding(nn.Module):
    """Token embedding with the (padded) vocabulary split along weight dim 0.

    Each rank looks up the ids in its range ``[start, end)`` and writes zeros for the
    others. Collective: the all-reduce (sum) of the embeddings in the forward pass.
    """

    def __init__(self, padded_vocab: int, dim: int, ctx: ParallelContext):
        super().__init__()
        self.group = ctx.tp_group
        self.local_vocab = padded_vocab // ctx.tp_world
        self.vocab_start = ctx.tp_rank * self.local_vocab
        self.weight = _mark(nn.Parameter(torch.empty(self.local_vocab, dim)), 0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.group is None:
            return F.embedding(ids, self.weight)
        outside = (ids < self.vocab_start) | (ids >= self.vocab_start + self.local_vocab)
        local_ids = (ids - self.vocab_start).masked_fill(outside, 0)
        out = F.embedding(local_ids, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        return reduce_from_tp(out, self.group)


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Cross-entropy over logits split along the vocabulary; each rank holds columns
    ``[vocab_start, vocab_start + local)``. Three all-reduces of one number per token:
    the max (for stability), the sum of exponentials, and the target's logit."""

    @staticmethod  # pragma: no mutate (autograd takes forward/backward from the class: the same function undecorated)
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, vocab_start: int, group: Any) -> torch.Tensor:
        logits = logits.float()
        local = logits.shape[-1]
        global_max = logits.max(dim=-1).values
        if group is not None:
            dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=group)
        shifted = logits - global_max.unsqueeze(-1)

        in_range = (target >= vocab_start) & (target < vocab_start + local)
        local_target = (target - vocab_start).clamp(0, local - 1)
        target_logit = shifted.gather(-1, local_target.unsqueeze(-1)).squeeze(-1) * in_range
        exp = shifted.exp_()
        sum_exp = exp.sum(dim=-1)
        if group is not None:
            dist.all_reduce(target_logit, group=group)
            dist.all_reduce(sum_exp, group=group)
        loss = sum_exp.log() - target_logit

        softmax = exp.div_(sum_exp.unsqueeze(-1))
        ctx.save_for_backward(softmax, in_range, local_target)
        return loss

    @staticmethod  # pragma: no mutate (as above)
    def backward(ctx, grad_loss: torch.Tensor):
        softmax, in_range, local_target = ctx.saved_tensors
        grad = softmax  # d loss / d logits = softmax - onehot(target); reuse the saved buffer
        grad.scatter_add_(-1, local_target.unsqueeze(-1), -in_range.to(grad.dtype).unsqueeze(-1))
        grad.mul_(grad_loss.unsqueeze(-1))
        return grad, None, None, None


def vocab_parallel_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, vocab_start: int = 0, group: Any = None
) -> torch.Tensor:
    """Per-token loss (fp32) of ``logits`` (..., local_vocab), a vocabulary slice starting at ``vocab_start``."""
    shape = target.shape
    loss = _VocabParallelCrossEntropy.apply(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), vocab_start, group
    )
    return loss.view(shape)


def gather_from_tp(x: torch.Tensor, group: Any, dim: int = -1) -> torch.Tensor:
    """Concatenate every TP rank's ``x`` along ``dim`` (inference only; no autograd)."""
    if group is None:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim)


# --------------------------------------------------------------------------------------
# Randomness
# --------------------------------------------------------------------------------------


class ModelParallelRNG:
    """A second generator state for dropout inside TP regions (Megatron's RNG tracker).

    ``with rng.fork():`` swaps the default generator of ``device_type`` for the tracker's
    state, runs the body, stores the advanced state and restores the default one.
    """

    def __init__(self, device_type: str = "cpu"):
        self.device_type = device_type
        self.state: torch.Tensor | None = None

    def _get(self) -> torch.Tensor:
        return torch.cuda.get_rng_state() if self.device_type == "cuda" else torch.get_rng_state()

    def _set(self, state: torch.Tensor) -> None:
        if self.device_type == "cuda":
            torch.cuda.set_rng_state(state)
        else:
            torch.set_rng_state(state)

    def seed(self, seed: int) -> None:
        saved = self._get()
        if self.device_type == "cuda":
            torch.cuda.manual_seed(seed)
        else:
            torch.manual_seed(seed)
        self.state = self._get()
        self._set(saved)

    @contextlib.contextmanager
    def fork(self) -> Iterator[None]:
        if self.state is None:
            self.seed(2718)
        saved = self._get()
        self._set(self.state)
        try:
            yield
        finally:
            self.state = self._get()
            self._set(saved)

    def get_state(self) -> torch.Tensor | None:
        return None if self.state is None else self.state.clone()

    def set_state(self, state: torch.Tensor | None) -> None:
        self.state = None if state is None else state.clone()


def seed_everything(seed: int, ctx: ParallelContext, rng: ModelParallelRNG) -> None:
    """Default generators: same across TP ranks, different across DP ranks; tracker: per TP rank."""
    torch.manual_seed(seed + 1_000 * ctx.dp_rank)  # also seeds every CUDA device
    rng.seed(seed + 2718 + ctx.tp_rank)


def parameter_seed(seed: int, name: str) -> int:
    """A deterministic per-parameter seed (initialisation independent of tp and of order)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


# --------------------------------------------------------------------------------------
# Gradients across ranks
# --------------------------------------------------------------------------------------


def allreduce_gradients(params: Iterable[nn.Parameter], ctx: ParallelContext, bucket_bytes: int = 64 << 20) -> None:
    """Average gradients over the DP group, flattened into buckets of about ``bucket_bytes``."""
    if ctx.dp_group is None:
        return
    grads = [p.grad for p in params if p.grad is not None]
    bucket: list[torch.Tensor] = []
    size = 0

    def flush() -> None:
        if not bucket:
            return
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat, group=ctx.dp_group)
        flat.div_(ctx.dp_world)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        bucket.clear()

    for g in grads:
        if bucket and (size + g.numel() * g.element_size() > bucket_bytes or g.dtype != bucket[0].dtype):
            flush()
            size = 0
        bucket.append(g)
        size += g.numel() * g.element_size()
    flush()


def grad_norm(params: Iterable[nn.Parameter], ctx: ParallelContext, dp_sharded: bool = False) -> torch.Tensor:
    """Global L2 norm of the gradients: split parameters summed over TP, replicated ones counted once;
    ``dp_sharded``: each DP rank holds a disjoint part of the gradients (ZeRO), summed over DP too."""
    params = list(params)
    split = [p.grad for p in params if p.grad is not None and getattr(p, "tp_split_dim", None) is not None]
    repl = [p.grad for p in params if p.grad is not None and getattr(p, "tp_split_dim", None) is None]

    def sum_of_squares(grads: list[torch.Tensor]) -> torch.Tensor:
        if not grads:
            return torch.zeros((), device=(split or repl)[0].device)
        return torch.stack(torch._foreach_norm(grads)).float().pow(2).sum()

    split_sq, repl_sq = sum_of_squares(split), sum_of_squares(repl)
    if dp_sharded and ctx.dp_group is not None:
        both = torch.stack([split_sq, repl_sq])
        dist.all_reduce(both, group=ctx.dp_group)
        split_sq, repl_sq = both[0], both[1]
    if ctx.tp_group is not None:
        dist.all_reduce(split_sq, group=ctx.tp_group)
    return (split_sq + repl_sq).sqrt()


def clip_gradients(params: list[nn.Parameter], max_norm: float, ctx: ParallelContext,
                   dp_sharded: bool = False) -> torch.Tensor:
    """Scale gradients so that their global norm is at most ``max_norm``; return the norm before."""
    norm = grad_norm(params, ctx, dp_sharded)
    if max_norm > 0:
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        grads = [p.grad for p in params if p.grad is not None]
        torch._foreach_mul_(grads, coef)
    return norm
