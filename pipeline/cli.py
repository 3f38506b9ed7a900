"""``cpm corpus build``: raw text -> cleaned, deduplicated, segmented document shards (Apache Beam)."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
from typing import Any, List, Optional, Sequence

import typer

from cpm.errors import CpmError

corpus_app = typer.Typer(
    help="Build document corpora from raw text (Apache Beam).\n\nExample: cpm corpus build --source news --output out/news",
    no_args_is_help=True,
)
log = logging.getLogger(__name__)

SOURCE_CHOICES = ("encyclopedia", "webpage", "story", "news", "dialog", "all")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


def parse_size(text: str, option: str = "--shard-size") -> int:
    """``"256MB"``, ``"1.5G"``, ``"4096"`` -> bytes (powers of 1024)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise CpmError(f"{option}: cannot read {text!r} as a size (e.g. 256MB)")
    value, unit = float(match.group(1)), (match.group(2) or "").lower()[:1]
    size = int(value * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit])
    if size <= 0:
        raise CpmError(f"{option} must be positive")
    return size


def input_specs(source: str, inputs: list[str]) -> list[tuple[str, str]]:
    """``(pattern, source)`` for each ``--input``; ``SOURCE=PATH`` names a path's source."""
    from cpm.schemas import SOURCES

    specs = []
    for item in inputs:
        prefix, sep, rest = item.partition("=")
        if sep and prefix in SOURCES:
            if source != "all" and prefix != source:
                raise CpmError(f"--input {item}: source {prefix!r} is not the --source {source!r}")
            specs.append((rest, prefix))
        elif source == "all":
            raise CpmError(f"--input {item}: with --source all, write each input as SOURCE=PATH (e.g. news=news.jsonl)")
        else:
            specs.append((item, source))
    return specs


# Beam's runner names (its create_runner also accepts them lower-case, without "Runner", or a
# fully qualified module.ClassName); checked here so that a typo is a one-line error, not a traceback.
BEAM_RUNNERS = (
    "DirectRunner", "DaskRunner", "FlinkRunner", "SparkRunner", "DataflowRunner", "PrismRunner", "PortableRunner",
    "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner",
)


def check_runner(runner: str) -> None:
    """Raise :class:`CpmError` for a ``--runner`` that Beam does not know."""
    known = {name.lower() for name in BEAM_RUNNERS}
    if "." in runner.strip(".") or runner.lower() in known or runner.lower() + "runner" in known:
        return
    raise CpmError(f"--runner {runner!r}: unknown Beam runner (use one of {', '.join(BEAM_RUNNERS[:6])}, or a module.ClassName)")


def known_beam_options() -> set[str]:
    """Every option name of Beam's ``PipelineOptions`` classes, the runners' own included (Dask's
    are defined only once its runner module is imported; cpm's local-cluster size too)."""
    import importlib

    from apache_beam.options.pipeline_options import PipelineOptions

    import cpm.pipeline.runners  # noqa: F401 - LocalDaskOptions

    try:
        importlib.import_module("apache_beam.runners.dask.dask_runner")  # DaskOptions (needs cpm[dask])
    except ImportError:
        pass
    return set(PipelineOptions([]).get_all_options())


def check_beam_options(extra: list[str], cpm_options: Sequence[str] = ()) -> None:
    """Raise :class:`CpmError` for an option of ``extra`` that no Beam ``PipelineOptions`` class
    defines (Beam itself would only log 'Discarding unparseable args' and run without it)."""
    import difflib

    names = [arg[2:].split("=", 1)[0] for arg in extra if arg.startswith("--") and len(arg) > 2]
    if not names:
        return
    from apache_beam.options.pipeline_options import PipelineOptions

    known = known_beam_options()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            given = PipelineOptions(extra).get_all_options(retain_unknown_options=True)
    except SystemExit:  # argparse rejected a value of a Beam option: its usage, then "prog: error: why"
        why = printed.getvalue().strip().splitlines()[-1:] or ["invalid value"]
        raise CpmError(f"Beam pipeline option: {why[0].split('error: ', 1)[-1]}") from None
    for name in names:
        if name.replace("-", "_") in given and name.replace("-", "_") not in known:
            choices = [*cpm_options, *(f"--{k}" for k in known)]
            close = difflib.get_close_matches(f"--{name}", choices, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise CpmError(f"no such option: --{name}: neither cpm nor Beam knows it{hint}")


def beam_arguments(runner: str, workers: int, extra: list[str], cpm_options: Sequence[str] = ()) -> list[str]:
    """Beam pipeline options: ``--runner``, ``--workers`` mapped per runner, then the pass-through
    ones, each of which Beam must know."""
    check_runner(runner)
    check_beam_options(extra, cpm_options)
    args = [f"--runner={runner}"]
    if workers < 1:
        raise CpmError("--workers must be at least 1")
    if runner == "DataflowRunner":  # DirectRunner: the launcher's pool of local processes
        args.append(f"--num_workers={workers}")
    elif runner in ("FlinkRunner", "SparkRunner"):
        args.append(f"--parallelism={workers}")
    elif runner in ("DaskRunner", "dask"):  # a local cluster's size; a cluster at --dask_client_address has its own
        args.append(f"--dask_local_workers={workers}")
    for arg in extra:
        if not arg.startswith("--"):
            raise CpmError(f"unexpected argument {arg!r} (Beam pipeline options are written --name=value)")
    return args + list(extra)


# Longer than 60 lines for its 19 declared options only: the steps are dedup_config, prepare_job, run_build.
@corpus_app.command(
    "build",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def build(
    ctx: typer.Context,
    source: str = typer.Option(..., "--source", "-s", help=f"Source kind: {', '.join(SOURCE_CHOICES)}."),
    inputs: Optional[List[str]] = typer.Option(
        None, "--input", "-i", help="Input file, directory or glob (gs://, s3://, hdfs:// too); repeatable. "
        "SOURCE=PATH names its source (required with --source all).", show_default="the bundled sample of --source",
    ),
    output: str = typer.Option(..., "--output", "-o", help="Output directory (manifest.json, shards/, rejected/)."),
    runner: str = typer.Option("DirectRunner", "--runner", help="Beam runner: DirectRunner, DaskRunner (--dask_client_address=tcp://HOST:PORT, or a local cluster of --workers processes), FlinkRunner, SparkRunner, DataflowRunner."),
    workers: Optional[int] = typer.Option(
        None, "--workers", "-w", show_default="usable cores, capped by free memory / 1 GB",
        help="Parallel workers (DirectRunner: local processes, one task each at a time; DaskRunner without an address: local worker processes).",
    ),
    config: Optional[str] = typer.Option(None, "--config", show_default="the bundled per-source configs", help="JSON file overriding the per-source cleaning config."),
    shard_size: str = typer.Option("256MB", "--shard-size", help="Target (uncompressed) size of a shard."),
    partition_size: str = typer.Option(
        "32MB", "--partition-size", help="Text per task of the build's stages: a worker's memory and the unit of --resume."
    ),
    resume: bool = typer.Option(False, "--resume", help="Go on with an interrupted build of the same inputs and config."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory (atomically)."),
    no_dedup: bool = typer.Option(False, "--no-dedup", help="Skip near-duplicate removal."),
    # the defaults of DedupConfig (tests/test_cli.py checks that they agree)
    dedup_threshold: float = typer.Option(0.8, "--dedup-threshold", help="Jaccard similarity above which documents are near-duplicates."),
    num_perm: int = typer.Option(128, "--num-perm", help="MinHash permutations."),
    ngram: int = typer.Option(5, "--ngram", help="Shingle size (characters) for MinHash."),
    against: Optional[List[str]] = typer.Option(None, "--against", show_default="none", help="Existing output directory to deduplicate against; repeatable."),
    exact_jaccard: bool = typer.Option(False, "--exact-jaccard", help="Confirm every LSH candidate pair by exact n-gram Jaccard, not only the pairs whose MinHash estimate is near the threshold."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a live documents/s and MB/s line."),
) -> None:
    """Clean, filter, deduplicate and segment raw text into Arrow document shards.

    Any other --option=value is passed to Beam as a pipeline option (e.g. --flink_master=host:8081);
    one that Beam does not know either is an error.

    Example: cpm corpus build --source news --input news.jsonl.gz --output out/news --workers 2

    After a crash or kill, the same command with --resume redoes only the unfinished tasks.
    """
    if source not in SOURCE_CHOICES:
        raise CpmError(f"--source {source!r}: choose one of {', '.join(SOURCE_CHOICES)}")
    from cpm.schemas import SOURCES

    sources = list(SOURCES) if source == "all" else [source]
    if workers is None:
        from cpm.pipeline.launcher import default_workers

        workers = default_workers()
    own = [opt for param in ctx.command.params for opt in getattr(param, "opts", ()) if opt.startswith("--")]
    beam_args = beam_arguments(runner, workers, list(ctx.args), own)
    shard_bytes = parse_size(shard_size)
    partition_bytes = parse_size(partition_size, "--partition-size")

    from cpm.pipeline.clean import load_configs

    configs = load_configs(sources, config)
    dedup = dedup_config(no_dedup, dedup_threshold, num_perm, ngram, against, exact_jaccard)
    specs = input_specs(source, list(inputs)) if inputs else _sample_specs(source, sources)
    command_config = {
        "sources": sources,
        "inputs": [f"{s}={p}" for p, s in specs],
        "clean": {s: c.to_dict() for s, c in configs.items()},
        "dedup": _dedup_dict(dedup),
        "shard_bytes": shard_bytes,
        "runner": runner,
        "workers": workers,
        "beam_options": beam_args,
    }
    from cpm.pipeline.launcher import run_build

    job = prepare_job(specs, output, command_config, configs, dedup, partition_bytes, overwrite=overwrite, resume=resume)
    started = time.monotonic()
    input_bytes = sum(job.input_sizes.values())
    log.info("corpus build: %d input file(s), %.1f MB, %s with %d worker(s)", len(job.inputs), input_bytes / 1e6, runner, workers)
    manifest = run_build(job, beam_args, workers, progress=progress)
    print_summary(manifest, time.monotonic() - started, input_bytes)
    typer.echo(f"wrote {output}")


def dedup_config(no_dedup: bool, threshold: float, num_perm: int, ngram: int, against: Optional[List[str]],
                 exact_jaccard: bool) -> Any:
    """The :class:`~cpm.pipeline.dedup.DedupConfig` of ``cpm corpus build``'s options (None: ``--no-dedup``)."""
    if no_dedup:
        if against:
            raise CpmError("--against needs dedup; drop --no-dedup")
        return None
    from cpm.pipeline.dedup import DedupConfig

    fields = {"threshold": threshold, "num_perm": num_perm, "ngram": ngram, "against": tuple(against or ()) or None,
              "exact_jaccard": exact_jaccard or None}
    dedup = DedupConfig(enabled=True, **{k: v for k, v in fields.items() if v is not None})
    dedup.validate()
    return dedup


def _sample_specs(source: str, sources: list[str]) -> list[tuple[str, str]]:
    """(path, source) of the bundled samples of ``sources`` (no --input given)."""
    from cpm.pipeline.readers import sample_inputs

    specs = [(path, s) for s in sources for path in sample_inputs(s)]
    if not specs:
        raise CpmError(f"no bundled sample for --source {source}")
    return specs


def prepare_job(specs: list[tuple[str, str]], output: str, command_config: dict[str, Any], configs: dict[str, Any],
                dedup: Any, partition_bytes: int, *, overwrite: bool, resume: bool) -> Any:
    """The :class:`~cpm.pipeline.graph.BuildJob` of resolved inputs, with its output and work
    directory ready (the fingerprint of inputs and config guards ``--resume``)."""
    from cpm.pipeline.graph import BuildJob, balanced_partition_bytes
    from cpm.pipeline.launcher import build_fingerprint, prepare_output, resolve_inputs

    resolved, sizes = resolve_inputs(specs)
    partition_bytes = balanced_partition_bytes(partition_bytes, sum(sizes.values()))
    fingerprint_config = {k: v for k, v in command_config.items() if k not in ("runner", "workers", "beam_options")}
    fingerprint = build_fingerprint(resolved, sizes, {**fingerprint_config, "partition_bytes": partition_bytes})
    work_dir = prepare_output(output, overwrite, fingerprint, resume)
    return BuildJob(command_config["sources"], resolved, output, work_dir, configs, dedup, command_config["shard_bytes"],
                    sizes, command_config, partition_bytes)


def _dedup_dict(dedup) -> dict:
    if dedup is None:
        return {"enabled": False}
    import dataclasses

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(dedup).items()}


def print_summary(manifest: dict, seconds: float, input_bytes: int) -> None:
    """The end-of-job table: records per source and per rule."""
    from cpm.console import make_console
    from rich.table import Table

    counters = manifest["counters"]
    by_source = {s: c for s, c in counters["by_source"].items() if c["records_read"]}
    table = Table(title="corpus build", caption=f"{counters['records_read']:,} records, {input_bytes / 1e6:.1f} MB "
                  f"in {seconds:.1f}s ({input_bytes / 1e6 / max(seconds, 1e-6):.2f} MB/s)")
    table.add_column("", no_wrap=True)
    for name in by_source:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")

    def add(label: str, get) -> None:
        table.add_row(label, *(f"{get(c):,}" for c in by_source.values()), f"{get(counters):,}")

    add("read", lambda c: c["records_read"])
    add("kept", lambda c: c["kept"])
    rules = sorted({r for c in [counters] for r in c["rejected_by_rule"]})
    for rule in rules:
        add(f"  rejected: {rule}", lambda c, r=rule: c["rejected_by_rule"].get(r, 0))
    for rule in sorted(counters["duplicates_by_rule"]):
        add(f"  duplicate: {rule}", lambda c, r=rule: c["duplicates_by_rule"].get(r, 0))
    add("kept characters", lambda c: c["chars_kept"])
    add("kept words", lambda c: c["words_kept"])
    make_console().print(table)


@corpus_app.command("report")
def report_command(
    directory: str = typer.Argument(..., help="Output directory of cpm corpus build."),
    output: str = typer.Option("report.html", "--output", "-o", help="The HTML file to write (self-contained, opens offline)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the choice of sample records."),
) -> None:
    """Write an HTML report of a corpus build: counters, length/CJK/language histograms, duplicate clusters, samples.

    Example: cpm corpus report out/corpus --output out/corpus-report.html
    """
    from cpm.pipeline.report import write_report

    path = write_report(directory, output, seed)
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(corpus_app, name="corpus")
