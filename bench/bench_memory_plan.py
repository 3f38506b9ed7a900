"""``cpm train --plan`` against measured peak memory on CPU, and the GPU fit table of the docs.

Measurement: each case runs in fresh processes (one per rank; 2 gloo ranks for the
data-parallel cases). A rank builds its batches, reads its resident set size (``VmRSS``),
resets the kernel's peak counter (``echo 5 > /proc/self/clear_refs`` resets ``VmHWM``),
builds the model and optimizer exactly as ``cpm train`` does and runs 3 optimizer steps
(the AdamW moments exist from the second step on). Measured = ``VmHWM - VmRSS`` before,
i.e. the peak of what the training added to the process, from the kernel's page counts.
glibc's mmap threshold is fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``), so every tensor
larger than that gets its own mapping and leaves the RSS when it is freed (with the default
dynamic threshold, freed tensors of up to 32 MiB stay in the heap and inflate the peak).
fp32, dropout 0 (the CPU's flash attention kernel; with dropout torch falls back to the
``s^2`` math kernel).

    python bench/bench_memory_plan.py                 # tiny and small, measured vs planned
    python bench/bench_memory_plan.py --table-only    # only the GPU fit table (no training)
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
from dataclasses import dataclass

import torch

GIB = 1024**3


@dataclass(frozen=True)
class Case:
    size: str
    micro_batch: int
    seq_len: int
    checkpointing: bool = False
    dp: int = 1
    zero: int = 0

    @property
    def label(self) -> str:
        return (f"{self.size} mb{self.micro_batch} seq{self.seq_len} dp{self.dp}"
                f"{' zero1' if self.zero else ''}{' ckpt' if self.checkpointing else ''}")


CASES = [
    Case("tiny", 8, 512), Case("tiny", 8, 512, checkpointing=True),
    Case("small", 4, 512), Case("small", 4, 512, checkpointing=True),
    Case("small", 4, 256, dp=2), Case("small", 4, 256, dp=2, zero=1),
]


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _config(case: Case):
    from cpm.trainer.model import model_config

    return model_config(case.size, vocab_size=30000, dropout=0.0, n_positions=case.seq_len)


def measure(rank: int, case: Case, port: int, out: str) -> None:
    """One rank: peak bytes added by building and training (written to ``out/rank``)."""
    import torch.distributed as dist

    from cpm.trainer.model import GPT
    from cpm.trainer.parallel import ParallelContext, make_context
    from cpm.trainer.train import TrainConfig, build_data_parallel, train_step

    torch.set_num_threads(1)
    ctx = ParallelContext()
    if case.dp > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=case.dp)
        ctx = make_context(1)
    gen = torch.Generator().manual_seed(rank)
    batches = [torch.randint(0, 30000, (case.micro_batch, case.seq_len + 1), generator=gen) for _ in range(3)]
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")
    model = GPT(_config(case), ctx)
    model.init_weights(0)
    model.activation_checkpointing = case.checkpointing
    optimizer, buckets = build_data_parallel(model, TrainConfig(zero=case.zero), ctx, "cpu")
    for batch in batches:
        train_step(model, optimizer, [batch], ctx, lr=1e-4, buckets=buckets)
    peak = _status("VmHWM") - before
    with open(os.path.join(out, str(rank)), "w", encoding="ascii") as handle:
        handle.write(str(peak))
    if case.dp > 1:
        dist.destroy_process_group()


def run_case(case: Case) -> float:
    """The largest peak over the case's ranks, in bytes."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tempfile.mkdtemp()
    mp.spawn(measure, args=(case, port, out), nprocs=case.dp, join=True)
    return max(float(open(os.path.join(out, str(r))).read()) for r in range(case.dp))


def planned(case: Case):
    from cpm.trainer.memory import plan_memory

    return plan_memory(_config(case), dp=case.dp, micro_batch=case.micro_batch, seq_len=case.seq_len,
                       precision="fp32", activation_checkpointing=case.checkpointing, zero=case.zero)


def fit_table() -> str:
    from cpm.trainer.memory import FIT_FRACTION, smallest_setup
    from cpm.trainer.model import model_config

    lines = [f"smallest setups (bf16, seq 1024, vocab 30000; plan peak <= {FIT_FRACTION:.0%} of the card)",
             f"{'size':<8}{'GPU':>6}{'GPUs':>6}{'tp':>4}{'dp':>4}{'zero':>6}{'ckpt':>6}{'micro':>7}{'peak GiB':>10}"]
    for size in ("small", "medium", "large"):
        for gib in (24, 40, 80):
            plan = smallest_setup(model_config(size, vocab_size=30000), gib * GIB)
            if plan is None:
                lines.append(f"{size:<8}{gib:>4}GB  does not fit in 64 GPUs")
                continue
            lines.append(f"{size:<8}{gib:>4}GB{plan.world:>6}{plan.tp:>4}{plan.dp:>4}{plan.zero:>6}"
                         f"{'on' if plan.activation_checkpointing else 'off':>6}{plan.micro_batch:>7}{plan.peak / GIB:>10.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table-only", action="store_true", help="print the GPU fit table only")
    args = parser.parse_args()
    print(fit_table(), flush=True)
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)  # read by glibc in the spawned ranks
    if not args.table_only:
        print(f"{'case':<34}{'planned GiB':>12}{'measured GiB':>14}{'measured/planned':>18}")
        for case in CASES:
            plan, got = planned(case), run_case(case)
            print(f"{case.label:<34}{plan.peak / GIB:>12.3f}{got / GIB:>14.3f}{got / plan.peak:>18.3f}", flush=True)


if __name__ == "__main__":
    main()
