"""Shared fixtures: paths to the read-only real data in ../shared.

A test that needs missing shared data is skipped on a developer machine; under ``CI=true`` it
fails, so that a CI run without the data cannot pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import Phase, settings

REPO = Path(__file__).resolve().parents[1]

# `CPM_HYPOTHESIS_PROFILE=mutation` (set by mutation/run.py): a failing example fails at once, unshrunk,
# so that a mutant costs the seconds its first failing example takes, not minutes of shrinking.
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile(os.environ.get("CPM_HYPOTHESIS_PROFILE", "default"))
SHARED = REPO.parent / "shared"


def missing_shared_data(what: str) -> None:
    """Skip (developer machine) or fail (``CI=true``) a test whose shared data is not there."""
    message = f"{what} is not present"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: tests that need ../shared must run in CI)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        missing_shared_data("../shared")
    return SHARED


@pytest.fixture(scope="session")
def zh_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "zh"
    if not path.is_dir():
        missing_shared_data("../shared/data/zh")
    return path


@pytest.fixture(scope="session")
def cpm1_model(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "cpm1" / "chinese_vocab.model"
    if not path.is_file():
        missing_shared_data("../shared/data/cpm1/chinese_vocab.model")
    return path


@pytest.fixture(scope="module")
def torch_one_thread():
    """One intra-op torch thread for a module: tiny models run faster and steadier on a busy CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_zst_lines(path: Path, limit: int | None = None) -> list[str]:
    """The lines of a zstd-compressed UTF-8 file, split on "\\n" only (a "\\r" stays in its line)."""
    import zstandard

    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        text = stream.read().decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines if limit is None else lines[:limit]


def shared_lines(name: str) -> list[str]:
    """The non-blank lines, stripped, of the zstd-compressed UTF-8 file ``../shared/data/zh/NAME``."""
    import io

    import zstandard

    path = SHARED / "data" / "zh" / name
    if not path.is_file():
        missing_shared_data(f"../shared/data/zh/{name}")
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        return [line.strip() for line in io.TextIOWrapper(stream, encoding="utf-8") if line.strip()]


@pytest.fixture(scope="session")
def news_corpus(tmp_path_factory) -> Path:
    """``cpm corpus build --source news`` on the bundled news samples (documents, rejected, dedup index)."""
    from cpm.cli import main

    out = tmp_path_factory.mktemp("news-corpus") / "corpus"
    assert main(["-q", "corpus", "build", "--source", "news", "--output", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def news_packed(news_corpus, tmp_path_factory) -> tuple[Path, Path]:
    """The news corpus packed with a small lossless tokenizer trained on it: (packed dir, tokenizer dir)."""
    from cpm.cli import main

    root = tmp_path_factory.mktemp("news-packed")
    assert main(["-q", "tokenizer", "train", "--input", str(news_corpus), "--output", str(root / "tok"), "--vocab-size", "800"]) == 0
    assert main(["-q", "data", "pack", "--input", str(news_corpus), "--tokenizer", str(root / "tok"), "--output",
                 str(root / "packed"), "--seq-len", "32", "--valid-fraction", "0.1"]) == 0
    return root / "packed", root / "tok"
