"""The launcher of ``cpm corpus build``: inputs, the hidden output directory, resume, and the stages.

The build writes into a hidden sibling of the output, ``.NAME.build``, and renames it into place
when the manifest is written: a directory with a manifest is complete. Each stage of
:mod:`cpm.pipeline.graph` runs its unfinished tasks:

* on Beam's DirectRunner with one worker, in the launcher's process, one task after another (a
  stage's graph is one ``ParDo`` over its task list: building and running it on Beam's in-process
  runner only added a fixed cost per stage);
* on the DirectRunner with ``--workers N``, in a pool of N local processes (like datatrove's local
  executor: independent tasks, no data plane between them);
* on any other runner, as a Beam pipeline on that runner (its own parallelism).

``--resume`` keeps the tasks that finished (their completion markers) of an interrupted build of
the same inputs and config, and runs the rest: the output is byte-identical to an uninterrupted build.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from cpm.errors import CpmError
from cpm.pipeline import graph, spill
from cpm.pipeline.graph import BuildJob
from cpm.pipeline.progress import PROGRESS_DIR, ProgressDisplay

log = logging.getLogger(__name__)

BUILD_FILE = "build.json"  # what a resumed build must match
OWNER_FILE = "owner"  # pid@host of the build writing the directory
WORKER_PEAK_BYTES = 1 << 30  # about twice a worker's peak RSS at the default partition size (bench/bench_scale.py)
DIRECT_RUNNERS = (None, "DirectRunner", "direct")


def resolve_inputs(specs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Expand ``(pattern, source)`` through Beam's file systems; a pattern matching nothing is an error."""
    found: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for pattern, source in specs:
        if "://" not in pattern:
            pattern = os.path.abspath(os.path.expanduser(pattern))
        if "://" not in pattern and os.path.isdir(pattern):  # a local directory: every file under it
            files = sorted(
                (os.path.join(root, name), os.path.getsize(os.path.join(root, name)))
                for root, dirs, names in os.walk(pattern)
                for name in names
                if not name.startswith(".") and not any(part.startswith(".") for part in os.path.relpath(root, pattern).split(os.sep) if part != ".")
            )
        elif "://" not in pattern and not any(c in pattern for c in "*?[") and os.path.isfile(pattern):
            files = [(pattern, os.path.getsize(pattern))]  # one local file: no need to load Beam's file systems
        else:
            if pattern.endswith("/"):  # a remote "directory": everything under the prefix
                pattern += "**"
            from apache_beam.io.filesystems import FileSystems

            try:
                result = FileSystems.match([pattern])[0]
            except Exception as exc:  # noqa: BLE001 - Beam raises BeamIOError and friends
                raise CpmError(f"{pattern}: cannot list input ({exc})") from None
            files = sorted((m.path, m.size_in_bytes) for m in result.metadata_list)
        files = [(p, s) for p, s in files if not os.path.basename(p).startswith(".") and not p.endswith("/")]
        if not files:
            raise CpmError(f"{pattern}: no such input file")
        for path, size in files:
            if path in found and found[path] != source:
                raise CpmError(f"{path}: given as input of both {found[path]!r} and {source!r}")
            found[path] = source
            sizes[path] = size
    return sorted(found.items()), sizes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- the hidden output directory

def work_dir_of(output: str) -> Path:
    out = Path(output).resolve()
    return out.parent / f".{out.name}.build"


def prepare_output(output: str, overwrite: bool, fingerprint: dict[str, Any], resume: bool = False) -> str:
    """Check ``output``; create (or, with ``resume``, reopen) the hidden directory the build writes into."""
    if "://" in output:
        raise CpmError(f"{output}: the output must be a local (or mounted) directory")
    out = Path(output).resolve()
    if out.exists() and not out.is_dir():
        raise CpmError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CpmError(f"{out}: exists and is not empty (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed run of an older cpm
        pid = stale.name.rsplit(".tmp-", 1)[-1].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    work = work_dir_of(output)
    _check_owner(work)
    if resume and (work / BUILD_FILE).is_file():
        _check_fingerprint(work, fingerprint)
        log.info("resuming the build in %s", work)
    else:
        if resume:
            log.info("nothing to resume in %s: starting a new build", work)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        _write_json(work / BUILD_FILE, fingerprint)
    (work / OWNER_FILE).write_text(f"{os.getpid()}@{socket.gethostname()}")
    return str(work)


def _check_owner(work: Path) -> None:
    try:
        pid, _, host = (work / OWNER_FILE).read_text().partition("@")
    except OSError:
        return
    if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
        raise CpmError(f"{work}: another build (pid {pid}) is writing this output")


def _check_fingerprint(work: Path, fingerprint: dict[str, Any]) -> None:
    try:
        before = json.loads((work / BUILD_FILE).read_text())
    except (OSError, ValueError):
        raise CpmError(f"{work}: unreadable {BUILD_FILE}; run without --resume to start over") from None
    for name in sorted(set(before) | set(fingerprint)):
        if before.get(name) != fingerprint.get(name):
            raise CpmError(f"--resume: the build in {work} was started with a different {name}; run without --resume to start over")


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True))
    os.replace(tmp, path)


def build_fingerprint(job_inputs: list[tuple[str, str]], sizes: dict[str, int], config: dict[str, Any]) -> dict[str, Any]:
    """What must not change between a build and its ``--resume``: inputs (size, mtime) and config."""
    inputs = []
    for path, source in job_inputs:
        entry: list[Any] = [path, source, sizes.get(path)]
        if "://" not in path:
            try:
                entry.append(os.stat(path).st_mtime_ns)
            except OSError:
                pass
        inputs.append(entry)
    from cpm import __version__

    return {"inputs": inputs, "config": config, "cpm_version": __version__}


def publish_output(work_dir: str, output: str) -> None:
    """Drop the intermediates and move the finished ``work_dir`` into place (replacing an old ``output``)."""
    for name in (graph.WORK_DIR, spill.MARKERS_DIR, PROGRESS_DIR):
        shutil.rmtree(os.path.join(work_dir, name), ignore_errors=True)
    for name in (BUILD_FILE, OWNER_FILE):
        try:
            os.remove(os.path.join(work_dir, name))
        except OSError:
            pass
    from cpm.shards.io import replace_dir

    replace_dir(work_dir, Path(output).resolve())


# --------------------------------------------------------------------------- executors

def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def default_workers() -> int:
    """The usable cores, capped by available memory over a worker's peak (logged)."""
    cores = usable_cores()
    memory = available_memory()
    workers = cores if memory is None else max(1, min(cores, memory // WORKER_PEAK_BYTES))
    log.info("--workers %d: %d usable core(s), %s available, %.1f GB per worker", workers, cores,
             "unknown memory" if memory is None else f"{memory / 1e9:.1f} GB", WORKER_PEAK_BYTES / 1e9)
    return workers


class BeamStages:
    """Runs each stage as a Beam pipeline with the job's options (any runner).

    The runner is opened once for the whole build (:func:`cpm.pipeline.runners.open_runner`: a local
    Dask cluster, say, starts once, not once per stage) and closed by :meth:`close`.
    """

    def __init__(self, beam_args: list[str]) -> None:
        from cpm.pipeline.beam_patches import JobOptions, memoize_dofn_specs
        from cpm.pipeline.runners import open_runner, runner_name

        memoize_dofn_specs()
        self.options = JobOptions(beam_args)
        self.name = runner_name(self.options)
        self._exit = contextlib.ExitStack()
        self.runner = self._exit.enter_context(open_runner(self.options))

    def run(self, job: BuildJob, stage: str, tasks: list, params: dict) -> None:
        import apache_beam as beam

        from cpm.pipeline.runners import is_direct, start_error

        pipeline = beam.Pipeline(runner=self.runner, options=self.options)
        graph.add_stage(pipeline, job, stage, tasks, params)
        try:
            result = pipeline.run()
        except Exception as exc:  # noqa: BLE001 - a runner that cannot start: one line, not its traceback
            if is_direct(self.name) or isinstance(exc, CpmError):
                raise
            log.debug("the runner failed to start", exc_info=True)
            raise start_error(self.name, exc) from exc
        state = result.wait_until_finish()
        if state is not None and str(state) not in ("DONE", "PipelineState.DONE"):
            raise CpmError(f"stage {stage}: the Beam job ended in state {state}")

    def close(self) -> None:
        self._exit.close()


def _worker_init(level: int, launcher: int) -> None:
    logging.basicConfig(level=level)
    logging.getLogger("jieba").setLevel(logging.WARNING)
    threading.Thread(target=_exit_with, args=(launcher,), daemon=True).start()


def _exit_with(launcher: int) -> None:
    """End this worker when the launcher is gone (killed): nobody would collect its results."""
    while os.getppid() == launcher:
        time.sleep(0.5)
    os._exit(1)


def _ready() -> int:
    return os.getpid()


class InProcess:
    """Runs each stage's tasks in the launcher's process, in order (DirectRunner, one worker)."""

    def run(self, job: BuildJob, stage: str, tasks: list, params: dict) -> None:
        for task in tasks:
            graph.run_task(job, stage, task, params)

    def close(self) -> None:
        pass


class LocalPool:
    """Runs each stage's tasks in a pool of local processes.

    The workers are forked from the launcher while it has no other thread (they share its imported
    modules) and are its direct children, so its CPU time includes theirs. The tables a stage needs
    (:data:`graph.PRELOADS`) are loaded by the launcher while the workers run an earlier stage, and
    the pool is forked again after that stage: the workers of every later stage share them, and the
    loading is off the critical path (reading runs while the cleaning tables load, cleaning while
    the segmenter loads).
    """

    def __init__(self, workers: int, job: BuildJob) -> None:
        self.workers = workers
        self.to_load = list(graph.PRELOADS)  # not loaded yet, in stage order
        self.pool = self._fork()

    def _fork(self) -> ProcessPoolExecutor:
        import gc
        import multiprocessing

        gc.freeze()  # the workers' collector leaves the launcher's objects alone: fewer copy-on-write pages
        context = multiprocessing.get_context("fork")
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_worker_init,
                                   initargs=(logging.getLogger().getEffectiveLevel(), os.getpid()))
        wait([pool.submit(_ready) for _ in range(self.workers)])  # start them all now
        return pool

    def _refork(self) -> None:
        self.pool.shutdown(wait=True)
        self.pool = self._fork()

    def _load_due(self, job: BuildJob, stage: str) -> bool:
        """Load now what ``stage`` needs and is not loaded yet; whether anything was."""
        order = list(graph.STAGES)
        due = [item for item in self.to_load if order.index(item[0]) <= order.index(stage)]
        for item in due:
            item[1](job)
            self.to_load.remove(item)
        return bool(due)

    def _load_next(self, job: BuildJob) -> bool:
        """Load what the next stage that needs something needs; whether anything was."""
        if not self.to_load:
            return False
        self.to_load.pop(0)[1](job)
        return True

    def run(self, job: BuildJob, stage: str, tasks: list, params: dict) -> None:
        if self._load_due(job, stage):  # not loaded during an earlier stage (a resumed build skipped it)
            self._refork()
        futures = [self.pool.submit(graph.run_task, job, stage, task, params) for task in tasks]
        loaded = self._load_next(job)  # a later stage's tables, while the workers run this one
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()
        if loaded:
            self._refork()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def make_executor(beam_args: list[str], workers: int, job: BuildJob):
    runner = next((a.split("=", 1)[1] for a in beam_args if a.startswith("--runner=")), None)
    if runner in DIRECT_RUNNERS:
        return LocalPool(workers, job) if workers > 1 else InProcess()
    return BeamStages(beam_args)


# --------------------------------------------------------------------------- the stages

def run_stage(executor, job: BuildJob, stage: str, tasks: list, params: dict) -> dict:
    """Run the unfinished tasks of ``stage``; every task's result."""
    pending = [task for task in tasks if not graph.task_done(job, stage, task)]
    started, cpu = time.monotonic(), time.process_time()
    if pending:
        executor.run(job, stage, pending, params)
    log.info("stage %s: %d task(s), %d run, %.1fs (%.1fs CPU in the launcher)", stage, len(tasks), len(pending),
             time.monotonic() - started, time.process_time() - cpu)
    return {task: graph.task_result(job, stage, task) for task in tasks}


def sum_counts(results) -> dict[tuple, int]:
    total: dict[tuple, int] = {}
    for result in results:
        for key, amount in result["counts"].items():
            total[key] = total.get(key, 0) + amount
    return total


def run_stages(job: BuildJob, executor) -> dict[str, Any]:
    """Every stage in order; the manifest (written last)."""
    import math

    from cpm.pipeline.rows import num_shards

    read_tasks, ranges = graph.read_tasks(job)
    read = run_stage(executor, job, "read", read_tasks, {"ranges": ranges})
    chunks = [name for task in read_tasks for name, _ in read[task]]
    partitions = graph.num_partitions(sum(size for task in read_tasks for _, size in read[task]), job.partition_bytes)
    params: dict[str, Any] = {"chunks": chunks, "num_chunks": len(chunks), "partitions": partitions}
    clean = run_stage(executor, job, "clean", list(range(len(chunks))), params)
    run_stage(executor, job, "ids", list(range(partitions)), params)
    graph.merge_losers(job, partitions)
    if job.dedup_enabled:
        from cpm.pipeline.dedup_index import check_index, index_paths

        against = [path for directory in job.dedup.against for path in index_paths(directory)]
        for path in against:
            check_index(path, job.dedup)
        params["against"] = against
        run_stage(executor, job, "against", list(range(len(against))), params)
        run_stage(executor, job, "exact", list(range(partitions)), params)
        run_stage(executor, job, "lsh", list(range(partitions)), params)
        run_stage(executor, job, "components", [0], params)
    fates = run_stage(executor, job, "fates", list(range(len(chunks))), params)
    kept = sum(r["kept"] for r in fates.values())
    params["n_documents"] = num_shards(sum(r["kept_bytes"] for r in fates.values()), job.shard_bytes)
    params["n_rejected"] = num_shards(
        sum(r["rejected_bytes"] for r in fates.values()) + sum(r["rejected_bytes"] for r in clean.values()), job.shard_bytes
    )
    kinds = [("documents", params["n_documents"]), ("rejected", params["n_rejected"])]
    if job.dedup_enabled:
        from cpm.pipeline.dedup_index import ROWS_PER_INDEX_SHARD

        params["n_signatures"] = max(1, math.ceil(kept / ROWS_PER_INDEX_SHARD))
        kinds.append(("signatures", params["n_signatures"]))
    applied = run_stage(executor, job, "apply", list(range(len(chunks))), params)
    shards = run_stage(executor, job, "shards", [(kind, i) for kind, n in kinds for i in range(n)], params)
    counts = sum_counts([*clean.values(), *applied.values()])
    return write_build_manifest(job, shards, counts, list(fates.values()), kept)


def write_build_manifest(job: BuildJob, shards: dict, counts: dict, fates: list[dict], kept: int) -> dict[str, Any]:
    """``manifest.json`` (and, with dedup, ``dedup/index.json``) of the finished build."""
    from cpm.pipeline.rows import assemble_counters, input_entry
    from cpm.schemas.manifest import new_manifest, write_manifest

    entries = [shards[key] for key in sorted(shards) if key[0] != "signatures"]
    entries.sort(key=lambda e: (e["kind"] != "documents", e["path"]))
    manifest = new_manifest("documents", "corpus build", job.command_config)
    manifest["inputs"] = [input_entry(path, source, job.input_sizes.get(path)) for path, source in job.inputs]
    manifest["counters"] = assemble_counters(counts, job.sources)
    if job.dedup_enabled:
        index = sorted((shards[key] for key in shards if key[0] == "signatures"), key=lambda e: e["path"])
        info = write_dedup_index(job, index, fates, kept)
        largest = info["largest_cluster"] or {}
        manifest["counters"]["dedup"] = {
            "index": "dedup/index.json",
            "exact_duplicates": info["exact_duplicates"],
            "near_duplicates": info["near_duplicates"],
            "largest_cluster_size": largest.get("size", 1),
            "unconverged_nodes": 0,
        }
        entries += [{**entry, "kind": "signatures"} for entry in index]
    manifest["shards"] = entries
    write_manifest(job.work_dir, manifest)
    return manifest


def write_dedup_index(job: BuildJob, index: list[dict], fates: list[dict], kept: int) -> dict[str, Any]:
    from cpm.pipeline.dedup_index import INDEX_DIR, INDEX_FILE, index_info

    best = min((f["largest"] for f in fates if f["largest"] is not None), default=None)
    info = index_info(job.dedup, index, kept, sum(f["exact"] for f in fates), sum(f["near"] for f in fates),
                      None if best is None else (best[1], -best[0]), 0)
    path = os.path.join(job.work_dir, INDEX_DIR, INDEX_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(info, handle, ensure_ascii=False, indent=2, sort_keys=True)
        handle.write("\n")
    return info


def run_build(job: BuildJob, beam_args: list[str], workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Run every stage, publish the output directory, return its manifest.

    On failure the hidden directory stays, with its finished tasks, for ``--resume``.
    """
    if not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
        beam_args = [*beam_args, "--default_sdk_harness_log_level=WARNING"]
    if "--pipeline_type_check" in beam_args:  # cpm's flag for Beam's default (Beam only has --no_pipeline_type_check)
        beam_args = [a for a in beam_args if a != "--pipeline_type_check"]
    elif not any(a.startswith("--no_pipeline_type_check") for a in beam_args):
        beam_args = [*beam_args, "--no_pipeline_type_check"]  # construction-time checks of a fixed graph
    if log.getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        logging.getLogger("jieba").setLevel(logging.WARNING)
    executor = make_executor(beam_args, workers, job)
    try:
        with ProgressDisplay(job.work_dir, sum(job.input_sizes.values()), enabled=progress):
            manifest = run_stages(job, executor)
    except KeyboardInterrupt:
        log.warning("interrupted: run the same command with --resume to go on from the finished tasks")
        raise
    finally:
        executor.close()
    publish_output(job.work_dir, job.output)
    return manifest
