"""The Hugging Face tokenizer that ``cpm export hf`` ships: loads with AutoTokenizer, equals cpm.tokenizer in both modes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tiny_gpt import save_run, task_texts, tiny_model, train_tiny_lossless, train_tiny_vocab

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("torch_one_thread")

PROMPT = "今天天气不错，"
# what CPM-1 loses and what the lossless mode must keep: markers, special-token strings, spaces, emoji, rare CJK
TRICKY = ["", " ", "  a  b ", "\t", "\n\n", "\r\n", "\u3000", "Ａｚ，！", "\u2581\u2582\u2583", "<eod>今天<pad>", "<unk>",
          "😀👍🏽", "\U00020000\U0002a6d6", "\x00\x1b\x1f\x7f", "e\u0301", "ﬁ①㏂", "Hugging Face大法好，谁用谁知道。",
          "他说：“你好，世界！”\n第二段 3.14% www.example.com"]


def _texts() -> list[str]:
    return task_texts(6) + TRICKY


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    """One export per mode: cpm (a bare CPM-style .model) and lossless (a trained tokenizer directory)."""
    from cpm.cli import main
    from cpm.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("hf-tok")
    out = {}
    for mode, tok_path in (("cpm", train_tiny_vocab(root / "tiny.model")), ("lossless", train_tiny_lossless(root, TRICKY, vocab_size=700))):
        tok = Tokenizer.load(tok_path)
        assert tok.mode == mode
        model = tiny_model(tok.vocab_size, seed=3, n_positions=128)
        save_run(root / f"run-{mode}", model, tok_path)
        folder = root / f"hf-{mode}"
        assert main(["-q", "export", "hf", "--checkpoint", str(root / f"run-{mode}"), "--output", str(folder)]) == 0
        out[mode] = {"tok": tok, "model": model, "folder": folder}
    return out


@pytest.mark.parametrize("mode", ["cpm", "lossless"])
def test_auto_tokenizer_equals_cpm(exports, mode):
    from transformers import AutoTokenizer

    tok, folder = exports[mode]["tok"], exports[mode]["folder"]
    hf = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
    assert type(hf).__name__ == "CpmJiebaTokenizer" and hf.mode == mode
    assert (len(hf), hf.eos_token_id, hf.bos_token_id, hf.pad_token_id) == (tok.vocab_size, tok.eod_id, tok.eod_id, tok.pad_id)
    texts = _texts()
    for text in texts:
        ids = tok.encode(text)
        assert hf(text, add_special_tokens=False)["input_ids"] == ids, text
        assert hf.encode(text) == [tok.eod_id] + ids  # <eod> first, as cpm generate and the packed data
        assert hf.decode(ids) == tok.decode(ids), text
        special = set(hf.all_special_ids)  # <unk> among them, as in every HF tokenizer
        assert hf.decode([tok.eod_id] + ids, skip_special_tokens=True) == tok.decode([i for i in ids if i not in special])
        assert hf.convert_tokens_to_ids(hf.tokenize(text)) == ids
    if mode == "lossless":
        assert all(hf.decode(hf.encode(t), skip_special_tokens=True) == t for t in texts)
    batch = hf(texts[:4], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape[0] == 4 and int(batch["attention_mask"][0].sum()) == len(tok.encode(texts[0])) + 1


def test_saved_again_loads_again(exports, tmp_path):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(exports["lossless"]["folder"]), trust_remote_code=True)
    hf.save_pretrained(str(tmp_path / "again"))
    again = AutoTokenizer.from_pretrained(str(tmp_path / "again"), trust_remote_code=True)
    assert again.mode == "lossless" and again.encode(PROMPT + "\u2582") == hf.encode(PROMPT + "\u2582")


def test_without_trust_remote_code_loading_fails(exports):
    """Never an empty GPT-2 tokenizer that encodes every prompt to []."""
    from transformers import AutoTokenizer

    with pytest.raises((ValueError, OSError)):
        AutoTokenizer.from_pretrained(str(exports["cpm"]["folder"]))


def test_shipped_class_needs_only_sentencepiece_and_jieba(exports):
    """With cpm not importable, the exported folder segments with jieba itself and still equals cpm."""
    folder = exports["lossless"]["folder"]
    texts = _texts()
    script = (
        "import json, sys\n"
        "sys.modules['cpm'] = None  # cpm is not installed\n"
        "from transformers import AutoTokenizer\n"
        f"hf = AutoTokenizer.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
        "texts = json.loads(sys.stdin.read())\n"
        "print(json.dumps([hf(t, add_special_tokens=False)['input_ids'] for t in texts]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(texts), capture_output=True, text=True,
                          timeout=300, cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    tok = exports["lossless"]["tok"]
    assert json.loads(done.stdout.splitlines()[-1]) == [tok.encode(t) for t in texts]


def test_text_generation_pipeline_continues_a_chinese_prompt(exports):
    """pipeline() tokenizes the prompt as cpm generate does (<eod> first), so greedy continuations agree."""
    from transformers import pipeline

    from cpm.trainer.generate import generate

    tok, model, folder = exports["lossless"]["tok"], exports["lossless"]["model"], exports["lossless"]["folder"]
    generator = pipeline("text-generation", model=str(folder), trust_remote_code=True)
    out = generator(PROMPT, max_new_tokens=12, do_sample=False, return_full_text=False)[0]["generated_text"]
    ours = generate(model, [[tok.eod_id] + tok.encode(PROMPT)], max_new_tokens=12, temperature=0, eod_id=tok.eod_id,
                    pad_id=tok.pad_id)[0]
    assert out == tok.decode(ours.tokens) and len(ours.tokens) > 0
    full = generator(PROMPT, max_new_tokens=12, do_sample=False)[0]["generated_text"]
    assert full == PROMPT + out


def test_cpm1_vocabulary_matches_twenty_real_lines(cpm1_model, zh_dir, tmp_path):
    """The original CPM-1 vocabulary, exported: the public vector and 20 People's Daily lines as CPM-1 encodes them."""
    from transformers import AutoTokenizer

    from cpm.cli import main
    from cpm.tokenizer import Tokenizer

    from conftest import read_zst_lines

    save_run(tmp_path / "run", tiny_model(30000, seed=2, n_layer=1), cpm1_model)
    assert main(["-q", "export", "hf", "-c", str(tmp_path / "run"), "-o", str(tmp_path / "hf")]) == 0
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True)
    vector = "Hugging Face大法好，谁用谁知道。"
    assert hf(vector, add_special_tokens=False)["input_ids"] == [13789, 13283, 1421, 8, 10, 1164, 13608, 16528, 63, 8, 9, 440,
                                                                108, 440, 121, 90, 8, 12]
    tok = Tokenizer.load(cpm1_model)
    lines = read_zst_lines(zh_dir / "people_daily_1998_paragraphs.txt.zst", 20) + read_zst_lines(zh_dir / "product_reviews.txt.zst", 20)
    assert [hf(t, add_special_tokens=False)["input_ids"] for t in lines] == [tok.encode(t) for t in lines]
    assert [hf.decode(tok.encode(t)) for t in lines] == [tok.decode(tok.encode(t)) for t in lines]
    assert hf.eos_token_id == 7 and hf.pad_token_id == 5
