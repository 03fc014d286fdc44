"""Writers besides checkpoints on a full disk: essential files (metrics.json, best_val_images.npz, reports)
stop the command with one error line naming the file (exit 2); plots warn and the command goes on."""

import errno
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from yolo_transfer.cli import main
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine import outputs
from yolo_transfer.engine.image_stats import save_image_stats
from yolo_transfer.errors import OutputError

DEMO = Path(__file__).resolve().parents[1] / "yolo_transfer" / "assets" / "demo_yolov5n_source.safetensors"
REAL_WRITE_BYTES = Path.write_bytes


def full_disk_for(*names: str):
    """A Path.write_bytes that raises ENOSPC for the temporary files of ``names`` (or every file if none)."""

    def write_bytes(path: Path, data: bytes) -> int:
        if not names or any(f".{name}." in path.name for name in names):
            raise OSError(errno.ENOSPC, "No space left on device")
        return REAL_WRITE_BYTES(path, data)

    return write_bytes


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    return line


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_TRANSFER_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield make_domain(tmp_path_factory.mktemp("data"), "target", n_images=12, imgsz=64, seed=5)


def test_figures_images_and_arrays_name_the_file_and_the_space(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs.Path, "write_bytes", full_disk_for())
    writers = {
        "plot.png": lambda path: outputs.write_figure(Figure(), path),
        "mosaic.jpg": lambda path: outputs.write_image(path, np.zeros((8, 8, 3), np.uint8)),
        "best_val_images.npz": lambda path: save_image_stats({"tp": np.zeros((2, 10), bool)}, path),
    }
    for name, write in writers.items():
        with pytest.raises(OutputError, match=rf"^{tmp_path}: no space left on the device writing {name} \("):
            write(tmp_path / name)
    assert not list(tmp_path.iterdir())  # no temporary file left behind


def test_a_plot_that_cannot_be_written_is_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(outputs.Path, "write_bytes", full_disk_for())
    assert not outputs.write_optional(
        tmp_path / "plot.png", lambda path: outputs.write_figure(Figure(), path)
    )
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {tmp_path}: no space left on the device writing plot.png")
    assert err.count("\n") == 1


def test_val_warns_for_plots_and_stops_at_metrics_json(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(outputs.Path, "write_bytes", full_disk_for("pr_curve.png", "metrics.json"))
    out = tmp_path / "val"
    argv = ["val", "--weights", str(DEMO), "--data", str(data), "--imgsz", "64", "--device", "cpu",
            "--workers", "0", "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert f"warning: {out}: no space left on the device writing pr_curve.png" in captured.err
    assert (out / "f1_curve.png").is_file() and (out / "confusion_matrix.png").is_file()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and "Traceback" not in captured.err
    assert errors[0].startswith(f"error: {out}: no space left on the device writing metrics.json (")


def test_data_check_report_on_a_full_disk(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(outputs.Path, "write_bytes", full_disk_for("report.json"))
    assert main(["data", "check", str(data), "--out", str(tmp_path / "check")]) == 2
    assert "no space left on the device writing report.json" in one_error_line(capsys)


def test_training_plots_warn_and_best_val_images_stop_the_run(data, tmp_path, monkeypatch, capsys):
    argv = ["train", "--data", str(data), "--weights", str(DEMO), "--epochs", "1", "--imgsz", "64",
            "--batch", "4", "--workers", "0", "--device", "cpu"]  # fmt: skip
    plots = ("results.png", "labels.jpg", "train_batch0.jpg", "val_batch0_pred.jpg", "confusion_matrix.png")
    monkeypatch.setattr(outputs.Path, "write_bytes", full_disk_for(*plots))
    assert main([*argv, "--out", str(tmp_path / "plots")]) == 0
    err = capsys.readouterr().err
    for name in plots:
        assert f"warning: {tmp_path / 'plots'}: no space left on the device writing {name}" in err
    assert (tmp_path / "plots" / "summary.json").is_file() and (tmp_path / "plots" / "pr_curve.png").is_file()

    monkeypatch.setattr(outputs.Path, "write_bytes", full_disk_for("best_val_images.npz"))
    assert main([*argv, "--out", str(tmp_path / "stats")]) == 2
    line = one_error_line(capsys)
    assert line.startswith(
        f"error: {tmp_path / 'stats'}: no space left on the device writing best_val_images.npz"
    )


def test_an_unanticipated_os_error_is_one_line(monkeypatch, capsys, tmp_path):
    def refuse(args):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "labels" / "a.txt"))

    monkeypatch.setattr("yolo_transfer.data.commands.convert_command", refuse)
    argv = ["data", "convert", "--format", "voc", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert one_error_line(capsys) == f"error: {tmp_path / 'labels' / 'a.txt'}: Permission denied"
