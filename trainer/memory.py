"""Per-rank training memory: the planner behind ``cpm train --plan`` and the start-up check.

Bytes per rank of a ``tp x dp`` run (``N_t`` = parameters held by one TP rank, vocabulary
padded; ``h`` = d_model, ``s`` = sequence length, ``b`` = micro-batch, ``t`` = tp, ``a`` =
bytes of an activation: 2 under bf16/fp16 autocast, 4 in fp32):

- parameters ``4 N_t`` (fp32 weights; autocast computes in 16 bits from them);
- gradients ``4 N_t`` (fp32; the flat buckets of :mod:`cpm.trainer.grad_buckets`);
- optimizer ``8 N_t`` (AdamW's two moments), ``8 N_t / dp`` under ``--zero 1``;
- activations saved for the backward pass, counted from what this model's modules keep
  (Korthikanti et al. 2022 for the method): per layer and token ``4h`` + ``4h`` (the fp32
  inputs of the two LayerNorms), ``2ah`` (the 16-bit copies the two input projections
  save), ``13ah/t`` (QKV, attention output and its reshaped copy, h->4h output and the GeLU
  output) and ``2h`` (two dropout masks, one byte each); with flash attention there is no
  ``s^2`` term, with the math kernel (CPU with dropout) there are ``(2a + 1 + a) s`` more bytes
  per head and token (probabilities, mask, dropped probabilities). With
  ``--activation-checkpointing`` each layer keeps only its fp32 input (``4h``) and one layer
  is recomputed at a time. The output layer adds ``(8 + a) V / t`` per token (logits, their
  fp32 softmax and its gradient). Under autocast the 16-bit copies of the weights
  (``2 N_t``) are saved for the backward pass (with checkpointing: those of the output
  layer and of the layer being recomputed).

The peak comes at the start of the backward pass of a step after the first. With data
parallelism every term is held at once (the gradients are flat buckets that live through the
run); with one replica the gradients are freed after each step and grow while the activations
are released, so the peak is the parameters, the moments and the larger of (activations + the
embedding's gradient, which is pending from the start) and the gradients.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from cpm.trainer.model import GPTConfig
from cpm.trainer.parallel import padded_vocab_size

GIB = 1024**3
FIT_FRACTION = 0.9  # of a GPU's memory the plan may use (CUDA context, NCCL buffers, fragmentation)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per rank of one configuration, and the configuration."""

    tp: int
    dp: int
    micro_batch: int
    seq_len: int
    precision: str
    activation_checkpointing: bool
    zero: int
    parameters: float
    gradients: float
    optimizer: float
    activations: float
    embedding_gradient: float = 0.0  # the tied embedding's gradient, pending from the start of the backward pass

    @property
    def world(self) -> int:
        return self.tp * self.dp

    @property
    def peak(self) -> float:
        """With data parallelism the gradients live in flat buckets all the time; on one replica
        they are freed after each step and appear while the activations are released."""
        if self.dp > 1:
            return self.parameters + self.gradients + self.optimizer + self.activations
        return self.parameters + self.optimizer + max(self.activations + self.embedding_gradient, self.gradients)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"world": self.world, "peak": self.peak}


def local_parameters(config: GPTConfig, tp: int) -> int:
    """Parameters one TP rank holds (split tensors divided by ``tp``, the vocabulary padded)."""
    d, f, L = config.d_model, config.d_ff, config.n_layer
    split = 3 * d * d + 3 * d + d * d + d * f + f + f * d  # QKV, attention out, MLP (weights, split biases)
    replicated = d + d + 4 * d  # the two row-parallel biases, two LayerNorms
    embeddings = padded_vocab_size(config.vocab_size, tp) * d // tp + config.n_positions * d
    return embeddings + L * (split // tp + replicated) + 2 * d


def activation_bytes(config: GPTConfig, tp: int, micro_batch: int, seq_len: int, precision: str,
                     checkpointing: bool = False, flash: bool = True) -> float:
    """Bytes of the activations one rank keeps for the backward pass (see the module docstring)."""
    a = 2 if precision in ("bf16", "fp16") else 4
    h, tokens, heads = config.d_model, micro_batch * seq_len, config.n_head / tp
    layer = tokens * h * (10 + 2 * a + 13 * a / tp)
    if not flash:
        layer += tokens * heads * seq_len * (2 * a + 1)
    if checkpointing:
        body = config.n_layer * tokens * 4 * h + layer
    else:
        body = config.n_layer * layer
    embed_and_final = tokens * h * (1 + 4)  # embedding dropout mask, final LayerNorm input
    logits = tokens * (8 + a) * config.vocab_size / tp
    return body + embed_and_final + logits


def plan_memory(config: GPTConfig, *, tp: int = 1, dp: int = 1, micro_batch: int = 1, seq_len: int | None = None,
                precision: str = "bf16", activation_checkpointing: bool = False, zero: int = 0,
                flash: bool = True) -> MemoryPlan:
    """The per-rank memory of training ``config`` on ``tp x dp`` ranks."""
    seq_len = seq_len or config.n_positions
    n = local_parameters(config, tp)
    weights_16 = 0.0
    if precision in ("bf16", "fp16"):  # 16-bit weight copies saved for the backward pass
        per_layer = (n - local_parameters(GPTConfig(**{**config.to_dict(), "n_layer": 0}), tp)) / config.n_layer
        layers = 1 if activation_checkpointing else config.n_layer
        weights_16 = 2.0 * (padded_vocab_size(config.vocab_size, tp) * config.d_model / tp + layers * per_layer)
    return MemoryPlan(
        tp=tp, dp=dp, micro_batch=micro_batch, seq_len=seq_len, precision=precision,
        activation_checkpointing=activation_checkpointing, zero=zero,
        parameters=4.0 * n, gradients=4.0 * n, optimizer=8.0 * n / (dp if zero else 1),
        activations=activation_bytes(config, tp, micro_batch, seq_len, precision, activation_checkpointing, flash)
        + weights_16,
        embedding_gradient=4.0 * padded_vocab_size(config.vocab_size, tp) * config.d_model / tp,
    )


def format_plan(plan: MemoryPlan, size: str) -> str:
    """The table ``cpm train --plan`` prints."""
    rows = [("parameters (fp32)", plan.parameters), ("gradients (fp32)", plan.gradients),
            (f"optimizer (AdamW moments{', 1/%d each' % plan.dp if plan.zero else ''})", plan.optimizer),
            ("activations", plan.activations), ("peak", plan.peak)]
    head = (f"--size {size}: tp {plan.tp} x dp {plan.dp} = {plan.world} ranks, --micro-batch {plan.micro_batch}, "
            f"seq {plan.seq_len}, {plan.precision}, activation checkpointing "
            f"{'on' if plan.activation_checkpointing else 'off'}, zero {plan.zero}")
    lines = [head, f"{'per rank':<40}{'GiB':>10}"]
    lines += [f"{name:<40}{value / GIB:>10.2f}" for name, value in rows]
    return "\n".join(lines)


def smallest_setup(config: GPTConfig, gpu_bytes: float, precision: str = "bf16", max_gpus: int = 64,
                   max_tp: int = 8, max_micro_batch: int = 16) -> MemoryPlan | None:
    """The fewest GPUs that train ``config`` in ``FIT_FRACTION`` of ``gpu_bytes`` each; among
    those, the largest micro-batch, then no activation checkpointing, then the smallest tp."""
    best: tuple | None = None
    world = 1
    while world <= max_gpus and best is None:
        for tp in (t for t in (1, 2, 4, 8) if t <= min(max_tp, world) and world % t == 0 and config.n_head % t == 0):
            for zero in (0, 1) if world // tp > 1 else (0,):
                for ckpt in (False, True):
                    plan = _largest_micro_batch(config, tp, world // tp, zero, ckpt, precision, gpu_bytes, max_micro_batch)
                    if plan is not None:
                        key = (-plan.micro_batch, ckpt, tp, zero)
                        best = min(best, (key, plan), key=lambda item: item[0]) if best else (key, plan)
        world *= 2
    return best[1] if best else None


def _largest_micro_batch(config: GPTConfig, tp: int, dp: int, zero: int, ckpt: bool, precision: str,
                         gpu_bytes: float, max_micro_batch: int) -> MemoryPlan | None:
    found = None
    mb = 1
    while mb <= max_micro_batch:
        plan = plan_memory(config, tp=tp, dp=dp, micro_batch=mb, precision=precision,
                           activation_checkpointing=ckpt, zero=zero)
        if plan.peak > FIT_FRACTION * gpu_bytes:
            break
        found, mb = plan, mb * 2
    return found


# --------------------------------------------------------------------------------------
# Backwards-compatible estimate and the start-up check
# --------------------------------------------------------------------------------------


def estimate_memory(config: GPTConfig, tp: int, micro_batch: int, seq_len: int, precision: str,
                    activation_checkpointing: bool = False, dp: int = 1, zero: int = 0) -> dict[str, float]:
    """Bytes per rank: ``states`` (weights, gradients, AdamW moments), ``activations``, ``total``."""
    plan = plan_memory(config, tp=tp, dp=dp, micro_batch=micro_batch, seq_len=seq_len, precision=precision,
                       activation_checkpointing=activation_checkpointing, zero=zero)
    states = plan.parameters + plan.gradients + plan.optimizer
    return {"states": states, "activations": plan.activations, "total": plan.peak}


def available_memory(device: Any) -> float:
    """Free bytes on ``device`` (a CUDA GPU, or the CPU's MemAvailable)."""
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def check_memory(config: GPTConfig, cfg: Any, seq_len: int, device: Any, ctx: Any) -> None:
    """Fail in seconds, before allocating, when the model cannot fit (CpmError with numbers and advice).
    ``cfg`` is the run's :class:`~cpm.trainer.train.TrainConfig`, ``ctx`` its parallel context."""
    from cpm.errors import CpmError

    flash = device.type == "cuda" or config.dropout == 0  # torch's CPU flash kernel has no dropout

    def need(tp: int, checkpointing: bool) -> MemoryPlan:
        return plan_memory(config, tp=tp, dp=ctx.dp_world, micro_batch=cfg.micro_batch, seq_len=seq_len,
                           precision=cfg.precision, activation_checkpointing=checkpointing,
                           zero=getattr(cfg, "zero", 0), flash=flash)

    plan = need(ctx.tp_world, cfg.activation_checkpointing)
    have = available_memory(device)
    # several ranks of one node share the CPU RAM
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
    if plan.peak * local_ranks <= 0.95 * have:
        return
    where = "GPU" if device.type == "cuda" else "process (CPU RAM)"
    fits_tp = next((t for t in (2, 4, 8, 16, 32) if need(t, True).peak * local_ranks <= 0.9 * have), None)
    unit = "GPUs (torchrun --nproc-per-node N ... --tp N)" if device.type == "cuda" else "machines (torchrun --nnodes N ... --tp N)"
    advice = f"use --tp {fits_tp} on {fits_tp} {unit}" if fits_tp else f"use --tp 8 or more on as many {unit}"
    raise CpmError(
        f"--size {cfg.size} needs about {plan.peak / GIB:.1f} GiB per {where} at tp={ctx.tp_world} "
        f"(weights {plan.parameters / GIB:.1f}, gradients {plan.gradients / GIB:.1f}, Adam moments "
        f"{plan.optimizer / GIB:.1f}, activations {plan.activations / GIB:.1f} GiB at --micro-batch {cfg.micro_batch}, "
        f"seq {seq_len}) but only {have * local_ranks / GIB:.1f} GiB is free; {advice}, or lower --micro-batch / "
        f"add --activation-checkpointing / --zero 1 with more data-parallel ranks (see cpm train --plan)"
    )
