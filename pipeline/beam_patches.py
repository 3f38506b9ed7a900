"""Process-wide patches of Apache Beam internals that make building and running pipelines cheaper.

Each patch checks that the internal it replaces is still there and does nothing otherwise;
``tests/test_beam_patches.py`` fails when Beam's internals change under a patch, so an upgrade
of Beam shows at once whether a patch still applies.
"""

from __future__ import annotations

import weakref

from apache_beam.options.pipeline_options import PipelineOptions


_OPTION_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class JobOptions(PipelineOptions):
    """``PipelineOptions`` whose views are made once per options class.

    Beam makes a new view (an argparse parser over the flags) on every ``view_as`` call, and calls it
    ~600 times while building and running this job: ~0.5 s of CPU a run. Views share the options'
    values (``_all_options``), so handing out the same view again changes nothing else.
    """

    def view_as(self, cls):
        views = _OPTION_VIEWS.setdefault(self, {})
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view


def memoize_dofn_specs() -> None:
    """Make Beam compute each DoFn's state and timer specs once, not ~8 times.

    ``apache_beam.transforms.userstate.get_dofn_specs`` inspects the signature of every method of a DoFn
    and is called again for the same DoFn from ``ParDo``, the runner and ``to_runner_api``: ~1.5 s of
    CPU for this job's ~120 ParDos, every run.  The specs of a DoFn object never change, so they are
    remembered per object (weakly); if Beam's internals differ from what this expects, nothing is changed.
    """
    from apache_beam.transforms import userstate

    original = getattr(userstate, "get_dofn_specs", None)
    if original is None or getattr(original, "cpm_memoized", False):
        return
    specs_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get_dofn_specs(dofn):
        try:
            return specs_of[dofn]
        except (KeyError, TypeError):
            pass
        specs = original(dofn)
        try:
            specs_of[dofn] = specs
        except TypeError:  # not weakly referenceable: just not remembered
            pass
        return specs

    get_dofn_specs.cpm_memoized = True
    get_dofn_specs.original = original
    userstate.get_dofn_specs = get_dofn_specs
