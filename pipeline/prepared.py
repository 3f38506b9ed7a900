"""The staged corpus build on documents that are already clean (the dedup tests and quality benchmark).

:class:`PreparedDocuments` runs the build's stages with :func:`cpm.pipeline.launcher.run_stages`, as
``cpm corpus build`` does, except that the read and clean stages hand over the given documents, one
list per chunk, unchanged: what dedup decides can then be checked on texts chosen to the character.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cpm.pipeline import graph, spill
from cpm.pipeline.graph import BuildJob, chunk_name
from cpm.pipeline.records import RawRecord
from cpm.pipeline.rows import document_row

PREPARED = ("read", "clean")


class PreparedDocuments:
    """An executor of the build's stages: ``read`` and ``clean`` write ``chunks`` (lists of document
    dicts: ``id``, ``source``, ``text``, ``origin``) as the clean stage would; every other stage runs
    on ``inner``, the build's own executor."""

    def __init__(self, chunks: list[list[dict[str, Any]]], inner) -> None:
        self.chunks, self.inner = chunks, inner

    def run(self, job: BuildJob, stage: str, tasks: list, params: dict) -> None:
        if stage not in PREPARED:
            self.inner.run(job, stage, tasks, params)
            return
        for task in tasks:
            result = self._read(task) if stage == "read" else self._clean(job, task, params["partitions"])
            spill.write_object(spill.marker_path(job.work_dir, stage, graph.task_name(task)), result)

    def _read(self, task: tuple[int, int]) -> list[tuple[str, int]]:
        """Task ``(input, byte range)``: input ``i`` is chunk ``i`` whole, handed over by its first range."""
        index, part = task
        if part:
            return []
        return [(f"prepared-{index}", sum(len(doc["text"].encode("utf-8")) for doc in self.chunks[index]))]

    def _clean(self, job: BuildJob, task: int, partitions: int) -> dict:
        docs = [document_row(RawRecord(d["source"], d["origin"], text=d["text"], id=d["id"])) for d in self.chunks[task]]
        name = chunk_name(task)
        graph.write_chunk_docs(job, name, docs)
        spill.write_rows(job.path("clean", f"{name}.rej"), [])
        graph.write_partition_entries(job, name, docs, partitions)
        return {"counts": {}, "docs": len(docs), "rejected_bytes": 0}

    def close(self) -> None:
        self.inner.close()


def build_prepared(chunks: list[list[dict[str, Any]]], job: BuildJob, inner) -> dict[str, Any]:
    """Run every stage of ``job`` on ``chunks`` (written as JSONL inputs beside the work directory for the
    manifest); the outputs are in ``job.work_dir``. Returns the manifest."""
    from cpm.pipeline.launcher import run_stages

    inputs = []
    for index, docs in enumerate(chunks):
        path = os.path.join(job.work_dir, f"prepared-{index}.jsonl")
        os.makedirs(job.work_dir, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs)
        inputs.append((path, docs[0]["source"] if docs else job.sources[0]))
    job.inputs = inputs
    job.input_sizes = {path: os.path.getsize(path) for path, _ in inputs}
    executor = PreparedDocuments(chunks, inner)
    try:
        return run_stages(job, executor)
    finally:
        executor.close()
