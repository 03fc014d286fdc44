"""The plots of a finished training run, as yolov5 leaves them in its run folder.

``results.png`` (losses, P, R, mAP per epoch; dashed lines where a phase begins), ``labels.jpg`` (class
histogram, box centres and sizes), ``train_batch0..2.jpg`` (the first augmented batches with their boxes),
``val_batch0_labels.jpg`` / ``val_batch0_pred.jpg`` and the final evaluation's PR curve, F1 curve and
confusion matrix of the best weights. results.csv stays the source of the numbers.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from yolo_transfer.data import LoadedDataset, Sample, build_dataloader
from yolo_transfer.engine.batch_plots import MAX_TILES, label_boxes, plot_batch
from yolo_transfer.engine.evaluate import evaluate, forward_in_parts
from yolo_transfer.engine.host_memory import release_free_heap
from yolo_transfer.engine.outputs import write_figure, write_optional
from yolo_transfer.engine.postprocess import non_max_suppression
from yolo_transfer.models import load_model

RESULTS_PANELS = [
    ("train/box_loss", "train box loss"),
    ("train/obj_loss", "train obj loss"),
    ("train/cls_loss", "train cls loss"),
    ("metrics/precision", "precision"),
    ("metrics/recall", "recall"),
    ("val/box_loss", "val box loss"),
    ("val/obj_loss", "val obj loss"),
    ("val/cls_loss", "val cls loss"),
    ("metrics/mAP_0.5", "mAP50"),
    ("metrics/mAP_0.5:0.95", "mAP50-95"),
]
TRAIN_BATCHES = 3
PRED_CONF, PRED_IOU = 0.25, 0.45  # detections drawn in val_batch0_pred.jpg, as predict's defaults


def plot_results(rows: list[dict], path: Path) -> None:
    """results.png: one panel per results.csv column of RESULTS_PANELS over the (1-based) epoch."""
    epochs = [row["epoch"] for row in rows]
    pairs = zip(rows, rows[1:], strict=False)
    starts = [(row["epoch"], row["phase"]) for prev, row in pairs if row["phase"] != prev["phase"]]
    fig = Figure(figsize=(15, 6), layout="constrained")
    axes = fig.subplots(2, 5).ravel()
    for ax, (key, title) in zip(axes, RESULTS_PANELS, strict=True):
        ax.plot(epochs, [row[key] for row in rows], marker="o", markersize=3, linewidth=1.6, color="#2563eb")
        for epoch, phase in starts:
            ax.axvline(epoch - 0.5, color="#9ca3af", linestyle="--", linewidth=1)
            ax.text(epoch - 0.5, 0.98, f" {phase}", transform=ax.get_xaxis_transform(), fontsize=7,
                    va="top", ha="left", color="#6b7280")  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.25)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Training run (dashed: a new phase begins)", fontsize=11)
    write_figure(fig, path, dpi=100)


def plot_labels(samples: list[Sample], names: list[str], path: Path) -> None:
    """labels.jpg: instances per class, box centres (x, y) and box sizes (w, h), normalised to the image."""
    labels = np.concatenate([s.labels for s in samples]) if samples else np.zeros((0, 5), np.float32)
    fig = Figure(figsize=(13, 4), layout="constrained")
    counts_ax, centre_ax, size_ax = fig.subplots(1, 3)
    counts = np.bincount(labels[:, 0].astype(int), minlength=len(names))
    counts_ax.bar(range(len(counts)), counts, color="#2563eb")
    if len(names) <= 30:
        counts_ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    counts_ax.set(title=f"{len(labels)} boxes in {len(samples)} images", ylabel="instances per class")
    for ax, (x, y), title in (
        (centre_ax, (1, 2), "box centres (x, y)"),
        (size_ax, (3, 4), "box sizes (width, height)"),
    ):
        ax.hist2d(labels[:, x], labels[:, y], bins=50, range=[[0, 1], [0, 1]], cmap="viridis", norm=LogNorm())
        ax.set(title=title, xlim=(0, 1), ylim=(0, 1), aspect="equal")
    centre_ax.invert_yaxis()  # image coordinates: y grows downwards
    write_figure(fig, path, dpi=100)


def write_run_plots(
    out_dir: Path,
    rows: list[dict],
    data: LoadedDataset,
    val_loader,
    device: torch.device,
    *,
    hyp: dict,
    imgsz: int,
    batch: int,
    seed: int,
    forward_batch: int,
) -> list[Path]:
    """Write every plot of the finished run into ``out_dir`` (``hyp``, ``batch``: the first phase's; the model
    sees ``forward_batch`` images at a time, as in validation); returns those written. A plot that cannot be
    written is a warning: the run's weights and numbers are saved."""
    out_dir = Path(out_dir)
    plots = {
        out_dir / "results.png": lambda path: plot_results(rows, path),
        out_dir / "labels.jpg": lambda path: plot_labels(data.train, data.names, path),
    }
    loader = build_dataloader(data.train, imgsz, batch, augment=True, hyp=hyp, shuffle=True, seed=seed)
    for index, (images, targets, _, _) in zip(range(TRAIN_BATCHES), loader, strict=False):
        boxes = label_boxes(targets, len(images), images.shape[2:])
        plots[out_dir / f"train_batch{index}.jpg"] = partial(plot_batch, images, boxes, data.names)
    model, _ = load_model(out_dir / "weights" / "best.safetensors")
    curves = evaluate(
        model, val_loader, data.names, device=device, plots_dir=out_dir, forward_batch=forward_batch
    )["plots"]
    release_free_heap()
    images, targets, _, _ = next(iter(val_loader))
    images = images[:MAX_TILES]  # the tiles the plots show
    with torch.no_grad():
        decoded, _ = forward_in_parts(model.to(device).eval(), images.to(device).float() / 255, forward_batch)
    found = [d.cpu().numpy() for d in non_max_suppression(decoded, PRED_CONF, PRED_IOU)]
    labels = label_boxes(targets, len(images), images.shape[2:])
    plots[out_dir / "val_batch0_labels.jpg"] = partial(plot_batch, images, labels, data.names)
    plots[out_dir / "val_batch0_pred.jpg"] = partial(plot_batch, images, found, data.names, show_conf=True)
    return [path for path, plot in plots.items() if write_optional(path, plot)] + curves
