"""Pieces of ``cpm.trainer.parallel`` in one process: RNG streams, seeds, padding, clipping at TP = 1."""

from __future__ import annotations

import pytest
import torch

from cpm.errors import CpmError
from cpm.trainer.model import GPT, GPTConfig
from cpm.trainer.parallel import (
    ModelParallelRNG,
    ParallelContext,
    _mark,
    clip_gradients,
    grad_norm,
    init_parallel,
    padded_vocab_size,
    parameter_seed,
    seed_everything,
    shard_tensor,
    unshard_tensors,
)


def _draws(seed: int, count: int) -> torch.Tensor:
    return torch.rand(count, generator=torch.Generator().manual_seed(seed))


def test_fork_draws_from_its_own_stream_and_leaves_the_default_one_alone():
    rng = ModelParallelRNG("cpu")
    rng.seed(5)
    torch.manual_seed(9)
    with rng.fork():
        first = torch.rand(3)
    default = torch.rand(2)
    with rng.fork():
        second = torch.rand(3)
    torch.testing.assert_close(torch.cat([first, second]), _draws(5, 6), rtol=0, atol=0)  # one stream, continued
    torch.testing.assert_close(torch.cat([default, torch.rand(2)]), _draws(9, 4), rtol=0, atol=0)  # untouched


def test_an_unseeded_fork_uses_seed_2718_and_states_are_copies():
    rng = ModelParallelRNG("cpu")
    assert rng.get_state() is None
    with rng.fork():
        torch.testing.assert_close(torch.rand(2), _draws(2718, 2), rtol=0, atol=0)
    state = rng.get_state()
    state.zero_()  # a copy: the tracker's state is unchanged
    with rng.fork():
        torch.testing.assert_close(torch.rand(2), _draws(2718, 4)[2:], rtol=0, atol=0)
    saved = rng.get_state()
    rng.set_state(saved)
    saved.zero_()
    with rng.fork():
        torch.testing.assert_close(torch.rand(1), _draws(2718, 5)[4:], rtol=0, atol=0)
    rng.set_state(None)
    assert rng.get_state() is None


def test_seed_everything_per_rank():
    rng = ModelParallelRNG("cpu")
    seed_everything(11, ParallelContext(tp_world=2, tp_rank=1, dp_world=3, dp_rank=2), rng)
    torch.testing.assert_close(torch.rand(2), _draws(11 + 2000, 2), rtol=0, atol=0)  # differs across DP ranks
    with rng.fork():
        torch.testing.assert_close(torch.rand(2), _draws(11 + 2718 + 1, 2), rtol=0, atol=0)  # and across TP ranks


def test_parameter_seeds_depend_on_seed_and_name_only():
    seeds = {parameter_seed(s, n) for s in (0, 1, 2) for n in ("wte.weight", "h.0.attn.c_attn.weight", "ln_f.bias")}
    assert len(seeds) == 9 and all(0 <= s < 2**63 for s in seeds)
    assert parameter_seed(1, "wte.weight") == parameter_seed(1, "wte.weight")


def test_parameter_seeds_are_stable_across_versions():
    """Pinned values: a model initialised from a seed stays the same model in later versions of cpm
    (these are the seeds of its checkpoints' and of the papers' reproductions)."""
    assert parameter_seed(0, "wte.weight") == 3956702386
    assert parameter_seed(7, "h.0.attn.c_attn.weight") == 815584718
    assert parameter_seed(2**61, "ln_f.bias") == 6917529030044255660  # reduced below 2**63 (not 2**62)


@pytest.mark.parametrize("vocab, tp, multiple, padded", [
    (30000, 1, 128, 30080), (30000, 2, 128, 30208), (30000, 4, 128, 30208), (256, 2, 128, 256), (257, 1, 128, 384),
    (1100, 2, 128, 1280), (10, 3, 4, 12),
])
def test_padded_vocab_size(vocab, tp, multiple, padded):
    assert padded_vocab_size(vocab, tp, multiple) == padded
    assert padded % (multiple * tp) == 0 and padded - vocab < multiple * tp


def test_init_parallel_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_parallel(1)
    assert ctx == ParallelContext(tp_world=1, tp_rank=0, dp_world=1, dp_rank=0, rank=0, world=1, tp_group=None, dp_group=None)
    assert (ctx.world, ctx.tp_world, ctx.dp_world, ctx.tp_group, ctx.dp_group, ctx.is_main) == (1, 1, 1, None, None, True)
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(CpmError, match="--tp 2 does not divide the world size 3"):
        init_parallel(2)


CONFIG = GPTConfig(vocab_size=120, n_positions=8, n_layer=1, n_head=2, d_model=16, dropout=0.0)


def _model_with_grads(seed: int = 0) -> GPT:
    model = GPT(CONFIG)
    model.init_weights(seed)
    batch = torch.randint(0, CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(seed))
    model(batch[:, :-1], batch[:, 1:]).backward()
    return model


def test_shard_tensor_takes_the_rank_s_part_of_each_chunk():
    full = torch.arange(8)
    assert shard_tensor(full, 0, 1, 2).tolist() == [4, 5, 6, 7]
    assert shard_tensor(full, 0, 1, 2, chunks=2).tolist() == [2, 3, 6, 7]  # blocks [0..3], [4..7]: second half of each
    assert shard_tensor(full, 0, 0, 4, chunks=2).tolist() == [0, 4]
    assert shard_tensor(full, None, 1, 2).tolist() == full.tolist() and shard_tensor(full, 0, 0, 1, chunks=2) is full
    for chunks in (1, 2):
        shards = [shard_tensor(full, 0, r, 2, chunks) for r in range(2)]
        assert unshard_tensors(shards, 0, chunks).tolist() == full.tolist()
    assert unshard_tensors([full], 0, 2).tolist() == unshard_tensors([full, full + 1], None).tolist() == full.tolist()


def test_clipping_leaves_gradients_below_the_epsilon_alone():
    """A norm below the 1e-6 guard (vanishing gradients) must not flip or blow up the gradients."""
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in range(2)]
    for p in params:
        p.grad = torch.full((3,), 4e-8)
    norm = clip_gradients(params, 0.5, ParallelContext())
    assert float(norm) == pytest.approx(4e-8 * 6**0.5, rel=1e-5)
    for p in params:
        torch.testing.assert_close(p.grad, torch.full((3,), 4e-8), rtol=0, atol=0)


@pytest.mark.parametrize("max_norm", [0.01, 0.5, 1e6])
def test_clipping_at_tp1_matches_clip_grad_norm(max_norm):
    ours, reference = _model_with_grads(), _model_with_grads()
    norm = clip_gradients(list(ours.parameters()), max_norm, ParallelContext())
    expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm)
    torch.testing.assert_close(norm, expected, rtol=1e-6, atol=0)
    for p, q in zip(ours.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-9)


def test_grad_norm_counts_only_parameters_with_gradients():
    model = _model_with_grads()
    params = list(model.parameters())
    expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    torch.testing.assert_close(grad_norm(params, ParallelContext()), expected, rtol=1e-6, atol=0)
    replicated = [p for p in params if p.tp_split_dim is None]
    split = [p for p in params if p.tp_split_dim is not None]
    assert replicated and split
    for subset in (replicated, split):  # either kind alone
        expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in subset]))
        torch.testing.assert_close(grad_norm(subset, ParallelContext()), expected, rtol=1e-6, atol=0)
    for p in split:
        p.grad = None
    torch.testing.assert_close(grad_norm(params, ParallelContext()),
                               torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in replicated])), rtol=1e-6, atol=0)


def test_grad_norm_of_one_parameter_is_the_norm_of_its_gradient():
    for dim in (None, 0):  # replicated or split, alone
        param = _mark(torch.nn.Parameter(torch.zeros(3, 4)), dim)
        param.grad = torch.arange(12.0).view(3, 4)
        torch.testing.assert_close(grad_norm([param], ParallelContext()), param.grad.norm(), rtol=1e-6, atol=0)
