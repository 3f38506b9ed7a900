"""Runners that cannot start here fail with one line naming what is missing (real attempts, offline)."""

from __future__ import annotations

import logging
import threading

import pytest

from cpm.cli import main


def build(tmp_path, *extra: str) -> int:
    return main(["corpus", "build", "--source", "news", "--output", str(tmp_path / "out"), "--no-progress", *extra])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Beam's jar and prism caches pointed at empty folders (whatever this machine has cached)."""
    from apache_beam.runners.portability.prism_runner import PrismJobServer
    from apache_beam.utils.subprocess_server import JavaJarServer

    monkeypatch.setattr(JavaJarServer, "JAR_CACHE", str(tmp_path / "jars"))
    monkeypatch.setattr(PrismJobServer, "BIN_CACHE", str(tmp_path / "prism"))


@pytest.mark.parametrize("runner, flag", [("FlinkRunner", "--flink_job_server_jar"), ("SparkRunner", "--spark_job_server_jar")])
def test_missing_job_server_jar_names_the_jar_and_the_flag(tmp_path, capsys, empty_caches, runner, flag):
    assert build(tmp_path, "--runner", runner) == 1
    err = one_line_error(capsys)
    assert "job-server" in err and ".jar" in err and f"{flag}=PATH" in err and "does not download" in err
    assert not (tmp_path / "out").exists()


def test_given_jar_that_does_not_exist(tmp_path, capsys):
    assert build(tmp_path, "--runner", "FlinkRunner", f"--flink_job_server_jar={tmp_path / 'nope.jar'}") == 1
    assert "nope.jar: no such file" in one_line_error(capsys)


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # no thread's traceback either
def test_a_jar_that_does_not_start_is_one_line(tmp_path, capsys):
    jar = tmp_path / "broken.jar"
    jar.write_bytes(b"not a jar")
    # with java on PATH Beam really starts `java -jar broken.jar`, which exits at once
    assert build(tmp_path, "--runner", "FlinkRunner", f"--flink_job_server_jar={jar}") == 1
    assert "FlinkRunner" in one_line_error(capsys)
    assert not list(tmp_path.glob(".out.tmp-*"))  # the temporary output was removed


def test_prism_without_its_binary(tmp_path, capsys, empty_caches):
    assert build(tmp_path, "--runner", "PrismRunner") == 1
    assert "--prism_location=PATH" in one_line_error(capsys)


def test_portable_runner_without_an_endpoint(tmp_path, capsys):
    assert build(tmp_path, "--runner", "PortableRunner") == 1
    assert "--job_endpoint" in one_line_error(capsys)


def test_dataflow_without_its_libraries_or_settings(tmp_path, capsys):
    assert build(tmp_path, "--runner", "DataflowRunner") == 1
    assert "DataflowRunner" in one_line_error(capsys)


def test_dask_runner_is_known_and_maps_workers():
    from cpm.pipeline.cli import beam_arguments

    assert "--dask_local_workers=3" in beam_arguments("DaskRunner", 3, [])


def test_dask_options_are_known_in_a_fresh_process(tmp_path):
    """Dask's options exist only once Beam's Dask runner module is imported: a fresh `cpm` process must
    still accept them (an unreachable scheduler then fails to connect, in one line)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "cpm", "corpus", "build", "--source", "news", "--output", str(tmp_path / "out"),
           "--no-progress", "--runner", "DaskRunner", "--dask_client_address=tcp://127.0.0.1:9", "--dask_connection_timeout=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    err = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "no such option" not in proc.stderr, proc.stderr
    assert err.startswith("error: DaskRunner could not start the job"), err


def _thread_failing_in(filename: str, function: str, exc: BaseException) -> threading.Thread:
    """A thread whose exception is raised in a function compiled as ``function`` of ``filename``."""
    namespace: dict = {}
    exec(compile(f"def {function}(exc):\n    raise exc\n", filename, "exec"), namespace)
    return threading.Thread(target=namespace[function], args=(exc,))


def test_a_closed_grpc_channel_poll_is_a_debug_line_and_other_thread_errors_still_show(monkeypatch, caplog):
    from cpm.pipeline.runners import quiet_closed_channel_polls

    shown = []
    monkeypatch.setattr(threading, "excepthook", lambda args: shown.append(str(args.exc_value)))
    grpc_file = "/venv/lib/python3.11/site-packages/grpc/_channel.py"
    closed = "Cannot monitor channel state: Channel closed!"
    with caplog.at_level(logging.DEBUG, "cpm.pipeline.runners"), quiet_closed_channel_polls():
        for thread in (_thread_failing_in(grpc_file, "_poll_connectivity", ValueError(closed)),  # hidden
                       _thread_failing_in(grpc_file, "_poll_connectivity", ValueError("another error")),
                       _thread_failing_in(grpc_file, "_consume_request_iterator", ValueError(closed)),
                       _thread_failing_in("/srv/app/_channel.py", "_poll_connectivity", ValueError(closed)),
                       _thread_failing_in(grpc_file, "_poll_connectivity", RuntimeError(closed))):
            thread.start()
            thread.join()
    assert shown == ["another error", closed, closed, closed]
    assert "closed channel to the job server" in caplog.text
    after = _thread_failing_in(grpc_file, "_poll_connectivity", ValueError(closed))  # the hook is gone after the job
    after.start()
    after.join()
    assert shown[-1] == closed and len(shown) == 5
