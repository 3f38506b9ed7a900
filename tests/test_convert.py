"""``cpm export hf`` and ``cpm import cpm1``: logits equal to cpm's after each conversion."""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import numpy as np

import pytest
import torch

from tiny_gpt import save_run, save_run_tp, tiny_model, train_tiny_vocab


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from cpm.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("convert")
    vocab = train_tiny_vocab(root / "tiny.model")
    tok = Tokenizer.load(vocab)
    # d_ff != 4 * d_model and n_positions != 1024 so that every config field is exercised
    model = tiny_model(tok.vocab_size, seed=11, d_ff=48, n_positions=40)
    run = root / "run"
    save_run(run, model, vocab)
    run_tp2 = root / "run-tp2"
    save_run_tp(run_tp2, model, vocab, tp=2)
    idx = torch.randint(0, tok.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(idx)
    return {"tok": tok, "vocab": vocab, "model": model, "run": run, "run_tp2": run_tp2, "root": root, "idx": idx, "logits": logits}


# ------------------------------------------------------------------------------ export


@pytest.mark.parametrize("which", ["run", "run_tp2"])
def test_export_hf_logits_equal(setup, which, tmp_path):
    transformers = pytest.importorskip("transformers")
    from safetensors import safe_open

    from cpm.cli import main

    out = tmp_path / "hf"
    assert main(["-q", "export", "hf", "--checkpoint", str(setup[which]), "--output", str(out)]) == 0
    config = json.loads((out / "config.json").read_text("utf-8"))
    tok = setup["tok"]
    assert config["activation_function"] == "gelu_new" and config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (tok.eod_id, tok.eod_id, tok.pad_id)
    assert config["vocab_size"] == tok.vocab_size and config["n_inner"] == 48 and config["n_positions"] == 40
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        assert f.metadata()["format"] == "pt"
    assert "lm_head.weight" not in names and "transformer.h.1.attn.c_attn.weight" in names

    hf = transformers.GPT2LMHeadModel.from_pretrained(str(out), local_files_only=True).eval()
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied
    with torch.no_grad():
        hf_logits = hf(setup["idx"]).logits
    assert hf_logits.dtype == torch.float32
    torch.testing.assert_close(hf_logits, setup["logits"], atol=1e-4, rtol=0)
    # greedy decoding agrees too (HF's own KV cache against cpm's), stopping at the same <eod>
    from cpm.trainer.generate import generate

    prompt = [tok.eod_id] + tok.encode("今天天气不错")
    ours = generate(setup["model"], [prompt], max_new_tokens=8, temperature=0, eod_id=tok.eod_id, pad_id=tok.pad_id)[0]
    theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0, len(prompt):].tolist()
    assert theirs[: len(ours.tokens)] == ours.tokens and (ours.finish_reason == "length" or theirs[len(ours.tokens)] == tok.eod_id)

    # the tokenizer files travel with the model and tokenize exactly as cpm's
    from cpm.tokenizer import Tokenizer

    copied = Tokenizer.load(out / "cpm_tokenizer" / setup["vocab"].name)
    assert copied.fingerprint == tok.fingerprint
    assert "trust_remote_code=True" in (out / "README.md").read_text("utf-8")


def test_hf_state_dict_round_trip(setup):
    from cpm.trainer.checkpoint import unsharded_state_dict
    from cpm.trainer.convert import from_hf_state_dict, to_hf_state_dict

    state, _ = unsharded_state_dict(setup["run"])
    hf = to_hf_state_dict(state)
    assert hf["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D: [in, out]
    assert hf["transformer.h.0.mlp.c_fc.weight"].shape == (32, 48)
    back = from_hf_state_dict(hf)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_export_needs_a_tokenizer(setup, tmp_path, capsys):
    from cpm.cli import main
    from cpm.trainer.checkpoint import unsharded_state_dict
    from cpm.trainer.convert import save_weights_checkpoint

    state, config = unsharded_state_dict(setup["run"])
    bare = tmp_path / "bare"
    save_weights_checkpoint(bare, state, config, 1, 1, {"model": config.to_dict()})
    assert main(["export", "hf", "-c", str(bare), "-o", str(tmp_path / "hf")]) == 1
    assert "records no tokenizer; give --tokenizer" in capsys.readouterr().err
    assert main(["-q", "export", "hf", "-c", str(bare), "-o", str(tmp_path / "hf"), "--tokenizer", str(setup["vocab"])]) == 0


def test_export_refuses_a_non_empty_output(setup, tmp_path, capsys):
    from cpm.cli import main

    out = tmp_path / "hf"
    out.mkdir()
    (out / "old-weights.bin").write_text("from another model")
    command = ["-q", "export", "hf", "-c", str(setup["run"]), "-o", str(out)]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and is not empty (use --overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["old-weights.bin"]
    assert main([*command, "--overwrite"]) == 0  # replaced as a whole, not mixed in
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "cpm_sentencepiece.model", "cpm_tokenizer", "generation_config.json",
                                                   "model.safetensors", "tokenization_cpm_jieba.py", "tokenizer_config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary directory left
    assert main(["-q", "export", "hf", "-c", str(setup["run"]), "-o", str(setup["root"]), "--overwrite"]) == 1
    assert "holds the input" in capsys.readouterr().err


# ------------------------------------------------------------------------------ CPM-1 import


MEGATRON_LAYER = {  # cpm name -> (Megatron name, how a model-parallel rank slices it)
    "ln_1": ("input_layernorm", "replicated"),
    "attn.c_attn": ("attention.query_key_value", "qkv"),
    "attn.c_proj": ("attention.dense", "rows_in"),
    "ln_2": ("post_attention_layernorm", "replicated"),
    "mlp.c_fc": ("mlp.dense_h_to_4h", "out"),
    "mlp.c_proj": ("mlp.dense_4h_to_h", "rows_in"),
}


def write_cpm1_by_hand(model, out: Path, mp: int, padded_rows: int, iteration: int = 8000) -> None:
    """The released CPM-1 layout, written out slice by slice from the model's tensors.

    Independent of :mod:`cpm.trainer.convert`: rank r holds vocabulary rows
    ``[r*P/mp, (r+1)*P/mp)`` of the padded embedding (padding rows filled with noise, as a
    trained Megatron model has), ``[q_r; k_r; v_r]`` of the fused QKV weight and bias, its
    column block of ``attention.dense``/``dense_4h_to_h`` and its row block of ``dense_h_to_4h``.
    """
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    vocab = model.config.vocab_size
    wte = params["wte.weight"][:vocab]
    noise = torch.randn(padded_rows - vocab, wte.shape[1], generator=torch.Generator().manual_seed(5))
    wte = torch.cat([wte, noise])
    (out / str(iteration)).mkdir(parents=True)
    for r in range(mp):
        def part(t: torch.Tensor, dim: int) -> torch.Tensor:
            size = t.shape[dim] // mp
            return t.narrow(dim, r * size, size).clone()

        module = {
            "word_embeddings.weight": part(wte, 0),
            "position_embeddings.weight": params["wpe.weight"],
            "transformer.final_layernorm.weight": params["ln_f.weight"],
            "transformer.final_layernorm.bias": params["ln_f.bias"],
        }
        for layer in range(model.config.n_layer):
            for cpm_name, (meg_name, rule) in MEGATRON_LAYER.items():
                for kind in ("weight", "bias"):
                    t = params[f"h.{layer}.{cpm_name}.{kind}"]
                    if rule == "qkv":
                        q, k, v = t.chunk(3, 0)
                        t = torch.cat([part(q, 0), part(k, 0), part(v, 0)])
                    elif rule == "out":
                        t = part(t, 0)
                    elif rule == "rows_in" and kind == "weight":
                        t = part(t, 1)
                    module[f"transformer.layers.{layer}.{meg_name}.{kind}"] = t.half()  # released weights are fp16
        # what Megatron/DeepSpeed save besides the weights: args and the RNG states (numpy's too)
        extras = {"args": argparse.Namespace(num_layers=model.config.n_layer, hidden_size=model.config.d_model),
                  "np_rng_state": np.random.RandomState(r).get_state(), "random_rng_state": random.Random(r).getstate(),
                  "torch_rng_state": torch.get_rng_state(), "csr_tensor_module_names": set()}
        torch.save({"module": module, "iteration": iteration, "mp_world_size": mp, **extras},
                   out / str(iteration) / f"mp_rank_{r:02d}_model_states.pt")
    (out / "latest_checkpointed_iteration.txt").write_text(f"{iteration}\n", "utf-8")


@pytest.fixture(scope="module")
def fp16_model(setup):
    """The test model with weights rounded to fp16 (what the released checkpoint stores)."""
    model = tiny_model(setup["tok"].vocab_size, seed=11, d_ff=48, n_positions=40)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
        logits = model(setup["idx"])
    return model, logits


@pytest.mark.parametrize("mp,padded_rows", [(2, 768), (1, None)])
def test_import_cpm1_logits_equal(setup, fp16_model, tmp_path, mp, padded_rows, capsys):
    from cpm.cli import main
    from cpm.trainer.checkpoint import load_model, read_checkpoint_config, resolve_checkpoint

    model, expected = fp16_model
    vocab = setup["tok"].vocab_size
    released = tmp_path / "CPM-tiny"
    # mp=2: the embedding padded (Megatron: a multiple of 128 * mp) with noise rows that the
    # import must drop; mp=1: exactly the vocabulary, which cpm must pad itself
    write_cpm1_by_hand(model, released, mp, padded_rows or vocab)
    for tp in (1, 2):
        out = tmp_path / f"imported-tp{tp}"
        args = ["-q", "import", "cpm1", "--checkpoint", str(released), "--output", str(out), "--tp", str(tp),
                "--tokenizer", str(setup["vocab"]), "--n-head", "4"]
        assert main(args) == 0
        ckpt = resolve_checkpoint(out)
        meta = read_checkpoint_config(ckpt)
        assert ckpt.name == "step-008000" and meta["tp"] == tp and meta["model"]["vocab_size"] == vocab
        assert sorted(p.name for p in ckpt.glob("model-tp*.pt")) == [f"model-tp{r:02d}-of-{tp:02d}.pt" for r in range(tp)]
        loaded, config = load_model(out)
        assert (config.n_layer, config.d_model, config.d_ff, config.n_positions) == (2, 32, 48, 40)
        with torch.no_grad():
            torch.testing.assert_close(loaded(setup["idx"]), expected, atol=1e-5, rtol=0)
    # the imported run generates with the recorded tokenizer
    capsys.readouterr()
    assert main(["-q", "generate", "-c", str(tmp_path / "imported-tp2"), "--prompt", "今天", "--max-new-tokens", "3",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("今天")


def test_import_errors(setup, fp16_model, tmp_path, capsys):
    from cpm.cli import main

    model, _ = fp16_model
    released = tmp_path / "CPM-tiny"
    write_cpm1_by_hand(model, released, 1, setup["tok"].vocab_size)
    out = str(tmp_path / "o")
    # d_model 32 is no CPM-1 size: the number of heads must be given
    assert main(["import", "cpm1", "-c", str(released), "-o", out, "--tokenizer", str(setup["vocab"])]) == 1
    assert "--n-head" in capsys.readouterr().err
    # an embedding smaller than the vocabulary
    assert main(["import", "cpm1", "-c", str(released), "-o", out, "--vocab-size", "5000", "--n-head", "4"]) == 1
    assert "fewer than the vocabulary of 5000" in capsys.readouterr().err
    (released / "latest_checkpointed_iteration.txt").write_text("9999", "utf-8")
    assert main(["import", "cpm1", "-c", str(released), "-o", out, "--n-head", "4"]) == 1
    assert "9999" in capsys.readouterr().err
    assert main(["import", "cpm1", "-c", str(tmp_path), "-o", out]) == 1
    assert "not a CPM-1 checkpoint" in capsys.readouterr().err


class _Hostile:
    """A pickle that would run code when loaded without weights_only."""

    def __reduce__(self):
        return (Path.touch, (Path(_Hostile.marker),))


def test_import_cpm1_runs_no_pickled_code(setup, fp16_model, tmp_path, capsys):
    from cpm.cli import main

    released = tmp_path / "CPM-evil"
    write_cpm1_by_hand(fp16_model[0], released, 1, setup["tok"].vocab_size)
    shard = released / "8000" / "mp_rank_00_model_states.pt"
    blob = torch.load(shard, weights_only=False)
    _Hostile.marker = str(tmp_path / "pwned")
    torch.save(blob | {"payload": _Hostile()}, shard)
    assert main(["import", "cpm1", "-c", str(released), "-o", str(tmp_path / "o"), "--n-head", "4"]) == 1
    err = capsys.readouterr().err
    assert f"{shard}: cannot read" in err and err.count("\n") == 1
    assert not (tmp_path / "pwned").exists()


def test_megatron_writer_round_trip(setup, tmp_path):
    """cpm -> CPM-1 layout (write_megatron_checkpoint) -> cpm gives the same tensors."""
    from cpm.trainer.checkpoint import unsharded_state_dict
    from cpm.trainer.convert import import_cpm1, write_megatron_checkpoint

    state, config = unsharded_state_dict(setup["run"])
    write_megatron_checkpoint(state, tmp_path / "meg", mp=2, iteration=3, padding_fill=1.0)
    import_cpm1(tmp_path / "meg", tmp_path / "back", tp=1, vocab_size=config.vocab_size, n_head=config.n_head)
    back, back_config = unsharded_state_dict(tmp_path / "back")
    assert back_config.to_dict() | {"dropout": 0.0} == config.to_dict()  # imports get CPM-1's dropout 0.1
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_megatron_writer_layout_of_a_hand_built_state_dict(tmp_path):
    """Every tensor of each model-parallel file, against slices written out by hand (d_model 4,
    2 heads, d_ff 8, vocabulary 5 padded to 8 rows at mp=2 and vocab_multiple 2)."""
    from cpm.trainer.convert import write_megatron_checkpoint

    shapes = {"wte.weight": (5, 4), "wpe.weight": (3, 4), "ln_f.weight": (4,), "ln_f.bias": (4,),
              "h.0.ln_1.weight": (4,), "h.0.ln_1.bias": (4,), "h.0.attn.c_attn.weight": (12, 4),
              "h.0.attn.c_attn.bias": (12,), "h.0.attn.c_proj.weight": (4, 4), "h.0.attn.c_proj.bias": (4,),
              "h.0.ln_2.weight": (4,), "h.0.ln_2.bias": (4,), "h.0.mlp.c_fc.weight": (8, 4), "h.0.mlp.c_fc.bias": (8,),
              "h.0.mlp.c_proj.weight": (4, 8), "h.0.mlp.c_proj.bias": (4,)}
    state = {name: torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape) + 1000 * i
             for i, (name, shape) in enumerate(shapes.items())}  # every value different
    write_megatron_checkpoint(state, tmp_path / "meg", mp=2, iteration=3, vocab_multiple=2, padding_fill=-1.0)
    assert (tmp_path / "meg" / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    qkv_rows = [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]  # rank r: its head of Q, of K and of V
    wte = torch.cat([state["wte.weight"], torch.full((3, 4), -1.0)])
    for rank in range(2):
        saved = torch.load(tmp_path / "meg" / "3" / f"mp_rank_{rank:02d}_model_states.pt", weights_only=True)
        assert (saved["mp_world_size"], saved["iteration"]) == (2, 3)
        half = slice(2 * rank, 2 * rank + 2)
        expected = {
            "word_embeddings.weight": wte[4 * rank : 4 * rank + 4],
            "position_embeddings.weight": state["wpe.weight"],
            "transformer.final_layernorm.weight": state["ln_f.weight"],
            "transformer.final_layernorm.bias": state["ln_f.bias"],
            "transformer.layers.0.input_layernorm.weight": state["h.0.ln_1.weight"],
            "transformer.layers.0.input_layernorm.bias": state["h.0.ln_1.bias"],
            "transformer.layers.0.attention.query_key_value.weight": state["h.0.attn.c_attn.weight"][qkv_rows[rank]],
            "transformer.layers.0.attention.query_key_value.bias": state["h.0.attn.c_attn.bias"][qkv_rows[rank]],
            "transformer.layers.0.attention.dense.weight": state["h.0.attn.c_proj.weight"][:, half],
            "transformer.layers.0.attention.dense.bias": state["h.0.attn.c_proj.bias"],
            "transformer.layers.0.post_attention_layernorm.weight": state["h.0.ln_2.weight"],
            "transformer.layers.0.post_attention_layernorm.bias": state["h.0.ln_2.bias"],
            "transformer.layers.0.mlp.dense_h_to_4h.weight": state["h.0.mlp.c_fc.weight"][4 * rank : 4 * rank + 4],
            "transformer.layers.0.mlp.dense_h_to_4h.bias": state["h.0.mlp.c_fc.bias"][4 * rank : 4 * rank + 4],
            "transformer.layers.0.mlp.dense_4h_to_h.weight": state["h.0.mlp.c_proj.weight"][:, 4 * rank : 4 * rank + 4],
            "transformer.layers.0.mlp.dense_4h_to_h.bias": state["h.0.mlp.c_proj.bias"],
        }
        assert set(saved["module"]) == set(expected)
        for key, tensor in expected.items():
            assert torch.equal(saved["module"][key], tensor), (rank, key)


def test_export_with_the_cpm1_vocabulary(cpm1_model, tmp_path):
    """With the original CPM-1 vocabulary: bos/eos = <eod> = 7 and pad = <pad> = 5 (not GPT-2's 50256)."""
    from cpm.cli import main

    model = tiny_model(30000, seed=2, n_layer=1)
    save_run(tmp_path / "run", model, cpm1_model)
    assert main(["-q", "export", "hf", "-c", str(tmp_path / "run"), "-o", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text("utf-8"))
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"], config["vocab_size"]) == (7, 7, 5, 30000)
    assert (tmp_path / "hf" / "cpm_tokenizer" / "chinese_vocab.model").is_file()
