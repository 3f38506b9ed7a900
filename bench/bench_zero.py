"""ZeRO stage 1: cpm's :class:`~cpm.trainer.zero.ZeroAdamW` against torch's ``ZeroRedundancyOptimizer``.

Two gloo ranks on CPU (data parallel, fp32), ``--size tiny`` with a 30,000-token vocabulary
(the embedding is 68% of the parameters, as in CPM-Small it is 21%), the same batches.
Per optimizer: AdamW moment bytes on the fuller rank, CPU seconds per step (user+sys of the
rank process, gloo threads included; median over steps), wall seconds per step (median;
distorted by whatever else runs on the machine), and the largest relative parameter
difference from plain data parallelism after the steps. Baseline: plain data parallelism
(bucketed all-reduce from backward hooks + fused AdamW on every rank), in the same run;
``end-of-backward`` is the same without hooks (one all-reduce pass after the backward).

- ``cpm``: gradients reduce-scattered from backward hooks, fused AdamW on this rank's
  slice of every bucket, parameters all-gathered;
- ``torch``: gradients all-reduced in full (the same hooks), then
  ``ZeroRedundancyOptimizer(AdamW, fused)`` updates the parameters it assigned to this
  rank (whole tensors, greedily by size) and broadcasts them.

    python bench/bench_zero.py --steps 8
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time

import torch


KINDS = ("plain", "end-of-backward", "cpm", "torch")


def _moment_bytes(optimizer) -> int:
    states = optimizer.optim.state if hasattr(optimizer, "optim") else getattr(optimizer, "inner", optimizer).state
    return sum(v.numel() * v.element_size() for s in states.values() for k, v in s.items() if k.startswith("exp_avg"))


def _build(kind: str, model, ctx):
    from torch.distributed.optim import ZeroRedundancyOptimizer

    from cpm.trainer.parallel import ParallelContext
    from cpm.trainer.train import TrainConfig, build_data_parallel

    if kind == "end-of-backward":
        return build_data_parallel(model, TrainConfig(), ParallelContext(), "cpu")[0], None
    if kind != "torch":
        return build_data_parallel(model, TrainConfig(zero=int(kind == "cpm")), ctx, "cpu")
    _, buckets = build_data_parallel(model, TrainConfig(), ctx, "cpu")  # plain all-reduce buckets
    groups = model.optimizer_groups(0.01)
    optimizer = ZeroRedundancyOptimizer(groups[0]["params"], optimizer_class=torch.optim.AdamW, fused=True,
                                        lr=1e-4, weight_decay=0.01)
    optimizer.add_param_group({"params": groups[1]["params"], "weight_decay": 0.0})
    return optimizer, buckets


def worker(rank: int, port: int, steps: int, seq_len: int, out: str) -> None:
    import torch.distributed as dist

    from cpm.trainer.model import GPT, model_config
    from cpm.trainer.parallel import make_context
    from cpm.trainer.train import train_step

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    ctx = make_context(1)
    gen = torch.Generator().manual_seed(rank)
    batches = [torch.randint(0, 30000, (4, seq_len + 1), generator=gen) for _ in range(steps)]
    results, reference = {}, None
    for kind in KINDS:
        model = GPT(model_config("tiny", vocab_size=30000, dropout=0.0, n_positions=seq_len), ctx)
        model.init_weights(0)
        optimizer, buckets = _build(kind, model, ctx)
        times, walls = [], []
        for batch in batches:
            dist.barrier()
            t0, w0 = time.process_time(), time.perf_counter()
            train_step(model, optimizer, [batch], ctx, lr=1e-4, clip_grad=1.0, buckets=buckets)
            times.append(time.process_time() - t0)
            walls.append(time.perf_counter() - w0)
        params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        reference = params if reference is None else reference
        error = ((params - reference).norm() / reference.norm()).item()
        results[kind] = (_moment_bytes(optimizer), statistics.median(times[1:]), error, statistics.median(walls[1:]))
        if buckets is not None:
            buckets.remove_hooks()
    torch.save(results, os.path.join(out, f"{rank}.pt"))
    dist.destroy_process_group()


def main() -> None:
    import torch.multiprocessing as mp

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tempfile.mkdtemp()
    mp.spawn(worker, args=(port, args.steps, args.seq_len, out), nprocs=2, join=True)
    ranks = [torch.load(os.path.join(out, f"{r}.pt")) for r in range(2)]
    base_bytes = max(r["plain"][0] for r in ranks)
    base_cpu = max(r["plain"][1] for r in ranks)
    print(f"tiny, vocab 30000, seq {args.seq_len}, micro-batch 4, 2 gloo ranks, {args.steps} steps")
    base_wall = max(r["plain"][3] for r in ranks)
    print(f"{'optimizer':<16}{'moments MiB (max rank)':>24}{'vs plain':>10}{'CPU s/step':>12}{'vs plain':>10}"
          f"{'wall s/step':>13}{'vs plain':>10}{'param rel diff':>16}")
    for kind in KINDS:
        moment = max(r[kind][0] for r in ranks)
        cpu = max(r[kind][1] for r in ranks)
        error = max(r[kind][2] for r in ranks)
        wall = max(r[kind][3] for r in ranks)
        print(f"{kind:<16}{moment / 2**20:>24.1f}{moment / base_bytes:>10.2f}{cpu:>12.3f}{cpu / base_cpu:>10.2f}"
              f"{wall:>13.3f}{wall / base_wall:>10.2f}{error:>16.2e}")


if __name__ == "__main__":
    main()
