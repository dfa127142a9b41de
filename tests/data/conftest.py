"""Every test of the data package caches under a temporary folder, never ``~/.cache/fwp``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fwp-cache")


@pytest.fixture(autouse=True)
def private_cache(session_cache, monkeypatch) -> Path:
    monkeypatch.setenv("FWP_CACHE", str(session_cache))
    return session_cache
