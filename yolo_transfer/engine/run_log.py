"""What a training run reports: results.csv rows, summary.json, resource use and the per-epoch line."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import resource
import sys
from pathlib import Path

import torch

from yolo_transfer.engine import outputs
from yolo_transfer.engine.run_eta import format_duration, run_eta_seconds

RESULTS_COLUMNS = [
    "epoch",
    "phase",
    "train/box_loss",
    "train/obj_loss",
    "train/cls_loss",
    "metrics/precision",
    "metrics/recall",
    "metrics/mAP_0.5",
    "metrics/mAP_0.5:0.95",
    "val/box_loss",
    "val/obj_loss",
    "val/cls_loss",
    "x/lr0",
    "x/lr1",
    "x/lr2",
    "wall_s",
    "img_per_s",
    "peak_rss_mb",
    "gpu_mem_mb",
    "trainable_params",
]
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far. On Linux the high-water mark of its own memory
    (/proc/self/status VmHWM): getrusage's maximum also counts the memory of the process that started this
    one (Linux carries it across fork and exec), so a run spawned by a large ``compare`` process would report
    that. Elsewhere getrusage (KiB on Linux, bytes on macOS)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def gpu_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory reserved by torch on ``device``; 0 on CPU."""
    return torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else 0.0


def write_results_csv(path: Path, rows: list[dict]) -> None:
    """(Re)write results.csv from all epoch rows so far, so a resumed run never duplicates an epoch."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULTS_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    outputs.write_atomic(path, buffer.getvalue().encode())


def write_json(path: Path, data: dict) -> None:
    outputs.write_atomic(path, json.dumps(data, indent=2).encode())


def metrics_record(epoch: int, metrics: dict) -> dict:
    """The ``best`` / ``final`` entry of summary.json for the validation ``metrics`` of ``epoch`` (1-based,
    as in results.csv and on the console)."""
    coco = metrics.get("coco") or {}
    return {
        "epoch": epoch,
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "map50": metrics["map50"],
        "map50_95": metrics["map50_95"],
        "coco": {key: coco.get(key) for key in COCO_KEYS},
    }


def unvalidated_metrics() -> dict:
    """The validation metrics of an epoch that was not validated (``--val-every``): all NaN."""
    nan = float("nan")
    return {"precision": nan, "recall": nan, "map50": nan, "map50_95": nan, "loss": [nan, nan, nan]}


def time_to_fraction_of_best(rows: list[dict], fitness_key: str = "fitness", fraction: float = 0.95) -> float:
    """Wall seconds at the first epoch whose fitness reached ``fraction`` of the run's best fitness
    (epochs without validation, fitness NaN, never do)."""
    validated = [row for row in rows if not math.isnan(row[fitness_key])]
    best = max(row[fitness_key] for row in validated)
    return next(row["wall_s"] for row in validated if row[fitness_key] >= fraction * best)


def epoch_line(row: dict, epochs: int, data_share: float | None = None) -> str:
    """One summary line per epoch, yolov5-like (epochs are 1-based), ending with the run's ETA.

    ``data_share``: the fraction of the training time spent waiting for batches (high: data-bound)."""
    eta = format_duration(run_eta_seconds(row["wall_s"], row["epoch"], epochs))
    if math.isnan(row["metrics/mAP_0.5:0.95"]):
        metrics = "not validated"
    else:
        metrics = (
            f"P {row['metrics/precision']:.3f} R {row['metrics/recall']:.3f} "
            f"mAP50 {row['metrics/mAP_0.5']:.3f} mAP50-95 {row['metrics/mAP_0.5:0.95']:.3f}"
        )
    waiting = "" if data_share is None else f" (data wait {data_share:.0%})"
    return (
        f"epoch {row['epoch']}/{epochs} [{row['phase']}] "
        f"loss box {row['train/box_loss']:.4f} obj {row['train/obj_loss']:.4f} "
        f"cls {row['train/cls_loss']:.4f} | {metrics} | {row['img_per_s']:.1f} img/s{waiting}, "
        f"{row['peak_rss_mb']:.0f} MB, {row['wall_s']:.0f} s, ETA {eta}"
    )
