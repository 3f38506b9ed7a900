"""`pip install .` puts only the `cpm` package (and its metadata) into site-packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = {"tests", "bench", "mutation", "docs", "build"}  # folders at the root that are not part of cpm


def package_modules() -> set[str]:
    """``cpm/...`` names of every module of the package in the tree: the root's and its sub-packages'."""
    paths = list(REPO.glob("*.py"))
    for folder in REPO.iterdir():
        if folder.is_dir() and folder.name not in OUTSIDE and (folder / "__init__.py").is_file():
            paths += folder.rglob("*.py")
    return {f"cpm/{p.relative_to(REPO).as_posix()}" for p in paths}


def test_wheel_holds_only_cpm(tmp_path: Path) -> None:
    # built from a clean copy: setuptools reuses an in-tree build/ folder, which may hold packages pyproject no longer lists
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "out", "runs"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("cpm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"cpm"}
    assert "cpm/cli.py" in names and "cpm/schemas/manifest.schema.json" in names
    assert not any(name.startswith(("cpm/tests/", "cpm/bench/", "cpm/.venv/")) for name in names)
    assert not (package_modules() - set(names)), "modules missing from the wheel (add their package to pyproject.toml)"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cpm = cpm.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
