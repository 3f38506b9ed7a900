"""``cpm generate``, ``cpm eval {ppl,choice}``, ``cpm export hf``, ``cpm import cpm1`` (torch imported lazily)."""

from __future__ import annotations

import json
import sys
from typing import Any, Optional

import typer

from cpm.errors import CpmError
from cpm.jsonl import json_line

CHECKPOINT_HELP = "A run directory (its latest checkpoint) or one checkpoint directory, saved at any --tp."
TOKENIZER_HELP = "Tokenizer directory or .model file."
TOKENIZER_DEFAULT = "the one recorded in the checkpoint"


def check_writable(path: str) -> None:
    """CpmError before any work when ``path`` cannot be written (missing or read-only folder, a directory)."""
    import os
    from pathlib import Path

    target = Path(path)
    parent = target.parent
    if target.is_dir():
        raise CpmError(f"{path}: is a directory, not a file")
    if not parent.is_dir():
        raise CpmError(f"{path}: cannot write (no directory {parent})")
    if not os.access(parent, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise CpmError(f"{path}: cannot write (permission denied)")


def _read_prompts(path: str) -> list[dict[str, Any]]:
    """The ``{"prompt": ...}`` records of a JSONL file ("-" = stdin); errors name the file and line."""
    from cpm.jsonl import read_json_objects

    records = []
    for number, record in read_json_objects(path):
        if not isinstance(record.get("prompt"), str):
            raise CpmError(f'{path}:{number}: expected {{"prompt": "..."}}')
        records.append(record)
    if not records:
        raise CpmError(f"{path}: no prompts")
    return records


def _generate_command(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help=CHECKPOINT_HELP),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", show_default="none: give --prompt or --input", help="Text to continue (streamed to the terminal)."),
    input: Optional[str] = typer.Option(None, "--input", "-i", show_default="none: give --prompt or --input", help='JSONL file of {"prompt": ...} lines ("-" = stdin), decoded in batches.'),
    output: str = typer.Option("-", "--output", "-o", help='With --input: JSONL of {"prompt", "completion", "tokens", ...} ("-" = stdout).'),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=0, help="Tokens to generate at most (stops earlier at <eod>)."),
    temperature: float = typer.Option(0.9, "--temperature", min=0.0, help="Sampling temperature; 0 = greedy."),
    top_p: float = typer.Option(0.9, "--top-p", min=0.0, max=1.0, help="Nucleus sampling: smallest set of tokens with this probability (1 = off)."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Sample from the K most likely tokens only (0 = off)."),
    seed: Optional[int] = typer.Option(None, "--seed", show_default="a random seed", help="Seed of the sampling (same seed, device and batch = same text)."),
    num_samples: int = typer.Option(1, "--num-samples", "-n", min=1, help="Continuations per prompt."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Sequences decoded together."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", show_default=TOKENIZER_DEFAULT, help=TOKENIZER_HELP),
    device: Optional[str] = typer.Option(None, "--device", show_default="cuda when available", help="cpu or cuda."),
) -> None:
    """Continue a prompt (streamed) or a JSONL file of prompts with KV-cached sampling; stops at <eod>.

    Example: cpm generate --checkpoint runs/tiny --prompt "今天天气不错，" --max-new-tokens 64 --seed 1
    """
    from cpm.trainer.generate import load_for_inference, make_generator

    if (prompt is None) == (input is None):
        raise CpmError("give exactly one of --prompt and --input")
    if input is not None and output != "-":
        check_writable(output)
    model, tok, _ = load_for_inference(checkpoint, tokenizer, device)
    dev = next(model.parameters()).device
    generator = make_generator(seed, dev)
    # the prompt keeps up to n_positions - 1 tokens; generate() caps the new tokens at what fits after it
    context = model.config.n_positions - 1
    common = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                  eod_id=tok.eod_id, pad_id=tok.pad_id, generator=generator, vocab_limit=tok.vocab_size)

    if prompt is not None:
        _stream_prompt(model, tok, prompt, num_samples, context, common)
        return

    _generate_file(model, tok, _read_prompts(input), output, num_samples, batch_size, context, common)


def _generate_file(model: Any, tok: Any, records: list[dict[str, Any]], output: str, num_samples: int,
                   batch_size: int, context: int, common: dict[str, Any]) -> None:
    """``--input``: each record with its ``num_samples`` completions, decoded in batches, as JSONL to ``output``."""
    from tqdm import tqdm

    from cpm.trainer.generate import encode_prompt, generate

    jobs = [(i, s) for i in range(len(records)) for s in range(num_samples)]
    prompt_ids = [encode_prompt(tok, r["prompt"], context) for r in records]
    sink = sys.stdout if output == "-" else None
    try:
        handle = sink or open(output, "w", encoding="utf-8")
    except OSError as exc:
        raise CpmError(f"{output}: cannot write ({exc.strerror})") from None
    try:
        with tqdm(total=len(jobs), desc="generating", unit="seq", disable=output == "-", leave=False) as bar:
            for start in range(0, len(jobs), batch_size):
                chunk = jobs[start : start + batch_size]
                results = generate(model, [prompt_ids[i] for i, _ in chunk], **common)
                for (i, sample), result in zip(chunk, results):
                    row = dict(records[i])
                    row.update(completion=tok.decode(result.tokens), tokens=result.tokens, finish_reason=result.finish_reason)
                    if num_samples > 1:
                        row["sample"] = sample
                    handle.write(json_line(row))
                handle.flush()
                bar.update(len(chunk))
    finally:
        if sink is None:
            handle.close()


def _stream_prompt(model: Any, tok: Any, prompt: str, num_samples: int, context: int, common: dict[str, Any]) -> None:
    """Print the prompt, then each sample as its tokens arrive (one sample at a time)."""
    from cpm.trainer.generate import TextStream, encode_prompt, generate

    ids = encode_prompt(tok, prompt, context)
    for sample in range(num_samples):
        if num_samples > 1:
            typer.echo(f"--- sample {sample + 1}/{num_samples} ---")
        typer.echo(prompt, nl=False)
        stream = TextStream(tok.decode)

        def on_step(tokens: Any, active: Any) -> None:
            token = int(tokens[0])
            if bool(active[0]) and token != tok.eod_id:
                text = stream.push(token)
                if text:
                    sys.stdout.write(text)
                    sys.stdout.flush()

        result = generate(model, [ids], on_step=on_step, **common)[0]
        rest = stream.finish()
        if rest:
            sys.stdout.write(rest)
        elif stream.printed != tok.decode(result.tokens):  # a later token rewrote printed text
            sys.stdout.write("\n" + prompt + tok.decode(result.tokens))
        sys.stdout.write("\n")
        sys.stdout.flush()


def _resolve_template(template: str, score: Optional[str], candidates: Optional[str]) -> tuple[Any, str | None]:
    from cpm.trainer.evaluate import BUILTIN_TEMPLATES, Template

    if template in BUILTIN_TEMPLATES:
        built = BUILTIN_TEMPLATES[template]
        return Template(built.pattern, score or built.score, candidates or built.candidates), template
    if "{" not in template:
        raise CpmError(f"--template {template!r}: not a built-in ({', '.join(BUILTIN_TEMPLATES)}) nor a pattern with {{label}}")
    if score is None:
        raise CpmError("a custom --template needs --score FIELD (the field whose span is scored, or 'all')")
    return Template(template, score, candidates or "all"), None


def _write_predictions(output: str, predictions: list[dict[str, Any]]) -> None:
    try:
        with open(output, "w", encoding="utf-8") as handle:
            for record in predictions:
                handle.write(json_line(record))
    except OSError as exc:
        raise CpmError(f"{output}: cannot write ({exc.strerror})") from None


def _print_choice_result(result: Any, path: str, kind: str, output: Optional[str]) -> None:
    """The ``cpm eval choice`` summary for a terminal."""
    typer.echo(f"task      {path} ({kind}, {result.examples} examples, {result.labelled} labelled)")
    typer.echo(f"template  {result.template}   scored: {{{result.score}}}" if result.score != "all" else
               f"template  {result.template}   scored: all")
    typer.echo(f"candidates {result.candidates}")
    typer.echo(f"accuracy  {result.accuracy:.4f}  95% CI [{result.ci_low:.4f}, {result.ci_high:.4f}] ({result.ci_method})")
    if result.repeat_accuracies:
        typer.echo("repeats   " + "  ".join(f"{a:.4f}" for a in result.repeat_accuracies))
    if output:
        typer.echo(f"predictions written to {output}")


def _eval_ppl_command(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help=CHECKPOINT_HELP),
    data: str = typer.Option(..., "--data", "-d", help="A `cpm data pack` output directory or sequence shard files."),
    split: str = typer.Option("valid", "--split", help="Which split of a pack directory."),
    micro_batch: int = typer.Option(8, "--micro-batch", min=1, help="Sequences per forward pass."),
    max_batches: Optional[int] = typer.Option(None, "--max-batches", min=1, show_default="the whole split", help="Stop after N batches."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    device: Optional[str] = typer.Option(None, "--device", show_default="cuda when available", help="cpu or cuda."),
    skip_verify: bool = typer.Option(False, "--skip-verify", help="Do not check the shards' size and sha256 against the manifest first (token ids are still range-checked)."),
) -> None:
    """Mean next-token loss and perplexity of a checkpoint over a split of sequence shards.

    Example: cpm eval ppl --checkpoint runs/tiny --data out/packed --split valid
    """
    from cpm.trainer.checkpoint import load_model, resolve_checkpoint
    from cpm.trainer.cli import verify_packed
    from cpm.trainer.evaluate import evaluate_perplexity
    from cpm.trainer.generate import default_device

    ckpt = resolve_checkpoint(checkpoint)
    verify_packed(data, (split,), skip=skip_verify, progress=sys.stderr.isatty())
    model, _ = load_model(ckpt, tp=1, device=default_device(device))
    result = evaluate_perplexity(model, data, micro_batch=micro_batch, split=split, device=next(model.parameters()).device,
                                 max_batches=max_batches, show_progress=sys.stderr.isatty())
    result = {"checkpoint": str(ckpt), "split": split} | result
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"{ckpt}  {split}: loss {result['loss']:.4f}  perplexity {result['perplexity']:.2f}  "
                   f"({result['samples']:,} sequences, {result['tokens']:,} tokens)")


def _eval_choice_command(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help=CHECKPOINT_HELP),
    task: str = typer.Option(..., "--task", "-t", help="CLUE JSON-lines file, or a bundled sample: tnews, iflytek, ocnli, chid."),
    template: Optional[str] = typer.Option(None, "--template", show_default="the task's", help="tnews, iflytek, ocnli, chid, or a pattern such as '这是关于{label}的文章：{text}'."),
    score: Optional[str] = typer.Option(None, "--score", show_default="the built-in template's", help="Field whose span is scored (text, s2, label, ... or 'all'); required with a custom pattern."),
    task_format: Optional[str] = typer.Option(None, "--format", show_default="from the template or the keys", help="How to read the file: tnews, iflytek, ocnli, chid."),
    answers: Optional[str] = typer.Option(None, "--answers", show_default="the answers in the task file", help="ChID answers file ({\"#idiom000123#\": 3, ...})."),
    labels: Optional[str] = typer.Option(None, "--labels", show_default="built in, or the file's", help="Label set: CLUE labels.json or one word per line."),
    candidates: Optional[str] = typer.Option(None, "--candidates", show_default="the template's", help="'all' labels, or 'sampled' (3 wrong + gold, 3 repeats: the paper's TNEWS/IFLYTEK protocol)."),
    wrong: int = typer.Option(3, "--wrong", min=1, help="Wrong labels per sampled candidate set."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Sampled candidate sets per example."),
    seed: int = typer.Option(0, "--seed", help="Seed of the candidate sampling and the bootstrap."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, show_default="all", help="Evaluate the first N examples only."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Sequences per forward pass."),
    output: Optional[str] = typer.Option(None, "--output", "-o", show_default="not written", help="Write per-example predictions (JSONL) here."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", show_default=TOKENIZER_DEFAULT, help=TOKENIZER_HELP),
    device: Optional[str] = typer.Option(None, "--device", show_default="cuda when available", help="cpu or cuda."),
) -> None:
    """Zero-shot multiple choice (CPM-1): the candidate whose scored span has the lowest mean NLL wins.

    Example: cpm eval choice --checkpoint runs/tiny --task tnews --template tnews --output preds.jsonl
    """
    from cpm.trainer.evaluate import TASK_KINDS, evaluate_choice, read_choice_task, resolve_task_path
    from cpm.trainer.generate import load_for_inference

    if candidates not in (None, "all", "sampled"):
        raise CpmError(f"--candidates must be 'all' or 'sampled', not {candidates!r}")
    if output:
        check_writable(output)
    path = resolve_task_path(task)
    kind = task_format
    if kind is None and template in TASK_KINDS:
        kind = template
    kind, examples = read_choice_task(path, kind, answers=answers, labels=labels)
    tmpl, _ = _resolve_template(template or kind, score, candidates)
    tmpl.validate("--template")
    if limit:
        examples = examples[:limit]
    model, tok, meta = load_for_inference(checkpoint, tokenizer, device)
    result = evaluate_choice(
        model, tok, examples, tmpl, max_len=model.config.n_positions, wrong=wrong, repeats=repeats, seed=seed,
        batch_size=batch_size, device=next(model.parameters()).device, task=str(path), show_progress=sys.stderr.isatty(),
    )
    if output:
        _write_predictions(output, result.predictions)
    summary = {"checkpoint": meta["path"]} | result.summary()
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
        return
    _print_choice_result(result, str(path), kind, output)


def _export_hf_command(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help=CHECKPOINT_HELP),
    output: str = typer.Option(..., "--output", "-o", help="Directory for the Hugging Face model (GPT2LMHeadModel)."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", show_default=TOKENIZER_DEFAULT, help=TOKENIZER_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --output directory (atomically)."),
) -> None:
    """Write a transformers GPT2LMHeadModel directory (safetensors, tied embeddings, a tokenizer for AutoTokenizer, README).

    Example: cpm export hf --checkpoint runs/tiny --output hf/tiny
    """
    from cpm.trainer.convert import export_hf

    out = export_hf(checkpoint, output, tokenizer, overwrite=overwrite)
    typer.echo(f"wrote {out} (load with AutoModelForCausalLM and AutoTokenizer(..., trust_remote_code=True); see {out / 'README.md'})")


def _import_cpm1_command(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Released CPM-1 checkpoint directory (latest_checkpointed_iteration.txt, ITER/mp_rank_XX_model_states.pt)."),
    output: str = typer.Option(..., "--output", "-o", help="Run directory for the cpm checkpoint (checkpoints/step-N, latest)."),
    tp: int = typer.Option(1, "--tp", min=1, help="Tensor-parallel size of the written checkpoint."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", show_default="none recorded", help="The CPM-1 chinese_vocab.model (recorded for generate/eval; sets the vocabulary size)."),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", show_default="the tokenizer's, else 30000", help="Real vocabulary size."),
    n_head: Optional[int] = typer.Option(None, "--n-head", show_default="CPM-1's for the hidden size: 768->12, 1024->16, 2560->32", help="Attention heads."),
) -> None:
    """Convert a released CPM-1 (Megatron/DeepSpeed) checkpoint into a cpm checkpoint at any --tp.

    Example: cpm import cpm1 --checkpoint CPM-large --output runs/cpm-large --tokenizer chinese_vocab.model --tp 2
    """
    from cpm.trainer.convert import import_cpm1

    final = import_cpm1(checkpoint, output, tp=tp, tokenizer=tokenizer, vocab_size=vocab_size, n_head=n_head)
    typer.echo(f"wrote {final} (tp={tp})")


def register(app: typer.Typer) -> None:
    """Add ``generate`` and the ``eval``, ``export`` and ``import`` groups to ``app``."""
    app.command("generate")(_generate_command)

    eval_app = typer.Typer(help="Evaluate a checkpoint: perplexity, zero-shot multiple choice.\n\n"
                           "Example: cpm eval choice --checkpoint runs/tiny --task tnews --template tnews",
                           no_args_is_help=True)
    export_app = typer.Typer(help="Export a checkpoint to other formats.\n\nExample: cpm export hf --checkpoint runs/tiny --output hf/tiny",
                             no_args_is_help=True)
    import_app = typer.Typer(help="Import checkpoints from other formats.\n\n"
                             "Example: cpm import cpm1 --checkpoint CPM-large --output runs/cpm1 --tp 1",
                             no_args_is_help=True)

    eval_app.command("ppl")(_eval_ppl_command)
    eval_app.command("choice")(_eval_choice_command)
    export_app.command("hf")(_export_hf_command)
    import_app.command("cpm1")(_import_cpm1_command)
    app.add_typer(eval_app, name="eval")
    app.add_typer(export_app, name="export")
    app.add_typer(import_app, name="import")
