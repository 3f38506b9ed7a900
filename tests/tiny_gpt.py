"""Helpers for the generate/eval/convert tests: a tiny SentencePiece vocabulary and tiny GPT checkpoints.

The vocabulary is trained here, in about a second, on the sentences of the bundled
``cpm eval choice`` samples (``trainer/tasks``), so these tests need nothing from ``../shared``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "trainer" / "tasks"


def train_tiny_vocab(path: Path) -> Path:
    """A CPM-style (cpm mode) SentencePiece model with ``<sep> <pad> <mask> <eod>``, about 570 pieces."""
    import sentencepiece as spm

    texts = []
    for task in sorted(TASKS.glob("*.jsonl")):
        for line in task.read_text("utf-8").splitlines():
            record = json.loads(line)
            for value in record.values():
                if isinstance(value, str) and len(value) > 1:
                    texts.append(value)
                elif isinstance(value, list):
                    texts.extend(v for v in value if isinstance(v, str))
    texts += ["今天天气不错，我们去公园散步吧。", "他说：“你好，世界！”"]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=600, model_type="unigram",
        hard_vocab_limit=False, character_coverage=1.0, user_defined_symbols=["<sep>", "<pad>", "<mask>", "<eod>"],
        minloglevel=2, num_threads=1, seed_sentencepiece_size=100000,
    )
    path.write_bytes(model.getvalue())
    return path


def task_texts(per_task: int) -> list[str]:
    """Real Chinese text shipped with cpm: the strings of the first ``per_task`` examples of each eval task sample."""
    lines = []
    for task in sorted(TASKS.glob("*.jsonl")):
        for line in task.read_text("utf-8").splitlines()[:per_task]:
            lines += [v for v in json.loads(line).values() if isinstance(v, str) and len(v) > 1]
    return lines


def train_tiny_lossless(root: Path, extra: list[str] = (), vocab_size: int = 650) -> Path:
    """A lossless tokenizer directory (``cpm tokenizer train``) trained on :func:`task_texts` (+ ``extra``)."""
    from cpm.tokenizer.evaluate import write_document_shard
    from cpm.tokenizer.train import train_tokenizer

    texts = [t for t in task_texts(6) + list(extra) if t.strip()] * 3
    write_document_shard(root / "corpus" / "shards" / "part-00000.arrow", texts)
    return train_tokenizer([root / "corpus"], root / "tok", vocab_size=vocab_size, mode="lossless", progress=False)


def tiny_config(vocab_size: int, **overrides):
    from cpm.trainer.model import GPTConfig

    values = dict(vocab_size=vocab_size, n_positions=64, n_layer=2, n_head=4, d_model=32, dropout=0.0)
    values.update(overrides)
    return GPTConfig(**values)


def tiny_model(vocab_size: int, seed: int = 0, **overrides):
    """A tp=1 GPT with random weights, biases and LayerNorm parameters too (so every tensor's mapping matters)."""
    from cpm.trainer.model import GPT

    model = GPT(tiny_config(vocab_size, **overrides))
    model.init_weights(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith("ln_"):
                p.add_(torch.randn(p.shape, generator=generator) * 0.1)
            elif name in ("wte.weight", "wpe.weight"):
                p.mul_(10.0)  # sharper distributions: greedy/eod tests see varied tokens
        model.wte.weight[vocab_size:] = 0.0  # padding rows stay zero
    return model.eval()


def save_run(run_dir: Path, model, tokenizer_path: Path, step: int = 5) -> Path:
    """Save ``model`` with the trainer's own checkpoint writer (tp=1), recording the tokenizer like ``cpm train``."""
    from cpm.tokenizer import Tokenizer
    from cpm.trainer.checkpoint import save_checkpoint
    from cpm.trainer.parallel import ParallelContext

    tok = Tokenizer.load(tokenizer_path)
    run = {"model": model.config.to_dict(),
           "tokenizer": {"tokenizer": str(tokenizer_path), "tokenizer_fingerprint": tok.fingerprint}}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(run), "utf-8")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return save_checkpoint(run_dir, step, model, optimizer, {"step": step, "rng": None, "loader": None}, run,
                           ParallelContext(), keep=2)


def save_run_tp(run_dir: Path, model, tokenizer_path: Path, tp: int, step: int = 5) -> Path:
    """The same weights as a checkpoint sharded at ``tp`` (the trainer's layout and sharding rule)."""
    from cpm.tokenizer import Tokenizer
    from cpm.trainer.checkpoint import unsharded_state_dict
    from cpm.trainer.convert import save_weights_checkpoint

    tmp = save_run(run_dir.with_name(run_dir.name + "-tp1"), model, tokenizer_path, step)
    state, config = unsharded_state_dict(tmp)
    tok = Tokenizer.load(tokenizer_path)
    run = {"model": config.to_dict(), "tokenizer": {"tokenizer": str(tokenizer_path), "tokenizer_fingerprint": tok.fingerprint}}
    return save_weights_checkpoint(run_dir, state, config, tp, step, run)
