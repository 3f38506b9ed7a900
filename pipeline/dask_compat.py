"""Beam's DaskRunner, with the translation fixes that ``cpm corpus build`` needs.

Beam's ``apache_beam.runners.dask.dask_runner.DaskRunner`` (2.60-2.78) turns a pipeline into
``dask.bag`` operations, but three parts of its translation are wrong for real pipelines:

1. **Multi-output ParDos.** All outputs of a ``ParDo(...).with_outputs(...)`` go into one bag,
   and every consumer of any output reads that whole bag: a consumer of the ``rejected``
   output also gets the main output's documents.
2. **Side inputs.** A side input is computed by a *nested* ``compute`` inside each task that
   reads it, so everything upstream of it runs again for every partition of the consumer.
3. **Sinks.** Only the bag of the last transform visited is computed; a branch that ends
   anywhere else never runs.

:class:`DaskRunner` here re-does the translation (the visitor and the ``ParDo`` step) and keeps
Beam's translations of ``Create``, ``GroupByKey`` and ``Flatten``:

1. a ``ParDo`` with several outputs yields ``(tag, value)`` pairs, and each output
   ``PCollection`` is the bag of its own tag's values;
2. a side input is a graph dependency of its consumer's tasks (one reduction of its bag,
   computed once and shared);
3. every bag that no step consumes is computed.

Like Beam's, it runs every ``PCollection`` in the global window (cpm's pipelines use no
other). Use it as ``--runner DaskRunner`` with ``cpm corpus build`` (see docs/runners.md), or
as ``beam.Pipeline(runner=DaskRunner(), options=...)`` with ``--dask_client_address``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Iterable

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import transform_evaluator as beam_ops
from apache_beam.runners.dask.overrides import _Create, _Flatten, _GroupByKeyOnly, dask_overrides
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.sideinputs import SideInputMap

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- running a ParDo

class _Collect(Receiver):
    """Appends each output of one tag to a shared list, as a ``(tag, value)`` pair."""

    def __init__(self, tag: str | None, out: list) -> None:
        self.tag, self.out = tag, out

    def receive(self, windowed_value) -> None:
        self.out.append((self.tag, windowed_value.value))


class _Receivers(dict):
    """One :class:`_Collect` per output tag, made on first use."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list = []

    def __missing__(self, tag):
        receiver = self[tag] = _Collect(tag, self.out)
        return receiver


@dataclasses.dataclass
class ParDoSpec:
    """What a task needs to run one ParDo over a partition (pickled into the task)."""

    fn: beam.DoFn
    label: str
    args: tuple
    kwargs: dict
    window_fn: Any
    side_views: list  # (AsSideInput class, view options) per side input, in the transform's order
    tagged: bool  # several outputs: yield (tag, value) pairs


def run_bundle(items: Iterable, spec: ParDoSpec, *side_values: list) -> list:
    """Run ``spec``'s DoFn over one partition (one bundle); its outputs as a list."""
    receivers = _Receivers()
    handler = _OutputHandler(
        window_fn=spec.window_fn,
        main_receivers=receivers[None],
        tagged_receivers=receivers,
        per_element_output_counter=None,
        output_batch_converter=None,
        process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    side_inputs = [
        SideInputMap(view, options, [beam_ops.get_windowed_value(v, None) for v in values])
        for (view, options), values in zip(spec.side_views, side_values)
    ]
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(spec.fn),
        handler,
        context=DoFnContext(spec.label, state=None),
        side_inputs=side_inputs,
        input_args=list(spec.args),
        input_kwargs=spec.kwargs,
        user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
    )
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(beam_ops.get_windowed_value(item, spec.window_fn))
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return receivers.out if spec.tagged else [value for _, value in receivers.out]


def _key(pair: tuple):
    return pair[0]


def _grouped_values(group: tuple) -> tuple:
    """``(key, [(key, value), ...])`` from ``Bag.groupby`` -> ``(key, [value, ...])``."""
    key, pairs = group
    return key, [beam_ops.defenestrate(pair[1]) for pair in pairs]


def _concat(parts: list[list]) -> list:
    return [item for part in parts for item in part]


def _of_tag(tag, pair: tuple) -> bool:
    return pair[0] == tag


def _value(pair: tuple) -> Any:
    return pair[1]


# --------------------------------------------------------------------------- the translation

class BagVisitor(PipelineVisitor):
    """Builds one ``dask.bag`` per ``PCollection`` of a pipeline (after Beam's Dask overrides)."""

    def __init__(self, partitions: int, bag_kwargs: dict) -> None:
        self.partitions = max(1, partitions)
        self.bag_kwargs = bag_kwargs
        self.bags: dict[pvalue.PValue, Any] = {}
        self.consumed: set[pvalue.PValue] = set()

    def visit_transform(self, node: AppliedPTransform) -> None:
        inputs = [self._input(value) for value in node.inputs]
        sides = [self._side_input(si) for si in node.side_inputs]
        transform = node.transform
        if transform.__class__ is beam.ParDo:
            self._pardo(node, inputs[0], sides)
            return
        if isinstance(transform, _Create):
            bag = self._create(transform.values)
        elif isinstance(transform, _GroupByKeyOnly):
            bag = inputs[0].groupby(_key, npartitions=self.partitions, shuffle="tasks").map(_grouped_values)
        elif isinstance(transform, _Flatten):
            bag = self._flatten(inputs)
        else:
            op = beam_ops.TRANSLATIONS.get(transform.__class__, beam_ops.NoOp)(node, bag_kwargs=self.bag_kwargs)
            bag = op.apply(input_bag=inputs if isinstance(op, beam_ops.Flatten) else (inputs[0] if inputs else None))
        for output in node.outputs.values():
            self.bags[output] = bag

    def leaves(self) -> list:
        """The bags that no step reads: computing them runs the whole pipeline."""
        seen, out = set(), []
        for pcoll, bag in self.bags.items():
            if pcoll not in self.consumed and bag is not None and bag.name not in seen:
                seen.add(bag.name)
                out.append(bag)
        return out

    def _input(self, value):
        if isinstance(value, pvalue.PBegin):
            return None
        self.consumed.add(value)
        return self.bags[value]

    def _side_input(self, side: pvalue.AsSideInput):
        self.consumed.add(side.pvalue)
        # unoptimized: an optimized Item would fuse (and so run again) the steps upstream of it
        return self.bags[side.pvalue].reduction(list, _concat).to_delayed(optimize_graph=False)

    def _create(self, values):
        import dask.bag as db

        values = list(values)
        if self.bag_kwargs:
            return db.from_sequence(values, **self.bag_kwargs)
        return db.from_sequence(values, npartitions=max(1, min(len(values), self.partitions)))

    def _flatten(self, inputs: list):
        import dask.bag as db

        bag = db.concat(inputs) if len(inputs) > 1 else inputs[0]
        # partitions add up through a concatenation: keep them at the cluster's parallelism
        return bag.repartition(npartitions=self.partitions) if bag.npartitions > self.partitions else bag

    def _pardo(self, node: AppliedPTransform, input_bag, sides: list) -> None:
        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(node.main_inputs.values()))
        outputs = dict(node.outputs)
        spec = ParDoSpec(
            fn=transform.fn,
            label=transform.label,
            args=tuple(args),
            kwargs=dict(kwargs),
            window_fn=main_input.windowing.windowfn if hasattr(main_input, "windowing") else None,
            side_views=[(type(si), si._view_options()) for si in node.side_inputs],
            tagged=len(outputs) > 1,
        )
        bag = input_bag.map_partitions(run_bundle, spec, *sides)
        for tag, output in outputs.items():
            self.bags[output] = bag.filter(functools.partial(_of_tag, tag)).map(_value) if spec.tagged else bag


# --------------------------------------------------------------------------- the runner

@dataclasses.dataclass
class DaskResult(beam_dask.DaskRunnerResult):
    """The futures of a job's sinks (each an empty list); the client is closed when the job ends."""

    def wait_until_finish(self, duration=None):
        try:
            self.client.gather(self.futures)  # waits; raises the first task's error, if any
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            self.client.close()
        return self._state


def _drain(partition) -> list:
    for _ in partition:
        pass
    return []


class DaskRunner(beam_dask.DaskRunner):
    """Beam's DaskRunner with the translation described in this module's docstring."""

    def run_pipeline(self, pipeline, options):
        import dask.bag as db
        import dask.distributed as ddist

        dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(dask_options)
        dask_options.pop("lazy_side_inputs", None)
        client = ddist.Client(set_as_default=False, **dask_options)
        try:
            partitions = sum(client.nthreads().values())
            pipeline.replace_all(dask_overrides())
            visitor = BagVisitor(partitions, bag_kwargs)
            pipeline.visit(visitor)
            sinks = [leaf.map_partitions(_drain) for leaf in visitor.leaves()]
            futures = [client.compute(db.concat(sinks))] if sinks else []
        except BaseException:
            client.close()
            raise
        return DaskResult(client, futures)
