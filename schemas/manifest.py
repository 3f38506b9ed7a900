"""``manifest.json``: the record every cpm output directory carries.

The JSON schema lives beside this file (``manifest.schema.json``). A manifest is written
last, atomically, so a directory with a valid manifest is a complete output.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from cpm import __version__
from cpm.errors import CpmError, ShardError
from cpm.schemas import SCHEMA_VERSION

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def manifest_json_schema() -> dict[str, Any]:
    """The JSON schema of ``manifest.json``."""
    return json.loads(resources.files("cpm.schemas").joinpath("manifest.schema.json").read_text("utf-8"))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def new_manifest(kind: str, command: str, config: dict[str, Any]) -> dict[str, Any]:
    """An empty manifest for a directory of ``kind`` written by ``cpm <command>``."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "kind": kind,
        "schema_version": SCHEMA_VERSION,
        "tool": "cpm",
        "tool_version": __version__,
        "command": command,
        "config": config,
        "inputs": [],
        "counters": {},
        "shards": [],
    }


def input_entry(path: str | os.PathLike[str], checksum: bool = True) -> dict[str, Any]:
    """A manifest ``inputs`` entry for a local file (size and sha256)."""
    entry: dict[str, Any] = {"path": str(path)}
    if os.path.isfile(path):
        entry["bytes"] = os.path.getsize(path)
        if checksum:
            entry["sha256"] = sha256_file(path)
    return entry


def validate_manifest(manifest: Any, where: str = MANIFEST_NAME) -> dict[str, Any]:
    """Check a manifest against the JSON schema; raise :class:`ShardError` naming the first problem."""
    import jsonschema

    try:
        jsonschema.validate(manifest, manifest_json_schema())
    except jsonschema.ValidationError as exc:
        location = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ShardError(f"{where}: invalid manifest at {location}: {exc.message}") from None
    return manifest


def write_manifest(directory: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Validate and write ``directory/manifest.json`` atomically (temporary file, then rename), and the
    dataset card of document and sequence outputs (:mod:`cpm.schemas.card`)."""
    path = Path(directory) / MANIFEST_NAME
    validate_manifest(manifest, str(path))
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, ensure_ascii=False, indent=2, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    from cpm.schemas.card import write_card

    write_card(directory, manifest)  # README.md: what datasets.load_dataset(directory) reads
    return path


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``directory/manifest.json``."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise CpmError(f"{path}: no manifest (is {directory} a cpm output directory?)")
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{path}: not valid JSON ({exc})") from None
    return validate_manifest(manifest, str(path))
