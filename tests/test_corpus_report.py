"""``cpm corpus report``: one self-contained HTML page, rendered in headless Chromium without console errors."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from cpm.cli import main
from cpm.schemas import rejected_schema
from cpm.schemas.manifest import read_manifest
from cpm.shards.io import write_table

pytest.importorskip("plotly")

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--log-level=0"]
HOSTILE = "<img src=x onerror=alert(1)>&</pre>"


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on a local page with a fresh profile; its console messages go to stderr."""
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def console_messages(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def corpus(news_corpus, tmp_path_factory) -> Path:
    """The news build plus one rejected record whose text is HTML (it must be shown, not run)."""
    out = tmp_path_factory.mktemp("report") / "corpus"
    shutil.copytree(news_corpus, out)
    row = {"id": "hostile", "source": "news", "rule": "test_rule", "detail": HOSTILE, "duplicate_of": None,
           "origin": "test:1", "text": HOSTILE}
    write_table(out / "rejected" / "part-00099.arrow", pa.Table.from_pylist([row], schema=rejected_schema()))
    return out


@pytest.fixture(scope="module")
def report(corpus, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report-html") / "report.html"
    assert main(["-q", "corpus", "report", str(corpus), "--output", str(path)]) == 0
    return path


def test_report_content(report, corpus):
    page = report.read_text("utf-8")
    counters = read_manifest(corpus)["counters"]
    assert "<section id='all sources'>" in page and "<section id='news'>" in page
    for rule in counters["by_source"]["news"]["rejected_by_rule"]:
        assert f"<h4>{rule}</h4>" in page
    for title in ("Document length", "CJK ratio", "Language score (zh)", "Records removed, by rule"):
        assert title in page
    # samples are escaped text, never markup; at most three per rule
    assert HOSTILE not in page and html.escape(HOSTILE) in page
    for block in re.findall(r"<ol class=samples>(.*?)</ol>", page, re.S):
        assert 1 <= block.count("<li>") <= 3
    # self-contained: no script or stylesheet from the network
    assert not re.search(r"<(script|link)[^>]+(src|href)=['\"]?(https?:)?//", page)
    assert page.count("<div class=chart>") >= 2 * 5


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium); the page is not rendered")
def test_report_renders_in_headless_chromium_without_console_errors(report, tmp_path):
    dom = chromium(report, tmp_path / "profile-dom", "--dump-dom", "--virtual-time-budget=10000")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom) == []
    assert dom.stdout.count("main-svg") >= 10  # plotly drew its charts (its script ran, offline)
    shot = tmp_path / "report.png"
    done = chromium(report, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,1800",
                    "--virtual-time-budget=10000", "--hide-scrollbars")
    assert done.returncode == 0 and console_messages(done) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_the_console_check_catches_a_script_error(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    done = chromium(page, tmp_path / "profile", "--dump-dom")
    assert any("undefinedFunction" in line for line in console_messages(done))


def test_report_of_a_directory_that_is_not_a_corpus_is_a_one_line_error(news_packed, tmp_path, capsys):
    assert main(["corpus", "report", str(news_packed[0]), "--output", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cpm corpus build output" in err and not (tmp_path / "r.html").exists()


def test_histograms_hold_counts_not_values():
    """The page does not grow with the corpus: a histogram of 200,000 values is a few kB of counts."""
    import random

    from cpm.pipeline.report import _histogram

    rng = random.Random(0)
    kept = [rng.lognormvariate(6, 1) for _ in range(200_000)]
    fig = _histogram("Document length", kept, kept[:1000], "characters", log_x=True)
    assert len(fig.to_json()) < 20_000
    assert [sum(trace.y) for trace in fig.data] == [200_000, 1000]
