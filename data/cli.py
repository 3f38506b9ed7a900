"""``cpm data``: pack document shards into training sequences, export them for Megatron-LM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

data_app = typer.Typer(
    help="Training data: pack documents into token sequences, export to Megatron-LM.\n\n"
    "Example: cpm data pack --input out/corpus --tokenizer out/tokenizer --output out/packed --seq-len 1024",
    no_args_is_help=True,
)


@data_app.command("pack")
def pack_command(
    inputs: List[str] = typer.Option(..., "--input", "-i", help="Document shards: files, output directories or globs (repeatable)."),
    tokenizer: str = typer.Option(..., "--tokenizer", "-t", help="Tokenizer directory (cpm tokenizer train) or a CPM-1 .model file."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (train/, valid/, manifest.json)."),
    seq_len: int = typer.Option(1024, "--seq-len", min=1, help="Tokens per training sample (each row stores seq_len + 1)."),
    valid_fraction: float = typer.Option(0.005, "--valid-fraction", help="Share of documents (by id hash) in the valid split."),
    source_weights: Optional[str] = typer.Option(
        None, "--source-weights", show_default="1 for every source", help="Repeat factors per source, e.g. 'encyclopedia=2,webpage=0.5'."
    ),
    source_mix: Optional[str] = typer.Option(
        None,
        "--source-mix",
        show_default="the data's own shares",
        help="Target token shares of the train split, e.g. 'encyclopedia=40,webpage=39,story=10,news=10,dialog=1', or 'paper'.",
    ),
    seed: int = typer.Option(1234, "--seed", help="Seed of the document order and of fractional repeats."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1, show_default="all cores", help="Tokenizer processes."),
    shard_mb: int = typer.Option(256, "--shard-mb", min=1, help="Target size of a sequence shard in MB."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --output directory (atomically)."),
) -> None:
    """Tokenize documents, join them with <eod> and cut fixed-length training samples.

    Example: cpm data pack --input out/corpus --tokenizer out/tokenizer --output out/packed --seq-len 1024
    """
    from cpm.data.pack import pack
    from cpm.data.rules import PAPER_MIX, parse_weights

    mix = dict(PAPER_MIX) if source_mix == "paper" else parse_weights(source_mix, "--source-mix")
    manifest = pack(
        inputs,
        tokenizer,
        output,
        seq_len=seq_len,
        valid_fraction=valid_fraction,
        source_weights=parse_weights(source_weights),
        source_mix=mix,
        seed=seed,
        workers=workers,
        shard_bytes=shard_mb << 20,
        overwrite=overwrite,
    )
    counters = manifest["counters"]
    for split in ("train", "valid"):
        c = counters[split]
        docs = sum(c["documents"].values())
        typer.echo(
            f"{split}: {c['samples']:,} samples of {seq_len + 1} tokens from {docs:,} documents "
            f"({c['stream_tokens']:,} tokens, {c['dropped_tail_tokens']:,} dropped at the tail)"
        )
        for source, tokens in c["tokens"].items():
            share = tokens / c["stream_tokens"] if c["stream_tokens"] else 0.0
            typer.echo(f"  {source:<12} {c['documents'][source]:>10,} docs {tokens:>14,} tokens  {share:6.1%}")
    typer.echo(f"wrote {output}/manifest.json")


@data_app.command("export-megatron")
def export_megatron_command(
    input: Path = typer.Option(..., "--input", "-i", help="Packed directory (cpm data pack) or sequence shard files."),
    output: str = typer.Option(..., "--output", "-o", help="Output prefix: writes PREFIX.bin, PREFIX.idx and PREFIX.json (eod, pad, vocab size, Megatron-LM flags)."),
    split: str = typer.Option("train", "--split", help="Which split of a packed directory to export (train or valid)."),
) -> None:
    """Write Megatron-LM's indexed dataset (PREFIX.bin + PREFIX.idx, one document per entry, <eod> appended) and PREFIX.json.

    Example: cpm data export-megatron --input out/packed --output out/megatron/cpm_train_text_document
    """
    from cpm.errors import CpmError
    from cpm.data.megatron import export_megatron
    from cpm.shards.sequences import split_shard_paths

    if split not in ("train", "valid"):
        raise CpmError(f"--split must be train or valid, not {split!r}")

    shards = split_shard_paths(input, split)
    counters = export_megatron(shards, output)
    typer.echo(json.dumps(counters, ensure_ascii=False, indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
