"""``train --tensorboard``: results.csv's columns as scalars per epoch and the run's images in
RUN/tensorboard; without the tensorboard package, a one-line error before any work."""

import csv
import sys
from pathlib import Path

import pytest

from yolo_transfer.cli import build_parser, main
from yolo_transfer.compare import train_options_from_args
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine.run_log import RESULTS_COLUMNS
from yolo_transfer.engine.train_config import TrainConfig

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

SCALARS = [
    "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
    "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss", "x/lr0", "x/lr1", "x/lr2", "img_per_s",
]  # fmt: skip
IMAGES = ["results", "train_batch0", "val_batch0_labels", "val_batch0_pred", "pr_curve", "confusion_matrix"]


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_TRANSFER_CACHE", str(tmp_path / "cache"))
    return make_domain(tmp_path / "data", "target", n_images=16, imgsz=64, seed=0)


def train_args(data, out) -> list[str]:
    return ["train", "--data", str(data), "--epochs", "2", "--imgsz", "64", "--batch", "4", "--workers", "0",
            "--device", "cpu", "--tensorboard", "--out", str(out)]  # fmt: skip


def test_train_writes_every_epochs_scalars_and_the_run_images(data, tmp_path):
    out = tmp_path / "run"
    assert main(train_args(data, out)) == 0
    (events,) = (out / "tensorboard").glob("events.out.tfevents.*")
    log = event_accumulator.EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    log.Reload()
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    tags = log.Tags()
    assert set(tags["scalars"]) == set(RESULTS_COLUMNS) - {"epoch", "phase"}
    for tag in SCALARS:
        logged = log.Scalars(tag)
        assert [event.step for event in logged] == [1, 2], tag
        for event, row in zip(logged, rows, strict=True):
            assert event.value == pytest.approx(float(row[tag]), rel=1e-5, abs=1e-7), tag
    assert set(IMAGES) <= set(tags["images"])
    assert log.Images("train_batch0")[0].step == 2 and log.Images("train_batch0")[0].width > 64


def test_compare_passes_tensorboard_to_its_runs():
    args = build_parser().parse_args(["compare", "--data", "d.yaml", "--weights", "w.pt", "--tensorboard"])
    options = train_options_from_args(args)
    assert TrainConfig(data="d.yaml", out=Path("run"), **options).tensorboard is True


def test_missing_tensorboard_is_one_line_before_any_work(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    out = tmp_path / "run"
    assert main(train_args(data, out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[tensorboard]"' in err and "Traceback" not in err
    assert not out.exists()
    compare = ["compare", "--data", str(data), "--weights", str(data), "--tensorboard", "--out", str(out)]
    assert main(compare) == 2
    assert "--tensorboard needs the tensorboard package" in capsys.readouterr().err
