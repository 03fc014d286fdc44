"""Shared test fixtures: the read-only ``../shared`` folder and small helpers."""

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REQUIRE_SHARED = "YOLO_TRANSFER_REQUIRE_SHARED"  # set to 1 (.ci/run does): a missing ../shared fails the test


def shared_path(*parts: str) -> Path:
    """Path under ``../shared``; the test is skipped with a clear reason when it is absent.

    With ``YOLO_TRANSFER_REQUIRE_SHARED=1`` in the environment (CI) it fails instead, so that a run without
    the real data cannot pass by skipping.
    """
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f"needs {path} (the read-only ../shared folder is not present in this clone)"
        if os.environ.get(REQUIRE_SHARED, "") not in ("", "0"):
            pytest.fail(f"{reason}, and {REQUIRE_SHARED} is set", pytrace=False)
        pytest.skip(reason)
    return path


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` imported as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def official_weights() -> Path:
    return shared_path("weights", "yolov5n.pt")


@pytest.fixture
def reference_dir() -> Path:
    return shared_path("reference")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """A dataset cache folder for the module (``YOLO_TRANSFER_CACHE``, inherited by subprocesses)."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_TRANSFER_CACHE", str(path))
        yield path
