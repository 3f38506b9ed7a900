"""The annotation filter of ``mutation/run.py`` (``make mutate``; the tool is not part of cpm, so it is
loaded from its file). The session test needs cosmic-ray (the ``mutation`` extra) and skips without it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "mutation" / "run.py"

SOURCE = '''from __future__ import annotations


def f(x: int | None = 1, *rest: "str", 名: bytes | str = b"", **kw: float) -> int | None:
    y: list[int | None] = [x | 2]
    return y[0] if y else lambda z: z | 4
'''
ANNOTATIONS = ["int | None", '"str"', "bytes | str", "float", "int | None", "list[int | None]"]


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("mutation_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _text(source: str, span) -> str:
    (row, col), (end_row, end_col) = span
    assert row == end_row
    return source.splitlines()[row - 1][col:end_col]


def test_the_annotations_of_a_pep_563_module_are_found_by_character_column(run):
    spans = run.annotation_spans(SOURCE)
    assert sorted(_text(SOURCE, span) for span in spans) == sorted(ANNOTATIONS)  # 名 is 3 bytes, 1 column


def test_without_the_future_import_annotations_are_evaluated_and_kept(run):
    assert run.annotation_spans(SOURCE.replace("from __future__ import annotations\n", "")) == []


def test_mutants_inside_annotations_are_skipped_and_the_others_kept(run, tmp_path):
    pytest.importorskip("cosmic_ray")
    from cosmic_ray.work_db import WorkDB, use_db

    (tmp_path / "mod.py").write_text(SOURCE, "utf-8")
    (tmp_path / "cr.toml").write_text(
        '[cosmic-ray]\nmodule-path = "mod.py"\ntimeout = 10.0\nexcluded-modules = []\ntest-command = "true"\n\n'
        '[cosmic-ray.distributor]\nname = "local"\n', "utf-8")
    session = tmp_path / "session.sqlite"
    subprocess.run([str(Path(sys.executable).parent / "cosmic-ray"), "init", "cr.toml", str(session)], cwd=tmp_path,
                   check=True, capture_output=True)
    spans = run.annotation_spans(SOURCE)

    def inside(item) -> bool:
        spec = item.mutations[0]
        return any(start <= tuple(spec.start_pos) and tuple(spec.end_pos) <= end for start, end in spans)

    with use_db(str(session), WorkDB.Mode.open) as db:
        items = list(db.work_items)
    expected = sum(inside(item) for item in items)
    assert expected and expected < len(items)
    assert run.skip_annotations(session, SOURCE) == expected
    assert run.skip_annotations(session, SOURCE) == 0  # already skipped
    with use_db(str(session), WorkDB.Mode.open) as db:
        pending = list(db.pending_work_items)
    assert len(pending) == len(items) - expected and not any(inside(item) for item in pending)
    kept = {(item.mutations[0].operator_name, tuple(item.mutations[0].start_pos)) for item in pending}
    assert ("core/ReplaceBinaryOperator_BitOr_BitAnd", (5, 29)) in kept  # x | 2 in the body
    assert ("core/ReplaceBinaryOperator_BitOr_BitAnd", (6, 38)) in kept  # z | 4 in a lambda
