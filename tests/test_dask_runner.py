"""``--runner DaskRunner`` on a real ``dask.distributed`` cluster started by the tests on 127.0.0.1.

A scheduler and two single-threaded worker processes (``dask scheduler`` / ``dask worker``)
serve every test of the module: the translation fixes of :mod:`cpm.pipeline.dask_compat` on a
small pipeline, and a whole ``cpm corpus build`` (dedup included) whose shards and rejects must
be byte-identical to DirectRunner's.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("dask.distributed")

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from cpm.cli import main  # noqa: E402
from cpm.schemas.manifest import read_manifest  # noqa: E402

COMMON = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质"


def _dask(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from distributed.cli.dask_{0} import main; sys.argv[0] = 'dask-{0}'; main()".format(args[0]), *args[1:]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``tcp://127.0.0.1:PORT`` of a scheduler with two worker processes (stopped after the module)."""
    from dask.distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    # the scheduler and workers unpickle this module's DoFns by reference: they import it from here
    here = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen(
        _dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for _ in range(2):
            procs.append(subprocess.Popen(
                _dask("worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"),
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        assert address.startswith("tcp://127.0.0.1:")
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


# --------------------------------------------------------------------------- the translation fixes

class CountRuns(beam.DoFn):
    """Appends each element it processes to a file (to count how often a step runs)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, x):
        with open(self.path, "a") as handle:
            handle.write(f"{x}\n")
        yield x


def split_parity(x):
    if x % 2:
        yield beam.pvalue.TaggedOutput("odd", x)
    else:
        yield x


def record(_, even, odd, total, groups, out):
    Path(out).write_text(json.dumps({"even": sorted(even), "odd": sorted(odd), "total": total, "groups": sorted(groups)}))


def test_multi_output_side_inputs_and_every_step_once(cluster, tmp_path):
    from cpm.pipeline.dask_compat import DaskRunner

    runs, out = tmp_path / "runs.txt", tmp_path / "out.json"
    options = PipelineOptions([f"--dask_client_address={cluster}"])
    pipeline = beam.Pipeline(runner=DaskRunner(), options=options)
    numbers = pipeline | beam.Create(range(20)) | beam.ParDo(CountRuns(str(runs)))
    parts = numbers | beam.FlatMap(split_parity).with_outputs("odd", main="even")
    total = numbers | beam.CombineGlobally(sum)  # a singleton side input (Beam's Dask runner: "size 2")
    groups = numbers | beam.Map(lambda x: (x % 3, x)) | beam.GroupByKey() | beam.MapTuple(lambda k, xs: (k, sorted(xs)))
    _ = pipeline | "Once" >> beam.Create([None]) | beam.Map(
        record, beam.pvalue.AsList(parts.even), beam.pvalue.AsList(parts.odd), beam.pvalue.AsSingleton(total),
        beam.pvalue.AsList(groups), str(out),
    )
    _ = parts.odd | "Unused" >> beam.Map(lambda x: x)  # a second sink: it must run too
    assert pipeline.run().wait_until_finish() == "DONE"
    result = json.loads(out.read_text())
    assert result["even"] == list(range(0, 20, 2)) and result["odd"] == list(range(1, 20, 2))
    assert result["total"] == sum(range(20))
    assert result["groups"] == [[k, list(range(k, 20, 3))] for k in range(3)]
    # four consumers read `numbers`: each element was still processed exactly once
    assert sorted(map(int, runs.read_text().split())) == list(range(20))


def test_local_cluster_is_started_and_shut_down():
    from cpm.pipeline.runners import local_dask_cluster
    from dask.distributed import Client

    with local_dask_cluster(2) as address:
        assert address.startswith("tcp://127.0.0.1:")
        with Client(address, timeout=30) as client:
            assert len(client.nthreads()) == 2
    with pytest.raises(OSError):
        Client(address, timeout=2)


# --------------------------------------------------------------------------- cpm corpus build

def chinese_text(rng: random.Random, chars: int) -> str:
    out = []
    for i in range(chars):
        out.append(rng.choice(COMMON))
        if i % 15 == 14:
            out.append("，")
    return "".join(out) + "。"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    """Three input files: kept documents, rejects, exact and near duplicates."""
    rng = random.Random(3)
    folder = tmp_path_factory.mktemp("corpus")
    base = [chinese_text(rng, 300) for _ in range(6)]
    files = []
    for n in range(3):
        lines = [{"id": f"f{n}-{i}", "text": chinese_text(rng, rng.randint(80, 250))} for i in range(15)]
        lines.append({"id": f"f{n}-copy", "text": base[n]})  # exact duplicate of the next file's near-copy source
        lines.append({"id": f"f{n}-near", "text": base[(n + 1) % 3][:-20] + chinese_text(rng, 20)})
        lines.append({"id": f"f{n}-short", "text": "太短了。"})
        path = folder / f"part{n}.jsonl"
        path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{broken\n", encoding="utf-8")
        files.append(path)
    return files


def build(files: list[Path], output: Path, *extra: str) -> int:
    args = ["corpus", "build", "--source", "news", "--output", str(output), "--shard-size", "8KB", "--no-progress"]
    for path in files:
        args += ["--input", str(path)]
    return main(args + list(extra))


def test_corpus_build_on_dask_is_byte_identical_to_direct(cluster, corpus, tmp_path):
    assert build(corpus, tmp_path / "direct") == 0
    assert build(corpus, tmp_path / "dask", "--runner", "DaskRunner", f"--dask_client_address={cluster}") == 0
    direct, dask = read_manifest(tmp_path / "direct"), read_manifest(tmp_path / "dask")
    assert {e["kind"] for e in direct["shards"]} >= {"documents", "rejected"}
    assert [(e["path"], e["sha256"]) for e in dask["shards"]] == [(e["path"], e["sha256"]) for e in direct["shards"]]
    assert dask["counters"] == direct["counters"]
    counters = direct["counters"]
    assert counters["duplicates"] >= 1 and counters["rejected"] >= 6  # dedup and the filters did run
    assert counters["records_read"] == counters["kept"] + counters["rejected"] + counters["duplicates"]
