"""requirements.lock pins every dependency, within pyproject.toml's ranges, and is what is installed."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
# torch is installed from the Makefile's TORCH pin (a CPU build where one lies on disk);
# cpm itself appears where one extra names another (`cpm[report]`).
UNLOCKED = {"torch", "cpm"}


def _pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _declared() -> list[Requirement]:
    project = _pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def _locked() -> dict[str, list[tuple[Version, Marker | None]]]:
    """name -> [(version, marker)]: a universal lock may pin one package per Python version."""
    pins: dict[str, list[tuple[Version, Marker | None]]] = {}
    line_re = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = line_re.match(line)
        if match:
            name, version, marker = match.groups()
            pins.setdefault(canonicalize_name(name), []).append(
                (Version(version), Marker(marker) if marker else None)
            )
    return pins


def _pin_here(pins: list[tuple[Version, Marker | None]]) -> Version | None:
    for version, marker in pins:
        if marker is None or marker.evaluate():
            return version
    return None


def test_every_line_of_the_lock_has_a_hash() -> None:
    text = LOCK.read_text(encoding="utf-8")
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert entries
    for entry in entries:
        assert "--hash=sha256:" in entry, entry.splitlines()[0]


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    locked = _locked()
    assert "torch" not in locked, "torch is pinned by the Makefile, not the lock"
    for req in _declared():
        name = canonicalize_name(req.name)
        if name in UNLOCKED:
            continue
        assert name in locked, f"{req.name} is in pyproject.toml but not in requirements.lock: run `make lock`"
        for version, _marker in locked[name]:
            assert req.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {req.name}=={version}, outside pyproject.toml's {req.specifier}"
            )


def test_the_installed_packages_are_the_locked_versions() -> None:
    """What `make install` put in this environment is exactly the lock (found when the lock changes)."""
    if not (Path(sys.prefix) / ".installed").is_file():
        pytest.skip("not running in a virtualenv made by `make install`")
    drift = []
    for name, pins in _locked().items():
        wanted = _pin_here(pins)
        if wanted is None:
            continue
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            drift.append(f"{name}: not installed, lock pins {wanted}")
            continue
        if installed != wanted:
            drift.append(f"{name}: installed {installed}, lock pins {wanted}")
    assert not drift, "; ".join(drift)
