"""The GPT in one process: sizes, init, KV cache, loss, checkpointed recompute, overfitting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cpm.errors import CpmError
from cpm.trainer.model import GPT, KVCache, count_parameters, model_config
from cpm.trainer.parallel import ParallelContext, padded_vocab_size, shard_tensor, unshard_tensors, vocab_parallel_cross_entropy
from cpm.trainer.train import TrainConfig, build_optimizer, check_memory, estimate_memory, lr_at, train_step

pytestmark = pytest.mark.usefixtures("torch_one_thread")


SMALL = dict(vocab_size=1000, n_positions=32, n_layer=2, n_head=4, d_model=64)


@pytest.mark.parametrize("size, paper", [("small", 109e6), ("medium", 334e6), ("large", 2.6e9)])
def test_sizes_match_cpm1_table1(size, paper):
    config = model_config(size, vocab_size=30000)
    assert abs(count_parameters(config) - paper) / paper < 0.01
    assert config.n_positions == 1024 and config.dropout == 0.1 and config.layer_norm_eps == 1e-5


def test_parameter_count_matches_the_module():
    model = GPT(model_config("tiny", **SMALL))
    padding = (model.padded_vocab - 1000) * 64
    assert sum(p.numel() for p in model.parameters()) == count_parameters(model.config) + padding


def test_vocab_padding():
    assert padded_vocab_size(30000, 1) == 30080
    assert padded_vocab_size(30000, 2) == 30208
    assert padded_vocab_size(30000, 8) % (128 * 8) == 0


def test_init_is_deterministic_with_scaled_residual_projections():
    config = model_config("tiny", vocab_size=1000, n_layer=8)
    a, b = GPT(config), GPT(config)
    a.init_weights(1)
    b.init_weights(1)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    std = a.h[0].attn.c_proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert a.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(a.wte.weight[1000:]) == 0  # padding rows
    assert torch.all(a.h[0].attn.c_attn.bias == 0) and torch.all(a.ln_f.weight == 1)


def test_shard_unshard_round_trip_keeps_whole_heads():
    full = torch.arange(3 * 8 * 2, dtype=torch.float32).view(3 * 8, 2)  # fused [q; k; v], 8 rows each
    shards = [shard_tensor(full, 0, r, 2, chunks=3) for r in range(2)]
    assert torch.equal(shards[0][:4], full[:4]) and torch.equal(shards[0][4:8], full[8:12])  # q and k halves
    assert torch.equal(unshard_tensors(shards, 0, chunks=3), full)


def test_tied_embeddings_and_no_output_bias():
    model = GPT(model_config("tiny", **SMALL))
    names = [n for n, _ in model.named_parameters()]
    assert "wte.weight" in names and not any("lm_head" in n for n in names)


def test_kv_cache_matches_the_uncached_forward():
    model = GPT(model_config("tiny", **SMALL)).eval()
    model.init_weights(3)
    idx = torch.randint(0, 1000, (2, 20))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(model.config.n_layer)
        parts = [model(idx[:, :9], kv_cache=cache), model(idx[:, 9:15], kv_cache=cache)]
        parts += [model(idx[:, t : t + 1], kv_cache=cache) for t in range(15, 20)]
    assert full.shape == (2, 20, 1000)
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_vocab_parallel_cross_entropy_single_rank_matches_torch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 300, generator=gen).requires_grad_(True)
    target = torch.randint(0, 300, (50,), generator=gen)
    ours = vocab_parallel_cross_entropy(logits, target)
    (grad,) = torch.autograd.grad(ours.sum(), logits)
    theirs = F.cross_entropy(logits, target, reduction="none")
    (expected,) = torch.autograd.grad(theirs.sum(), logits)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    assert torch.allclose(grad, expected, atol=1e-6, rtol=0)


def test_activation_checkpointing_replays_dropout_exactly():
    config = model_config("tiny", **SMALL, dropout=0.1)
    batch = torch.randint(0, 1000, (2, 33))
    grads = []
    for checkpointing in (False, True):
        model = GPT(config)
        model.init_weights(5)
        model.rng.seed(99)
        model.activation_checkpointing = checkpointing
        torch.manual_seed(0)
        model(batch[:, :-1], batch[:, 1:]).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-6), name


def test_a_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = GPT(model_config("tiny", **SMALL, dropout=0.0))
    model.init_weights(0)
    optimizer = build_optimizer(model, TrainConfig(), "cpu")
    batch = torch.randint(0, 1000, (2, 17))
    losses = [train_step(model, optimizer, [batch], ParallelContext(), lr=1e-2)["loss"] for _ in range(30)]
    assert losses[0] > 6.5 and losses[-1] < 0.2, losses[::5]


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1.5e-4, min_lr=1e-5, warmup_steps=5000, max_steps=20000)
    assert lr_at(0, cfg) == pytest.approx(1.5e-4 / 5000)
    assert lr_at(4999, cfg) == pytest.approx(1.5e-4)
    assert lr_at(12500, cfg) == pytest.approx((1.5e-4 + 1e-5) / 2)
    assert lr_at(20000, cfg) == pytest.approx(1e-5)


def test_large_fails_fast_when_it_cannot_fit(monkeypatch):
    """The free memory is set here, not read from the host, so this runs the same everywhere."""
    from cpm.trainer import memory as memory_module

    config = model_config("large", vocab_size=30000)
    need = estimate_memory(config, 1, 1, 1024, "fp32")["total"]
    assert 40e9 < need < 60e9  # 2.6B x 16 bytes + activations
    assert estimate_memory(config, 8, 1, 1024, "fp32")["total"] < need / 6
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cfg = TrainConfig(size="large", micro_batch=1, precision="fp32")
    monkeypatch.setattr(memory_module, "available_memory", lambda device: 32 * 1024**3)
    with pytest.raises(CpmError, match=r"--size large needs about \d+\.\d GiB .* only 32\.0 GiB is free; use --tp 2 "):
        check_memory(config, cfg, 1024, torch.device("cpu"), ParallelContext())
    monkeypatch.setattr(memory_module, "available_memory", lambda device: 2 * need)
    check_memory(config, cfg, 1024, torch.device("cpu"), ParallelContext())  # fits: no error
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four ranks of one machine share its RAM
    with pytest.raises(CpmError, match="--size large needs about"):
        check_memory(config, cfg, 1024, torch.device("cpu"), ParallelContext())


def test_fp16_overflow_skips_the_step_and_halves_the_scale():
    from cpm.trainer.train import DynamicLossScaler

    model = GPT(model_config("tiny", **SMALL, dropout=0.0))
    model.init_weights(0)
    optimizer = build_optimizer(model, TrainConfig(), "cpu")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    scaler = DynamicLossScaler(init_scale=2.0**200)  # any gradient overflows fp32 at this scale
    batch = torch.randint(0, 1000, (2, 17))
    out = train_step(model, optimizer, [batch], ParallelContext(), lr=1e-3, precision="fp16", scaler=scaler)
    assert out["skipped"] and out["grad_norm"] is None and scaler.scale == 2.0**199
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    scaler.scale = 2.0**10
    out = train_step(model, optimizer, [batch], ParallelContext(), lr=1e-3, precision="fp16", scaler=scaler)
    assert not out["skipped"] and math.isfinite(out["loss"]) and out["grad_norm"] > 0
    assert not torch.equal(model.h[0].mlp.c_fc.weight, before["h.0.mlp.c_fc.weight"])
