"""Checkpoints in one process: what is saved is what is restored (optimizer hyperparameters too)."""

from __future__ import annotations

import pytest
import torch

from cpm.trainer.checkpoint import load_training_state, rotated_checkpoints, save_checkpoint
from cpm.trainer.model import GPT, GPTConfig
from cpm.trainer.parallel import ParallelContext
from cpm.trainer.train import TrainConfig, build_optimizer, train_step

CONFIG = GPTConfig(vocab_size=200, n_positions=16, n_layer=1, n_head=2, d_model=32, dropout=0.0)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _trained(cfg: TrainConfig) -> tuple[GPT, torch.optim.Optimizer]:
    model = GPT(CONFIG)
    model.init_weights(3)
    optimizer = build_optimizer(model, cfg, "cpu")
    batch = torch.randint(0, CONFIG.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    train_step(model, optimizer, [batch], ParallelContext(), lr=1e-3)
    return model, optimizer


def test_optimizer_hyperparameters_and_moments_are_restored(tmp_path):
    saved_cfg = TrainConfig(weight_decay=0.05, beta1=0.8, beta2=0.95, adam_eps=1e-6)
    model, optimizer = _trained(saved_cfg)
    state = {"step": 1, "tokens_seen": 32, "scaler": None, "rng": None, "loader": {"index": 2}}
    ckpt = save_checkpoint(tmp_path / "run", 1, model, optimizer, state, {}, ParallelContext())

    fresh = GPT(CONFIG)
    fresh_optimizer = build_optimizer(fresh, TrainConfig(), "cpu")  # other hyperparameters
    loaded = load_training_state(ckpt, fresh, fresh_optimizer, ParallelContext())
    assert (loaded["step"], loaded["tokens_seen"], loaded["loader"]) == (1, 32, {"index": 2})
    for group, expected in zip(fresh_optimizer.param_groups, optimizer.param_groups):
        for key in ("lr", "betas", "eps", "weight_decay"):
            assert group[key] == expected[key], key
    assert {g["weight_decay"] for g in fresh_optimizer.param_groups} == {0.0, 0.05}  # no decay on biases, LayerNorm
    params = dict(fresh.named_parameters())
    for name, p in model.named_parameters():
        assert torch.equal(params[name], p), name
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(fresh_optimizer.state[params[name]][key], optimizer.state[p][key]), (name, key)


def test_keep_0_keeps_every_checkpoint(tmp_path):
    for step in (1, 2, 3):
        (tmp_path / f"step-{step:06d}").mkdir()
    assert rotated_checkpoints(tmp_path, tmp_path / "step-000003", keep=0) == []
    assert rotated_checkpoints(tmp_path, tmp_path / "step-000003", keep=1) == [tmp_path / "step-000001", tmp_path / "step-000002"]


def test_a_truncated_shard_is_a_one_line_error(tmp_path):
    from cpm.errors import CpmError
    from cpm.trainer.checkpoint import load_model

    model, optimizer = _trained(TrainConfig())
    state = {"step": 1, "tokens_seen": 0, "scaler": None, "rng": None, "loader": None}
    ckpt = save_checkpoint(tmp_path / "run", 1, model, optimizer, state, {}, ParallelContext())
    shard = ckpt / "model-tp00-of-01.pt"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CpmError, match=r"model-tp00-of-01\.pt: corrupted checkpoint file: 100 bytes, checksums\.json says"):
        load_model(tmp_path / "run")
    (ckpt / "checksums.json").unlink()  # a checkpoint of an older cpm, without checksums: torch.load fails
    with pytest.raises(CpmError) as error:
        load_model(tmp_path / "run")
    message = str(error.value)
    assert message.startswith(f"{shard}: cannot read checkpoint shard (") and "\n" not in message
    shard.unlink()
    with pytest.raises(CpmError, match="missing checkpoint shard"):
        load_model(tmp_path / "run")
