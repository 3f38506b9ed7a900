"""Dataset cards: the ``README.md`` that lets Hugging Face ``datasets.load_dataset(DIR)`` read a cpm output by folder.

A card is YAML front matter with ``configs:`` (which files make which config and split; see the
`datasets` docs on "Manually configure splits") followed by a short description. It is written next to
``manifest.json`` by :func:`cpm.schemas.manifest.write_manifest` for document and sequence outputs:

* ``cpm corpus build``: config ``documents`` (default, ``shards/*.arrow``) and ``rejected``
  (``rejected/*.arrow``); the dedup index (``dedup/*.minhash``) is not a config;
* ``cpm data pack``: config ``sequences`` with splits ``train`` and ``validation`` (``valid/``), and
  under ``cpm:`` the ``eod_id``, ``pad_id``, ``vocab_size``, ``seq_len`` and tokenizer fingerprint, which
  ``load_dataset`` itself drops with the Arrow schema metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CARD_NAME = "README.md"
SPLIT_NAMES = {"train": "train", "valid": "validation"}  # cpm's split folder -> the Hugging Face split name


def _yaml_scalar(value: Any) -> str:
    """A YAML scalar (or empty flow collection): JSON is valid YAML for these."""
    return json.dumps(value, ensure_ascii=False)


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """Block-style YAML of plain dicts, lists and scalars (enough for a card; no dependency)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(inner, (dict, list)) and inner:
                lines.append(f"{pad}{key}:")
                lines += _yaml(inner, indent + 2)
            else:
                lines.append(f"{pad}{key}: {_yaml_scalar(inner)}")
    else:
        for item in value:
            inner = _yaml(item, indent + 2)
            lines.append(f"{pad}- {inner[0].lstrip()}")
            lines += inner[1:]
    return lines


def _present(manifest: dict[str, Any], kind: str, folder: str) -> bool:
    return any(s.get("kind", manifest["kind"]) == kind and s["path"].startswith(folder + "/") for s in manifest["shards"])


def card_front_matter(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The card's YAML as a dict, or None for an output that has no Arrow shards to load."""
    kind = manifest["kind"]
    if kind == "documents":
        configs = [{"config_name": "documents", "data_files": [{"split": "train", "path": "shards/*.arrow"}], "default": True}]
        if _present(manifest, "rejected", "rejected"):
            configs.append({"config_name": "rejected", "data_files": [{"split": "train", "path": "rejected/*.arrow"}]})
        return {"configs": configs, "cpm": {"kind": kind, "tool_version": manifest["tool_version"]}}
    if kind == "sequences":
        config = manifest["config"]
        files = [
            {"split": name, "path": f"{folder}/*.arrow"}
            for folder, name in SPLIT_NAMES.items()
            if _present(manifest, "sequences", folder)
        ]
        info = {key: config.get(key) for key in ("eod_id", "pad_id", "vocab_size", "seq_len", "tokenizer_fingerprint")}
        return {"configs": [{"config_name": "sequences", "data_files": files, "default": True}],
                "cpm": {"kind": kind, "tool_version": manifest["tool_version"], **info}}
    return None


def _body(manifest: dict[str, Any], front: dict[str, Any]) -> str:
    kind = manifest["kind"]
    if kind == "documents":
        what = ("Cleaned, deduplicated, jieba-segmented documents (`documents`) and every record the build dropped, "
                "with its rule (`rejected`).")
        example = 'ds = load_dataset("THIS_DIR")                       # documents\nrejected = load_dataset("THIS_DIR", "rejected")'
    else:
        info = front["cpm"]
        what = (f"Fixed-length token samples (`tokens`: {info['seq_len']} + 1 ids) of `<eod>`-joined documents. "
                f"`<eod>` is id {info['eod_id']}, `<pad>` id {info['pad_id']}, vocabulary size {info['vocab_size']}, "
                f"tokenizer fingerprint (sha256 of its SentencePiece model) `{info['tokenizer_fingerprint']}`.")
        example = 'ds = load_dataset("THIS_DIR")                       # splits: train, validation'
    return (
        f"\n# cpm {kind}\n\nWritten by `cpm {manifest['command']}` (cpm {manifest['tool_version']}). {what}\n"
        "The shards are Arrow IPC files; `manifest.json` lists them with their sha256 and the job's configuration "
        "and counters.\n\n```python\nfrom datasets import load_dataset\n" + example + "\n```\n"
    )


def write_card(directory: str | os.PathLike[str], manifest: dict[str, Any]) -> Path | None:
    """Write ``directory/README.md`` for an output with Arrow shards (atomically); return its path."""
    front = card_front_matter(manifest)
    if front is None:
        return None
    text = "---\n" + "\n".join(_yaml(front)) + "\n---\n" + _body(manifest, front)
    path = Path(directory) / CARD_NAME
    tmp = path.with_name(f".{CARD_NAME}.tmp-{os.getpid()}")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)
    return path
