"""Evaluate a detector on a data loader (spec §7) and the ``yolo-transfer val`` command.

Detections (multi-label NMS) and labels are compared in original-image pixels. Metrics are reported both the
reference way (P, R, mAP50, mAP50-95 and per class) and COCO-standard through faster-coco-eval.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table
from torch import Tensor, nn
from torchvision.ops import box_convert

from yolo_transfer.data import build_dataloader, load_dataset, load_hyp
from yolo_transfer.deploy.runtime import load_inference_model
from yolo_transfer.engine.device import select_device
from yolo_transfer.engine.inference_size import inference_imgsz
from yolo_transfer.engine.metrics import (
    ClassMetrics,
    ConfusionMatrix,
    ap_per_class,
    coco_metrics,
    match_predictions,
)
from yolo_transfer.engine.outputs import ensure_writable_dir, write_atomic, write_optional
from yolo_transfer.engine.plots import plot_confusion_matrix, plot_f1_curve, plot_pr_curve
from yolo_transfer.engine.postprocess import non_max_suppression, scale_boxes
from yolo_transfer.errors import ConfigError, DataError

PR_CURVE_PNG = "pr_curve.png"
F1_CURVE_PNG = "f1_curve.png"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
VAL_CONF, VAL_IOU = 0.001, 0.6  # validation's NMS thresholds (yolov5 val.py)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    names: list[str],
    *,
    conf: float = VAL_CONF,
    iou: float = VAL_IOU,
    max_det: int = 300,
    device: str | torch.device | None = None,
    compute_loss=None,
    plots_dir: str | Path | None = None,
    progress: bool = False,
    image_stats: bool = False,
    forward_batch: int | None = None,
) -> dict:
    """Metrics of ``model`` on ``loader`` (which yields images, targets, paths, shapes).

    Returns ``precision, recall, map50, map50_95`` (reference style), ``coco`` {AP, AP50, AP75, APs, APm,
    APl}, ``per_class`` [{class_id, name, images, instances, precision, recall, map50, map50_95}],
    ``images``, ``instances``, and ``loss`` [box, obj, cls] (mean over batches) when ``compute_loss`` is
    given, and ``image_stats`` (:meth:`DetectionStats.image_arrays`, for paired bootstraps over images)
    when asked. ``forward_batch`` caps the images per forward pass (the loader's batches, and so their
    rect shapes, stay as they are): fewer activations alive at once, the same detections to float
    rounding. Writes PR-curve, F1-curve and confusion-matrix PNGs to ``plots_dir`` when given (a plot that
    cannot be written is a warning; ``plots`` lists those written). The model is moved to ``device`` (None: it
    stays on its own, where ``compute_loss``'s anchors are) and evaluated in eval mode; the train/eval mode of
    each of its modules is restored after.
    """
    device = next(model.parameters()).device if device is None else torch.device(device)
    modes = {module: module.training for module in model.modules()}
    model.to(device).eval()
    dtype = next(model.parameters()).dtype
    stats = DetectionStats(len(names))
    loss = torch.zeros(3, device=device)
    try:
        for images, targets, _, shapes in track(loader, "validating", transient=True, disable=not progress):
            images = images.to(device, dtype, non_blocking=True) / 255
            targets = targets.to(device)
            decoded, raw = forward_in_parts(model, images, forward_batch)
            if compute_loss is not None:
                loss += compute_loss(raw, targets)[1]
            input_hw = images.shape[2:]
            detections = non_max_suppression(decoded, conf, iou, multi_label=True, max_det=max_det)
            for index, found in enumerate(detections):
                original_hw, ratio_pad = shapes[index]
                labels = targets[targets[:, 0] == index, 1:]
                found = found.clone()
                found[:, :4] = scale_boxes(input_hw, found[:, :4], original_hw, ratio_pad)
                stats.add(found, labels_in_original(labels, input_hw, original_hw, ratio_pad), original_hw)
    finally:
        for module, training in modes.items():
            module.train(training)

    per_class = stats.per_class()
    metrics = {
        **per_class.summary(),
        "coco": coco_metrics(stats.images),
        **stats.class_rows(per_class, names),
    }
    if compute_loss is not None:
        metrics["loss"] = (loss / max(len(loader), 1)).tolist()
    if image_stats:
        metrics["image_stats"] = stats.image_arrays()
    if plots_dir is not None:
        plots_dir = Path(plots_dir)
        plots = {
            plots_dir / PR_CURVE_PNG: lambda path: plot_pr_curve(per_class, names, path),
            plots_dir / F1_CURVE_PNG: lambda path: plot_f1_curve(per_class, names, path),
            plots_dir / CONFUSION_MATRIX_PNG: lambda path: plot_confusion_matrix(
                stats.confusion.matrix, names, path
            ),
        }
        metrics["plots"] = [path for path, plot in plots.items() if write_optional(path, plot)]
    return metrics


class DetectionStats:
    """Detections and labels of every image (original pixels), matched as they arrive."""

    def __init__(self, nc: int):
        self.images: list[dict] = []  # per image: width, height, labels, detections (numpy), for COCO
        self.true_positives: list[np.ndarray] = []
        self.confusion = ConfusionMatrix(nc)

    def add(self, detections: Tensor, labels: Tensor, original_hw: tuple[int, int]) -> None:
        detections, labels = detections.cpu(), labels.cpu()
        self.true_positives.append(match_predictions(detections, labels))
        self.confusion.update(detections, labels)
        height, width = original_hw
        self.images.append(
            {"width": width, "height": height, "labels": labels.numpy(), "detections": detections.numpy()}
        )

    def per_class(self) -> ClassMetrics:
        detections = np.concatenate([image["detections"] for image in self.images])
        labels = np.concatenate([image["labels"] for image in self.images])
        return ap_per_class(
            np.concatenate(self.true_positives), detections[:, 4], detections[:, 5], labels[:, 0]
        )

    def image_arrays(self) -> dict[str, np.ndarray]:
        """Matched detections and label classes of all images, with per-image counts to cut them apart."""
        detections = [image["detections"] for image in self.images]
        labels = [image["labels"] for image in self.images]
        return {
            "tp": np.concatenate(self.true_positives).astype(bool),
            "conf": np.concatenate([d[:, 4] for d in detections]).astype(np.float32),
            "pred_cls": np.concatenate([d[:, 5] for d in detections]).astype(np.int32),
            "detections_per_image": np.array([len(d) for d in detections], dtype=np.int64),
            "label_cls": np.concatenate([lab[:, 0] for lab in labels]).astype(np.int32),
            "labels_per_image": np.array([len(lab) for lab in labels], dtype=np.int64),
        }

    def class_rows(self, per_class: ClassMetrics, names: list[str]) -> dict:
        """``images`` and ``instances`` in total, and the ``per_class`` rows of the classes with labels."""
        images_per_class = Counter(
            cls for image in self.images for cls in set(image["labels"][:, 0].astype(int))
        )
        rows = [
            {
                "class_id": int(cls),
                "name": names[cls],
                "images": images_per_class[cls],
                "instances": int(instances),
                "precision": float(precision),
                "recall": float(recall),
                "map50": float(ap[0]),
                "map50_95": float(ap.mean()),
            }
            for cls, instances, precision, recall, ap in zip(
                per_class.classes,
                per_class.instances,
                per_class.precision,
                per_class.recall,
                per_class.ap,
                strict=True,
            )
        ]
        instances = sum(len(image["labels"]) for image in self.images)
        return {"per_class": rows, "images": len(self.images), "instances": instances}


def validation_forward_batch(train_batch: int) -> int:
    """Images per validation forward while training: half a training batch. Without the activations a backward
    keeps, such a forward stays below a frozen backbone's training step, which would otherwise set the run's
    memory peak (the val loader's batches of twice the training batch keep yolov5's rect shapes)."""
    return max(train_batch // 2, 1)


def forward_in_parts(model: nn.Module, images: Tensor, size: int | None) -> tuple[Tensor, list[Tensor]]:
    """The eval model's (decoded, raw) outputs for ``images``, run ``size`` images at a time."""
    if size is None or len(images) <= size:
        return model(images)
    parts = [model(part) for part in images.split(size)]
    decoded = torch.cat([part[0] for part in parts])
    return decoded, [torch.cat(level) for level in zip(*(part[1] for part in parts), strict=True)]


def labels_in_original(labels: Tensor, input_hw: tuple[int, int], original_hw: tuple[int, int], ratio_pad):
    """``(m, 5)`` [cls, xc, yc, w, h] normalised to the network input -> [cls, x1, y1, x2, y2] in original
    pixels (``ratio_pad`` as in the loader's ``shapes``)."""
    input_h, input_w = input_hw
    pixels = labels[:, 1:] * labels.new_tensor([input_w, input_h, input_w, input_h])
    boxes = box_convert(pixels, "cxcywh", "xyxy")
    return torch.cat((labels[:, :1], scale_boxes(input_hw, boxes, original_hw, ratio_pad)), 1)


def metrics_table(metrics: dict) -> Table:
    """Rich table: the all-classes row, then one row per class with labels."""
    table = Table(title="Validation")
    for column in ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"):
        table.add_column(column, justify="left" if column == "Class" else "right")

    def add(name: str, images: int, instances: int, row: dict) -> None:
        scores = (row["precision"], row["recall"], row["map50"], row["map50_95"])
        table.add_row(name, str(images), str(instances), *(f"{value:.3f}" for value in scores))

    add("all", metrics["images"], metrics["instances"], metrics)
    for row in metrics["per_class"]:
        add(row["name"], row["images"], row["instances"], row)
    return table


def val_command(args) -> int:
    """``yolo-transfer val``: evaluate weights on a split; print the table, write metrics.json and plots."""
    if args.imgsz is not None and args.imgsz % 32:
        raise ConfigError(f"--imgsz {args.imgsz}: must be a multiple of 32")
    if args.batch < 1:
        raise ConfigError(f"--batch {args.batch}: must be at least 1")
    ensure_writable_dir(args.out)
    device = select_device(args.device)
    model, metadata = load_inference_model(args.weights)  # also .onnx / .torchscript exports
    args.imgsz, warning = inference_imgsz(args.imgsz, metadata)  # default: the size the weights trained at
    if warning:
        print(warning)
    data = load_dataset(args.data)
    samples = getattr(data, args.split)
    if not samples:
        raise DataError(f"{args.data}: the {args.split} split has no usable images")
    if len(data.names) != model.nc:
        raise ConfigError(
            f"{args.weights}: the model predicts {model.nc} classes but {args.data} has {len(data.names)}"
        )
    loader = build_dataloader(
        samples, args.imgsz, args.batch, augment=False, hyp=load_hyp("none"), rect=True, pad=0.5,
        workers=args.workers,
    )  # fmt: skip
    out = Path(args.out)
    metrics = evaluate(
        model.fuse(), loader, data.names, conf=args.conf, iou=args.iou, max_det=args.max_det, device=device,
        plots_dir=out, progress=True,
    )  # fmt: skip
    plots = metrics.pop("plots")
    console = Console()
    console.print(metrics_table(metrics))
    coco = metrics["coco"]
    console.print("COCO: " + "  ".join(f"{key} {value:.3f}" for key, value in coco.items()))
    record = {"weights": str(args.weights), "data": str(args.data), "split": args.split, "imgsz": args.imgsz,
              **metrics}  # fmt: skip
    write_atomic(out / "metrics.json", json.dumps(record, indent=2).encode())
    console.print(f"wrote {', '.join(str(path) for path in [out / 'metrics.json', *plots])}")
    return 0
