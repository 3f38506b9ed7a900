"""``cpm tokenizer``: train, inspect and run the reversible unigram tokenizer."""

from __future__ import annotations

import io
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, TextIO

import typer

from cpm.errors import CpmError
from cpm.jsonl import json_line

SAMPLES = ("今天天气不错，我们去公园散步吧。", "Hugging Face大法好，谁用谁知道。", "GPT-3 has 175B parameters\t(２０２０年)\r\n😀")
BATCH_LINES = 2048


@contextmanager
def _open_text(path: str, write: bool) -> Iterator[TextIO]:
    """A UTF-8 text stream on a file or stdin/stdout ("-") that splits and writes lines on "\\n" only."""
    if path == "-":
        raw = sys.stdout.buffer if write else sys.stdin.buffer
        stream = io.TextIOWrapper(raw, encoding="utf-8", newline="\n", errors="surrogatepass" if write else "strict")
        try:
            yield stream
        finally:
            if write:
                stream.flush()
            stream.detach()
        return
    try:
        handle = open(path, "w" if write else "r", encoding="utf-8", newline="\n", errors="surrogatepass" if write else "strict")
    except OSError as exc:
        raise CpmError(f"{path}: cannot open ({exc.strerror})") from None
    with handle:
        yield handle


def _lines(stream: TextIO, name: str) -> Iterator[tuple[int, str]]:
    """Number and text of each line, split on "\\n" only; bytes are decoded line by line so a
    UTF-8 error names the right line."""
    for number, data in enumerate(stream.buffer, 1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CpmError(f"{name}:{number}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        yield number, line[:-1] if line.endswith("\n") else line


def _batches(items: Iterator[tuple[int, str]], size: int = BATCH_LINES) -> Iterator[list[tuple[int, str]]]:
    batch: list[tuple[int, str]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _load(path: str):
    from cpm.tokenizer import Tokenizer

    return Tokenizer.load(path)


def _train_command(
    input: List[str] = typer.Option(..., "--input", "-i", help="Document shards: corpus directories, shard files or globs (repeatable)."),
    output: Path = typer.Option(..., "--output", "-o", help="Tokenizer directory to write."),
    vocab_size: int = typer.Option(30000, "--vocab-size", help="Number of pieces."),
    mode: str = typer.Option("lossless", "--mode", help="lossless (exact round trips, byte fallback) or cpm (the CPM-1 recipe)."),
    sample_sentences: Optional[int] = typer.Option(None, "--sample-sentences", show_default="all documents", help="Train on at most N documents (a seeded uniform sample)."),
    threads: int = typer.Option(1, "--threads", help="SentencePiece trainer threads (1 gives byte-identical models run to run)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the document sample and of SentencePiece."),
    character_coverage: Optional[float] = typer.Option(
        None, "--character-coverage", show_default="CPM-1's 0.9995 of the characters --vocab-size can hold",
        help="Share of characters the vocabulary must cover.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --output directory (atomically)."),
) -> None:
    """Train a unigram vocabulary on the jieba words of document shards.

    Example: cpm tokenizer train --input out/corpus --output out/tok --vocab-size 8000 --mode lossless
    """
    from cpm.tokenizer import Tokenizer
    from cpm.tokenizer.train import train_tokenizer

    path = train_tokenizer(
        input, output, vocab_size=vocab_size, mode=mode, sample_sentences=sample_sentences,
        threads=threads, seed=seed, character_coverage=character_coverage, progress=progress,
        overwrite=overwrite,
    )
    tok = Tokenizer.load(path)
    typer.echo(f"{path}: {tok.mode} tokenizer, {tok.vocab_size} pieces, eod={tok.eod_id} pad={tok.pad_id}")


def _encode_command(
    tokenizer: str = typer.Option(..., "--tokenizer", "-t", help="Tokenizer directory or CPM-1 .model file."),
    jsonl: bool = typer.Option(False, "--jsonl", help='Read {"text": ...} lines, write {"ids": [...]} lines.'),
    input: str = typer.Option("-", "--input", "-i", help="Input file (- is stdin)."),
    output: str = typer.Option("-", "--output", "-o", help="Output file (- is stdout)."),
    threads: int = typer.Option(1, "--threads", help="Encoding threads."),
) -> None:
    """Encode text, one text per line (ids separated by spaces), or JSONL with --jsonl.

    Example: echo '今天天气不错' | cpm tokenizer encode --tokenizer out/tok
    """
    tok = _load(tokenizer)
    name = "stdin" if input == "-" else input
    with _open_text(input, write=False) as src, _open_text(output, write=True) as dst:
        for batch in _batches(_lines(src, name)):
            records: list[dict] = []
            texts = []
            for number, line in batch:
                if jsonl:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise CpmError(f"{name}:{number}: not a JSON line ({exc.msg})") from None
                    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                        raise CpmError(f"{name}:{number}: expected an object with a string \"text\" field")
                    texts.append(record.pop("text"))
                    records.append(record)
                else:
                    texts.append(line)
            encoded = tok.encode_batch(texts, threads=threads)
            if jsonl:
                dst.write("".join(json_line({**r, "ids": ids}) for r, ids in zip(records, encoded)))
            else:
                dst.write("".join(" ".join(map(str, ids)) + "\n" for ids in encoded))


def _decode_command(
    tokenizer: str = typer.Option(..., "--tokenizer", "-t", help="Tokenizer directory or CPM-1 .model file."),
    jsonl: bool = typer.Option(False, "--jsonl", help='Read {"ids": [...]} lines, write {"text": ...} lines (exact even for texts with newlines).'),
    input: str = typer.Option("-", "--input", "-i", help="Input file (- is stdin)."),
    output: str = typer.Option("-", "--output", "-o", help="Output file (- is stdout)."),
) -> None:
    """Decode ids (space-separated, one sequence per line), or JSONL with --jsonl.

    Example: echo '837 259 497 788' | cpm tokenizer decode --tokenizer chinese_vocab.model
    """
    tok = _load(tokenizer)
    name = "stdin" if input == "-" else input
    with _open_text(input, write=False) as src, _open_text(output, write=True) as dst:
        for number, line in _lines(src, name):
            record: dict = {}
            try:
                if jsonl:
                    record = json.loads(line)
                    if not isinstance(record, dict) or not isinstance(record.get("ids"), list):
                        raise ValueError('expected an object with an "ids" list')  # located below
                    ids = record.pop("ids")
                    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                        raise ValueError("ids must be integers")
                else:
                    ids = [int(x) for x in line.split()]
                text = tok.decode(ids)
            except (ValueError, CpmError) as exc:
                message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise CpmError(f"{name}:{number}: {message}") from None
            dst.write(json_line({**record, "text": text}) if jsonl else text + "\n")


def _info_command(
    path: str = typer.Argument(..., help="Tokenizer directory or CPM-1 .model file."),
    sample: List[str] = typer.Option([], "--sample", show_default="built-in samples", help="Text to show segmented (repeatable)."),
) -> None:
    """Show a tokenizer's mode, sizes, special ids and sample segmentations.

    Example: cpm tokenizer info out/tok
    """
    tok = _load(path)
    config = tok.config
    typer.echo(f"path:        {path}")
    typer.echo(f"mode:        {tok.mode}")
    typer.echo(f"vocab size:  {tok.vocab_size}")
    typer.echo("special ids: " + ", ".join(f"{k}={v}" for k, v in tok.special_ids().items()))
    typer.echo(f"fingerprint: {tok.fingerprint}")
    if "tool_version" in config:
        typer.echo(f"written by:  cpm {config['tool_version']} (sentencepiece {config.get('sentencepiece_version', '?')})")
    trainer = config.get("trainer")
    if trainer:
        limit = f", {trainer['max_characters']} most frequent characters" if trainer.get("max_characters") else ""
        typer.echo(
            f"trained:     {trainer.get('model_type')}, character coverage {trainer.get('character_coverage')}{limit}, "
            f"normalization {trainer.get('normalization_rule_name')}, seed {trainer.get('seed')}, {trainer.get('threads')} thread(s)"
        )
    corpus = config.get("corpus")
    if corpus:
        typer.echo(
            f"corpus:      {corpus.get('documents')} documents, {corpus.get('words')} words "
            f"({corpus.get('distinct_words')} distinct) from {corpus.get('shards')} shard(s)"
        )
        for m in corpus.get("manifests", []):
            typer.echo(f"             {m['path']} sha256 {m.get('sha256')}")
    for text in sample or SAMPLES:
        pieces = tok.tokenize(text)
        back = tok.decode(tok.encode(text))
        typer.echo(f"\n{json.dumps(text, ensure_ascii=False)}")
        typer.echo(f"  {len(pieces)} tokens: " + " ".join(json.dumps(p, ensure_ascii=False)[1:-1] for p in pieces))
        typer.echo(f"  round trip: {'exact' if back == text else json.dumps(back, ensure_ascii=False)}")


def register(app: typer.Typer) -> None:
    """Add the ``tokenizer`` command group to ``app``."""
    group = typer.Typer(
        help="Train and run the reversible SentencePiece unigram tokenizer (CPM-1 compatible).\n\n"
        "Example: cpm tokenizer train --input out/corpus --output out/tok --vocab-size 8000",
        no_args_is_help=True,
    )

    group.command("train")(_train_command)
    group.command("encode")(_encode_command)
    group.command("decode")(_decode_command)
    group.command("info")(_info_command)
    app.add_typer(group, name="tokenizer")
