"""``cpm corpus build`` end to end on Beam's DirectRunner: accounting, bad input, determinism.

Pipeline runs are expensive (seconds each), so one module-scoped build on a mixed, partly
broken input serves most assertions, and a second build of the same input with two worker
processes (the launcher's local pool) checks byte-identical shards.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpm.cli import main
from cpm.schemas.manifest import read_manifest, sha256_file
from cpm.shards.io import read_table

COMMON = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质"


def chinese_text(rng: random.Random, chars: int) -> str:
    """Varied Chinese-looking text (no repetition, so no filter or dedup drops it)."""
    out, since_punct = [], 0
    for _ in range(chars):
        out.append(rng.choice(COMMON))
        since_punct += 1
        if since_punct > rng.randint(8, 20):
            out.append(rng.choice("，。；"))
            since_punct = 0
    return "".join(out) + "。"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    rng = random.Random(7)
    folder = tmp_path_factory.mktemp("inputs")
    lines: list[bytes] = []
    for i in range(40):
        paragraphs = [chinese_text(rng, rng.randint(60, 200)) for _ in range(rng.randint(1, 4))]
        obj = {"text": "\n".join(paragraphs), "title": f"标题{i}"}
        if i % 3:
            obj["id"] = f"doc-{i:03d}"
        lines.append(json.dumps(obj, ensure_ascii=False).encode())
    lines.append(json.dumps({"id": "doc-001", "text": chinese_text(rng, 120)}, ensure_ascii=False).encode())  # duplicate id
    lines.append(json.dumps({"id": "short", "text": "太短了。"}, ensure_ascii=False).encode())  # min_length
    lines.append(json.dumps({"id": "english", "text": "Mostly English text here, not Chinese at all. " * 5}).encode())  # cjk_ratio
    lines.append(b'{"id": "broken", "text": "missing the end')  # malformed JSON
    lines.append(b'{"id": "bad-utf8", "text": "\xff\xfe\xfd not utf-8"}')  # invalid UTF-8
    good = folder / "good.jsonl"
    good.write_bytes(b"\n".join(lines) + b"\n")

    more = [json.dumps({"text": chinese_text(rng, 150)}, ensure_ascii=False) for _ in range(30)]
    compressed = gzip.compress(("\n".join(more) + "\n").encode())
    truncated = folder / "truncated.jsonl.gz"
    truncated.write_bytes(compressed[: len(compressed) // 2])
    empty = folder / "empty.jsonl"
    empty.write_bytes(b"")
    binary = folder / "binary.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64)
    huge = folder / "huge.jsonl"
    with open(huge, "w", encoding="utf-8") as handle:  # one 50 MB line
        handle.write('{"id": "huge", "text": "')
        handle.write("长" * (50 * (1 << 20) // 3))
        handle.write('"}\n')
    return {"good": good, "truncated": truncated, "empty": empty, "binary": binary, "huge": huge}


def run_build(inputs: dict[str, Path], output: Path, *extra: str) -> int:
    args = ["corpus", "build", "--source", "news", "--output", str(output), "--shard-size", "16KB", "--no-progress"]
    for path in inputs.values():
        args += ["--input", str(path)]
    return main(args + list(extra))


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("build") / "out"
    assert run_build(inputs, output, "--workers", "1") == 0  # each stage's tasks in the launcher's process
    return output


def all_rows(output: Path, subdir: str) -> list[dict]:
    rows = []
    for path in sorted((output / subdir).glob("part-*.arrow")):
        rows += read_table(path).to_pylist()
    return rows


def test_every_record_is_kept_or_rejected_exactly_once(built, inputs):
    counters = read_manifest(built)["counters"]
    assert counters["records_read"] == counters["kept"] + counters["rejected"] + counters["duplicates"]
    for source, c in counters["by_source"].items():
        assert c["records_read"] == c["kept"] + c["rejected"] + c["duplicates"], source
    docs, rejected = all_rows(built, "shards"), all_rows(built, "rejected")
    assert len(docs) == counters["kept"]
    assert len(rejected) == counters["rejected"] + counters["duplicates"]
    assert sum(counters["rejected_by_rule"].values()) == counters["rejected"]
    # every line of the good file ends up exactly once, as a document or a rejection
    good = str(inputs["good"])
    origins = [r["origin"] for r in docs + rejected if r["origin"].startswith(good + ":")]
    n_lines = inputs["good"].read_bytes().count(b"\n")
    assert sorted(origins) == sorted(f"{good}:{i}" for i in range(1, n_lines + 1))


def test_rejections_carry_their_rule(built, inputs):
    rejected = all_rows(built, "rejected")
    by_id = {r["id"]: r for r in rejected if r["id"]}
    assert by_id["short"]["rule"] == "min_length"
    assert by_id["english"]["rule"] == "cjk_ratio"
    dup = [r for r in rejected if r["rule"] == "duplicate_id"]
    assert len(dup) == 1 and dup[0]["id"] == "doc-001" and dup[0]["origin"].endswith(":41")
    # each broken file is written aside, named, with a reason, and the job went on
    for name in ("truncated", "empty", "binary", "huge"):
        hits = [r for r in rejected if r["origin"].startswith(str(inputs[name]) + ":")]
        assert hits and all(r["detail"] for r in hits), name
    good_rules = {r["rule"] for r in rejected if r["origin"].startswith(str(inputs["good"]) + ":")}
    assert len(good_rules) >= 5  # malformed JSON and invalid UTF-8 among them
    counters = read_manifest(built)["counters"]
    for row in rejected:
        bucket = "duplicates_by_rule" if row["rule"] in ("exact_duplicate", "near_duplicate") else "rejected_by_rule"
        assert counters[bucket][row["rule"]] >= 1


def test_document_shards_are_valid_sorted_and_segmented(built):
    import jieba

    manifest = read_manifest(built)
    entries = manifest["shards"]
    assert {e["kind"] for e in entries} == {"documents", "rejected", "signatures"}  # signatures: the dedup index
    doc_entries = [e for e in entries if e["kind"] == "documents"]
    assert len(doc_entries) > 1 and [e["path"] for e in doc_entries] == [f"shards/part-{i:05d}.arrow" for i in range(len(doc_entries))]
    for entry in entries:
        path = built / entry["path"]
        assert sha256_file(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
        assert read_table(path).num_rows == entry["rows"]
    ids = set()
    for entry in doc_entries:
        rows = read_table(built / entry["path"]).to_pylist()
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
        for row in rows:
            assert row["source"] == "news" and row["dup_cluster_size"] >= 1
            assert row["num_chars"] == len(row["text"]) and row["num_words"] == len(row["words"])
            assert row["id"] not in ids
            ids.add(row["id"])
    sample = read_table(built / doc_entries[0]["path"]).to_pylist()[:5]
    for row in sample:
        assert row["words"] == list(jieba.cut(row["text"]))
    assert not list(built.parent.glob(".out.tmp-*"))  # the temporary directory was renamed into place
    assert main(["shards", "inspect", str(built), "--verify", "--rows", "0"]) == 0


def test_two_worker_processes_give_byte_identical_shards(built, inputs, tmp_path, caplog):
    output = tmp_path / "out2"
    output.mkdir()
    (output / "stale.txt").write_text("old content")
    # with Beam's construction-time type checks on (the job turns them off by default): they pass,
    # and Beam has nothing to warn about (an unknown flag, a type hint it cannot use)
    caplog.set_level("WARNING")
    assert run_build(inputs, output, "--workers", "2", "--overwrite", "--pipeline_type_check") == 0
    assert not [m for m in (r.getMessage() for r in caplog.records) if "unparseable args" in m or "type hint" in m]
    assert not (output / "stale.txt").exists()
    first = {e["path"]: e["sha256"] for e in read_manifest(built)["shards"]}
    second = {e["path"]: e["sha256"] for e in read_manifest(output)["shards"]}
    assert first == second
    assert read_manifest(output)["config"]["workers"] == 2
    assert "--pipeline_type_check" in read_manifest(output)["config"]["beam_options"]


def build_command(inputs: dict[str, Path], output: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "cpm", "-q", "corpus", "build", "--source", "news", "--output", str(output),
            "--shard-size", "16KB", "--no-progress"]
    for path in inputs.values():
        args += ["--input", str(path)]
    return args + list(extra)


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/status").read().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_resume_after_sigkill_gives_the_same_bytes_for_any_partition_size(built, inputs, tmp_path):
    """A real build is killed (SIGKILL) mid-way; --resume finishes it, byte-identical to an uninterrupted
    build with the default partitions and one worker; a resume with another config is a one-line error."""
    output = tmp_path / "out"
    small = ("--partition-size", "4KB", "--workers", "2")
    markers = tmp_path / ".out.build" / ".tasks"
    process = subprocess.Popen(build_command(inputs, output, *small), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (markers / "exact").is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()]
    assert workers, "the launcher's pool of two workers was not started"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") and "zombie" not in _state(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}") and "zombie" not in _state(pid)], "workers outlived the launcher"
    assert not (output / "manifest.json").exists(), "the build finished before it could be killed"
    done = {p.parent.name for p in markers.glob("*/*.done")}
    assert "clean" in done and "shards" not in done

    other = subprocess.run(build_command(inputs, output, *small, "--resume", "--dedup-threshold", "0.7"), capture_output=True, text=True)
    assert other.returncode == 1
    assert "--resume" in other.stderr and "different config" in other.stderr and len(other.stderr.strip().splitlines()) == 1

    resumed = subprocess.run(build_command(inputs, output, *small, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    first = {e["path"]: e["sha256"] for e in read_manifest(built)["shards"]}
    again = {e["path"]: e["sha256"] for e in read_manifest(output)["shards"]}
    assert first == again
    assert read_manifest(output)["counters"] == read_manifest(built)["counters"]
    assert not (tmp_path / ".out.build").exists()


def test_user_errors_are_one_line_and_before_any_work(built, inputs, tmp_path, capsys):
    assert run_build(inputs, built) == 1  # existing non-empty output without --overwrite
    assert "exists and is not empty" in capsys.readouterr().err
    missing = tmp_path / "nope.jsonl"
    assert main(["corpus", "build", "--source", "news", "--input", str(missing), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert "nope.jsonl" in err and len(err.splitlines()) == 1
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"news": {"min_chars": 10, "colour": "red"}}))
    assert main(["corpus", "build", "--source", "news", "--input", str(inputs["good"]), "--output", str(tmp_path / "o"), "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert "unknown config key 'colour'" in err and len(err.splitlines()) == 1
    assert main(["corpus", "build", "--source", "all", "--input", str(inputs["good"]), "--output", str(tmp_path / "o")]) == 1
    assert "SOURCE=PATH" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bundled_samples_of_every_source(tmp_path):
    from cpm.pipeline.readers import sample_inputs
    from cpm.schemas import SOURCES

    from cpm.errors import CpmError

    try:
        if not all(sample_inputs(s) for s in SOURCES):
            raise CpmError("empty")
    except CpmError:
        pytest.skip("bundled samples are not all present yet")
    output = tmp_path / "all"
    assert main(["corpus", "build", "--source", "all", "--output", str(output), "--no-progress"]) == 0
    counters = read_manifest(output)["counters"]
    for source in SOURCES:
        c = counters["by_source"][source]
        assert c["kept"] > 0, source
        assert c["records_read"] == c["kept"] + c["rejected"] + c["duplicates"]
    sources = {row["source"] for row in all_rows(output, "shards")}
    assert sources == set(SOURCES)
