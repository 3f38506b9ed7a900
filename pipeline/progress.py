"""Live progress of a corpus build: per-worker progress files and the launcher's display line."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

PROGRESS_DIR = ".progress"


class ProgressFile:
    """Throttled per-worker progress numbers in ``work_dir/.progress`` for the launcher's display."""

    def __init__(self, work_dir: str, kind: str) -> None:
        self.path = os.path.join(work_dir, PROGRESS_DIR, f"{kind}-{os.getpid()}-{id(self):x}")
        self.docs = self.bytes = 0
        self.last = 0.0

    def add(self, docs: int, nbytes: int) -> None:
        self.docs += docs
        self.bytes += nbytes
        now = time.monotonic()
        if now - self.last > 0.5:
            self.flush()
            self.last = now

    def flush(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as handle:
                handle.write(f"{self.docs} {self.bytes}")
            os.replace(tmp, self.path)
        except OSError:  # a remote worker without the launcher's file system: no display
            pass


def read_progress(work_dir: str) -> dict[str, tuple[int, int]]:
    """Sum of the progress files by kind: ``{"read": (docs, bytes), "segmented": (...)}``."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    folder = os.path.join(work_dir, PROGRESS_DIR)
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    for name in names:
        if name.endswith(".tmp"):
            continue
        try:
            docs, nbytes = open(os.path.join(folder, name)).read().split()
        except (OSError, ValueError):
            continue
        kind = name.split("-", 1)[0]
        totals[kind][0] += int(docs)
        totals[kind][1] += int(nbytes)
    return {k: (v[0], v[1]) for k, v in totals.items()}


class ProgressDisplay:
    """A background thread showing documents/s and MB/s from the workers' progress files."""

    def __init__(self, work_dir: str, total_bytes: int, enabled: bool = True) -> None:
        self.work_dir, self.total_bytes, self.enabled = work_dir, total_bytes, enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ProgressDisplay":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    def _run(self) -> None:
        from cpm.console import make_console
        from rich.live import Live

        console = make_console(stderr=True)
        start = time.monotonic()
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            while not self._stop.wait(0.5):
                live.update(self.render(time.monotonic() - start))
        console.print(self.render(time.monotonic() - start))

    def render(self, elapsed: float) -> str:
        progress = read_progress(self.work_dir)
        docs, nbytes = progress.get("read", (0, 0))
        seg_docs, _ = progress.get("segmented", (0, 0))
        rate = max(elapsed, 1e-6)
        return (
            f"read {docs:,} records ({docs / rate:,.0f} docs/s, {nbytes / 1e6 / rate:.2f} MB/s)"
            f"  segmented {seg_docs:,} ({seg_docs / rate:,.0f} docs/s)  {elapsed:.0f}s"
        )
