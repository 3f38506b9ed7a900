"""The bundled sample inputs of each source (``cpm/pipeline/samples/<source>/``)."""

from __future__ import annotations

from typing import Any

from cpm.errors import CpmError
from cpm.schemas import SOURCES


def sample_inputs(source: str) -> list[str]:
    """Paths of the bundled sample files of a source (``cpm/pipeline/samples/<source>/``), sorted."""
    from importlib import resources

    if source not in SOURCES:
        raise CpmError(f"unknown source {source!r} (expected one of {', '.join(SOURCES)})")
    root = resources.files("cpm.pipeline") / "samples" / source
    found: list[str] = []

    def walk(node: Any) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child)
            elif not child.name.startswith(".") and child.name.lower() != "readme.md":
                found.append(str(child))

    if root.is_dir():
        walk(root)
    if not found:
        raise CpmError(f"no bundled sample files for source {source} under {root}")
    return sorted(found)
