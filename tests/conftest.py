"""Shared test helpers.

Real data lives in ../shared/data (relative to the repository root) and is never copied
into the repository. Tests that need it use the `shared_data` fixture: they skip when it
is missing, except under SKELANG_REQUIRE_SHARED_DATA=1 (set by .ci/run), where a missing
file is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SKELANG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def require_shared_data(relative: str) -> Path:
    """Path of ../shared/data/<relative>; skips the test (or fails it, when required) if absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        message = f"real data {path} is missing"
        if os.environ.get("SKELANG_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{message} and SKELANG_REQUIRE_SHARED_DATA=1")
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data():
    return require_shared_data
