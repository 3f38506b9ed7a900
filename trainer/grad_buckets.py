"""Data-parallel gradient communication overlapped with the backward pass (DDP-style buckets).

The trainable parameters are laid out, in reverse registration order (roughly the order in
which the backward pass produces their gradients), in buckets of about ``bucket_bytes``.
Each bucket owns one flat gradient buffer and every ``param.grad`` is a view into it, so
gradient accumulation adds into the buffer in place and no copy is needed before
communicating. On the last micro-batch of a step, a post-accumulate-grad hook counts the
parameters of each bucket as their gradients arrive; complete buckets are launched, in
bucket order (so that every rank issues the same collectives in the same order),
asynchronously while the backward pass goes on:

- plain data parallelism: an all-reduce (sum) of the bucket;
- ZeRO stage 1 (``shard=True``): a reduce-scatter, after which DP rank ``r`` holds the
  summed gradient of its slice ``[r * n / dp, (r + 1) * n / dp)`` of every bucket (buckets
  are padded to a multiple of ``dp``); see :mod:`cpm.trainer.zero`.

:meth:`GradBuckets.finish` waits for every bucket and divides by ``dp``. The sum is the
same as the end-of-backward all-reduce of :func:`cpm.trainer.parallel.allreduce_gradients`
(each element is the sum of the same ``dp`` values), so fp32 results are identical.
With ``shard=True`` the gradient elements outside this rank's slices hold local partial
sums afterwards and must not be read (the ZeRO optimizer only reads its slices).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_BUCKET_MB = 25.0  # DDP's default bucket_cap_mb

# torch >= 2.13 names the single-tensor collectives *_single; older releases *_tensor.
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@dataclass
class Bucket:
    """Parameters sharing one flat gradient buffer; ``offsets[i]`` is where ``params[i]`` starts."""

    params: list[nn.Parameter]
    offsets: list[int]
    grad: torch.Tensor  # numel padded to a multiple of dp
    names: list[str]
    ready: int = 0
    work: Any = None


def plan_buckets(params: list[nn.Parameter], bucket_bytes: int) -> list[list[nn.Parameter]]:
    """Consecutive groups of ``params`` (same dtype and device) of at most ``bucket_bytes``
    each (a larger parameter gets a bucket of its own)."""
    groups: list[list[nn.Parameter]] = []
    size = 0
    for p in params:
        nbytes = p.numel() * p.element_size()
        same = groups and groups[-1][0].dtype == p.dtype and groups[-1][0].device == p.device
        if not same or size + nbytes > bucket_bytes:
            groups.append([])
            size = 0
        groups[-1].append(p)
        size += nbytes
    return groups


class GradBuckets:
    """Flat gradient buffers of ``model``'s trainable parameters, communicated over
    ``dp_group`` from backward hooks as soon as each bucket is complete."""

    def __init__(self, model: nn.Module, dp_group: Any, dp_world: int, dp_rank: int,
                 bucket_bytes: int = int(DEFAULT_BUCKET_MB * 2**20), shard: bool = False):
        self.group, self.dp, self.dp_rank, self.shard = dp_group, dp_world, dp_rank, shard
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        names = {id(p): n for n, p in named}
        self.buckets: list[Bucket] = []
        for group in plan_buckets([p for _, p in reversed(named)], bucket_bytes):
            offsets, total = [], 0
            for p in group:
                offsets.append(total)
                total += p.numel()
            padded = -(-total // dp_world) * dp_world
            grad = torch.zeros(padded, dtype=group[0].dtype, device=group[0].device)
            self.buckets.append(Bucket(group, offsets, grad, [names[id(p)] for p in group]))
        self.sync = True
        self._next = 0  # the next bucket to launch
        self._hooks = []
        for bucket in self.buckets:
            for p, offset in zip(bucket.params, bucket.offsets):
                p.grad = bucket.grad[offset : offset + p.numel()].view_as(p)
                self._hooks.append(p.register_post_accumulate_grad_hook(self._hook(bucket)))
        log.debug("%d gradient buckets over dp=%d (%s)", len(self.buckets), dp_world,
                  "reduce-scatter" if shard else "all-reduce")

    def _hook(self, bucket: Bucket):
        def ready(_param: torch.Tensor) -> None:
            if not self.sync:
                return
            bucket.ready += 1
            # launch complete buckets in bucket order, as DDP does, so every rank issues the
            # collectives in the same order whatever order its hooks fire in
            while self._next < len(self.buckets) and self.buckets[self._next].ready == len(self.buckets[self._next].params):
                self._launch(self.buckets[self._next])
                self._next += 1
        return ready

    def _launch(self, bucket: Bucket) -> None:
        if self.shard:
            bucket.work = _reduce_scatter(self.shard_of(bucket.grad), bucket.grad, group=self.group, async_op=True)
        else:
            bucket.work = dist.all_reduce(bucket.grad, group=self.group, async_op=True)

    def shard_of(self, flat: torch.Tensor) -> torch.Tensor:
        """This DP rank's slice of a bucket-sized flat tensor."""
        n = flat.numel() // self.dp
        return flat[self.dp_rank * n : (self.dp_rank + 1) * n]

    def zero_grad(self) -> None:
        """Zero every buffer (the gradients stay views into them) before a step's first micro-batch."""
        for bucket in self.buckets:
            if bucket.work is not None:  # a step abandoned after its last backward pass
                bucket.work.wait()
                bucket.work = None
            bucket.grad.zero_()
            for p, offset in zip(bucket.params, bucket.offsets):
                if p.grad is None or p.grad.data_ptr() != bucket.grad.data_ptr() + offset * bucket.grad.element_size():
                    p.grad = bucket.grad[offset : offset + p.numel()].view_as(p)

    def set_sync(self, sync: bool) -> None:
        """Communicate in this backward pass (the last micro-batch of a step) or only accumulate."""
        self.sync = sync
        self._next = 0
        for bucket in self.buckets:
            bucket.ready, bucket.work = 0, None

    def finish(self) -> None:
        """Wait for every bucket (launching any whose hooks did not all fire) and average over dp."""
        for bucket in self.buckets:
            if bucket.work is None:
                self._launch(bucket)
        for bucket in self.buckets:
            bucket.work.wait()
            bucket.work, bucket.ready = None, 0
            (self.shard_of(bucket.grad) if self.shard else bucket.grad).div_(self.dp)
        self._next = 0

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()


def flat_views(bucket: Bucket, tensors: Iterable[torch.Tensor], buffer: torch.Tensor) -> None:
    """Copy ``tensors`` (the bucket's parameters) into ``buffer`` and make each a view of it."""
    for p, offset in zip(tensors, bucket.offsets):
        buffer[offset : offset + p.numel()].copy_(p.detach().reshape(-1))
        p.data = buffer[offset : offset + p.numel()].view_as(p)
