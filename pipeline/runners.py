"""Which Beam runner a ``cpm corpus build`` runs on, and what it needs before it can start.

* ``DirectRunner`` (default): Beam's FnApiRunner in this process (or ``--workers`` processes).
* ``DaskRunner``: :class:`cpm.pipeline.dask_compat.DaskRunner` on a ``dask.distributed`` cluster:
  the one at ``--dask_client_address``, or a local one of ``--workers`` processes that is started
  (on 127.0.0.1) for the job and shut down after it.
* Flink, Spark, Prism, Portable and Dataflow: Beam's own runners. What each needs on this
  machine (a job-server jar, ``java``, the Prism binary, Google Cloud libraries) is checked
  first: cpm never downloads anything at run time, so a missing piece is a one-line error
  naming it and the option that supplies it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import threading
import traceback
from typing import Any, Callable, Iterator

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from cpm.errors import CpmError

log = logging.getLogger(__name__)

DIRECT_NAMES = (None, "DirectRunner", "direct", "FnApiRunner")
DASK_NAMES = ("DaskRunner", "dask", "cpm.pipeline.dask_compat.DaskRunner")


class LocalDaskOptions(PipelineOptions):
    """How big a local Dask cluster to start when ``--runner DaskRunner`` has no address."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--dask_local_workers", type=int, default=1,
            help="Worker processes of the local Dask cluster started when --dask_client_address is not given.",
        )


def runner_name(options: PipelineOptions) -> str | None:
    return options.view_as(StandardOptions).runner


def is_direct(name: str | None) -> bool:
    return name in DIRECT_NAMES


def is_dask(name: str | None) -> bool:
    return name in DASK_NAMES


@contextlib.contextmanager
def open_runner(options: PipelineOptions) -> Iterator[Any]:
    """The runner object to give ``beam.Pipeline`` (``None``: Beam's own, by name) while the job runs."""
    name = runner_name(options)
    if is_direct(name):
        # Beam's DirectRunner would first try to download the Prism runner; the FnApiRunner is what
        # it falls back to, and honours --direct_num_workers / --direct_running_mode.
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        yield FnApiRunner()
    elif is_dask(name):
        require_dask()
        from apache_beam.runners.dask.dask_runner import DaskOptions

        from cpm.pipeline.dask_compat import DaskRunner

        dask_options = options.view_as(DaskOptions)
        if dask_options.address or dask_options.scheduler_file:
            yield DaskRunner()
        else:
            with local_dask_cluster(options.view_as(LocalDaskOptions).dask_local_workers) as address:
                dask_options.address = address
                yield DaskRunner()
    else:
        check_can_start(name or "", options)
        with quiet_closed_channel_polls():
            yield None


def is_closed_channel_poll(args: threading.ExceptHookArgs) -> bool:
    """Whether a thread died in grpc's connectivity poller because its channel was closed.

    That happens when a job server goes away (one that failed to start, say) while Beam still
    watches the channel to it; the build's own one-line error already says what went wrong.
    """
    if not (isinstance(args.exc_value, ValueError) and "Channel closed" in str(args.exc_value)):
        return False
    frames = traceback.extract_tb(args.exc_traceback)
    return any(f.name == "_poll_connectivity" and f.filename.replace("\\", "/").endswith("grpc/_channel.py") for f in frames)


def _thread_excepthook(previous: Callable[[threading.ExceptHookArgs], Any], args: threading.ExceptHookArgs) -> None:
    if is_closed_channel_poll(args):
        log.debug("grpc stopped watching a closed channel to the job server: %s", args.exc_value)
        return
    previous(args)


@contextlib.contextmanager
def quiet_closed_channel_polls() -> Iterator[None]:
    """While a Beam runner's job runs, a closed grpc channel is a debug line, not a thread's traceback on stderr."""
    previous = threading.excepthook
    threading.excepthook = functools.partial(_thread_excepthook, previous)
    try:
        yield
    finally:
        threading.excepthook = previous


def require_dask() -> None:
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise CpmError("--runner DaskRunner needs dask.distributed: pip install 'cpm[dask]' (or 'dask[distributed]')") from None


@contextlib.contextmanager
def local_dask_cluster(workers: int) -> Iterator[str]:
    """A ``dask.distributed`` scheduler and ``workers`` single-threaded worker processes on 127.0.0.1."""
    from dask.distributed import LocalCluster

    if workers < 1:
        raise CpmError("--workers must be at least 1")
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", silence_logs=logging.WARNING,
    )
    log.info("local Dask cluster at %s with %d worker process(es)", cluster.scheduler_address, workers)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


# --------------------------------------------------------------------------- can it start?

def check_can_start(name: str, options: PipelineOptions) -> None:
    """Raise :class:`CpmError` naming what ``name`` lacks here to start (a jar, a binary, a library)."""
    from apache_beam.options.pipeline_options import PortableOptions

    short = name.rsplit(".", 1)[-1].lower().removesuffix("runner")
    has_endpoint = bool(options.view_as(PortableOptions).job_endpoint)
    if short in ("flink", "spark") and not has_endpoint:
        _check_java_job_server(short, options)
    elif short == "prism" and not has_endpoint:
        _check_prism(options)
    elif short == "portable" and not has_endpoint:
        raise CpmError("--runner PortableRunner needs --job_endpoint=HOST:PORT (a running Beam job server)")
    elif short == "dataflow":
        _check_dataflow()


def _check_java_job_server(short: str, options: PipelineOptions) -> None:
    """Flink/Spark without ``--job_endpoint``: Beam starts its job server, a jar run with ``java``."""
    from apache_beam.options import pipeline_options as po

    title = short.capitalize()
    view = options.view_as(po.FlinkRunnerOptions if short == "flink" else po.SparkRunnerOptions)
    uber = view.flink_submit_uber_jar if short == "flink" else view.spark_submit_uber_jar
    flag = f"--{short}_job_server_jar"
    given = view.flink_job_server_jar if short == "flink" else view.spark_job_server_jar
    if given:
        if "://" not in given and not os.path.isfile(given):
            raise CpmError(f"{flag}={given}: no such file")
        if "://" in given:
            raise CpmError(f"{flag}={given}: cpm does not download at run time; download the jar and give its local path")
    else:
        url = _default_job_server_jar(short, options)
        cached = os.path.join(_jar_cache(), os.path.basename(url))
        if not os.path.isfile(cached):
            raise CpmError(
                f"{title}Runner needs Beam's {title} job server jar {os.path.basename(url)}, which cpm does not download "
                f"at run time: fetch {url} and give {flag}=PATH (or --job_endpoint=HOST:PORT of a running job server)"
            )
    if not uber and shutil.which("java") is None:
        raise CpmError(f"{title}Runner needs Java to run Beam's job server: no `java` on PATH (install a JRE 11+, or give --job_endpoint)")


def _default_job_server_jar(short: str, options: PipelineOptions) -> str:
    if short == "flink":
        from apache_beam.runners.portability.flink_runner import FlinkJarJobServer

        return FlinkJarJobServer(options).path_to_jar()
    from apache_beam.runners.portability.spark_runner import SparkJarJobServer

    return SparkJarJobServer(options).path_to_jar()


def _jar_cache() -> str:
    from apache_beam.utils.subprocess_server import JavaJarServer

    return JavaJarServer.JAR_CACHE


def _check_prism(options: PipelineOptions) -> None:
    from apache_beam.options.pipeline_options import PrismRunnerOptions

    location = options.view_as(PrismRunnerOptions).prism_location
    if location:
        if "://" in location:
            raise CpmError(f"--prism_location={location}: cpm does not download at run time; give a local path")
        if not os.path.exists(location):
            raise CpmError(f"--prism_location={location}: no such file")
        return
    from apache_beam.runners.portability.prism_runner import PrismJobServer

    cache = PrismJobServer.BIN_CACHE
    if not (os.path.isdir(cache) and any(name.startswith("prism") for name in os.listdir(cache))):
        raise CpmError(
            f"PrismRunner needs Beam's prism binary, which cpm does not download at run time: none in {cache}; "
            "give --prism_location=PATH (the release zip or binary)"
        )


def _check_dataflow() -> None:
    try:
        from apache_beam.runners.dataflow.internal import apiclient  # noqa: F401
        from apache_beam.io.gcp.internal.clients import storage  # noqa: F401
    except ImportError as exc:
        raise CpmError(f"DataflowRunner needs Beam's Google Cloud libraries ({exc}): pip install 'apache-beam[gcp]'") from None


def start_error(name: str | None, exc: BaseException) -> CpmError:
    """A one-line :class:`CpmError` for a runner that failed to start or to accept the job."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if type(exc).__name__ == "FutureTimeoutError":  # grpc: nothing answered at --job_endpoint in time
        text = "no Beam job server answered at --job_endpoint in --job_server_timeout"
    if len(text) > 300:
        text = text[:297] + "..."
    return CpmError(f"{name or 'the runner'} could not start the job: {text} (--debug shows the traceback)")
