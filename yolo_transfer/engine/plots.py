"""Evaluation plots: precision-recall curves and the confusion matrix, as PNG files.

Figures are drawn with matplotlib's object API on an Agg canvas, so no pyplot state or display is involved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from yolo_transfer.engine.metrics import ClassMetrics
from yolo_transfer.engine.outputs import write_figure

MAX_LABELLED_CLASSES = 20  # above this, curves get no legend and the matrix no tick labels or numbers


def plot_pr_curve(result: ClassMetrics, names: list[str], path: Path) -> None:
    """Precision over recall at IoU 0.5, one thin line per class and the class mean in bold."""
    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.add_subplot()
    recall = result.confidence_axis
    labelled = len(result.classes) <= MAX_LABELLED_CLASSES
    for cls, curve, ap in zip(result.classes, result.pr_curves, result.ap[:, 0], strict=True):
        ax.plot(recall, curve, linewidth=1, label=f"{names[cls]} {ap:.3f}" if labelled else None)
    if len(result.classes):
        label = f"all classes {result.ap[:, 0].mean():.3f}"
        ax.plot(recall, result.pr_curves.mean(0), linewidth=3, color="blue", label=label)
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1), title="Precision-Recall (mAP@0.5)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small")
    write_figure(fig, path, dpi=150)


def plot_f1_curve(result: ClassMetrics, names: list[str], path: Path) -> None:
    """F1 over the confidence threshold, one thin line per class and the class mean in bold."""
    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.add_subplot()
    confidence = result.confidence_axis
    labelled = len(result.classes) <= MAX_LABELLED_CLASSES
    for cls, curve in zip(result.classes, result.f1_curves, strict=True):
        ax.plot(confidence, curve, linewidth=1, label=names[cls] if labelled else None)
    if len(result.classes):
        mean = result.f1_curves.mean(0)
        best = int(mean.argmax())
        label = f"all classes {mean[best]:.2f} at {confidence[best]:.3f}"
        ax.plot(confidence, mean, linewidth=3, color="blue", label=label)
    ax.set(xlabel="Confidence", ylabel="F1", xlim=(0, 1), ylim=(0, 1), title="F1 over confidence (IoU 0.5)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small")
    write_figure(fig, path, dpi=150)


def plot_confusion_matrix(matrix: np.ndarray, names: list[str], path: Path) -> None:
    """``matrix[predicted, true]`` normalised per true class (column); the last row/column is background.

    Only classes that occur (as label or prediction) are drawn, so a few classes of a large set stay readable.
    """
    nc = len(matrix) - 1
    shown = [i for i in range(nc) if matrix[i].any() or matrix[:, i].any()] + [nc]
    matrix = matrix[np.ix_(shown, shown)]
    columns = matrix / np.maximum(matrix.sum(0, keepdims=True), 1)
    size = len(matrix)
    labelled = size - 1 <= MAX_LABELLED_CLASSES
    fig = Figure(figsize=(10, 8), tight_layout=True)
    ax = fig.add_subplot()
    image = ax.imshow(columns, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    if labelled:
        ticks = [*(names[i] for i in shown[:-1]), "background"]
        ax.set_xticks(range(size), ticks, rotation=90)
        ax.set_yticks(range(size), ticks)
        for (row, col), value in np.ndenumerate(columns):
            if value > 0:
                colour = "white" if value > 0.5 else "black"
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion matrix (normalised per true class)")
    write_figure(fig, path, dpi=150)
