"""A training run's plots and progress: results.png, labels.jpg, batch mosaics, final PR/F1/confusion PNGs,
1-based epochs, and the ETA of the run."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rich.console import Console

from yolo_transfer.cli import build_parser, main
from yolo_transfer.compare import train_options_from_args
from yolo_transfer.compare.run_counter import RunCounter
from yolo_transfer.data import load_dataset
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine import run_log, run_plots
from yolo_transfer.engine.batch_plots import label_boxes, plot_batch
from yolo_transfer.engine.run_eta import format_duration, run_eta_seconds
from yolo_transfer.engine.run_plots import plot_labels, plot_results
from yolo_transfer.engine.train_progress import training_progress
from yolo_transfer.engine.trainer import TrainConfig, Trainer
from yolo_transfer.models import build_model
from yolo_transfer.models.yolo import DetectionModel
from yolo_transfer.strategies import Phase, Strategy

RUN_FILES = [
    "results.png", "labels.jpg", "train_batch0.jpg", "train_batch1.jpg", "val_batch0_labels.jpg",
    "val_batch0_pred.jpg", "pr_curve.png", "f1_curve.png", "confusion_matrix.png",
]  # fmt: skip


def rows(phases: list[str]) -> list[dict]:
    """results.csv-like rows, one per epoch (1-based), with the given phase per epoch."""
    return [
        {**{key: 0.1 * epoch for key in run_log.RESULTS_COLUMNS}, "epoch": epoch, "phase": phase}
        for epoch, phase in enumerate(phases, start=1)
    ]


def test_label_boxes_are_input_pixels():
    targets = torch.tensor([[0, 2, 0.5, 0.5, 0.5, 0.25], [1, 0, 0.25, 0.25, 0.1, 0.1]])
    first, second = label_boxes(targets, 2, (64, 128))
    np.testing.assert_allclose(first, [[32, 24, 96, 40, 1, 2]])
    np.testing.assert_allclose(second, [[25.6, 12.8, 38.4, 19.2, 1, 0]], rtol=1e-5)


def test_plot_batch_tiles_images_and_draws_boxes(tmp_path):
    images = torch.full((4, 3, 64, 128), 127, dtype=torch.uint8)
    boxes = [np.array([[32, 16, 96, 48, 0.9, 1]])] + [np.zeros((0, 6))] * 3
    plot_batch(images, boxes, ["a", "b"], tmp_path / "batch.png", show_conf=True)
    mosaic = cv2.imread(str(tmp_path / "batch.png"))
    assert mosaic.shape == (128, 256, 3)  # 2 x 2 tiles
    assert np.abs(mosaic[16, 40:90].astype(int) - 127).max() > 50  # the box's top edge in tile 0
    assert np.abs(mosaic[64 + 16, 128 + 40 : 128 + 90].astype(int) - 127).max() < 5  # tile 3 has no box


def test_results_png_and_labels_jpg_decode(tmp_path, monkeypatch):
    plot_results(rows(["frozen", "frozen", "all"]), tmp_path / "results.png")
    assert cv2.imread(str(tmp_path / "results.png")).shape == (600, 1500, 3)
    monkeypatch.setenv("YOLO_TRANSFER_CACHE", str(tmp_path / "cache"))
    data = load_dataset(make_domain(tmp_path / "data", "target", n_images=8, imgsz=64, seed=0))
    plot_labels(data.train, data.names, tmp_path / "labels.jpg")
    assert cv2.imread(str(tmp_path / "labels.jpg")).shape == (400, 1300, 3)


def test_run_eta_from_the_measured_epoch_time():
    assert run_eta_seconds(100.0, 2, 10) == 400.0
    assert run_eta_seconds(100.0, 2, 10, max_seconds=150.0) == 50.0
    assert run_eta_seconds(0.0, 0, 10) is None
    assert run_eta_seconds(50.0, 10, 10) == 0.0
    assert [format_duration(s) for s in (3723, 65, 0, None)] == ["1:02:03", "0:01:05", "0:00:00", "-:--:--"]
    line = run_log.epoch_line({**rows(["all"])[0], "epoch": 2, "wall_s": 100.0}, 10)
    assert line.startswith("epoch 2/10 [all]") and line.endswith("ETA 0:06:40")


def test_run_bar_shows_epochs_done_and_eta():
    progress = training_progress(Console(), 2, 10, 100.0, None)
    (task,) = progress.tasks
    assert (task.completed, task.total) == (2, 10)
    assert (task.fields["elapsed"], task.fields["eta"]) == ("0:01:40", "0:06:40")


def test_compare_counter_eta(monkeypatch):
    clock = iter([60.0, 90.0])
    monkeypatch.setattr("yolo_transfer.compare.run_counter.time.monotonic", lambda: next(clock))
    counter = RunCounter(4, start=0.0)
    assert counter.finished() == "1/4 runs finished, comparison ETA 0:03:00"
    assert counter.finished() == "2/4 runs finished, comparison ETA 0:01:30"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One epoch of a two-phase strategy at 64 px on 16 synthetic images (training from scratch); the first
    phase sets its own batch (8, the run's is 4)."""
    root = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_TRANSFER_CACHE", str(root / "cache"))
        data_yaml = make_domain(root / "data", "target", n_images=16, imgsz=64, seed=0)
        data = load_dataset(data_yaml)
        strategy = Strategy("two", "", [Phase("head", trainable=["head"], epochs=1, batch=8), Phase("all")])
        config = TrainConfig(
            data=str(data_yaml), out=root / "out", epochs=2, imgsz=64, batch=4, workers=0, hyp="low"
        )
        model = build_model("yolov5n", nc=len(data.names), names=data.names)
        forwards = []  # (training?, images) of every forward, in order
        forward = DetectionModel.forward

        def spy(self, x, *args, **kwargs):
            forwards.append((self.training, len(x)))
            return forward(self, x, *args, **kwargs)

        patch.setattr(DetectionModel, "forward", spy)
        summary = Trainer(model, data, strategy, config, config.out).fit()
    return config.out, summary, forwards


def test_finished_run_folder_holds_the_plots(finished_run):
    out, _, _ = finished_run
    for name in RUN_FILES:
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 100, name


def test_final_plots_forward_half_a_training_batch_at_a_time(finished_run):
    """Like validation, the plots after the last epoch run the model on 2 of the val loader's 3 images at a
    time (half the run's batch 4, whatever the first phase's batch): a bigger forward would make them the
    run's memory peak."""
    _, _, forwards = finished_run
    last_training = max(i for i, (training, _) in enumerate(forwards) if training)
    after = [images for _, images in forwards[last_training + 1 :]]
    assert max(after) == 2 and after.count(2) == 3  # last validation, final evaluation, predicted val batch


def test_epochs_are_one_based_in_results_csv_and_summary(finished_run):
    out, summary, _ = finished_run
    with open(out / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in table] == [1, 2]
    assert [row["phase"] for row in table] == ["head", "all"]
    assert 1 <= summary["best"]["epoch"] <= 2 and summary["final"]["epoch"] == 2


def test_summary_records_the_device(finished_run):
    out, summary, _ = finished_run
    assert json.loads((out / "summary.json").read_text())["device"] == summary["device"]
    assert summary["device"]["device"] == "cpu" and summary["device"]["threads"] >= 1


def test_noplots_writes_the_numbers_and_weights_but_no_plot_and_no_final_evaluation(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("YOLO_TRANSFER_CACHE", str(tmp_path / "cache"))
    data_yaml = make_domain(tmp_path / "data", "target", n_images=16, imgsz=64, seed=0)
    out = tmp_path / "run"
    evaluations = []
    monkeypatch.setattr(run_plots, "evaluate", lambda *args, **kwargs: evaluations.append(1))
    code = main(
        ["train", "--data", str(data_yaml), "--cfg", "yolov5n", "--epochs", "1", "--imgsz", "64", "--batch",
         "4", "--workers", "0", "--device", "cpu", "--noplots", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert {"results.csv", "summary.json"} <= {path.name for path in out.iterdir()}
    assert all((out / "weights" / name).is_file() for name in ("best.safetensors", "last.safetensors"))
    assert not [path for path in out.rglob("*") if path.suffix in (".png", ".jpg")]
    assert not evaluations and "plots in" not in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["config"]["noplots"] is True


def test_compare_passes_noplots_to_its_runs():
    args = build_parser().parse_args(["compare", "--data", "d.yaml", "--weights", "w.pt", "--noplots"])
    assert TrainConfig(data="d.yaml", out=Path("run"), **train_options_from_args(args)).noplots is True
    args = build_parser().parse_args(["compare", "--data", "d.yaml", "--weights", "w.pt"])
    assert TrainConfig(data="d.yaml", out=Path("run"), **train_options_from_args(args)).noplots is False
