"""GPU training throughput and MFU of cpm's GPT (CPM-Small, CPM-Medium) in bf16 on one GPU.

Self-contained: synthetic tokens (vocabulary 30,000, sequences of 1,024), no files needed.
Per size: a few warm-up steps, then timed optimizer steps with flash SDPA, bf16 autocast
over fp32 master weights, fused AdamW, TF32 matmuls, optionally ``torch.compile``.
MFU = tokens/s x (6N + 12·L·d·T) / peak bf16 FLOP/s (PaLM's formula; peak from
:data:`cpm.trainer.train.PEAK_BF16_TFLOPS`). Targets: >= 40% (small), >= 45% (medium).

Also per size: peak memory (``torch.cuda.max_memory_allocated``) with and without
``--activation-checkpointing`` next to what ``cpm train --plan`` predicts (target: within
10%), and Hugging Face ``GPT2LMHeadModel`` with the same config, batch, bf16 autocast, SDPA
attention and fused AdamW, timed in the same run (target: cpm >= 1.3x its tokens/s).

With >= 2 GPUs it also checks TP=2 against TP=1 in bf16 (same seed, dropout 0): the loss and
gradients must agree within bf16 rounding (Megatron's check uses a relative bound of ~1e-2).

    python bench/bench_train_gpu.py                      # eager and compiled, small + medium
    python bench/bench_train_gpu.py --no-compile --steps 10
    python bench/bench_train_gpu.py --no-hf --no-checkpointing   # cpm's throughput only
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import torch

SIZES = {"small": 32, "medium": 16}  # first micro-batch tried (sequences of 1,024); halved on out-of-memory


def bench_size(size: str, micro_batch: int, steps: int, warmup: int, compile: bool, seq_len: int = 1024,
               device_name: str = "cuda", checkpointing: bool = False) -> dict:
    from cpm.trainer.model import GPT, model_config
    from cpm.trainer.parallel import ModelParallelRNG, ParallelContext
    from cpm.trainer.train import TrainConfig, build_optimizer, peak_flops, train_step

    import gc

    gc.collect()  # free what an out-of-memory attempt left behind
    if device_name == "cuda":
        torch.cuda.empty_cache()
    device = torch.device(device_name)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    config = model_config(size, vocab_size=30000)
    model = GPT(config, ParallelContext(), ModelParallelRNG(device.type))
    model.init_weights(1234)
    model.to(device)
    model.activation_checkpointing = checkpointing
    optimizer = build_optimizer(model, TrainConfig(), device.type)
    forward = torch.compile(model) if compile else model
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 30000, (micro_batch, seq_len + 1), generator=gen).to(device) for _ in range(4)]
    for i in range(warmup):
        train_step(model, optimizer, [batches[i % 4]], ParallelContext(), lr=1e-4, precision="bf16", forward=forward)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(steps):
        out = train_step(model, optimizer, [batches[i % 4]], ParallelContext(), lr=1e-4, precision="bf16", forward=forward)
    sync()
    elapsed = time.perf_counter() - t0
    tokens_per_s = steps * micro_batch * seq_len / elapsed
    peak = peak_flops(device)
    mfu = tokens_per_s * model.flops_per_token(seq_len) / peak if peak else None
    from cpm.trainer.memory import plan_memory

    plan = plan_memory(config, micro_batch=micro_batch, seq_len=seq_len, precision="bf16",
                       activation_checkpointing=checkpointing)
    result = {"size": size, "model": "cpm", "compile": compile, "checkpointing": checkpointing,
              "plan_gib": plan.peak / 2**30, "micro_batch": micro_batch, "tokens_per_s": tokens_per_s, "mfu": mfu,
              "step_ms": 1000 * elapsed / steps, "loss": out["loss"],
              "mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0}
    del model, optimizer, forward
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def bench_hf(size: str, micro_batch: int, steps: int, warmup: int, seq_len: int = 1024, device_name: str = "cuda") -> dict:
    """Hugging Face GPT2LMHeadModel, same config and batch, bf16 autocast, SDPA, fused AdamW, clipping 1.0."""
    import gc

    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel

    from cpm.trainer.model import model_config

    gc.collect()
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
    cfg = model_config(size, vocab_size=30000)
    hf_config = GPT2Config(vocab_size=30000, n_positions=1024, n_embd=cfg.d_model, n_layer=cfg.n_layer, n_head=cfg.n_head,
                           activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True,
                           use_cache=False, bos_token_id=None, eos_token_id=None)
    hf_config._attn_implementation = "sdpa"
    model = GPT2LMHeadModel(hf_config).to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-4, fused=True)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 30000, (micro_batch, seq_len + 1), generator=gen).to(device) for _ in range(4)]

    def step(batch: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for i in range(warmup):
        step(batches[i % 4])
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(batches[i % 4])
    sync()
    elapsed = time.perf_counter() - t0
    result = {"size": size, "model": "hf", "compile": False, "checkpointing": False, "plan_gib": None,
              "micro_batch": micro_batch, "tokens_per_s": steps * micro_batch * seq_len / elapsed, "mfu": None,
              "step_ms": 1000 * elapsed / steps, "loss": loss,
              "mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0}
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return result


def _with_oom_retry(run, size: str, first_micro_batch: int):
    """``run(micro_batch)``, halving the micro-batch on out-of-memory."""
    mb = first_micro_batch
    while mb >= 1:
        try:
            return run(mb)
        except torch.cuda.OutOfMemoryError:
            print(f"{size} micro-batch {mb}: out of memory, retrying with {mb // 2}")
            torch.cuda.empty_cache()
            mb //= 2
    return None


# ------------------------------------------------------------------------------ TP=2 check


def _tp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from cpm.trainer.model import GPT, model_config
    from cpm.trainer.parallel import ParallelContext, make_context, unshard_tensors

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    config = model_config("small", vocab_size=30000, dropout=0.0)
    batch = torch.randint(0, 30000, (4, 1025), generator=torch.Generator().manual_seed(0)).cuda()
    results = {}
    for tp in (1, 2):
        ctx = make_context(tp) if tp == 2 else ParallelContext()
        model = GPT(config, ctx).cuda() if tp == 2 else GPT(config).cuda()
        model.init_weights(1234)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        grads = {n: p.grad.float() for n, p in model.named_parameters()}
        if tp == 2:
            gathered = {}
            for n, p in model.named_parameters():
                parts = [torch.empty_like(grads[n]) for _ in range(2)]
                dist.all_gather(parts, grads[n].contiguous(), group=ctx.tp_group)
                gathered[n] = unshard_tensors(parts, p.tp_split_dim, p.tp_chunks)
            grads = gathered
        results[tp] = (loss.item(), grads)
    if rank == 0:
        (l1, g1), (l2, g2) = results[1], results[2]
        worst = 0.0
        for name, ref in g1.items():
            got = g2[name][: ref.shape[0]] if name == "wte.weight" else g2[name]
            ref = ref[: got.shape[0]]
            worst = max(worst, ((got - ref).norm() / ref.norm().clamp_min(1e-12)).item())
        with open(out, "w") as handle:
            handle.write(f"{l1} {l2} {worst}\n")
    dist.destroy_process_group()


def tp2_check() -> str:
    if torch.cuda.device_count() < 2:
        return "TP=2 bf16 equivalence: skipped (needs 2 GPUs, found 1)"
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = os.path.join(tempfile.mkdtemp(), "tp.txt")
    mp.spawn(_tp_worker, args=(port, out), nprocs=2, join=True)
    l1, l2, worst = map(float, open(out).read().split())
    ok = abs(l1 - l2) / l1 < 1e-2 and worst < 5e-2
    return (f"TP=2 bf16 equivalence: loss tp1 {l1:.5f} tp2 {l2:.5f} (rel {abs(l1 - l2) / l1:.2e}), "
            f"worst per-tensor relative grad error {worst:.2e} -> {'OK' if ok else 'FAILED'}")


def print_rows(rows: list[dict]) -> None:
    """The table: tokens/s, MFU, peak memory against the plan, and cpm / HF tokens/s per size."""
    print(f"{'size':<8}{'model':>6}{'compile':>8}{'ckpt':>6}{'micro':>6}{'tokens/s':>12}{'MFU':>8}{'target':>8}"
          f"{'step ms':>9}{'mem GiB':>9}{'plan GiB':>9}{'mem/plan':>9}{'loss':>8}")
    for r in rows:
        target = {"small": 0.40, "medium": 0.45}.get(r["size"]) if r["model"] == "cpm" else None
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        plan = f"{r['plan_gib']:.2f}" if r["plan_gib"] else "-"
        ratio = f"{r['mem_gib'] / r['plan_gib']:.2f}" if r["plan_gib"] else "-"
        print(f"{r['size']:<8}{r['model']:>6}{str(r['compile']):>8}{str(r['checkpointing']):>6}{r['micro_batch']:>6}"
              f"{r['tokens_per_s']:>12.0f}{mfu:>8}{(f'{100 * target:.0f}%' if target else ''):>8}{r['step_ms']:>9.1f}"
              f"{r['mem_gib']:>9.2f}{plan:>9}{ratio:>9}{r['loss']:>8.3f}")
    for size in dict.fromkeys(r["size"] for r in rows):
        hf = [r for r in rows if r["size"] == size and r["model"] == "hf"]
        ours = [r for r in rows if r["size"] == size and r["model"] == "cpm" and not r["checkpointing"]]
        if hf and ours:
            best = max(ours, key=lambda r: r["tokens_per_s"])
            note = "" if best["micro_batch"] == hf[0]["micro_batch"] else " (different micro-batches after out-of-memory)"
            print(f"{size}: cpm (compile={best['compile']}) / HF tokens/s = "
                  f"{best['tokens_per_s'] / hf[0]['tokens_per_s']:.2f}x (target >= 1.3x){note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small,medium")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure with torch.compile (default on)")
    parser.add_argument("--micro-batch", type=int, default=0, help="override the per-size micro-batch")
    parser.add_argument("--hf", action=argparse.BooleanOptionalAction, default=True,
                        help="also time Hugging Face GPT2LMHeadModel (default on)")
    parser.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure with activation checkpointing (eager; default on)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: this benchmark needs one (see bench/bench_train_cpu.py for CPU)")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name()
    print(f"device: {name}, torch {torch.__version__}; bf16 autocast, fp32 master weights, fused AdamW, "
          f"flash SDPA, TF32, seq 1024, vocab 30000")
    rows = []
    for size in args.sizes.split(","):
        mb = args.micro_batch or SIZES[size]
        variants = [(False, False)] + ([(True, False)] if args.compile else []) + ([(False, True)] if args.checkpointing else [])
        for compile, ckpt in variants:
            row = _with_oom_retry(lambda m: bench_size(size, m, args.steps, args.warmup, compile, checkpointing=ckpt), size, mb)
            if row:
                rows.append(row)
                mb = row["micro_batch"]  # the HF run gets the batch cpm fitted
        if args.hf:
            row = _with_oom_retry(lambda m: bench_hf(size, m, args.steps, args.warmup), size, mb)
            if row:
                rows.append(row)
    print_rows(rows)
    print(tp2_check())


if __name__ == "__main__":
    main()
