"""tests/conftest.py: shared_path() skips without ../shared, and fails instead when CI requires it."""

from __future__ import annotations

import conftest
import pytest


@pytest.fixture
def fake_shared(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(conftest, "SHARED", tmp_path)
    return tmp_path


def test_present_path_is_returned(fake_shared, monkeypatch):
    monkeypatch.setenv(conftest.REQUIRE_SHARED, "1")
    assert conftest.shared_path("data") == fake_shared / "data"


@pytest.mark.parametrize("value", [None, "", "0"])
def test_missing_path_skips_with_the_reason(fake_shared, monkeypatch, value):
    if value is None:
        monkeypatch.delenv(conftest.REQUIRE_SHARED, raising=False)
    else:
        monkeypatch.setenv(conftest.REQUIRE_SHARED, value)
    with pytest.raises(pytest.skip.Exception, match="needs .*weights.*not present"):
        conftest.shared_path("weights", "yolov5n.pt")


def test_missing_path_fails_when_required(fake_shared, monkeypatch):
    monkeypatch.setenv(conftest.REQUIRE_SHARED, "1")
    with pytest.raises(pytest.fail.Exception, match="YOLO_TRANSFER_REQUIRE_SHARED is set"):
        conftest.shared_path("weights", "yolov5n.pt")


def test_ci_script_requires_shared():
    script = (conftest.REPO / ".ci" / "run").read_text()
    assert f"export {conftest.REQUIRE_SHARED}=1" in script
