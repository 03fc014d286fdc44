"""Shared test fixtures: the read-only ``../shared`` folder and small helpers."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """Path under ``../shared``; the test is skipped with a clear reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the read-only ../shared folder is not present in this clone)")
    return path


@pytest.fixture
def official_weights() -> Path:
    return shared_path("weights", "yolov5n.pt")


@pytest.fixture
def reference_dir() -> Path:
    return shared_path("reference")
