"""The training loop: optimizer, schedule, precision, checkpoints, logging.

One optimizer step (:func:`train_step`) = ``accum`` micro-batches forward/backward on each
rank, the gradients averaged over the data-parallel group in buckets during the last
backward pass (:mod:`cpm.trainer.grad_buckets`; reduce-scattered under ``--zero 1``,
:mod:`cpm.trainer.zero`), (fp16: unscale and skip the step on overflow), clipping of the
global gradient norm, AdamW. The global batch is ``micro_batch * accum * dp`` sequences.

Defaults are CPM-1's (the paper's large model): AdamW (0.9, 0.999), eps 1e-8, weight decay
0.01 except biases and LayerNorm, clipping 1.0, lr 1.5e-4 with 5,000 warm-up steps then
cosine decay to 1e-5 at 20,000 steps, 3,072 sequences per step. ``tiny`` has laptop defaults.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import torch
import torch.distributed as dist

from cpm.errors import CpmError
from cpm.trainer.grad_buckets import DEFAULT_BUCKET_MB, GradBuckets
from cpm.trainer.memory import available_memory, check_memory, estimate_memory  # noqa: F401 (re-exported)
from cpm.trainer.model import GPT, GPTConfig, count_parameters, model_config
from cpm.trainer.parallel import (
    ModelParallelRNG,
    ParallelContext,
    allreduce_gradients,
    clip_gradients,
    init_parallel,
    seed_everything,
)
from cpm.trainer.zero import ZeroAdamW, is_sharded

log = logging.getLogger(__name__)

# Optimizer/schedule defaults per size: CPM-1's for the paper's sizes, quick ones for tiny.
CPM_TRAINING = dict(global_batch=3072, lr=1.5e-4, min_lr=1e-5, warmup_steps=5000, max_steps=20000)
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": dict(global_batch=16, micro_batch=8, lr=1e-3, min_lr=1e-4, warmup_steps=20, max_steps=200),
    "small": dict(CPM_TRAINING, micro_batch=16),
    "medium": dict(CPM_TRAINING, micro_batch=8),
    "large": dict(CPM_TRAINING, micro_batch=2),
}

# Dense bf16 peak of known GPUs, TFLOP/s (for MFU), matched against torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("A10G", 125.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A6000", 155.0),
    ("4090", 165.0),
    ("3090", 71.0),
    ("V100", 125.0),  # fp16 tensor cores (no bf16)
]


@dataclass
class TrainConfig:
    size: str = "tiny"
    input: str = ""
    output: str = ""
    tp: int = 1
    max_steps: int = 200
    global_batch: int = 16
    micro_batch: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 20
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    precision: str = ""  # "" = bf16 on CUDA, fp32 on CPU
    device: str = ""  # "" = cuda if available
    seed: int = 1234
    save_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 1000
    eval_batches: int = 50
    log_every: int = 1
    activation_checkpointing: bool = False
    zero: int = 0  # 1 = ZeRO stage 1: AdamW moments sharded over the data-parallel group
    bucket_mb: float = DEFAULT_BUCKET_MB  # gradient bucket size (MiB) of the overlapped DP communication
    compile: bool = False
    resume: bool = False
    overwrite: bool = False  # clear an existing run directory (config, metrics, tensorboard, checkpoints)
    stop_at: int = 0  # stop (with a checkpoint) after this step, schedule unchanged; 0 = run to max_steps
    progress: bool = True
    model: dict[str, Any] = field(default_factory=dict)  # GPTConfig overrides, then the resolved config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_train_config(size: str, **options: Any) -> TrainConfig:
    """``--size`` defaults, then the options that are not None."""
    if size not in TRAIN_DEFAULTS:
        raise CpmError(f"unknown --size {size!r}; choose from {', '.join(TRAIN_DEFAULTS)}")
    values: dict[str, Any] = dict(TRAIN_DEFAULTS[size])
    values.update({k: v for k, v in options.items() if v is not None})
    cfg = TrainConfig(size=size, **values)
    validate_train_config(cfg)
    return cfg


def validate_train_config(cfg: TrainConfig, world: int | None = None) -> None:
    """One-line :class:`CpmError` for an option out of range (``world``: the torchrun world size,
    default ``$WORLD_SIZE`` or 1). ``--save-every``, ``--eval-every``, ``--stop-at`` and
    ``--keep-checkpoints`` take 0 for "off" (never save / never evaluate / run to --max-steps /
    keep every checkpoint)."""
    world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise CpmError(message)

    for name in ("tp", "max_steps", "global_batch", "micro_batch", "log_every", "eval_batches"):
        value = getattr(cfg, name)
        need(isinstance(value, int) and value >= 1, f"--{name.replace('_', '-')} must be a positive integer, not {value}")
    for name in ("warmup_steps", "save_every", "eval_every", "keep_checkpoints", "stop_at"):
        value = getattr(cfg, name)
        need(isinstance(value, int) and value >= 0, f"--{name.replace('_', '-')} must be 0 (off) or a positive integer, not {value}")
    need(cfg.lr > 0, f"--lr must be positive, not {cfg.lr}")
    need(cfg.min_lr >= 0, f"--min-lr must be 0 or positive, not {cfg.min_lr}")
    need(cfg.weight_decay >= 0, f"--weight-decay must be 0 or positive, not {cfg.weight_decay}")
    need(0 <= cfg.beta1 < 1, f"--beta1 must be in [0, 1), not {cfg.beta1}")
    need(0 <= cfg.beta2 < 1, f"--beta2 must be in [0, 1), not {cfg.beta2}")
    need(cfg.adam_eps >= 0, f"--adam-eps must be 0 or positive, not {cfg.adam_eps}")
    need(cfg.clip_grad >= 0, f"--clip-grad must be 0 (off) or positive, not {cfg.clip_grad}")
    need(cfg.precision in ("", "fp32", "bf16", "fp16"), f"--precision must be bf16, fp16 or fp32, not {cfg.precision!r}")
    need(cfg.zero in (0, 1), f"--zero must be 0 (off) or 1 (sharded optimizer states), not {cfg.zero}")
    need(cfg.bucket_mb > 0, f"--bucket-mb must be positive, not {cfg.bucket_mb}")
    need(not (cfg.resume and cfg.overwrite), "give --resume or --overwrite, not both")
    need(world % cfg.tp == 0,
         f"--tp {cfg.tp} does not divide the world size {world} (torchrun --nproc-per-node x nodes)")
    dp = world // cfg.tp
    need(cfg.global_batch % (cfg.micro_batch * dp) == 0,
         f"--global-batch {cfg.global_batch} is not a multiple of --micro-batch {cfg.micro_batch} "
         f"x data-parallel size {dp} (world {world} / --tp {cfg.tp})")


# --------------------------------------------------------------------------------------
# Schedule, precision
# --------------------------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr`` at ``max_steps``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def autocast(precision: str, device_type: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


class DynamicLossScaler:
    """fp16 loss scaling: halve on overflow (and skip the step), double after ``growth_interval`` good steps.

    Unlike ``torch.amp.GradScaler`` the overflow check is all-reduced over every rank, so TP
    ranks (whose shards overflow separately) skip the same steps.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_interval: int = 1000, min_scale: float = 1.0):
        self.scale = init_scale
        self.growth_interval = growth_interval
        self.min_scale = min_scale
        self.good_steps = 0

    def unscale_and_check(self, params: list[torch.nn.Parameter], ctx: ParallelContext) -> bool:
        """Divide the gradients by the scale; True if any rank saw an inf/nan."""
        grads = [p.grad for p in params if p.grad is not None]
        torch._foreach_mul_(grads, 1.0 / self.scale)
        bad = torch.stack([(~torch.isfinite(g)).any() for g in grads]).any().float()
        if ctx.world > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        return bool(bad.item())

    def update(self, overflow: bool) -> None:
        if overflow:
            self.scale = max(self.min_scale, self.scale / 2)
            self.good_steps = 0
        else:
            self.good_steps += 1
            if self.good_steps % self.growth_interval == 0:
                self.scale *= 2

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "good_steps": self.good_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale, self.good_steps = state["scale"], state["good_steps"]


# --------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------


def build_optimizer(model: GPT, cfg: TrainConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one pass over all parameters, CPU and CUDA; torch >= 2.4)."""
    groups = model.optimizer_groups(cfg.weight_decay)
    hyper = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    try:
        return torch.optim.AdamW(groups, fused=True, **hyper)
    except (RuntimeError, TypeError) as exc:  # a device without the fused kernel
        log.debug("fused AdamW unavailable on %s (%s); using foreach", device_type, exc)
        return torch.optim.AdamW(groups, foreach=True, **hyper)


def build_data_parallel(model: GPT, cfg: TrainConfig, ctx: ParallelContext,
                        device_type: str) -> tuple[torch.optim.Optimizer | ZeroAdamW, GradBuckets | None]:
    """The optimizer and, with more than one data-parallel rank, the gradient buckets that
    communicate during the backward pass (reduce-scattered for the ZeRO optimizer under ``--zero 1``)."""
    if ctx.dp_group is None:
        if cfg.zero:
            log.info("--zero 1 with one data-parallel rank: the optimizer state is not sharded")
        return build_optimizer(model, cfg, device_type), None
    buckets = GradBuckets(model, ctx.dp_group, ctx.dp_world, ctx.dp_rank, int(cfg.bucket_mb * 2**20),
                          shard=bool(cfg.zero))
    if not cfg.zero:
        return build_optimizer(model, cfg, device_type), buckets
    hyper = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    return ZeroAdamW(model, buckets, model.optimizer_groups(cfg.weight_decay), **hyper), buckets


def train_step(
    model: GPT,
    optimizer: torch.optim.Optimizer | ZeroAdamW,
    micro_batches: list[torch.Tensor],
    ctx: ParallelContext,
    *,
    lr: float,
    clip_grad: float = 1.0,
    precision: str = "fp32",
    scaler: DynamicLossScaler | None = None,
    forward: Any = None,
    buckets: GradBuckets | None = None,
) -> dict[str, Any]:
    """One optimizer step over ``micro_batches`` (each ``(b, seq_len + 1)``); returns loss (mean over
    the global batch), grad norm, and whether an fp16 overflow skipped the step. Without
    ``buckets`` the gradients are all-reduced after the last micro-batch."""
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = lr
    forward = model if forward is None else forward
    total = _forward_backward(model, forward, micro_batches, precision, scaler, optimizer, buckets)
    params = [p for p in model.parameters() if p.requires_grad]
    if buckets is not None:
        buckets.finish()
    else:
        allreduce_gradients(params, ctx)
    if ctx.dp_group is not None:
        dist.all_reduce(total, group=ctx.dp_group)
        total /= ctx.dp_world
    sharded = is_sharded(optimizer)
    grad_params = optimizer.grad_params if sharded else params
    skipped = False
    if scaler is not None:
        skipped = scaler.unscale_and_check(grad_params, ctx)
        scaler.update(skipped)
    norm = None
    if not skipped:
        norm = clip_gradients(grad_params, clip_grad, ctx, dp_sharded=sharded).item()
        optimizer.step()
    return {"loss": total.item() / len(micro_batches), "grad_norm": norm, "skipped": skipped}


def _forward_backward(model: GPT, forward: Any, micro_batches: list[torch.Tensor], precision: str,
                      scaler: DynamicLossScaler | None, optimizer: Any, buckets: GradBuckets | None) -> torch.Tensor:
    """Accumulate the gradients of every micro-batch; the buckets communicate during the last
    backward pass. Returns the sum of the micro-batch losses."""
    device = next(model.parameters()).device
    if buckets is not None:
        buckets.zero_grad()
    else:
        optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        if buckets is not None:
            buckets.set_sync(i == len(micro_batches) - 1)
        batch = batch.to(device, non_blocking=True)
        with autocast(precision, device.type):
            loss = forward(batch[:, :-1], batch[:, 1:])
        total += loss.detach().float()
        scaled = loss / len(micro_batches)
        if scaler is not None:
            scaled = scaled * scaler.scale
        scaled.backward()
    return total


@torch.no_grad()
def evaluate(model: GPT, batches: Iterator[torch.Tensor], ctx: ParallelContext, precision: str, max_batches: int) -> dict[str, float]:
    """Mean loss and perplexity over at most ``max_batches`` micro-batches per rank (summed over DP)."""
    model.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(2, device=device, dtype=torch.float64)
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        batch = batch.to(device)
        with autocast(precision, device.type):
            loss = model(batch[:, :-1], batch[:, 1:])
        tokens = batch[:, 1:].numel()
        sums[0] += loss.double() * tokens
        sums[1] += tokens
    if ctx.dp_group is not None:
        dist.all_reduce(sums, group=ctx.dp_group)
    model.train()
    if sums[1] == 0:
        return {}
    mean = (sums[0] / sums[1]).item()
    return {"val_loss": mean, "val_ppl": math.exp(min(mean, 50.0))}


# --------------------------------------------------------------------------------------
# MFU
# --------------------------------------------------------------------------------------


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of this GPU, None on CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def _manifest_tokenizer(input_dir: str) -> dict[str, Any] | None:
    """What the packed data's manifest says about its tokenizer (for ``cpm generate``)."""
    path = Path(input_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    found = {}
    for section in (manifest, manifest.get("config") or {}, manifest.get("counters") or {}):
        for key, value in section.items():
            if "tokenizer" in key.lower():
                found[key] = value
    return found or None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records of ``metrics.jsonl`` after ``step`` (and a torn last line), atomically."""
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        log.info("%s: dropped %d records after step %d", path, dropped, step)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)


RUN_FILES = ("config.json", "metrics.jsonl", "tensorboard", "checkpoints")


def existing_run_files(run_dir: Path) -> list[str]:
    """The entries of a previous run in ``run_dir`` (config, metrics, TensorBoard, checkpoints)."""
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def clear_run_dir(run_dir: Path) -> None:
    """Remove a previous run's files (``--overwrite``); other files in ``run_dir`` are kept."""
    import shutil

    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class MetricsLogger:
    """Rank 0's console progress bar, ``metrics.jsonl`` and TensorBoard."""

    def __init__(self, run_dir: Path, ctx: ParallelContext, total: int, initial: int, progress: bool):
        self.enabled = ctx.is_main
        self.bar = None
        self.tb = None
        if not self.enabled:
            return
        path = run_dir / "metrics.jsonl"
        truncate_metrics(path, initial)  # a resumed run rewrites the steps after its checkpoint
        self.file = open(path, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except Exception as exc:  # tensorboard missing or broken: keep training
            log.warning("TensorBoard logging disabled: %s", exc)
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None:
                    self.tb.add_scalar(f"train/{key}" if not key.startswith("val") else f"valid/{key}", value, record["step"])
        if self.bar is not None and "loss" in record:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                 tok_s=f"{record['tokens_per_s']:.0f}")
        elif self.bar is None and "loss" in record:
            log.info("step %d loss %.4f lr %.3e grad_norm %s tokens/s %.0f", record["step"], record["loss"],
                     record["lr"], f"{record['grad_norm']:.3f}" if record["grad_norm"] is not None else "skipped",
                     record["tokens_per_s"])
        if "val_loss" in record:
            log.info("step %d validation loss %.4f perplexity %.2f", record["step"], record["val_loss"], record["val_ppl"])

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        self.file.close()


@dataclass
class Run:
    """What a run is given and decides before its first step: the options, the parallel context,
    the device, the run directory, the training data and the config written to ``config.json``."""

    cfg: TrainConfig
    ctx: ParallelContext
    device: torch.device
    dir: Path
    loader: Any  # cpm.trainer.data.SequenceLoader
    config: dict[str, Any]
    accum: int  # micro-batches per optimizer step on each rank


@dataclass
class Trainee:
    """The model and what trains it."""

    model: GPT
    optimizer: torch.optim.Optimizer | ZeroAdamW
    buckets: GradBuckets | None
    scaler: DynamicLossScaler | None
    forward: Any  # the model, or its torch.compile'd forward
    rng: ModelParallelRNG


@dataclass
class Progress:
    """Where the run stands: optimizer steps taken and tokens trained on (global)."""

    step: int = 0
    tokens_seen: int = 0


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run ``cpm train``; returns a summary (final loss, steps, run dir) on rank 0."""
    from cpm.trainer.data import SequenceLoader

    device = resolve_device(cfg)
    run_dir = Path(cfg.output)
    ctx = open_run_dir(run_dir, cfg)
    device = bind_device(device)
    loader = SequenceLoader(cfg.input, split="train", micro_batch=cfg.micro_batch, seed=cfg.seed,
                            dp_rank=ctx.dp_rank, dp_world=ctx.dp_world)
    config = resolve_model_config(cfg, loader, ctx)
    check_memory(config, cfg, loader.seq_len, device, ctx)
    run_dir.mkdir(parents=True, exist_ok=True)
    accum = cfg.global_batch // (cfg.micro_batch * ctx.dp_world)
    run = Run(cfg, ctx, device, run_dir, loader, write_run_config(run_dir, cfg, ctx, loader, config, accum), accum)

    trainee = build_trainee(cfg, config, ctx, device)
    progress = resume_training(run, trainee) if cfg.resume else Progress()
    last = train_steps(run, trainee, progress)

    if ctx.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {"run_dir": str(run_dir), "steps": progress.step, **last}


def resolve_device(cfg: TrainConfig) -> torch.device:
    """Validate ``cfg`` and settle its device (cuda when visible) and precision (bf16 on CUDA, else fp32)."""
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CpmError("--device cuda but no CUDA GPU is visible to torch")
    validate_train_config(cfg)
    cfg.device = device.type
    cfg.precision = cfg.precision or ("bf16" if device.type == "cuda" else "fp32")
    return device


def open_run_dir(run_dir: Path, cfg: TrainConfig) -> ParallelContext:
    """Refuse a directory that holds a run unless ``--resume`` or ``--overwrite`` (cleared on rank 0);
    initializes the process groups in between, so every rank has looked before anything is removed."""
    existing = existing_run_files(run_dir)  # looked at by every rank before any writes
    if existing and not (cfg.resume or cfg.overwrite):
        raise CpmError(f"{run_dir}: already holds a run ({', '.join(existing)}); "
                       "give --resume to continue it or --overwrite to start afresh")
    ctx = init_parallel(cfg.tp)
    if ctx.world > 1:
        dist.barrier()  # every rank has checked the run directory
    if cfg.overwrite and existing:
        if ctx.is_main:
            log.warning("--overwrite: removing %s from %s", ", ".join(existing), run_dir)
            clear_run_dir(run_dir)
        if ctx.world > 1:
            dist.barrier()
    return ctx


def bind_device(device: torch.device) -> torch.device:
    """On CUDA: this process's GPU (``$LOCAL_RANK``), with TF32 matmuls allowed."""
    if device.type != "cuda":
        return device
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return device


def resolve_model_config(cfg: TrainConfig, loader: Any, ctx: ParallelContext) -> GPTConfig:
    """The model's config: ``--size`` with the overrides and the data's vocabulary, checked against
    the data and ``--tp``; stored back in ``cfg.model``."""
    overrides = dict(cfg.model)
    overrides.setdefault("vocab_size", loader.vocab_size)
    config = model_config(cfg.size, **overrides)
    if config.vocab_size < loader.vocab_size:
        raise CpmError(f"--vocab-size {config.vocab_size} is smaller than the data's vocabulary {loader.vocab_size}")
    if config.n_positions < loader.seq_len:
        raise CpmError(f"the data's sequences have {loader.seq_len} tokens but --n-positions is {config.n_positions}")
    if config.n_head % ctx.tp_world or config.d_model % config.n_head:
        raise CpmError(f"--n-head {config.n_head} must divide --d-model {config.d_model} and be divisible by --tp {ctx.tp_world}")
    cfg.model = config.to_dict()
    return config


def write_run_config(run_dir: Path, cfg: TrainConfig, ctx: ParallelContext, loader: Any, config: GPTConfig,
                     accum: int) -> dict[str, Any]:
    """The run's ``config.json`` (written by rank 0): the options, the topology, the data, the tokenizer."""
    run_config = cfg.to_dict() | {
        "world": ctx.world, "dp": ctx.dp_world, "grad_accumulation": accum,
        "data": {"seq_len": loader.seq_len, "vocab_size": loader.vocab_size, "eod_id": loader.eod_id,
                 "train_samples": loader.num_samples},
        "tokenizer": _manifest_tokenizer(cfg.input),
        "parameters": count_parameters(config),
    }
    if ctx.is_main:
        (run_dir / "config.json").write_text(json.dumps(run_config, indent=2, ensure_ascii=False), encoding="utf-8")
    return run_config


def build_trainee(cfg: TrainConfig, config: GPTConfig, ctx: ParallelContext, device: torch.device) -> Trainee:
    """The seeded model on ``device``, its optimizer (and gradient buckets), the fp16 loss scaler."""
    rng = ModelParallelRNG(device.type)
    seed_everything(cfg.seed, ctx, rng)
    try:
        model = GPT(config, ctx, rng)
    except ValueError as exc:
        raise CpmError(str(exc)) from None
    model.init_weights(cfg.seed)
    model.to(device)
    model.activation_checkpointing = cfg.activation_checkpointing
    optimizer, buckets = build_data_parallel(model, cfg, ctx, device.type)
    scaler = DynamicLossScaler() if cfg.precision == "fp16" else None
    forward = torch.compile(model) if cfg.compile else model
    return Trainee(model, optimizer, buckets, scaler, forward, rng)


# --------------------------------------------------------------------------------------
# Resume: what a checkpoint holds besides the weights and the optimizer
# --------------------------------------------------------------------------------------


def resume_training(run: Run, trainee: Trainee) -> Progress:
    """``--resume``: the model, optimizer, loss scale, RNG streams and data position of the latest
    checkpoint; from scratch (with a warning) when there is none."""
    from cpm.trainer import checkpoint as ckpt_io

    found = ckpt_io.latest_checkpoint(run.dir)  # CpmError when `latest` is dangling
    if found is None:
        log.warning("--resume: no checkpoint in %s, starting from scratch", run.dir)
        return Progress()
    state = ckpt_io.load_training_state(found, trainee.model, trainee.optimizer, run.ctx)
    progress = Progress(state["step"], state["tokens_seen"])
    if trainee.scaler is not None and state.get("scaler"):
        trainee.scaler.load_state_dict(state["scaler"])
    if state["rng"] is not None:
        set_rng_states(state["rng"], trainee.rng)
    else:
        log.warning("topology changed since the checkpoint: dropout RNG streams start afresh")
    restore_loader(run.loader, state["loader"], progress.step, run.cfg.global_batch)
    if run.ctx.is_main:
        log.info("resumed from %s at step %d", found, progress.step)
        if progress.step >= run.cfg.max_steps:
            log.warning("%s: already at step %d = --max-steps %d; nothing to do"
                        if progress.step == run.cfg.max_steps else
                        "%s: already at step %d, past --max-steps %d; nothing to do",
                        run.dir, progress.step, run.cfg.max_steps)
    return progress


def restore_loader(loader: Any, state: dict[str, Any] | None, step: int, global_batch: int) -> None:
    """The data position of a checkpoint; after a change of data-parallel size (``state`` None), the
    global sample ``step * global_batch`` rounded down to the loader's global batch."""
    if state is not None:
        loader.load_state_dict(state)
        return
    log.warning("data-parallel size changed: the data stream continues at global sample %d", step * global_batch)
    loader.load_state_dict({"index": step * global_batch // loader.global_batch * loader.global_batch})


def trainer_state(trainee: Trainee, progress: Progress, loader: Any) -> dict[str, Any]:
    """What a checkpoint holds besides the model and the optimizer, for :func:`resume_training`."""
    return {"step": progress.step, "tokens_seen": progress.tokens_seen,
            "scaler": trainee.scaler.state_dict() if trainee.scaler else None,
            "rng": get_rng_states(trainee.rng), "loader": loader.state_dict()}


def get_rng_states(rng: ModelParallelRNG) -> dict[str, Any]:
    states = {"cpu": torch.get_rng_state(), "model_parallel": rng.get_state()}
    if torch.cuda.is_available() and rng.device_type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any], rng: ModelParallelRNG) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
    rng.set_state(states["model_parallel"])


# --------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------


class Throughput(NamedTuple):
    """Tokens per optimizer step, model FLOPs per token, and the GPU's peak FLOP/s (None: no MFU)."""

    tokens_per_step: int
    flops_per_token: float
    peak: float | None

    def record(self, elapsed: float, world: int) -> dict[str, float | None]:
        tokens_per_s = self.tokens_per_step / elapsed
        mfu = tokens_per_s * self.flops_per_token / (self.peak * world) if self.peak else None
        return {"tokens_per_s": tokens_per_s, "mfu": mfu}


def train_steps(run: Run, trainee: Trainee, progress: Progress) -> dict[str, Any]:
    """Steps until ``--stop-at`` or ``--max-steps``: log, validate and save on schedule. Returns the
    last step's record (with its validation)."""
    from cpm.trainer import checkpoint as ckpt_io

    cfg = run.cfg
    speed = Throughput(cfg.global_batch * run.loader.seq_len, trainee.model.flops_per_token(run.loader.seq_len),
                       peak_flops(run.device))
    metrics = MetricsLogger(run.dir, run.ctx, cfg.max_steps, progress.step, cfg.progress)
    batches = iter(run.loader)
    last: dict[str, Any] = {}
    try:
        end = min(cfg.max_steps, cfg.stop_at) if cfg.stop_at else cfg.max_steps
        while progress.step < end:
            last = timed_step(run, trainee, progress, batches, speed)
            if progress.step % cfg.log_every == 0 or progress.step == cfg.max_steps:
                metrics.log(last)
            metrics.advance()
            if cfg.eval_every and (progress.step % cfg.eval_every == 0 or progress.step == cfg.max_steps):
                val = _validate(trainee.model, cfg, run.ctx)
                if val:
                    last.update(val)
                    metrics.log({"step": progress.step, **val})
            if cfg.save_every and (progress.step % cfg.save_every == 0 or progress.step == end):
                ckpt_io.save_checkpoint(run.dir, progress.step, trainee.model, trainee.optimizer,
                                        trainer_state(trainee, progress, run.loader), run.config, run.ctx,
                                        keep=cfg.keep_checkpoints)
    finally:
        metrics.close()
    return last


def timed_step(run: Run, trainee: Trainee, progress: Progress, batches: Iterator[torch.Tensor],
               speed: Throughput) -> dict[str, Any]:
    """One optimizer step on the next ``accum`` micro-batches, timed; advances ``progress`` and
    returns the step's metrics record."""
    lr = lr_at(progress.step, run.cfg)
    _synchronize(run.device)
    t0 = time.perf_counter()
    micro = [next(batches) for _ in range(run.accum)]
    result = train_step(trainee.model, trainee.optimizer, micro, run.ctx, lr=lr, clip_grad=run.cfg.clip_grad,
                        precision=run.cfg.precision, scaler=trainee.scaler, forward=trainee.forward,
                        buckets=trainee.buckets)
    _synchronize(run.device)
    elapsed = time.perf_counter() - t0
    progress.step += 1
    progress.tokens_seen += speed.tokens_per_step
    record = {"step": progress.step, "loss": result["loss"], "lr": lr, "grad_norm": result["grad_norm"],
              **speed.record(elapsed, run.ctx.world), "tokens": progress.tokens_seen, "skipped": result["skipped"]}
    if trainee.scaler is not None:
        record["loss_scale"] = trainee.scaler.scale
    return record


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _validate(model: GPT, cfg: TrainConfig, ctx: ParallelContext) -> dict[str, float]:
    from cpm.trainer.data import evaluation_batches

    try:
        batches = evaluation_batches(cfg.input, micro_batch=cfg.micro_batch, split="valid",
                                     dp_rank=ctx.dp_rank, dp_world=ctx.dp_world)
        return evaluate(model, batches, ctx, cfg.precision, cfg.eval_batches)
    except CpmError as exc:  # no validation split: train anyway
        log.warning("validation skipped: %s", exc)
        return {}
