"""The memory planner: its parameter count is the model's, its terms follow the options,
``cpm train --plan`` prints them without data, and bad options are one-line errors."""

from __future__ import annotations

import pytest

from cpm.cli import main
from cpm.trainer.memory import GIB, local_parameters, plan_memory, smallest_setup
from cpm.trainer.model import GPT, model_config
from cpm.trainer.parallel import ParallelContext


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_local_parameters_are_what_each_tp_rank_holds(tp):
    config = model_config("tiny", vocab_size=1000, n_positions=64)
    for rank in range(tp):
        model = GPT(config, ParallelContext(tp_world=tp, tp_rank=rank))
        assert local_parameters(config, tp) == sum(p.numel() for p in model.parameters())


def test_plan_terms_follow_the_options():
    config = model_config("large", vocab_size=30000)
    base = plan_memory(config, tp=2, dp=4, micro_batch=2)
    n = local_parameters(config, 2)
    assert (base.parameters, base.gradients, base.optimizer) == (4 * n, 4 * n, 8 * n)
    zero = plan_memory(config, tp=2, dp=4, micro_batch=2, zero=1)
    assert zero.optimizer == base.optimizer / 4 and zero.activations == base.activations
    ckpt = plan_memory(config, tp=2, dp=4, micro_batch=2, activation_checkpointing=True)
    assert ckpt.activations < base.activations / 4
    act = {mb: plan_memory(config, tp=2, micro_batch=mb).activations for mb in (1, 2, 4)}
    assert act[4] - act[2] == pytest.approx(2 * (act[2] - act[1]))  # linear in the micro-batch
    assert base.peak == base.parameters + base.gradients + base.optimizer + base.activations


def test_smallest_setups_grow_with_the_model():
    small = smallest_setup(model_config("small", vocab_size=30000), 24 * GIB)
    large = smallest_setup(model_config("large", vocab_size=30000), 24 * GIB)
    assert small.world == 1 and large.world > 1 and large.peak <= 0.9 * 24 * GIB
    assert smallest_setup(model_config("large", vocab_size=30000), 80 * GIB).world == 1


def test_plan_cli_prints_per_rank_memory_without_data(capsys):
    code = main(["train", "--plan", "--size", "large", "--tp", "2", "--world-size", "8", "--zero", "1",
                 "--micro-batch", "2", "--activation-checkpointing"])
    assert code == 0
    out = capsys.readouterr().out
    assert "tp 2 x dp 4 = 8 ranks" in out and "zero 1" in out
    rows = {line.rsplit(None, 1)[0]: float(line.rsplit(None, 1)[1]) for line in out.splitlines()[2:]}
    assert set(rows) == {"parameters (fp32)", "gradients (fp32)", "optimizer (AdamW moments, 1/4 each)", "activations", "peak"}
    assert rows["peak"] == pytest.approx(sum(v for k, v in rows.items() if k != "peak"), abs=0.02)
    assert rows["optimizer (AdamW moments, 1/4 each)"] == pytest.approx(rows["parameters (fp32)"] / 2, abs=0.01)


@pytest.mark.parametrize("flags, message", [
    (["--tp", "3", "--world-size", "8"], "--tp 3 must be positive and divide --world-size 8"),
    (["--tp", "8", "--size", "small"], "--tp 8 must divide the 12 attention heads"),
    (["--zero", "2"], "--zero must be 0"),
    (["--precision", "fp8"], "--precision must be"),
])
def test_plan_bad_options_are_one_line_errors(flags, message, capsys):
    assert main(["train", "--plan", *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_train_without_input_or_plan_is_an_error(capsys):
    assert main(["train", "--size", "tiny", "--output", "x"]) == 1
    assert "--input is required (or give --plan)" in capsys.readouterr().err
