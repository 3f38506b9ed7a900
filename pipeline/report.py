"""``cpm corpus report``: one self-contained HTML page of what a corpus build kept and removed.

Per source and overall: the counters by rule (from ``manifest.json``), document lengths of kept and
rejected records, CJK-ratio and language-score distributions, duplicate-cluster sizes, and three
sample texts per rejection rule (HTML-escaped). Charts are plotly figures; plotly's JavaScript is
inlined once (about 4.7 MB, whatever the corpus size), so the file opens offline and stays interactive.

Kept documents are read column by column (``num_chars``, ``cjk_ratio``, ``dup_cluster_size``,
``meta``); texts are only read from rejected shards. Language scores come from the build (``meta``
``language_score`` of kept documents, the ``detail`` of ``language`` rejections); records without
one are scored with the build's own detector, at most :data:`MAX_SCORED` per source and side.
"""

from __future__ import annotations

import html
import json
import logging
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpm.errors import CpmError

log = logging.getLogger(__name__)

MAX_SCORED = 2000  # records per source and side scored for language when the build recorded no score
SAMPLES_PER_RULE = 3
SAMPLE_CHARS = 400
_DETAIL_SCORE = re.compile(r"p=([0-9.]+)")
KEPT_COLOR, REJECTED_COLOR = "#2a7ab0", "#d1603d"


@dataclass
class Side:
    """Per-record values of kept or rejected records of one source."""

    lengths: list[int] = field(default_factory=list)
    cjk: list[float] = field(default_factory=list)
    language: list[float] = field(default_factory=list)
    unscored: list[str] = field(default_factory=list)  # texts without a recorded score, to score (bounded)


@dataclass
class SourceData:
    kept: Side = field(default_factory=Side)
    rejected: Side = field(default_factory=Side)
    cluster_sizes: Counter = field(default_factory=Counter)  # cluster size -> clusters (survivors)
    samples: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # rule -> sample records


def _read_kept(directory: Path, data: dict[str, SourceData]) -> Counter:
    """Kept documents' values; returns how many per source have no language score (up to MAX_SCORED)."""
    from cpm.shards.io import iter_batches, list_shards

    missing: Counter = Counter()
    for path in list_shards(directory, "shards"):
        for batch in iter_batches(path, "documents"):
            columns = {name: batch.column(name).to_pylist() for name in ("source", "num_chars", "cjk_ratio", "dup_cluster_size", "meta")}
            for source, chars, cjk, cluster, meta in zip(*columns.values()):
                side = data[source].kept
                side.lengths.append(chars)
                side.cjk.append(cjk)
                score = json.loads(meta).get("language_score")
                if score is not None:
                    side.language.append(float(score))
                elif missing[source] < MAX_SCORED:
                    missing[source] += 1
                if cluster > 1:
                    data[source].cluster_sizes[cluster] += 1
    return missing


def _read_rejected(directory: Path, data: dict[str, SourceData], rng: random.Random) -> None:
    from cpm.pipeline.clean import cjk_ratio
    from cpm.shards.io import iter_batches, list_shards

    seen: Counter = Counter()
    for path in list_shards(directory, "rejected"):
        for batch in iter_batches(path, "rejected"):
            for row in batch.to_pylist():
                source, rule, text = row["source"], row["rule"], row["text"] or ""
                side = data[source].rejected
                side.lengths.append(len(text))
                side.cjk.append(cjk_ratio(text) if text else 0.0)
                match = _DETAIL_SCORE.search(row["detail"] or "") if rule == "language" else None
                if match:
                    side.language.append(float(match.group(1)))
                elif text and len(side.unscored) < MAX_SCORED:
                    side.unscored.append(text)
                _keep_sample(data[source].samples, rule, row, seen, rng)


def _keep_sample(samples: dict, rule: str, row: dict, seen: Counter, rng: random.Random) -> None:
    """Reservoir sampling: SAMPLES_PER_RULE uniformly chosen records of each rule (per source)."""
    seen[rule] += 1
    sample = {key: row.get(key) or "" for key in ("id", "origin", "detail", "duplicate_of")}
    sample["text"] = (row["text"] or "")[:SAMPLE_CHARS]
    chosen = samples.setdefault(rule, [])
    if len(chosen) < SAMPLES_PER_RULE:
        chosen.append(sample)
    else:
        slot = rng.randrange(seen[rule])
        if slot < SAMPLES_PER_RULE:
            chosen[slot] = sample


def _texts_without_scores(directory: Path, data: dict[str, SourceData], wanted: Counter) -> None:
    """The texts of kept documents whose build recorded no language score (language filter off), ``wanted`` per source."""
    from cpm.shards.io import iter_batches, list_shards

    if not wanted:
        return
    texts: dict[str, list[str]] = defaultdict(list)
    for path in list_shards(directory, "shards"):
        for batch in iter_batches(path, "documents"):
            for source, text, meta in zip(*(batch.column(c).to_pylist() for c in ("source", "text", "meta"))):
                if len(texts[source]) < wanted.get(source, 0) and "language_score" not in json.loads(meta):
                    texts[source].append(text)
    for source, found in texts.items():
        data[source].kept.unscored = found


def _score_language(data: dict[str, SourceData], sample_chars: int = 500) -> None:
    from cpm.pipeline.language import detect_language

    for source_data in data.values():
        for side in (source_data.kept, source_data.rejected):
            for text in side.unscored:
                lang, prob = detect_language(text[:sample_chars])
                side.language.append(float(prob) if lang == "zh" else 0.0)
            side.unscored = []


def collect(directory: str | os.PathLike[str], seed: int = 0) -> tuple[dict[str, Any], dict[str, SourceData]]:
    """The manifest and the per-source values of a ``cpm corpus build`` output directory."""
    from cpm.schemas.manifest import read_manifest

    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest["kind"] != "documents":
        raise CpmError(f"{directory}: a {manifest['kind']} directory; cpm corpus report takes a cpm corpus build output")
    data: dict[str, SourceData] = defaultdict(SourceData)
    missing = _read_kept(directory, data)
    _read_rejected(directory, data, random.Random(seed))
    _texts_without_scores(directory, data, missing)
    _score_language(data)
    return manifest, dict(sorted(data.items()))


def overall(data: dict[str, SourceData]) -> SourceData:
    """All sources together (samples: the first of each source's, up to three per rule)."""
    total = SourceData()
    for source_data in data.values():
        for name in ("kept", "rejected"):
            mine, theirs = getattr(total, name), getattr(source_data, name)
            mine.lengths += theirs.lengths
            mine.cjk += theirs.cjk
            mine.language += theirs.language
        total.cluster_sizes.update(source_data.cluster_sizes)
        for rule, samples in source_data.samples.items():
            total.samples.setdefault(rule, [])
            total.samples[rule] += samples[: SAMPLES_PER_RULE - len(total.samples[rule])]
    return total


# ------------------------------------------------------------------------------ rendering


def _histogram(title: str, kept: list[float], rejected: list[float], x_title: str, log_x: bool = False, bins: int = 40):
    """Overlaid histograms of kept and rejected values on shared bins, counted here: the page holds
    ``bins`` counts per side, not the values, so its size does not grow with the corpus. ``log_x``
    bins log10(value + 1) and labels the axis in values."""
    import numpy as np
    import plotly.graph_objects as go

    sides = [(name, np.asarray(values, dtype=np.float64), color)
             for name, values, color in (("kept", kept, KEPT_COLOR), ("rejected", rejected, REJECTED_COLOR)) if len(values)]
    fig = go.Figure()
    fig.update_layout(barmode="overlay", bargap=0, title=title, xaxis_title=x_title, yaxis_title="records")
    if not sides:
        return fig
    if log_x:
        sides = [(name, np.log10(values + 1), color) for name, values, color in sides]
    low = min(float(v.min()) for _, v, _ in sides)
    high = max(float(v.max()) for _, v, _ in sides)
    edges = np.linspace(low, high if high > low else low + 1, bins + 1)
    shown = 10 ** edges - 1 if log_x else edges
    ranges = [f"{a:,.0f} to {b:,.0f}" if log_x else f"{a:.3g} to {b:.3g}" for a, b in zip(shown[:-1], shown[1:])]
    for name, values, color in sides:
        counts, _ = np.histogram(values, edges)
        fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=edges[1] - edges[0], customdata=ranges,
                             name=f"{name} ({len(values):,})", marker_color=color, opacity=0.75,
                             hovertemplate="%{customdata}: %{y:,} records<extra>" + name + "</extra>"))
    if log_x:
        ticks = list(range(0, int(np.ceil(high)) + 1))
        fig.update_xaxes(tickvals=ticks, ticktext=[f"{10 ** t:,}" for t in ticks])
    return fig


def _rule_bars(title: str, counters: dict[str, Any]):
    import plotly.graph_objects as go

    rules = {**counters.get("rejected_by_rule", {}), **counters.get("duplicates_by_rule", {})}
    ordered = sorted(rules.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in ordered], y=[k for k, _ in ordered], orientation="h", marker_color=REJECTED_COLOR))
    fig.update_layout(title=title, xaxis_title="records removed", height=max(260, 40 + 28 * len(ordered)))
    return fig


def _cluster_bars(title: str, sizes: Counter):
    import plotly.graph_objects as go

    ordered = sorted(sizes.items())
    fig = go.Figure(go.Bar(x=[str(k) for k, _ in ordered], y=[v for _, v in ordered], marker_color=KEPT_COLOR))
    fig.update_layout(title=title, xaxis_title="documents in the cluster (survivor included)", yaxis_title="clusters")
    return fig


def _layout(fig) -> None:
    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50}, height=fig.layout.height or 320,
                      legend={"orientation": "h", "y": -0.25})


def _figures_html(figures: list, first: bool) -> list[str]:
    out = []
    for fig in figures:
        _layout(fig)
        out.append(fig.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False, "responsive": True}))
        first = False
    return out


def _counter_table(counters: dict[str, Any]) -> str:
    rows = [("records read", counters.get("records_read", 0)), ("kept", counters.get("kept", 0)),
            ("characters kept", counters.get("chars_kept", 0))]
    rows += [(f"rejected: {rule}", n) for rule, n in sorted(counters.get("rejected_by_rule", {}).items())]
    rows += [(f"duplicate: {rule}", n) for rule, n in sorted(counters.get("duplicates_by_rule", {}).items())]
    cells = "".join(f"<tr><td>{html.escape(str(k))}</td><td class=num>{v:,}</td></tr>" for k, v in rows)
    return f"<table class=counters>{cells}</table>"


def _samples_html(samples: dict[str, list[dict[str, str]]]) -> str:
    if not samples:
        return "<p class=muted>Nothing was rejected.</p>"
    parts = []
    for rule in sorted(samples):
        items = []
        for s in samples[rule]:
            where = html.escape(s["origin"]) + (f" · {html.escape(s['detail'])}" if s["detail"] else "")
            if s["duplicate_of"]:
                where += f" · duplicate of {html.escape(s['duplicate_of'])}"
            items.append(f"<li><div class=where>{where}</div><pre>{html.escape(s['text']) or '<i>(no text)</i>'}</pre></li>")
        parts.append(f"<h4>{html.escape(rule)}</h4><ol class=samples>{''.join(items)}</ol>")
    return "".join(parts)


def _section(name: str, counters: dict[str, Any], values: SourceData, first: bool) -> str:
    figures = [
        _rule_bars("Records removed, by rule", counters),
        _histogram("Document length", values.kept.lengths, values.rejected.lengths, "characters (log scale)", log_x=True),
        _histogram("CJK ratio", values.kept.cjk, values.rejected.cjk, "CJK ideographs / non-space characters"),
        _histogram("Language score (zh)", values.kept.language, values.rejected.language, "py3langid probability of zh"),
    ]
    if values.cluster_sizes:
        figures.append(_cluster_bars("Duplicate clusters", values.cluster_sizes))
    charts = "".join(f"<div class=chart>{h}</div>" for h in _figures_html(figures, first))
    anchor = html.escape(name, quote=True)
    return (f"<section id='{anchor}'><h2>{html.escape(name)}</h2><div class=grid><div class=chart>{_counter_table(counters)}</div>"
            f"{charts}</div><h3>Samples of rejected records</h3>{_samples_html(values.samples)}</section>")


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}header p{margin:6px 0 0;opacity:.85}
nav{padding:10px 28px;background:#fff;border-bottom:1px solid #ddd}nav a{margin-right:14px;color:#1f3b57}
section{padding:8px 28px 24px;border-bottom:1px solid #e4e4e4}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:14px}
.chart{background:#fff;border:1px solid #e4e4e4;border-radius:6px;padding:6px;min-height:120px}
table.counters{border-collapse:collapse;width:100%;font-size:14px}table.counters td{padding:4px 8px;border-bottom:1px solid #eee}
td.num{text-align:right;font-variant-numeric:tabular-nums}
ol.samples{padding-left:20px}ol.samples li{margin-bottom:10px}
.where{font-size:12px;color:#666}pre{white-space:pre-wrap;word-break:break-all;background:#fff;border:1px solid #eee;padding:8px;margin:4px 0;max-height:12em;overflow:auto}
.muted{color:#777}
"""


def render(directory: str | os.PathLike[str], manifest: dict[str, Any], data: dict[str, SourceData]) -> str:
    """The report page."""
    counters = manifest["counters"]
    by_source = counters.get("by_source", {})
    sections = [_section("all sources", counters, overall(data), True)]
    for source in sorted(set(by_source) | set(data)):
        sections.append(_section(source, by_source.get(source, {}), data.get(source, SourceData()), False))
    nav = "".join(f"<a href='#{html.escape(n, quote=True)}'>{html.escape(n)}</a>" for n in ["all sources", *sorted(set(by_source) | set(data))])
    title = f"cpm corpus report: {Path(directory).name}"
    summary = (f"{counters.get('records_read', 0):,} records read, {counters.get('kept', 0):,} kept; "
               f"written by cpm {manifest.get('tool_version')} ({manifest.get('command')})")
    return (f"<!DOCTYPE html><html lang=zh><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{STYLE}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p></header><nav>{nav}</nav>"
            f"{''.join(sections)}</body></html>")


def write_report(directory: str | os.PathLike[str], output: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the report of a corpus build to ``output`` (atomically)."""
    from importlib.util import find_spec

    if find_spec("plotly") is None:
        raise CpmError("cpm corpus report draws with plotly, which is not installed: pip install 'cpm[report]'") from None
    manifest, data = collect(directory, seed)
    page = render(directory, manifest, data)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    tmp.write_text(page, "utf-8")
    os.replace(tmp, output)
    log.info("wrote %s (%.1f MB)", output, output.stat().st_size / 1e6)
    return output
