"""``cpm train``: train a CPM-style GPT on packed sequence shards (torch imported lazily)."""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import typer

SIZES = ("tiny", "small", "medium", "large")


def verify_packed(data: str, splits: tuple[str, ...], skip: bool, progress: bool) -> None:
    """Check the shards of ``splits`` (those present) against their manifest before any work."""
    from cpm.errors import ShardError
    from cpm.shards.verify import verify_data
    from cpm.shards.sequences import split_shard_paths

    paths = split_shard_paths(data, splits[0])
    for split in splits[1:]:
        try:
            paths += split_shard_paths(data, split)
        except ShardError:  # an empty split (e.g. no valid/ shards) has nothing to check
            continue
    verify_data(paths, skip=skip, progress=progress, what=data)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        input: Optional[str] = typer.Option(None, "--input", "-i", help="A `cpm data pack` output directory (train/ and valid/ sequence shards); required unless --plan.", show_default="none: required unless --plan"),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Run directory: config.json, metrics.jsonl, tensorboard/, checkpoints/; required unless --plan.", show_default="none: required unless --plan"),
        size: str = typer.Option("tiny", "--size", help="Model size: tiny, small (109M), medium (334M), large (2.6B) -- CPM-1 Table 1."),
        tp: int = typer.Option(1, "--tp", help="Tensor-parallel size; data-parallel size = world size / tp."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", show_default="by --size: tiny 200, others CPM's 20,000", help="Optimizer steps."),
        global_batch: Optional[int] = typer.Option(None, "--global-batch", show_default="by --size: tiny 16, others CPM's 3,072", help="Sequences per optimizer step."),
        micro_batch: Optional[int] = typer.Option(None, "--micro-batch", show_default="by --size: tiny 8, small 16, medium 8, large 2", help="Sequences per forward pass per data-parallel rank."),
        lr: Optional[float] = typer.Option(None, "--lr", show_default="by --size: tiny 1e-3, others CPM's 1.5e-4", help="Peak learning rate."),
        min_lr: Optional[float] = typer.Option(None, "--min-lr", show_default="by --size: tiny 1e-4, others CPM's 1e-5", help="Learning rate at the end of the cosine decay."),
        warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", show_default="by --size: tiny 20, others CPM's 5,000", help="Linear warm-up steps."),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay", show_default="0.01", help="AdamW weight decay (not on biases/LayerNorm)."),
        beta1: Optional[float] = typer.Option(None, "--beta1", show_default="0.9", help="Adam beta1."),
        beta2: Optional[float] = typer.Option(None, "--beta2", show_default="0.999", help="Adam beta2."),
        adam_eps: Optional[float] = typer.Option(None, "--adam-eps", show_default="1e-8", help="Adam epsilon."),
        clip_grad: Optional[float] = typer.Option(None, "--clip-grad", show_default="1.0", help="Max global gradient norm (0 = off)."),
        dropout: Optional[float] = typer.Option(None, "--dropout", show_default="0.1", help="Dropout probability."),
        n_layer: Optional[int] = typer.Option(None, "--n-layer", show_default="by --size", help="Override the number of layers."),
        d_model: Optional[int] = typer.Option(None, "--d-model", show_default="by --size", help="Override the hidden size."),
        n_head: Optional[int] = typer.Option(None, "--n-head", show_default="by --size", help="Override the number of attention heads."),
        d_ff: Optional[int] = typer.Option(None, "--d-ff", show_default="4 x --d-model", help="Override the feed-forward size."),
        n_positions: Optional[int] = typer.Option(None, "--n-positions", show_default="1024", help="Override the number of learned positions."),
        vocab_size: Optional[int] = typer.Option(None, "--vocab-size", show_default="the data's", help="Override the vocabulary size."),
        init_std: Optional[float] = typer.Option(None, "--init-std", show_default="0.02", help="Init standard deviation."),
        precision: Optional[str] = typer.Option(None, "--precision", show_default="bf16 on GPU, fp32 on CPU", help="bf16, fp16 (dynamic loss scaling) or fp32."),
        device: Optional[str] = typer.Option(None, "--device", show_default="cuda when available", help="cpu or cuda."),
        seed: int = typer.Option(1234, "--seed", help="Seed of the initialisation, dropout and data order."),
        save_every: Optional[int] = typer.Option(None, "--save-every", show_default="1000", help="Checkpoint every N steps (and at the end); 0 = never."),
        keep_checkpoints: Optional[int] = typer.Option(None, "--keep-checkpoints", show_default="3", help="Keep the last K checkpoints (0 = keep all)."),
        eval_every: Optional[int] = typer.Option(None, "--eval-every", show_default="1000", help="Validation loss every N steps (and at the end); 0 = never."),
        eval_batches: Optional[int] = typer.Option(None, "--eval-batches", show_default="50", help="Validation micro-batches per rank."),
        log_every: Optional[int] = typer.Option(None, "--log-every", show_default="1", help="Write metrics every N steps."),
        activation_checkpointing: bool = typer.Option(False, "--activation-checkpointing", help="Recompute each block in the backward pass."),
        zero: Optional[int] = typer.Option(None, "--zero", show_default="0 (off)", help="1 = ZeRO stage 1: shard the AdamW moments over the data-parallel ranks."),
        bucket_mb: Optional[float] = typer.Option(None, "--bucket-mb", show_default="25", help="Gradient bucket size in MiB; buckets are all-reduced (reduce-scattered under --zero 1) during the backward pass."),
        plan: bool = typer.Option(False, "--plan", help="Print the per-rank memory (parameters, gradients, optimizer, activations, peak) and exit without training."),
        world_size: Optional[int] = typer.Option(None, "--world-size", show_default="$WORLD_SIZE, else --tp", help="With --plan: the number of ranks (GPUs) to plan for."),
        compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
        resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --output (metrics after it are rewritten)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Delete the previous run in --output (config, metrics, tensorboard, checkpoints) and start afresh."),
        stop_at: Optional[int] = typer.Option(None, "--stop-at", show_default="--max-steps", help="Stop after this step with a checkpoint, keeping the --max-steps schedule (for time-limited jobs; continue with --resume)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        skip_verify: bool = typer.Option(False, "--skip-verify", help="Do not check the shards' size and sha256 against the manifest before training (token ids are still range-checked)."),
    ) -> None:
        """Train a CPM-style GPT (tensor + data parallel under torchrun).

        Example: cpm train --size tiny --input out/packed --output runs/tiny --max-steps 200

        Plan: cpm train --plan --size large --tp 4 --world-size 8 --zero 1 --micro-batch 2 --activation-checkpointing
        """
        run_train(dict(locals()))  # every option by name (nothing else is defined yet)


MODEL_OPTIONS = ("dropout", "n_layer", "d_model", "n_head", "d_ff", "n_positions", "vocab_size", "init_std")


def run_train(options: dict[str, Any]) -> None:
    """``cpm train`` on its parsed options: the ``--plan`` table, or verify the data and train."""
    from cpm.errors import CpmError
    from cpm.trainer.train import resolve_train_config, train

    size = options.pop("size")
    if size not in SIZES:
        raise CpmError(f"--size must be one of {', '.join(SIZES)}, not {size!r}")
    model = {name: options.pop(name) for name in MODEL_OPTIONS}
    model = {name: value for name, value in model.items() if value is not None}
    plan, world_size, skip_verify = options.pop("plan"), options.pop("world_size"), options.pop("skip_verify")
    if plan:
        typer.echo(plan_text(size, options["tp"], world_size, options["micro_batch"], options["precision"],
                             options["activation_checkpointing"], options["zero"] or 0, model))
        return
    for flag, value in (("--input", options["input"]), ("--output", options["output"])):
        if not value:
            raise CpmError(f"{flag} is required (or give --plan)")
    cfg = resolve_train_config(size, **options, model=model)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:  # one process per node reads the data; the others wait for it
        verify_packed(options["input"], ("train", "valid"), skip=skip_verify, progress=options["progress"])
    summary = train(cfg)
    if summary.get("loss") is not None and int(os.environ.get("RANK", "0")) == 0:
        keys = ("steps", "loss", "val_loss", "val_ppl", "tokens_per_s", "run_dir")
        typer.echo(json.dumps({k: summary[k] for k in keys if k in summary}))


def plan_text(size: str, tp: int, world_size: Optional[int], micro_batch: Optional[int], precision: Optional[str],
              activation_checkpointing: bool, zero: int, model: dict) -> str:
    """``cpm train --plan``: the memory table of one rank, without touching data or devices."""
    from cpm.errors import CpmError
    from cpm.trainer.memory import format_plan, plan_memory
    from cpm.trainer.model import model_config
    from cpm.trainer.train import TRAIN_DEFAULTS

    world = world_size or int(os.environ.get("WORLD_SIZE", "0")) or tp
    if tp < 1 or world < 1 or world % tp:
        raise CpmError(f"--tp {tp} must be positive and divide --world-size {world}")
    if zero not in (0, 1):
        raise CpmError(f"--zero must be 0 (off) or 1 (sharded optimizer states), not {zero}")
    config = model_config(size, **model)
    if config.n_head % tp:
        raise CpmError(f"--tp {tp} must divide the {config.n_head} attention heads of --size {size}")
    micro_batch = micro_batch or TRAIN_DEFAULTS[size]["micro_batch"]
    if micro_batch < 1:
        raise CpmError(f"--micro-batch must be a positive integer, not {micro_batch}")
    precision = precision or "bf16"
    if precision not in ("bf16", "fp16", "fp32"):
        raise CpmError(f"--precision must be bf16, fp16 or fp32, not {precision!r}")
    result = plan_memory(config, tp=tp, dp=world // tp, micro_batch=micro_batch, precision=precision,
                         activation_checkpointing=activation_checkpointing, zero=zero)
    return format_plan(result, size)
