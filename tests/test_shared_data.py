"""Tests that need ``../shared`` skip on a developer machine but fail under ``CI=true``."""

from __future__ import annotations

import pytest
from conftest import missing_shared_data


def test_missing_shared_data_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="../shared/data/zh is not present"):
        missing_shared_data("../shared/data/zh")


@pytest.mark.parametrize("value", ["true", "TRUE"])
def test_missing_shared_data_fails_under_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="../shared/data/zh is not present .*CI=true"):
        missing_shared_data("../shared/data/zh")
