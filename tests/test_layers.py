"""Imports point one way: base -> schemas -> shards -> tokenizer -> pipeline / data -> trainer -> cli.

Every module of the package is parsed (``ast``, so imports inside functions count too) and each
import of another cpm module is checked against the layer order below. ``pipeline`` (the Beam
corpus build) and ``data`` (``cpm data``) are peers: neither imports the other. A package's
command-line front end (``cli.py``, ``*_cli.py``) belongs to the cli layer, whatever its package.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent  # the repository root is the package ``cpm``

# Layer of each top-level name under ``cpm`` (and of the command modules: "cli"); a module may
# import its own layer and the layers below.
LAYERS = {
    "errors": 0, "paths": 0, "jsonl": 0, "console": 0, "hashing": 0, "__init__": 0,
    "schemas": 1,
    "shards": 2,
    "tokenizer": 3,
    "pipeline": 4, "data": 4,
    "trainer": 5,
    "cli": 6, "__main__": 6,
}
LAYER_NAMES = {0: "base", 1: "schemas", 2: "shards", 3: "tokenizer", 4: "pipeline/data", 5: "trainer", 6: "cli"}
PEERS = {"pipeline", "data"}  # one layer, two products: neither imports the other (shared code goes lower)
NOT_PACKAGE = {"tests", "bench", "mutation", "docs", "shared", "build"}  # folders at the root outside ``cpm``


class Import(NamedTuple):
    """One import of a cpm module: the importing file and line, and the module imported (``shards.io``)."""

    path: Path
    line: int
    target: str


def package_modules(root: Path = ROOT) -> list[Path]:
    """Every ``.py`` file of the package ``cpm`` (the root's modules and its sub-packages)."""
    modules = sorted(root.glob("*.py"))
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in NOT_PACKAGE or folder.name.startswith(".") or not (folder / "__init__.py").is_file():
            continue
        modules += sorted(p for p in folder.rglob("*.py") if not any(part.startswith(".") for part in p.parts))
    return modules


def is_command_module(parts: list[str]) -> bool:
    """A package's command-line front end (``shards/cli.py``, ``trainer/gen_cli.py``): the cli layer."""
    return any(part == "cli" or part.endswith("_cli") for part in parts)


def layer_name(module: str) -> str:
    """The name in :data:`LAYERS` of a dotted module under cpm (``shards.io`` -> ``shards``, ``data.cli`` -> ``cli``)."""
    parts = module.split(".")
    return "cli" if is_command_module(parts) else parts[0]


def module_name(path: Path, root: Path = ROOT) -> str:
    """``path`` as a dotted module name under cpm (``shards/io.py`` -> ``shards.io``, ``errors.py`` -> ``errors``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _resolve(module: str, names: list[str], root: Path) -> list[str]:
    """What ``from cpm.<module> import <names>`` imports: sub-modules by their own name, else the module itself."""
    base = root.joinpath(*module.split(".")) if module else root
    found = [f"{module}.{n}" if module else n for n in names if (base / n).is_dir() or (base / f"{n}.py").is_file()]
    return found if len(found) == len(names) else [*found, module or "__init__"]


def cpm_imports(path: Path, root: Path = ROOT) -> Iterator[Import]:
    """The cpm modules ``path`` imports, anywhere in the file (top level, functions, ``if`` blocks)."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name.split(".", 1)[1] if "." in a.name else "__init__" for a in node.names if a.name.split(".")[0] == "cpm"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package holding ``path``, ``level - 1`` packages up
                package = list(path.relative_to(root).parent.parts)
                absolute = ["cpm", *package[: len(package) - node.level + 1], *([node.module] if node.module else [])]
            else:
                absolute = (node.module or "").split(".")
            if absolute[0] != "cpm":
                continue
            targets = _resolve(".".join(absolute[1:]), [a.name for a in node.names], root)
        else:
            continue
        for target in dict.fromkeys(targets):
            yield Import(path, node.lineno, target)


def backwards_imports(root: Path = ROOT) -> list[str]:
    """One line per import that points up the layers (or across, between pipeline and data)."""
    problems = []
    for path in package_modules(root):
        here = layer_name(module_name(path, root))
        where = path.relative_to(root)
        for imp in cpm_imports(path, root):
            there = layer_name(imp.target)
            if here not in LAYERS or there not in LAYERS:
                problems.append(f"{where}:{imp.line}: cpm.{imp.target} or this module has no layer (add it to LAYERS)")
                continue
            mine, theirs = LAYERS[here], LAYERS[there]
            if theirs > mine or {here, there} == PEERS:
                problems.append(
                    f"{where}:{imp.line}: layer {LAYER_NAMES[mine]} ({here}) imports layer {LAYER_NAMES[theirs]} (cpm.{imp.target})"
                )
    return problems


def test_imports_point_one_way():
    problems = backwards_imports()
    assert not problems, "backwards imports:\n" + "\n".join(problems)


def test_every_package_has_a_layer():
    names = {layer_name(module_name(p)) for p in package_modules()}
    assert names <= set(LAYERS), f"modules without a layer: {sorted(names - set(LAYERS))}"
    assert {"schemas", "shards", "tokenizer", "pipeline", "data", "trainer", "cli"} <= names


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    return tmp_path


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("import os\n\ndef f():\n    from cpm.trainer.data import SequenceShards\n", 4, "layer shards (shards) imports layer trainer"),
        ("from cpm import pipeline\n", 1, "layer shards (shards) imports layer pipeline/data (cpm.pipeline)"),
        ("import cpm.data.pack as p\n", 1, "layer shards (shards) imports layer pipeline/data (cpm.data.pack)"),
        ("if True:\n    from ..tokenizer import Tokenizer\n", 2, "layer shards (shards) imports layer tokenizer"),
    ],
)
def test_a_planted_backwards_import_is_named(tmp_path, text, line, message):
    root = _plant(tmp_path, {"errors.py": "", "shards/__init__.py": "", "shards/io.py": "from cpm.errors import CpmError\n",
                             "pipeline/__init__.py": "", "data/__init__.py": "",
                             "shards/bad.py": text, "tests/test_x.py": "from cpm.cli import main\n"})
    problems = backwards_imports(root)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"shards/bad.py:{line}: ") and message in problems[0]


def test_pipeline_and_data_are_peers(tmp_path):
    root = _plant(tmp_path, {"pipeline/__init__.py": "", "pipeline/graph.py": "from cpm.data.pack import pack\n",
                             "data/__init__.py": "", "data/pack.py": "from cpm.shards.io import open_shard\n"})
    assert backwards_imports(root) == ["pipeline/graph.py:1: layer pipeline/data (pipeline) imports layer pipeline/data (cpm.data.pack)"]


def test_command_modules_are_the_cli_layer(tmp_path):
    """A package's ``cli.py`` is its front end: it may load a tokenizer; the package's other modules may not."""
    command = "def inspect(path):\n    from cpm.tokenizer import Tokenizer\n    return Tokenizer.load(path)\n"
    root = _plant(tmp_path, {"shards/__init__.py": "", "shards/cli.py": command, "shards/inspect.py": command,
                             "tokenizer/__init__.py": "", "tokenizer/model.py": "from cpm.shards.cli import inspect\n"})
    assert backwards_imports(root) == [
        "shards/inspect.py:2: layer shards (shards) imports layer tokenizer (cpm.tokenizer)",
        "tokenizer/model.py:1: layer tokenizer (tokenizer) imports layer cli (cpm.shards.cli)",
    ]
