"""Checkpoints: atomic, sharded per tensor-parallel rank, reshardable to any ``--tp``.

Layout of a run directory (``cpm train --output RUNDIR``)::

    RUNDIR/
      config.json                      the resolved run config (model, training, data, tokenizer)
      metrics.jsonl                    one JSON object per logged step / evaluation
      tensorboard/                     TensorBoard event files
      checkpoints/
        latest                         text file: the name of the newest complete checkpoint ("step-000100")
        step-000100/
          config.json                  {"model": GPTConfig fields, "tp": 2, "padded_vocab": 30208,
                                        "layout": {param: [split_dim or null, chunks]}, "step": 100,
                                        "run": <RUNDIR/config.json at save time>}
          model-tp00-of-02.pt          torch.save({param name: tensor}) -- TP rank 0's shard, fp32
          model-tp01-of-02.pt
          optim-tp00-of-02.pt          {"param_groups": [...], "state": {param name: {"step", "exp_avg", "exp_avg_sq"}}}
          optim-tp01-of-02.pt
          optim-tp00-of-02-dp00-of-04.pt   under --zero 1 (instead of optim-tpXX-of-YY.pt): DP rank 0's
                                       fragments {"state": {param name: {"step", "exp_avg", "exp_avg_sq"}
                                       (flat)}, "fragments": {param name: {"start", "end", "shape"}},
                                       "param_groups"}; config.json says "zero_dp": 4
          trainer_state.pt             {"step", "tokens_seen", "scaler", "rng": {global rank: states},
                                        "loader": {dp rank: loader state}, "tp", "dp"}
          checksums.json               {"files": {name: {"bytes", "sha256"}}} of every other file

Sharding rule (:mod:`cpm.trainer.parallel`): a parameter with ``layout[name] = [dim, chunks]``
is split along ``dim``; with ``chunks=3`` (fused QKV) each of Q, K, V is split separately,
so rank r holds heads ``[r*H/tp, (r+1)*H/tp)`` of each. ``null`` = replicated (every shard
file holds the same tensor). ``wte.weight`` has ``padded_vocab`` rows in total, of which the
rows past ``model.vocab_size`` are zero padding; the *unsharded* tensors (what
:func:`unsharded_state_dict` returns) drop that padding, so they do not depend on tp.
Unsharded names and shapes are those of HF ``GPT2LMHeadModel`` (``transformer.`` prefix
aside), with the ``c_attn``/``c_proj``/``c_fc`` weights transposed (HF uses Conv1D).

Every file a checkpoint holds is listed with its size and sha256 in ``checksums.json``
(:mod:`cpm.trainer.checksums`); loading a file checks it first, so a corrupted checkpoint is
a one-line error naming the file, never weights that load silently.
Under ZeRO (:mod:`cpm.trainer.zero`) every DP rank writes the AdamW moments of the elements
it owns; reading merges the ``zero_dp`` files of a TP rank back into whole tensors, so such a
checkpoint resumes at any data-parallel size, with or without ``--zero``, and at any ``--tp``.

A checkpoint is written to ``checkpoints/.step-000100.tmp`` and renamed when complete,
then ``latest`` is replaced atomically; only the last ``keep`` checkpoints are kept.
Multi-node runs need ``RUNDIR`` on a shared filesystem.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from cpm.errors import CpmError
from cpm.trainer.checksums import verified_file, write_checksums
from cpm.trainer.model import GPT, GPTConfig
from cpm.trainer.parallel import ParallelContext, shard_tensor, unshard_tensors
from cpm.trainer.zero import is_sharded, merge_fragment_states, sharded_world

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def shard_file(kind: str, tp_rank: int, tp: int) -> str:
    return f"{kind}-tp{tp_rank:02d}-of-{tp:02d}.pt"


def zero_shard_file(tp_rank: int, tp: int, dp_rank: int, dp: int) -> str:
    """The optimizer shard of one (TP rank, DP rank) under ZeRO."""
    return f"optim-tp{tp_rank:02d}-of-{tp:02d}-dp{dp_rank:02d}-of-{dp:02d}.pt"


def model_layout(model: GPT) -> dict[str, list]:
    return {name: [p.tp_split_dim, p.tp_chunks] for name, p in model.named_parameters()}


def _barrier(ctx: ParallelContext) -> None:
    if ctx.world > 1:
        dist.barrier()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------


def optimizer_state_by_name(model: GPT, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state keyed by parameter name (so it can be resharded like the weights)."""
    names = {id(p): n for n, p in model.named_parameters()}
    state = {names[id(p)]: {k: v.detach().cpu().clone() if torch.is_tensor(v) else v for k, v in s.items()}
             for p, s in optimizer.state.items()}
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": [names[id(p)] for p in g["params"]]}
              for g in optimizer.param_groups]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    model: GPT,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    run_config: dict[str, Any],
    ctx: ParallelContext,
    keep: int = 3,
) -> Path:
    """Write ``checkpoints/step-NNNNNN`` atomically (collective: every rank must call it)."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / step_name(step)
    tmp = root / f".{step_name(step)}.tmp"
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(ctx)
    tp = ctx.tp_world
    if ctx.dp_rank == 0:  # one replica writes the model and optimizer shards
        weights = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
        torch.save(weights, tmp / shard_file("model", ctx.tp_rank, tp))
        if not is_sharded(optimizer):
            torch.save(optimizer_state_by_name(model, optimizer), tmp / shard_file("optim", ctx.tp_rank, tp))
    if is_sharded(optimizer):  # ZeRO: every replica writes the moments it owns
        torch.save(optimizer.state_by_name(), tmp / zero_shard_file(ctx.tp_rank, tp, ctx.dp_rank, ctx.dp_world))
    rng = gather_objects(trainer_state.pop("rng"), ctx)
    loader = gather_objects(trainer_state.pop("loader"), ctx)
    if ctx.is_main:
        trainer_state = dict(trainer_state, rng=dict(enumerate(rng)),
                             loader={r // tp: s for r, s in enumerate(loader) if r % tp == 0},
                             tp=tp, dp=ctx.dp_world)
        torch.save(trainer_state, tmp / "trainer_state.pt")
        meta = {"model": model.config.to_dict(), "tp": tp, "padded_vocab": model.padded_vocab,
                "layout": model_layout(model), "zero_dp": sharded_world(optimizer), "step": step, "run": run_config}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    _barrier(ctx)
    if ctx.is_main:
        write_checksums(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _atomic_write_text(root / LATEST, final.name + "\n")
        for old in rotated_checkpoints(root, final, keep):
            shutil.rmtree(old, ignore_errors=True)
        log.info("saved checkpoint %s", final)
    _barrier(ctx)
    return final


def checkpoint_step(path: Path) -> int | None:
    """The step of a ``step-NNNNNN`` directory name (None for anything else)."""
    match = re.fullmatch(r"step-(\d+)", path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(root: Path) -> list[Path]:
    """The ``step-N`` directories of ``root``, by increasing step (numerically: past step 999,999 too)."""
    found = [(checkpoint_step(p), p) for p in root.glob("step-*") if p.is_dir()]
    return [p for step, p in sorted((s, p) for s, p in found if s is not None)]


def rotated_checkpoints(root: Path, just_saved: Path, keep: int) -> list[Path]:
    """The checkpoints to delete to keep the ``keep`` latest steps (0 = keep all); never ``just_saved``."""
    if keep <= 0:
        return []
    ordered = list_checkpoints(root)
    kept = set(ordered[-keep:]) | {just_saved}
    return [p for p in ordered if p not in kept]


def gather_objects(obj: Any, ctx: ParallelContext) -> list[Any]:
    """``obj`` of every global rank, in rank order."""
    if ctx.world == 1:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------------------
# Finding and reading
# --------------------------------------------------------------------------------------


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory from itself, its ``checkpoints/`` dir or the run directory (latest)."""
    path = Path(path)
    if (path / "trainer_state.pt").is_file() or (path / "config.json").is_file() and any(path.glob("model-tp*.pt")):
        return path
    root = path if (path / LATEST).is_file() else path / CHECKPOINTS
    latest = root / LATEST
    if not latest.is_file():
        raise CpmError(f"{path}: no checkpoint found (no {latest})")
    ckpt = root / latest.read_text(encoding="utf-8").strip()
    if not ckpt.is_dir():
        raise CpmError(f"{latest}: points to {ckpt.name}, which does not exist")
    return ckpt


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint ``RUNDIR/checkpoints/latest`` names; None when the run has no checkpoint
    at all; CpmError when ``latest`` is missing, empty or dangling while checkpoints exist."""
    root = Path(run_dir) / CHECKPOINTS
    latest = root / LATEST
    if not latest.is_file():
        if list_checkpoints(root):
            raise CpmError(f"{root}: holds checkpoints but no '{LATEST}' file; write the name of the one "
                           "to resume from (e.g. step-000100) into it")
        return None
    name = latest.read_text(encoding="utf-8").strip()
    if not name or not (root / name / "trainer_state.pt").is_file():
        raise CpmError(f"{latest}: points to {name!r}, which is not a complete checkpoint")
    return root / name


def read_checkpoint_config(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads(verified_file(ckpt / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CpmError(f"{ckpt / 'config.json'}: unreadable checkpoint config: {exc}") from None


def _load(path: Path) -> Any:
    if not path.is_file():
        raise CpmError(f"{path}: missing checkpoint shard")
    verified_file(path)
    try:  # weights_only: tensors and plain containers only, never arbitrary pickled objects
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise CpmError(f"{path}: cannot read checkpoint shard ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def merge_shards(shards: list[dict[str, torch.Tensor]], layout: dict[str, list], vocab_size: int) -> dict[str, torch.Tensor]:
    """Unsharded tensors from every TP rank's ``{name: tensor}`` (vocabulary padding removed)."""
    full = {}
    for name, (dim, chunks) in layout.items():
        if name not in shards[0]:
            continue
        tensor = unshard_tensors([s[name] for s in shards], dim, chunks)
        if name == "wte.weight":
            tensor = tensor[:vocab_size].clone()
        full[name] = tensor
    return full


def shard_state(full: dict[str, torch.Tensor], layout: dict[str, list], padded_vocab: int, tp_rank: int, tp: int) -> dict[str, torch.Tensor]:
    """This rank's shards of unsharded tensors (re-padding the vocabulary for this tp)."""
    out = {}
    for name, tensor in full.items():
        dim, chunks = layout[name]
        if name == "wte.weight":
            tensor = torch.cat([tensor, tensor.new_zeros(padded_vocab - tensor.shape[0], *tensor.shape[1:])])
        out[name] = shard_tensor(tensor, dim, tp_rank, tp, chunks).clone()
    return out


def unsharded_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], GPTConfig]:
    """The full (tp-independent) weights of a checkpoint and its model config."""
    ckpt = resolve_checkpoint(path)
    meta = read_checkpoint_config(ckpt)
    config = GPTConfig.from_dict(meta["model"])
    tp = meta["tp"]
    shards = [_load(ckpt / shard_file("model", r, tp)) for r in range(tp)]
    return merge_shards(shards, meta["layout"], config.vocab_size), config


def save_unsharded(path: str | os.PathLike[str], out_file: str | os.PathLike[str]) -> Path:
    """Write a checkpoint's unsharded weights to one safetensors file (with the config in its metadata)."""
    from safetensors.torch import save_file

    state, config = unsharded_state_dict(path)
    out_file = Path(out_file)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_file),
              metadata={"cpm.model_config": json.dumps(config.to_dict())})
    return out_file


def load_model(
    path: str | os.PathLike[str], tp: int = 1, device: str | torch.device = "cpu", ctx: ParallelContext | None = None
) -> tuple[GPT, GPTConfig]:
    """A model (eval mode) from a checkpoint or run directory, merged/resharded to ``ctx``'s tp (default 1)."""
    ctx = ctx or ParallelContext()
    if ctx.tp_world != tp:
        raise ValueError(f"tp={tp} but the parallel context has tp={ctx.tp_world}")
    state, config = unsharded_state_dict(path)
    model = GPT(config, ctx)
    local = shard_state(state, model_layout(model), model.padded_vocab, ctx.tp_rank, ctx.tp_world)
    model.load_state_dict(local, strict=True)
    return model.to(device).eval(), config


# --------------------------------------------------------------------------------------
# Resuming
# --------------------------------------------------------------------------------------


def load_training_state(
    ckpt: Path, model: GPT, optimizer: torch.optim.Optimizer, ctx: ParallelContext
) -> dict[str, Any]:
    """Load weights and optimizer state into this rank's model (resharding if tp changed);
    return ``trainer_state.pt`` with this rank's ``rng`` and ``loader`` entries (None when the
    topology changed)."""
    meta = read_checkpoint_config(ckpt)
    saved_tp = meta["tp"]
    saved_config = GPTConfig.from_dict(meta["model"])
    if saved_config != model.config:
        raise CpmError(f"{ckpt}: the checkpoint's model {saved_config} differs from this run's {model.config}")
    layout = model_layout(model)
    if saved_tp == ctx.tp_world:
        weights = _load(ckpt / shard_file("model", ctx.tp_rank, saved_tp))
        optim = _load_optimizer(ckpt, ctx.tp_rank, meta)
    else:
        log.info("resharding %s from tp=%d to tp=%d", ckpt, saved_tp, ctx.tp_world)
        model_shards = [_load(ckpt / shard_file("model", r, saved_tp)) for r in range(saved_tp)]
        optim_shards = [_load_optimizer(ckpt, r, meta) for r in range(saved_tp)]
        weights = shard_state(merge_shards(model_shards, meta["layout"], saved_config.vocab_size),
                              layout, model.padded_vocab, ctx.tp_rank, ctx.tp_world)
        optim = {"param_groups": optim_shards[0]["param_groups"], "state": {}}
        for name in optim_shards[0]["state"]:
            entry = dict(optim_shards[0]["state"][name])
            for key, value in entry.items():
                if torch.is_tensor(value) and value.ndim > 0:
                    full = merge_shards([{name: s["state"][name][key]} for s in optim_shards], meta["layout"],
                                        saved_config.vocab_size)[name]
                    entry[key] = shard_state({name: full}, layout, model.padded_vocab, ctx.tp_rank, ctx.tp_world)[name]
            optim["state"][name] = entry
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    load_optimizer_state(model, optimizer, optim)
    state = _load(ckpt / "trainer_state.pt")
    same_topology = state.get("tp") == ctx.tp_world and state.get("dp") == ctx.dp_world
    state["rng"] = state["rng"].get(ctx.rank) if same_topology else None
    state["loader"] = state["loader"].get(ctx.dp_rank) if state.get("dp") == ctx.dp_world else None
    return state


def _load_optimizer(ckpt: Path, tp_rank: int, meta: dict[str, Any]) -> dict[str, Any]:
    """TP rank ``tp_rank``'s by-name optimizer state (merged from its ZeRO fragments if sharded)."""
    tp, dp = meta["tp"], meta.get("zero_dp", 1)
    if dp <= 1:
        return _load(ckpt / shard_file("optim", tp_rank, tp))
    return merge_fragment_states([_load(ckpt / zero_shard_file(tp_rank, tp, r, dp)) for r in range(dp)])


def load_optimizer_state(model: GPT, optimizer: Any, saved: dict[str, Any]) -> None:
    """Restore a by-name optimizer state (from :func:`optimizer_state_by_name`); a ZeRO
    optimizer takes its fragments of it."""
    if is_sharded(optimizer):
        optimizer.load_state_by_name(saved)
        return
    params = dict(model.named_parameters())
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"]):
        for key, value in saved_group.items():
            if key != "params":
                group[key] = value
    step_on_device = bool(optimizer.defaults.get("fused") or optimizer.defaults.get("capturable"))
    optimizer.state.clear()
    for name, entry in saved["state"].items():
        p = params[name]
        optimizer.state[p] = {
            k: v.to(p.device) if torch.is_tensor(v) and (k != "step" or step_on_device) else v
            for k, v in entry.items()
        }

