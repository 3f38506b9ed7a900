"""The patches of Beam internals in :mod:`cpm.pipeline.beam_patches` still fit the Beam installed.

Each test fails when the internal a patch relies on changes: a rename, a different signature,
or a different way for Beam to reach it (so the patch would silently do nothing, or harm).
"""

from __future__ import annotations

import inspect

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms import userstate

from cpm.pipeline import beam_patches


class _Echo(beam.DoFn):
    def process(self, element):
        yield element


def test_get_dofn_specs_exists_with_the_expected_signature():
    original = getattr(userstate.get_dofn_specs, "original", userstate.get_dofn_specs)
    assert list(inspect.signature(original).parameters) == ["dofn"]
    specs = original(_Echo())
    assert isinstance(specs, tuple) and len(specs) == 2  # (state specs, timer specs)


def test_beam_reaches_get_dofn_specs_through_the_module_attribute(monkeypatch):
    """The patch replaces ``userstate.get_dofn_specs``: Beam must look it up there when it is called."""
    calls = []
    original = userstate.get_dofn_specs

    def counting(dofn):
        calls.append(dofn)
        return original(dofn)

    monkeypatch.setattr(userstate, "get_dofn_specs", counting)
    dofn = _Echo()
    with beam.Pipeline() as pipeline:
        _ = pipeline | beam.Create([1, 2]) | beam.ParDo(dofn)
    assert any(seen is dofn for seen in calls)


def test_memoized_specs_are_computed_once_per_dofn_and_equal_the_original(monkeypatch):
    monkeypatch.setattr(userstate, "get_dofn_specs", userstate.get_dofn_specs)  # restored after the test
    original = userstate.get_dofn_specs
    beam_patches.memoize_dofn_specs()
    patched = userstate.get_dofn_specs
    assert getattr(patched, "cpm_memoized", False) or getattr(original, "cpm_memoized", False)
    dofn = _Echo()
    first = patched(dofn)
    assert patched(dofn) is first
    assert first == original(dofn)
    beam_patches.memoize_dofn_specs()  # a second call changes nothing
    assert userstate.get_dofn_specs is patched


def test_option_views_are_new_objects_sharing_the_options_values():
    """Why the cache is needed (a new view per call) and why it is safe (views share ``_all_options``)."""
    options = PipelineOptions(["--runner=DirectRunner"])
    first, second = options.view_as(StandardOptions), options.view_as(StandardOptions)
    assert first is not second
    assert first._all_options is options._all_options
    first.runner = "SomethingElse"
    assert second.runner == "SomethingElse"
    assert options.get_all_options()["runner"] == "SomethingElse"


def test_job_options_hand_out_one_view_per_class_with_live_values():
    options = beam_patches.JobOptions(["--runner=DirectRunner"])
    view = options.view_as(StandardOptions)
    assert options.view_as(StandardOptions) is view
    view.runner = "Other"
    assert options.get_all_options()["runner"] == "Other"
    assert options.view_as(PipelineOptions) is not view
