"""The ``DoFn`` that runs the tasks of one stage of the build on a Beam runner (:func:`cpm.pipeline.graph.add_stage`)."""

from __future__ import annotations

import apache_beam as beam

from cpm.pipeline.graph import BuildJob, run_task, task_name


class RunTasks(beam.DoFn):
    """The tasks of one stage (a single output: the names of the finished tasks)."""

    def __init__(self, job: BuildJob, stage: str, params: dict) -> None:
        self.job, self.stage, self.params = job, stage, params

    def process(self, task):
        run_task(self.job, self.stage, task, self.params)
        yield task_name(task)
