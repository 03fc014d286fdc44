"""Run folders as yolov5 names them (exp, exp2, ...), --exist-ok, --out, and imgsz from the weights."""

import json

import cv2
import numpy as np
import pytest

from yolo_transfer.cli import main
from yolo_transfer.compare.demo import shipped_weights
from yolo_transfer.engine.run_dirs import increment_run_dir, resolve_run_dir


def test_increment_counts_up_from_2(tmp_path):
    assert increment_run_dir(tmp_path, "exp") == tmp_path / "exp"
    (tmp_path / "exp").mkdir()
    assert increment_run_dir(tmp_path, "exp") == tmp_path / "exp2"
    (tmp_path / "exp2").mkdir()
    (tmp_path / "exp4").mkdir()
    assert increment_run_dir(tmp_path, "exp") == tmp_path / "exp3"
    assert increment_run_dir(tmp_path, "exp", exist_ok=True) == tmp_path / "exp"
    assert increment_run_dir(tmp_path / "missing", "exp") == tmp_path / "missing" / "exp"
    assert not (tmp_path / "missing").exists()


def test_out_is_exact(tmp_path):
    (tmp_path / "mine").mkdir()
    assert resolve_run_dir(tmp_path / "mine", tmp_path, "exp") == tmp_path / "mine"
    assert resolve_run_dir(None, tmp_path, "run") == tmp_path / "run"


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.jpg"
    cv2.imwrite(str(path), np.full((96, 128, 3), 127, np.uint8))
    return path


def predict(*extra: str) -> list[str]:
    return ["predict", str(shipped_weights()), *extra]


def test_predict_runs_go_to_exp_then_exp2(tmp_path, image, capsys):
    project = tmp_path / "runs"
    assert main(predict(str(image), "--project", str(project), "--device", "cpu")) == 0
    assert main(predict(str(image), "--project", str(project), "--device", "cpu")) == 0
    out = capsys.readouterr().out
    for run in ("exp", "exp2"):
        assert json.loads((project / run / "predictions.json").read_text())[0]["image"] == str(image)
        assert f"run folder: {project / run}" in out and f"results in {project / run}" in out
    assert "device: cpu" in out
    assert main(predict(str(image), "--project", str(project), "--exist-ok", "--device", "cpu")) == 0
    assert main(predict(str(image), "--out", str(tmp_path / "exact"), "--device", "cpu")) == 0
    assert sorted(p.name for p in project.iterdir()) == ["exp", "exp2"]
    assert (tmp_path / "exact" / "predictions.json").is_file()
