"""Interop: export a cpm checkpoint as a Hugging Face ``GPT2LMHeadModel``; import the released CPM-1 weights.

**Export** (:func:`export_hf`). cpm's unsharded tensors (:func:`cpm.trainer.checkpoint.unsharded_state_dict`)
already carry GPT-2's names; HF's ``Conv1D`` stores ``c_attn``/``c_proj``/``c_fc`` weights
as ``[in, out]``, so those are transposed. The vocabulary is the real one (no padding
rows), the output layer is tied to ``wte`` (so ``lm_head.weight`` is not stored), and
``bos``/``eos``/``pad`` are the tokenizer's ``<eod>``/``<pad>`` ids. ``config.json`` is
written directly, so exporting does not need ``transformers``.

**Import** (:func:`import_cpm1`). The released CPM-1 checkpoints are Megatron-LM (v1) models in
DeepSpeed's layout::

    CKPT/latest_checkpointed_iteration.txt      e.g. "20000"
    CKPT/20000/mp_rank_00_model_states.pt      {"module": {name: tensor}, ...}, one per model-parallel rank
    CKPT/20000/mp_rank_01_model_states.pt

Megatron's parallel layers split exactly like cpm's (:mod:`cpm.trainer.parallel`):
``word_embeddings`` along the vocabulary (dim 0), ``query_key_value`` along its outputs
with each rank holding ``[q_r; k_r; v_r]`` (its heads of Q, K and V: cpm's ``chunks=3``),
``dense_h_to_4h`` along its outputs, ``attention.dense`` and ``dense_4h_to_h`` along their
inputs (dim 1), everything else replicated. The ranks are merged with the same rule and
the names mapped to cpm's; the architecture is the same (pre-LN, tanh GeLU, LayerNorm
eps 1e-5, tied output embedding without bias), so the logits of the real vocabulary are
unchanged.

Vocabulary padding, both directions: Megatron pads the embedding to a multiple of
``make_vocab_size_divisible_by * mp`` with rows that no token uses; the import keeps the
first ``vocab_size`` rows (the tokenizer's; 30,000 for CPM-1) and cpm re-pads with zeros
to its own multiple of ``128 * tp``. A checkpoint with fewer rows than the vocabulary is
an error. (The original model's softmax also ran over its padding rows, whose logits
were not exactly -inf; cpm's runs over the real vocabulary only, so log-probabilities
can differ by the tiny mass those rows had. Logits are identical.)
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

from cpm.errors import CpmError

log = logging.getLogger(__name__)

HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
TOKENIZER_SUBDIR = "cpm_tokenizer"
# the Hugging Face tokenizer shipped in the export: cpm/tokenizer/hf.py copied under this module name
HF_TOKENIZER_MODULE = "tokenization_cpm_jieba"
HF_TOKENIZER_CLASS = "CpmJiebaTokenizer"
HF_TOKENIZER_MODEL = "cpm_sentencepiece.model"

# CPM-1 model sizes (paper, Table 1): hidden size -> attention heads (not recoverable from the tensors).
CPM1_HEADS = {768: 12, 1024: 16, 2560: 32}
CPM1_VOCAB = 30000

# Megatron layer name -> (cpm name, split dim across model-parallel ranks, chunks)
_LAYER_MAP = {
    "input_layernorm.weight": ("ln_1.weight", None, 1),
    "input_layernorm.bias": ("ln_1.bias", None, 1),
    "attention.query_key_value.weight": ("attn.c_attn.weight", 0, 3),
    "attention.query_key_value.bias": ("attn.c_attn.bias", 0, 3),
    "attention.dense.weight": ("attn.c_proj.weight", 1, 1),
    "attention.dense.bias": ("attn.c_proj.bias", None, 1),
    "post_attention_layernorm.weight": ("ln_2.weight", None, 1),
    "post_attention_layernorm.bias": ("ln_2.bias", None, 1),
    "mlp.dense_h_to_4h.weight": ("mlp.c_fc.weight", 0, 1),
    "mlp.dense_h_to_4h.bias": ("mlp.c_fc.bias", 0, 1),
    "mlp.dense_4h_to_h.weight": ("mlp.c_proj.weight", 1, 1),
    "mlp.dense_4h_to_h.bias": ("mlp.c_proj.bias", None, 1),
}
_TOP_MAP = {
    "word_embeddings.weight": ("wte.weight", 0, 1),
    "position_embeddings.weight": ("wpe.weight", None, 1),
    "transformer.final_layernorm.weight": ("ln_f.weight", None, 1),
    "transformer.final_layernorm.bias": ("ln_f.bias", None, 1),
}
_LAYER_KEY = re.compile(r"^transformer\.layers\.(\d+)\.(.+)$")


# ------------------------------------------------------------------------------ tokenizer


def checkpoint_tokenizer_path(meta: dict[str, Any], checkpoint: Path | None = None) -> tuple[str | None, str | None]:
    """The tokenizer path and fingerprint a checkpoint's run config records (None when absent)."""
    info = (meta.get("run") or {}).get("tokenizer")
    if isinstance(info, str):
        return info, None
    if not isinstance(info, dict):
        return None, None
    path = info.get("tokenizer") or info.get("path")
    fingerprint = info.get("tokenizer_fingerprint") or info.get("fingerprint")
    return (str(path) if path else None), (str(fingerprint) if fingerprint else None)


def load_checkpoint_tokenizer(checkpoint: Path, meta: dict[str, Any], override: str | None = None) -> Any:
    """The tokenizer given (``override``) or recorded in the checkpoint; its fingerprint is checked."""
    from cpm.tokenizer import Tokenizer

    recorded, fingerprint = checkpoint_tokenizer_path(meta, checkpoint)
    if override is None and recorded is None:
        raise CpmError(f"{checkpoint}: the checkpoint records no tokenizer; give --tokenizer")
    path = override or recorded
    candidates = [Path(path)]
    if not Path(path).is_absolute():  # relative to where training ran: try the run directory too
        candidates += [checkpoint.parent.parent / path, checkpoint / path]
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        if override is not None:
            raise CpmError(f"{override}: no such tokenizer")
        raise CpmError(f"{path}: the tokenizer of {checkpoint} is not there; give --tokenizer")
    tokenizer = Tokenizer.load(found)
    if fingerprint and tokenizer.fingerprint != fingerprint:
        message = f"{found}: tokenizer fingerprint {tokenizer.fingerprint[:12]} differs from the {fingerprint[:12]} the model was trained with"
        if override is None:
            raise CpmError(message)
        log.warning("%s (using it because --tokenizer was given)", message)
    return tokenizer


# ------------------------------------------------------------------------------ HF export


def hf_config(config: Any, eod_id: int, pad_id: int) -> dict[str, Any]:
    """The ``config.json`` of a ``GPT2LMHeadModel`` with cpm's architecture and special ids."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.n_positions,
        "n_ctx": config.n_positions,
        "n_embd": config.d_model,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.d_ff,
        "activation_function": "gelu_new",  # the tanh approximation, as cpm and CPM-1
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_range": config.init_std,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": eod_id,
        "eos_token_id": eod_id,
        "pad_token_id": pad_id,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def to_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """cpm's unsharded tensors as ``GPT2LMHeadModel`` tensors (``transformer.`` names, Conv1D weights ``[in, out]``)."""
    out = {}
    for name, tensor in state.items():
        if name.endswith(HF_TRANSPOSED):
            tensor = tensor.t()
        out[f"transformer.{name}"] = tensor.detach().to(torch.float32).contiguous().clone()
    return out


def from_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`to_hf_state_dict` (``lm_head.weight``, tied, is dropped)."""
    out = {}
    for name, tensor in state.items():
        if not name.startswith("transformer.") or name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        name = name[len("transformer.") :]
        out[name] = tensor.t().contiguous() if name.endswith(HF_TRANSPOSED) else tensor
    return out


def write_hf_tokenizer(out: Path, tok: Any, model_max_length: int) -> None:
    """Write the files ``AutoTokenizer.from_pretrained(out, trust_remote_code=True)`` loads (:mod:`cpm.tokenizer.hf`).

    The tokenizer class travels as ``tokenization_cpm_jieba.py`` (it needs sentencepiece and jieba,
    not cpm). ``tokenizer_config.json`` names it in ``auto_map`` and under a class name transformers
    does not have, so loading without ``trust_remote_code`` fails instead of returning a GPT-2 tokenizer.
    """
    from importlib.resources import files

    code = files("cpm.tokenizer").joinpath("hf.py").read_text("utf-8")
    (out / f"{HF_TOKENIZER_MODULE}.py").write_text(code, "utf-8")
    (out / HF_TOKENIZER_MODEL).write_bytes(tok._model_proto)
    config = {
        "tokenizer_class": HF_TOKENIZER_CLASS,
        "auto_map": {"AutoTokenizer": [f"{HF_TOKENIZER_MODULE}.{HF_TOKENIZER_CLASS}", None]},
        "mode": tok.mode,
        "bos_token": "<eod>",
        "eos_token": "<eod>",
        "unk_token": tok.id_to_piece(tok.unk_id),
        "pad_token": "<pad>",
        "sep_token": "<sep>",
        "mask_token": "<mask>",
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "cpm_tokenizer_fingerprint": tok.fingerprint,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", "utf-8")


def _readme(tokenizer_rel: str, eod_id: int, config: Any, mode: str) -> str:
    return f"""# cpm model exported for Hugging Face transformers

A `GPT2LMHeadModel` ({config.n_layer} layers, {config.d_model} hidden, {config.n_head} heads,
{config.vocab_size:,} tokens, {config.n_positions} positions), exported by `cpm export hf`.
`bos`/`eos` are cpm's `<eod>` (id {eod_id}), `pad` is `<pad>`.

The tokenizer (jieba words, then SentencePiece with cpm's space/newline markers; {mode} mode)
is `{HF_TOKENIZER_MODULE}.py` in this folder: load it with `trust_remote_code=True` (it needs
`sentencepiece` and `jieba` 0.42.1, not cpm). Without it, loading fails. It encodes and decodes
exactly as `cpm.tokenizer`, and puts `<eod>` before every text, as the training data does.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

tok = AutoTokenizer.from_pretrained("THIS_DIR", trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained("THIS_DIR").eval()
ids = tok("今天天气不错，", return_tensors="pt").input_ids        # <eod> + the prompt
out = model.generate(ids, max_new_tokens=32, do_sample=True, top_p=0.9)
print(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))

generator = pipeline("text-generation", model="THIS_DIR", trust_remote_code=True)
print(generator("今天天气不错，", max_new_tokens=32)[0]["generated_text"])
```

cpm's own copy of the tokenizer is in `{tokenizer_rel}` (`cpm.tokenizer.Tokenizer.load`).
"""


def export_hf(
    checkpoint: str | os.PathLike[str], output: str | os.PathLike[str], tokenizer: str | None = None, overwrite: bool = False
) -> Path:
    """Write ``output/`` (``config.json``, ``generation_config.json``, ``model.safetensors``, the Hugging Face
    tokenizer (:func:`write_hf_tokenizer`), the cpm tokenizer in ``cpm_tokenizer/`` and a ``README.md``)
    from a cpm checkpoint or run dir.

    A non-empty ``output`` is refused unless ``overwrite`` (then replaced atomically)."""
    from safetensors.torch import save_file

    from cpm.shards.io import atomic_output_dir, check_output_dir
    from cpm.trainer.checkpoint import read_checkpoint_config, resolve_checkpoint, unsharded_state_dict

    check_output_dir(output, overwrite, [checkpoint])
    ckpt = resolve_checkpoint(checkpoint)
    meta = read_checkpoint_config(ckpt)
    tok = load_checkpoint_tokenizer(ckpt, meta, tokenizer)
    state, config = unsharded_state_dict(ckpt)
    if tok.vocab_size > config.vocab_size:
        raise CpmError(f"{tok.path}: tokenizer has {tok.vocab_size} tokens but the model only {config.vocab_size}")
    with atomic_output_dir(output, overwrite, [checkpoint, tok.path]) as out:
        hf_state = to_hf_state_dict(state)
        save_file(hf_state, str(out / "model.safetensors"), metadata={"format": "pt"})
        os.chmod(out / "model.safetensors", 0o644)  # readable like the other files (safetensors writes 0600)
        (out / "config.json").write_text(json.dumps(hf_config(config, tok.eod_id, tok.pad_id), indent=2) + "\n", "utf-8")
        generation = {"bos_token_id": tok.eod_id, "eos_token_id": tok.eod_id, "pad_token_id": tok.pad_id}
        (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", "utf-8")
        tok_dir = out / TOKENIZER_SUBDIR
        source = Path(tok.path)
        if source.is_dir():
            shutil.copytree(source, tok_dir)
            tokenizer_rel = TOKENIZER_SUBDIR
        else:
            tok_dir.mkdir()
            shutil.copy2(source, tok_dir / source.name)
            tokenizer_rel = f"{TOKENIZER_SUBDIR}/{source.name}"
        write_hf_tokenizer(out, tok, config.n_positions)
        (out / "README.md").write_text(_readme(tokenizer_rel, tok.eod_id, config, tok.mode), "utf-8")
    out = Path(output)
    log.info("exported %s (step %s) to %s", ckpt, meta.get("step"), out)
    return out


# ------------------------------------------------------------------------------ inference checkpoints


def save_weights_checkpoint(
    output: str | os.PathLike[str], state: dict[str, torch.Tensor], config: Any, tp: int, step: int, run: dict[str, Any]
) -> Path:
    """Write unsharded weights as a cpm checkpoint at ``tp`` (``output/checkpoints/step-N``, ``latest``).

    The layout is :mod:`cpm.trainer.checkpoint`'s (``config.json`` + ``model-tpXX-of-YY.pt`` +
    ``checksums.json``),
    without optimizer or trainer state: ``cpm generate``, ``cpm eval`` and ``cpm export``
    read it like any other checkpoint.
    """
    from cpm.trainer.checkpoint import CHECKPOINTS, LATEST, model_layout, shard_file, shard_state, step_name
    from cpm.trainer.checksums import write_checksums
    from cpm.trainer.model import GPT
    from cpm.trainer.parallel import ParallelContext

    if config.n_head % tp:
        raise CpmError(f"--tp {tp} must divide the number of heads {config.n_head}")
    with torch.device("meta"):  # shapes and split rules only, no memory
        layout_model = GPT(config, ParallelContext(tp_world=tp))
    layout, padded = model_layout(layout_model), layout_model.padded_vocab
    expected = {name: layout_model.full_shape(name, p) for name, p in layout_model.named_parameters()}
    for name, shape in expected.items():
        if name not in state:
            raise CpmError(f"weights have no {name}")
        want = (config.vocab_size, shape[1]) if name == "wte.weight" else tuple(shape)
        if tuple(state[name].shape) != tuple(want):
            raise CpmError(f"{name}: shape {tuple(state[name].shape)} but the model needs {tuple(want)}")
    root = Path(output) / CHECKPOINTS
    final = root / step_name(step)
    tmp = root / f".{step_name(step)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for rank in range(tp):
        torch.save(shard_state(state, layout, padded, rank, tp), tmp / shard_file("model", rank, tp))
    meta = {"model": config.to_dict(), "tp": tp, "padded_vocab": padded, "layout": layout, "step": step, "run": run}
    (tmp / "config.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    (Path(output) / "config.json").write_text(json.dumps(run, indent=2, ensure_ascii=False), encoding="utf-8")
    write_checksums(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = root / f".{LATEST}.tmp"
    latest_tmp.write_text(final.name + "\n", encoding="utf-8")
    os.replace(latest_tmp, root / LATEST)
    return final


# ------------------------------------------------------------------------------ CPM-1 import


def megatron_safe_globals() -> list[Any]:
    """The non-tensor classes a DeepSpeed/Megatron ``mp_rank_XX_model_states.pt`` may pickle besides
    tensors and plain containers: Megatron's ``args`` (argparse.Namespace) and the numpy RNG state."""
    import argparse

    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    allowed: list[Any] = [argparse.Namespace, np.ndarray, np.dtype, _reconstruct,
                          (_reconstruct, "numpy.core.multiarray._reconstruct"),  # pickled by numpy 1.x
                          (_reconstruct, "numpy._core.multiarray._reconstruct")]
    allowed += [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64)]  # numpy 2 dtype classes
    return allowed


def load_megatron_file(path: Path) -> Any:
    """``torch.load`` of a checkpoint downloaded from others: ``weights_only`` (no code runs while
    unpickling) with only :func:`megatron_safe_globals` allowed besides tensors."""
    with torch.serialization.safe_globals(megatron_safe_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_error_reason(exc: Exception) -> str:
    """One line of a ``torch.load`` error: the class weights_only refused, else the first line."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it pickles {found.group(1)}, which cpm does not unpickle from checkpoints (weights_only)"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def read_megatron_checkpoint(path: str | os.PathLike[str]) -> tuple[list[dict[str, torch.Tensor]], int]:
    """Every model-parallel rank's weights of a DeepSpeed/Megatron checkpoint dir, and its iteration."""
    root = Path(path)
    if not root.is_dir():
        raise CpmError(f"{root}: no such checkpoint directory")
    marker = root / "latest_checkpointed_iteration.txt"
    if marker.is_file():
        tag = marker.read_text(encoding="utf-8").strip()
        if not tag:
            raise CpmError(f"{marker}: empty")
        candidates = [root / tag]
        if tag.isdigit():
            candidates.append(root / f"iter_{int(tag):07d}")
        iter_dir = next((c for c in candidates if c.is_dir()), None)
        if iter_dir is None:
            raise CpmError(f"{marker}: says {tag!r} but {root / tag} does not exist")
    elif any(root.glob("mp_rank_*_model_states.pt")):
        iter_dir, tag = root, "0"
    else:
        raise CpmError(f"{root}: not a CPM-1 checkpoint (no latest_checkpointed_iteration.txt or mp_rank_XX_model_states.pt)")
    files = sorted(iter_dir.glob("mp_rank_*_model_states.pt"))
    if not files:
        raise CpmError(f"{iter_dir}: no mp_rank_XX_model_states.pt files")
    ranks = [int(re.search(r"mp_rank_(\d+)", f.name).group(1)) for f in files]
    if ranks != list(range(len(files))):
        raise CpmError(f"{iter_dir}: model-parallel ranks {ranks} are not 0..{len(files) - 1}")
    shards = []
    for f in files:
        try:
            blob = load_megatron_file(f)
        except Exception as exc:  # noqa: BLE001 - any unpickling error is a bad file
            raise CpmError(f"{f}: cannot read ({load_error_reason(exc)})") from None
        weights = blob.get("module", blob.get("model")) if isinstance(blob, dict) else None
        if not isinstance(weights, dict):
            raise CpmError(f"{f}: no 'module' state dict inside")
        shards.append({(k[len("module.") :] if k.startswith("module.") else k): v for k, v in weights.items()})
    step = int(tag) if tag.isdigit() else 0
    return shards, step


def merge_megatron(shards: list[dict[str, torch.Tensor]], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Megatron weights of all model-parallel ranks as cpm's unsharded tensors (vocabulary still padded)."""
    from cpm.trainer.parallel import unshard_tensors

    out: dict[str, torch.Tensor] = {}
    for key in shards[0]:
        if key in _TOP_MAP:
            name, dim, chunks = _TOP_MAP[key]
        else:
            match = _LAYER_KEY.match(key)
            if match is None or match.group(2) not in _LAYER_MAP:
                if key.endswith(("attention.bias", "attention.masked_bias")):
                    continue  # causal-mask buffers of some versions
                raise CpmError(f"{source}: unexpected CPM-1 weight {key!r}")
            layer_name, dim, chunks = _LAYER_MAP[match.group(2)]
            name = f"h.{int(match.group(1))}.{layer_name}"
        try:
            parts = [s[key] for s in shards]
        except KeyError:
            raise CpmError(f"{source}: {key} is missing from some model-parallel ranks") from None
        out[name] = unshard_tensors([p.float() for p in parts], dim, chunks)
    return out


def _cpm1_config(state: dict[str, torch.Tensor], checkpoint: str, vocab_size: int, n_head: int | None) -> Any:
    """The :class:`~cpm.trainer.model.GPTConfig` of merged CPM-1 weights; the embedding's padding rows
    beyond ``vocab_size`` are dropped from ``state``."""
    from cpm.trainer.model import GPTConfig

    rows, d_model = state["wte.weight"].shape
    if rows < vocab_size:
        raise CpmError(f"{checkpoint}: word_embeddings has {rows} rows, fewer than the vocabulary of {vocab_size}")
    if rows > vocab_size:
        log.info("dropping %d padding rows of the embedding (%d -> %d)", rows - vocab_size, rows, vocab_size)
    state["wte.weight"] = state["wte.weight"][:vocab_size].clone()
    n_layer = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("h.")), default=-1)
    if n_layer == 0:
        raise CpmError(f"{checkpoint}: no transformer layers")
    if n_head is None:
        if d_model not in CPM1_HEADS:
            raise CpmError(f"{checkpoint}: hidden size {d_model} is not a CPM-1 size; give --n-head")
        n_head = CPM1_HEADS[d_model]
    if d_model % n_head:
        raise CpmError(f"--n-head {n_head} does not divide the hidden size {d_model}")
    return GPTConfig(vocab_size=vocab_size, n_positions=state["wpe.weight"].shape[0], n_layer=n_layer, n_head=n_head,
                     d_model=d_model, d_ff=state["h.0.mlp.c_fc.weight"].shape[0])


def import_cpm1(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    tp: int = 1,
    tokenizer: str | None = None,
    vocab_size: int | None = None,
    n_head: int | None = None,
) -> Path:
    """Convert a released CPM-1 checkpoint (DeepSpeed layout, any model parallelism) into a cpm checkpoint at ``tp``.

    The vocabulary size comes from ``vocab_size``, else the ``tokenizer`` (recorded in the
    run config for ``cpm generate``), else CPM-1's 30,000. ``n_head`` defaults to CPM-1's
    for its three hidden sizes (768: 12, 1024: 16, 2560: 32).
    """
    shards, step = read_megatron_checkpoint(checkpoint)
    state = merge_megatron(shards, str(checkpoint))
    missing = [n for n in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias") if n not in state]
    if missing:
        raise CpmError(f"{checkpoint}: not a CPM-1 GPT checkpoint (missing {', '.join(missing)})")
    tok_info: dict[str, Any] | None = None
    if tokenizer is not None:
        from cpm.tokenizer import Tokenizer

        tok = Tokenizer.load(tokenizer)
        tok_info = {"tokenizer": str(Path(tokenizer).resolve()), "tokenizer_fingerprint": tok.fingerprint}
        vocab_size = vocab_size or tok.vocab_size
    config = _cpm1_config(state, str(checkpoint), vocab_size or CPM1_VOCAB, n_head)
    run = {
        "imported_from": {"format": "cpm1-megatron-deepspeed", "path": str(Path(checkpoint).resolve()),
                          "model_parallel": len(shards), "iteration": step},
        "model": config.to_dict(),
        "tokenizer": tok_info,
    }
    final = save_weights_checkpoint(output, state, config, tp, step, run)
    log.info("imported %s (mp=%d, %d layers, %d hidden) to %s at tp=%d", checkpoint, len(shards), config.n_layer,
             config.d_model, final, tp)
    return final


def write_megatron_checkpoint(
    state: dict[str, torch.Tensor], output: str | os.PathLike[str], mp: int, iteration: int = 1000,
    vocab_multiple: int = 128, padding_fill: float = 0.0,
) -> Path:
    """Write cpm unsharded tensors in CPM-1's DeepSpeed/Megatron layout at model parallelism ``mp``.

    The inverse of :func:`import_cpm1` (the embedding padded to a multiple of
    ``vocab_multiple * mp`` with rows of ``padding_fill``): used to test the import, and
    to hand a cpm model to Megatron-era tools.
    """
    from cpm.trainer.parallel import shard_tensor

    reverse_top = {cpm: (meg, dim, chunks) for meg, (cpm, dim, chunks) in _TOP_MAP.items()}
    reverse_layer = {cpm: (meg, dim, chunks) for meg, (cpm, dim, chunks) in _LAYER_MAP.items()}
    full: dict[str, tuple[torch.Tensor, int | None, int]] = {}
    for name, tensor in state.items():
        if name in reverse_top:
            key, dim, chunks = reverse_top[name]
            if name == "wte.weight":
                step = vocab_multiple * mp
                padded = -(-tensor.shape[0] // step) * step
                tensor = torch.cat([tensor, tensor.new_full((padded - tensor.shape[0], tensor.shape[1]), padding_fill)])
        else:
            _, layer, rest = name.split(".", 2)
            key, dim, chunks = reverse_layer[rest]
            key = f"transformer.layers.{layer}.{key}"
        full[key] = (tensor, dim, chunks)
    out = Path(output)
    iter_dir = out / str(iteration)
    iter_dir.mkdir(parents=True, exist_ok=True)
    for rank in range(mp):
        module = {k: shard_tensor(t, d, rank, mp, c).clone() for k, (t, d, c) in full.items()}
        torch.save({"module": module, "mp_world_size": mp, "iteration": iteration}, iter_dir / f"mp_rank_{rank:02d}_model_states.pt")
    (out / "latest_checkpointed_iteration.txt").write_text(str(iteration), encoding="utf-8")
    return out
