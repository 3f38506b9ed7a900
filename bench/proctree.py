"""Wall time, CPU time and peak memory of a command's whole process tree (for the bench scripts).

Two measures of CPU, printed side by side by the scripts so that they check each other:

* ``cpu``: user + system time from ``wait4`` of the command, which includes every descendant
  that its parent waited for (the launcher's pool of workers, a local Dask cluster's worker
  processes, which their nanny joins when the cluster closes);
* ``cpu_polled``: the sum over every process seen in the tree (polled from ``/proc`` every
  ``interval`` seconds) of its last CPU time, which also counts processes nobody waited for
  (it misses what a process spent after the last poll).

Memory: ``rss`` is the largest peak RSS of one process (``ru_maxrss``, what ``/usr/bin/time``
reports); ``tree_rss`` the largest sum of the RSS of all processes of the tree at one poll
(what the machine must hold with N workers).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass


@dataclass
class Usage:
    returncode: int
    wall: float
    cpu: float
    cpu_polled: float
    rss: int
    tree_rss: int
    stderr: str


def _tree(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def measure(cmd: list[str], interval: float = 0.1, env: dict | None = None) -> Usage:
    """Run ``cmd`` (stdout discarded, stderr kept) and measure its process tree."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    cpu_seen: dict[tuple[int, float], float] = {}
    tree_rss = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal tree_rss
        while not done.is_set():
            total = 0
            for p in _tree(proc.pid):
                try:
                    with p.oneshot():
                        times, rss, started = p.cpu_times(), p.memory_info().rss, p.create_time()
                except psutil.Error:
                    continue
                cpu_seen[(p.pid, started)] = times.user + times.system
                total += rss
            tree_rss = max(tree_rss, total)
            done.wait(interval)

    started = time.perf_counter()
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    stderr_text: list[str] = []
    reader = threading.Thread(target=lambda: stderr_text.append(proc.stderr.read()), daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    poller.join()
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Usage(proc.returncode, wall, usage.ru_utime + usage.ru_stime, sum(cpu_seen.values()),
                 usage.ru_maxrss * 1024, tree_rss, "".join(stderr_text))
