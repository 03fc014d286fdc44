"""The matched detections of one evaluation, kept per validation image (``best_val_images.npz`` of a run).

The trainer saves them for the best epoch, so two runs validated on the same images can be compared image by
image (the paired bootstrap of compare/paired.py) without evaluating their weights again.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolo_transfer.engine.metrics import ap_per_class
from yolo_transfer.engine.outputs import write_atomic

IMAGE_STATS_FILE = "best_val_images.npz"


@dataclass(frozen=True)
class ImageStats:
    """The matched detections and label classes of one run's best epoch, cut per validation image."""

    tp: np.ndarray  # (n, 10) bool
    conf: np.ndarray  # (n,)
    pred_cls: np.ndarray  # (n,)
    detection_offsets: np.ndarray  # (images + 1,)
    label_cls: np.ndarray  # (m,)
    label_offsets: np.ndarray  # (images + 1,)

    @classmethod
    def load(cls, path: str | Path) -> ImageStats:
        with np.load(path) as arrays:
            return cls(
                arrays["tp"], arrays["conf"], arrays["pred_cls"],
                _offsets(arrays["detections_per_image"]), arrays["label_cls"],
                _offsets(arrays["labels_per_image"]),
            )  # fmt: skip

    @property
    def n_images(self) -> int:
        return len(self.detection_offsets) - 1

    def map50_95(self, images: np.ndarray | None = None) -> float:
        """The reference-style mAP50-95 over ``images`` (indices, repeats allowed; default all)."""
        if images is None:
            images = np.arange(self.n_images)
        detections = _rows(self.detection_offsets, images)
        labels = self.label_cls[_rows(self.label_offsets, images)]
        if not len(labels):
            return 0.0
        metrics = ap_per_class(self.tp[detections], self.conf[detections], self.pred_cls[detections], labels)
        return float(metrics.ap.mean()) if len(metrics.classes) else 0.0


def save_image_stats(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Write ``DetectionStats.image_arrays()`` atomically (outputs.write_atomic: OutputError on failure)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _rows(offsets: np.ndarray, images: np.ndarray) -> np.ndarray:
    """The row indices of ``images`` (in that order, repeats included) in arrays cut by ``offsets``."""
    ranges = [np.arange(offsets[i], offsets[i + 1]) for i in images]
    return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)
