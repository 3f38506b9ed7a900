"""``cpm shards``: look inside Arrow shards and output directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

shards_app = typer.Typer(
    help="Inspect Arrow shards and cpm output directories.\n\nExample: cpm shards inspect out/corpus --verify --rows 2",
    no_args_is_help=True,
)


@shards_app.command("inspect")
def inspect_command(
    path: Path = typer.Argument(..., help="A shard file (.arrow) or a cpm output directory with a manifest.json."),
    rows: int = typer.Option(3, "--rows", "-n", min=0, help="Sample rows to show."),
    verify: bool = typer.Option(False, "--verify", help="Check every shard's size and sha256 against the manifest; exit 1 on mismatch."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (for scripts)."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", show_default="token ids shown, not decoded", help="Tokenizer dir/model to decode sequence shards with."),
    all_shards: bool = typer.Option(False, "--all", help="Report every shard of a directory, not the first of each kind."),
) -> None:
    """Show a shard's schema, sizes, column statistics and sample rows, or a directory's manifest.

    Example: cpm shards inspect out/corpus --rows 2 --verify
    """
    from cpm.errors import ShardError
    from cpm.shards.inspect import inspect_path, to_json

    decoder = None
    if tokenizer is not None:
        from cpm.tokenizer import Tokenizer

        decoder = Tokenizer.load(tokenizer)
    report = inspect_path(path, rows=rows, verify=verify, tokenizer=decoder, all_shards=all_shards)
    if as_json:
        typer.echo(to_json(report))
    else:
        render(report)
    bad = [v for v in report.get("verify", []) if not v["ok"]]
    if bad:
        raise ShardError(f"{path}: {len(bad)} shard(s) fail verification: " + "; ".join(f"{b['path']}: {b['problem']}" for b in bad[:5]))


@shards_app.command("export")
def export_command(
    path: Path = typer.Argument(..., help="A shard file (.arrow) or a cpm output directory with a manifest.json."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the exported files (same relative paths)."),
    fmt: str = typer.Option("parquet", "--format", help="Output format: parquet (zstd; cpm metadata in the key-value metadata)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --output directory (atomically)."),
) -> None:
    """Export shards for engines without an Arrow IPC reader (DuckDB, Spark, BigQuery).

    Example: cpm shards export out/corpus --format parquet --output out/corpus-parquet
    """
    from cpm.shards.export import export_shards

    out = export_shards(path, output, fmt, overwrite)
    typer.echo(f"wrote {out}/manifest.json")


def _flat(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            out.append((prefix, str(value)))
        else:
            out.append((prefix, f"{value:,}" if isinstance(value, int) else f"{value:.4g}"))


def _matrix(title: str, columns: dict[str, dict[str, Any]]):
    """A table of nested counters: one column per outer key, one row per flattened inner key."""
    from rich.table import Table

    cells = {}
    for name, inner in columns.items():
        flat: list[tuple[str, str]] = []
        _flat("", inner, flat)
        cells[name] = dict(flat)
    keys = list(dict.fromkeys(k for flat in cells.values() for k in flat))
    rows = [k for k in keys if "." not in k] + sorted(k for k in keys if "." in k)
    table = Table(title=title)
    table.add_column("")
    for name in columns:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(row, *(cells[name].get(row, "0") for name in columns))
    return table


def render(report: dict[str, Any]) -> None:
    """Print an inspection report as rich tables."""
    from rich.markup import escape
    from rich.table import Table

    from cpm.console import make_console

    console = make_console()
    if "directory" in report:
        m = report["manifest"]
        t = report["totals"]
        console.print(f"[bold]{report['directory']}[/bold]  {m.get('kind')} written by cpm {m.get('tool_version')} ({m.get('command')})")
        kinds = ", ".join(f"{rows:,} {kind}" for kind, rows in t.get("rows_by_kind", {}).items()) or f"{t['rows']:,} rows"
        console.print(f"{kinds} in {t['shards']} shard(s), {t['bytes']:,} bytes; {report['inputs']} input file(s)")
        flat_counters: dict[str, Any] = {}
        for key, value in report["counters"].items():
            if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
                console.print(_matrix(key, value))  # e.g. by_source: one column per source
            else:
                flat_counters[key] = value
        counters: list[tuple[str, str]] = []
        _flat("", flat_counters, counters)
        if counters:
            table = Table(title="counters", show_header=False)
            for key, value in counters:
                table.add_row(key, value)
            console.print(table)
        if "verify" in report:
            bad = [v for v in report["verify"] if not v["ok"]]
            ok = len(report["verify"]) - len(bad)
            console.print(f"verify: {ok} shard(s) match the manifest" + (f", [red]{len(bad)} do not[/red]" if bad else ""))
            for b in bad:
                console.print(f"  [red]✗[/red] {b['path']}: {b['problem']}")
    for shard in report["shards"]:
        console.rule(f"{shard['path']}")
        console.print(
            f"kind {shard['kind']} (schema v{shard['schema_version']}), {shard['rows']:,} rows in "
            f"{shard['record_batches']} batches, {shard['bytes_on_disk']:,} bytes on disk, "
            f"{shard['bytes_uncompressed']:,} uncompressed, compression {shard['compression']}"
        )
        if shard["metadata"]:
            console.print("metadata: " + ", ".join(f"{k}={v}" for k, v in shard["metadata"].items()))
        table = Table(title="columns")
        for header in ("column", "type", "nulls", "min", "mean", "max", "counts"):
            table.add_column(header)
        for name, col in shard["columns"].items():
            stats = col.get("chars") or col.get("items") or col.get("values") or {}
            counts = ", ".join(f"{k}: {v:,}" for k, v in col.get("counts", {}).items())
            table.add_row(name, col["type"], f"{col['nulls']:,}", *(str(stats.get(k, "")) for k in ("min", "mean", "max")), counts)
        console.print(table)
        seq = shard.get("sequences")
        if seq:
            flat: list[tuple[str, str]] = []
            _flat("", {k: v for k, v in seq.items() if k != "samples_shown"}, flat)
            console.print("sequences: " + ", ".join(f"{k}={v}" for k, v in flat))
            for i, sample in enumerate(seq.get("samples_shown", [])):
                console.print(f"[bold]sample {i}[/bold] docs {', '.join(sample['doc_ids'])} from offset {sample['start_offset']}")
                shown = sample.get("text")
                if shown is None:
                    shown = " ".join(str(t) for t in sample["tokens"])
                console.print("  " + escape(shown.replace("\n", "⏎")))
        for i, row in enumerate(shard["sample_rows"]):
            console.print(f"[bold]row {i}[/bold]")
            for key, value in row.items():
                shown = value.replace("\n", "⏎") if isinstance(value, str) else value
                console.print(f"  [cyan]{key}[/cyan]: {escape(str(shown))}")


def register(app: typer.Typer) -> None:
    app.add_typer(shards_app, name="shards")
