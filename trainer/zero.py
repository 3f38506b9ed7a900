"""ZeRO stage 1: AdamW states sharded over the data-parallel group (``cpm train --zero 1``).

Layout: :class:`~cpm.trainer.grad_buckets.GradBuckets` puts the gradients in flat buckets
padded to a multiple of ``dp``; :class:`ZeroAdamW` moves the parameters into flat buffers
with the same layout. DP rank ``r`` owns slice ``r`` of every bucket. A parameter (or the
part of it) inside this rank's slice is a *fragment*: a 1-D tensor sharing storage with
the parameter, whose ``.grad`` is the matching slice of the bucket's gradient. A step:

1. the buckets are reduce-scattered from backward hooks (each rank receives the averaged
   gradient of its slices only);
2. the gradient norm is summed over the fragments of every DP rank (and over TP for split
   parameters), clipping scales the fragments;
3. torch's fused AdamW updates the fragments in place; its two moments exist only for
   the fragments, so each rank holds ``1/dp`` of them;
4. every bucket's parameters are all-gathered in place, so every replica is whole again.

The model keeps fp32 weights under bf16/fp16 autocast, so there is no separate master copy:
the optimizer state sharded here is the AdamW moments (8 of the 16 bytes per parameter).

Checkpoints: each DP rank writes its fragments' moments with their element ranges
(:meth:`ZeroAdamW.state_by_name`); :func:`merge_fragment_states` rebuilds the by-name state
of whole parameters, which loads into a plain AdamW, a ZeRO optimizer of any DP size
(:meth:`ZeroAdamW.load_state_by_name`), or reshards to another ``--tp``.

Why not ``torch.distributed.optim.ZeroRedundancyOptimizer``: it assigns whole parameters to
ranks (one rank gets CPM's embedding alone, so shards are uneven), expects gradients
all-reduced in full (DDP) and broadcasts updated parameters from their owner, i.e. an
all-reduce plus a broadcast instead of one reduce-scatter plus one all-gather, and it saves
by consolidating the whole state on one rank. ``bench/bench_zero.py`` measures both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cpm.trainer.grad_buckets import GradBuckets, _all_gather, flat_views


@dataclass
class Fragment:
    """The part ``[start, end)`` of parameter ``name`` (flattened) that this DP rank updates."""

    name: str
    start: int
    end: int
    shape: tuple[int, ...]
    param: nn.Parameter  # 1-D, shares storage with the model's parameter


class ZeroAdamW:
    """AdamW over this DP rank's fragments; exposes ``param_groups`` like a torch optimizer."""

    def __init__(self, model: nn.Module, buckets: GradBuckets, groups: list[dict[str, Any]], **hyper: Any):
        if not buckets.shard:
            raise ValueError("ZeRO needs reduce-scattered gradient buckets (GradBuckets(shard=True))")
        self.buckets = buckets
        self.params: list[torch.Tensor] = []  # one flat parameter buffer per bucket
        self.fragments: list[Fragment] = []
        group_of = {id(p): i for i, g in enumerate(groups) for p in g["params"]}
        frag_groups: list[list[nn.Parameter]] = [[] for _ in groups]
        for bucket in buckets.buckets:
            flat = torch.zeros_like(bucket.grad)
            flat_views(bucket, bucket.params, flat)
            self.params.append(flat)
            n = flat.numel() // buckets.dp
            lo, hi = buckets.dp_rank * n, (buckets.dp_rank + 1) * n
            for p, name, offset in zip(bucket.params, bucket.names, bucket.offsets):
                start, end = max(lo, offset), min(hi, offset + p.numel())
                if start >= end:
                    continue
                frag = nn.Parameter(flat[start:end])
                frag.grad = bucket.grad[start:end]
                frag.tp_split_dim, frag.tp_chunks = getattr(p, "tp_split_dim", None), getattr(p, "tp_chunks", 1)
                self.fragments.append(Fragment(name, start - offset, end - offset, tuple(p.shape), frag))
                frag_groups[group_of[id(p)]].append(frag)
        self.inner = _adamw([{**{k: v for k, v in g.items() if k != "params"}, "params": f}
                             for g, f in zip(groups, frag_groups)], hyper)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups

    @property
    def grad_params(self) -> list[nn.Parameter]:
        """The fragments: what clipping and loss scaling act on under ZeRO."""
        return [f.param for f in self.fragments]

    @torch.no_grad()
    def step(self) -> None:
        """Update this rank's fragments, then all-gather every bucket's parameters."""
        self.inner.step()
        self.all_gather()

    @torch.no_grad()
    def all_gather(self) -> None:
        works = [_all_gather(flat, self.buckets.shard_of(flat), group=self.buckets.group, async_op=True)
                 for flat in self.params]
        for work in works:
            work.wait()

    # ---- checkpoints -------------------------------------------------------------------

    def state_by_name(self) -> dict[str, Any]:
        """This rank's moments by parameter name, with the element range each one covers."""
        frag_name = {id(f.param): f.name for f in self.fragments}
        state = {frag_name[id(p)]: {k: v.detach().cpu().clone() if torch.is_tensor(v) else v for k, v in s.items()}
                 for p, s in self.inner.state.items()}
        groups = [{k: v for k, v in g.items() if k != "params"} | {"params": [frag_name[id(p)] for p in g["params"]]}
                  for g in self.inner.param_groups]
        ranges = {f.name: {"start": f.start, "end": f.end, "shape": list(f.shape)} for f in self.fragments}
        return {"state": state, "param_groups": groups, "fragments": ranges}

    def load_state_by_name(self, saved: dict[str, Any]) -> None:
        """Take this rank's fragments of a by-name state of whole parameters (hyper-parameters too)."""
        for group, saved_group in zip(self.inner.param_groups, saved["param_groups"]):
            group.update({k: v for k, v in saved_group.items() if k != "params"})
        step_on_device = bool(self.inner.defaults.get("fused") or self.inner.defaults.get("capturable"))
        self.inner.state.clear()
        for f in self.fragments:
            entry = saved["state"].get(f.name)
            if entry is None:
                continue
            device = f.param.device
            self.inner.state[f.param] = {
                k: (v.reshape(-1)[f.start : f.end].clone().to(device) if v.ndim > 0
                    else v.clone().to(device) if k != "step" or step_on_device else v.clone())
                if torch.is_tensor(v) else v
                for k, v in entry.items()
            }


def _adamw(groups: list[dict[str, Any]], hyper: dict[str, Any]) -> torch.optim.AdamW:
    try:
        return torch.optim.AdamW(groups, fused=True, **hyper)
    except (RuntimeError, TypeError):  # a device without the fused kernel
        return torch.optim.AdamW(groups, foreach=True, **hyper)


def merge_fragment_states(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The by-name state of whole parameters from every DP rank's :meth:`ZeroAdamW.state_by_name`."""
    pieces: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    shapes: dict[str, list[int]] = {}
    for shard in shards:
        for name, entry in shard["state"].items():
            pieces.setdefault(name, []).append((shard["fragments"][name]["start"], entry))
            shapes[name] = shard["fragments"][name]["shape"]
    state = {}
    for name, parts in pieces.items():
        parts.sort(key=lambda item: item[0])
        first = parts[0][1]
        state[name] = {k: torch.cat([e[k].reshape(-1) for _, e in parts]).view(shapes[name])
                       if torch.is_tensor(v) and v.ndim > 0 else v for k, v in first.items()}
    groups = []
    for i, group in enumerate(shards[0]["param_groups"]):
        members = dict.fromkeys(n for shard in shards for n in shard["param_groups"][i]["params"])
        groups.append({k: v for k, v in group.items() if k != "params"} | {"params": list(members)})
    return {"state": state, "param_groups": groups}


def is_sharded(optimizer: Any) -> bool:
    return isinstance(optimizer, ZeroAdamW)


def sharded_world(optimizer: Any) -> int:
    """The DP size an optimizer's state is sharded over (1 = not sharded)."""
    return optimizer.buckets.dp if is_sharded(optimizer) else 1

