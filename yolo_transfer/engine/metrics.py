"""Detection metrics: the reference's mAP (spec §7: IoU-descending matching, 101-point linear-interpolation
AP, P/R at the best smoothed mean F1), COCO-standard AP through faster-coco-eval, fitness, confusion matrix.

Boxes here are xyxy in one coordinate frame (the original image); ``detections`` are ``(n, 6)`` rows
``[x1, y1, x2, y2, conf, cls]`` sorted by confidence (as NMS returns them), ``labels`` are ``(m, 5)`` rows
``[cls, x1, y1, x2, y2]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster
from torch import Tensor
from torchvision.ops import box_iou

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # the mAP@0.5:0.95 thresholds
CURVE_POINTS = 1000  # confidence / recall axis of the P, R, F1 and PR curves
F1_SMOOTHING = 0.1  # box-filter width, as a fraction of the confidence axis
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def fitness(metrics: dict) -> float:
    """The checkpoint-selection score: 0.1·mAP50 + 0.9·mAP50-95."""
    return 0.1 * metrics["map50"] + 0.9 * metrics["map50_95"]


def unique_pairs(row: np.ndarray, col: np.ndarray, iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one (label, detection) pairs the way the reference resolves them.

    Candidate pairs are ranked by IoU (highest first) and every detection keeps its best label; among the
    detections that keep the same label, the one with the lowest index (highest confidence) wins.
    """
    by_iou = np.argsort(-iou, kind="stable")
    row, col = row[by_iou], col[by_iou]
    _, first_per_detection = np.unique(col, return_index=True)  # result is in detection order
    row, col = row[first_per_detection], col[first_per_detection]
    _, first_per_label = np.unique(row, return_index=True)
    return row[first_per_label], col[first_per_label]


def match_predictions(
    detections: Tensor, labels: Tensor, iou_thresholds: Tensor = IOU_THRESHOLDS
) -> np.ndarray:
    """``(n, len(iou_thresholds))`` bool: detection i is a true positive at threshold j.

    At each threshold, same-class pairs with IoU >= threshold are matched one-to-one by ``unique_pairs``.
    """
    correct = np.zeros((len(detections), len(iou_thresholds)), dtype=bool)
    if not len(detections) or not len(labels):
        return correct
    iou = box_iou(labels[:, 1:].float(), detections[:, :4].float())
    same_class = labels[:, 0:1] == detections[:, 5]
    hits = ((iou[None] >= iou_thresholds.to(iou.device)[:, None, None]) & same_class).cpu().numpy()
    iou = iou.cpu().numpy()
    for j, hit in enumerate(hits):
        row, col = np.nonzero(hit)
        if len(row):
            _, matched = unique_pairs(row, col, iou[row, col])
            correct[matched, j] = True
    return correct


def smooth(values: np.ndarray, fraction: float) -> np.ndarray:
    """Box filter over ``fraction`` of the array (odd width), edges padded with the end values."""
    width = round(len(values) * fraction * 2) // 2 + 1
    padded = np.concatenate((np.full(width // 2, values[0]), values, np.full(width // 2, values[-1])))
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def average_precision(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one PR curve: envelope, 101-point linear interpolation, trapezoid rule.

    Returns (ap, recall with the end points added, precision envelope).
    """
    recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.concatenate(([1.0], precision, [0.0]))
    envelope = np.flip(np.maximum.accumulate(np.flip(envelope)))
    points = np.linspace(0, 1, 101)
    curve = np.interp(points, recall, envelope)
    area = np.sum(np.diff(points) * (curve[1:] + curve[:-1]) / 2.0)  # trapezoid rule, NumPy 1 too
    return float(area), recall, envelope


@dataclass
class ClassMetrics:
    """Per-class results of ``ap_per_class`` (classes that have labels), and the curves for plotting."""

    classes: np.ndarray  # (k,) class ids present in the labels
    instances: np.ndarray  # (k,) labels per class
    precision: np.ndarray  # (k,) at the confidence of the best smoothed mean F1
    recall: np.ndarray  # (k,)
    ap: np.ndarray  # (k, 10) AP at each IoU threshold
    confidence_axis: np.ndarray  # (1000,) also the recall axis of pr_curves
    f1_curves: np.ndarray  # (k, 1000) F1 over confidence
    pr_curves: np.ndarray  # (k, 1000) precision envelope over recall at IoU 0.5

    def summary(self) -> dict:
        """Mean P, R, mAP50 and mAP50-95 over the classes (zeros when there are no labels)."""
        if not len(self.classes):
            return {"precision": 0.0, "recall": 0.0, "map50": 0.0, "map50_95": 0.0}
        return {
            "precision": float(self.precision.mean()),
            "recall": float(self.recall.mean()),
            "map50": float(self.ap[:, 0].mean()),
            "map50_95": float(self.ap.mean()),
        }


def ap_per_class(
    tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray, eps: float = 1e-16
) -> ClassMetrics:
    """AP per class and IoU threshold, and P/R at the confidence that maximises the smoothed mean F1.

    ``tp`` is ``(n, t)`` from ``match_predictions`` over all images; ``conf``/``pred_cls`` ``(n,)``;
    ``target_cls`` ``(m,)`` the class of every label. Predictions of classes without labels are ignored.
    """
    order = np.argsort(-conf, kind="stable")  # ties keep their NMS order
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, instances = np.unique(target_cls, return_counts=True)
    axis = np.linspace(0, 1, CURVE_POINTS)
    num_classes, num_thresholds = len(classes), tp.shape[1]
    ap = np.zeros((num_classes, num_thresholds))
    precision_curves, recall_curves, pr_curves = (np.zeros((num_classes, CURVE_POINTS)) for _ in range(3))
    for k, cls in enumerate(classes):
        mine = pred_cls == cls
        if not mine.any():
            continue
        true_pos = tp[mine].cumsum(0)
        false_pos = (1 - tp[mine]).cumsum(0)
        recall = true_pos / (instances[k] + eps)
        precision = true_pos / (true_pos + false_pos)
        # conf falls along the detections, so interpolate on -conf (np.interp needs rising x)
        recall_curves[k] = np.interp(-axis, -conf[mine], recall[:, 0], left=0)
        precision_curves[k] = np.interp(-axis, -conf[mine], precision[:, 0], left=1)
        for j in range(num_thresholds):
            ap[k, j], curve_recall, envelope = average_precision(recall[:, j], precision[:, j])
            if j == 0:
                pr_curves[k] = np.interp(axis, curve_recall, envelope)

    f1_curves = 2 * precision_curves * recall_curves / (precision_curves + recall_curves + eps)
    best = int(smooth(f1_curves.mean(0), F1_SMOOTHING).argmax()) if num_classes else 0
    return ClassMetrics(
        classes=classes.astype(int),
        instances=instances,
        precision=precision_curves[:, best],
        recall=recall_curves[:, best],
        ap=ap,
        confidence_axis=axis,
        f1_curves=f1_curves,
        pr_curves=pr_curves,
    )


def coco_metrics(images: list[dict]) -> dict[str, float]:
    """COCO-standard bbox AP (AP, AP50, AP75, APs, APm, APl) from faster-coco-eval.

    ``images``: one dict per image with ``width``, ``height``, ``labels`` ``(m, 5)`` and ``detections``
    ``(n, 6)`` as numpy arrays in original pixels. An area range without labels reports -1 (COCO convention).
    """
    gt_images, annotations, results, class_ids = [], [], [], set()
    for image_id, image in enumerate(images, start=1):
        gt_images.append({"id": image_id, "width": int(image["width"]), "height": int(image["height"])})
        for cls, *box in image["labels"].tolist():
            xywh = coco_box(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                }
            )
            class_ids.add(int(cls))
        for *box, score, cls in image["detections"].tolist():
            results.append(
                {"image_id": image_id, "category_id": int(cls) + 1, "bbox": coco_box(box), "score": score}
            )
            class_ids.add(int(cls))
    if not annotations:
        return dict.fromkeys(COCO_KEYS, -1.0)
    categories = [{"id": c + 1, "name": str(c)} for c in sorted(class_ids)]
    ground_truth = COCO({"images": gt_images, "annotations": annotations, "categories": categories})
    evaluator = COCOeval_faster(ground_truth, ground_truth.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {key: float(value) for key, value in zip(COCO_KEYS, evaluator.stats[:6], strict=True)}


def coco_box(xyxy: list[float]) -> list[float]:
    """xyxy -> COCO [x, y, w, h]."""
    x1, y1, x2, y2 = xyxy
    return [x1, y1, x2 - x1, y2 - y1]


class ConfusionMatrix:
    """Class-agnostic IoU matching of confident detections to labels; the last row/column is background.

    ``matrix[predicted, true]`` counts matches; ``matrix[nc, true]`` missed labels, ``matrix[predicted, nc]``
    detections that match no label.
    """

    def __init__(self, nc: int, conf: float = 0.25, iou_threshold: float = 0.45):
        self.nc, self.conf, self.iou_threshold = nc, conf, iou_threshold
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def update(self, detections: Tensor, labels: Tensor) -> None:
        detections = detections[detections[:, 4] > self.conf].cpu()
        labels = labels.cpu()
        pred_cls, true_cls = detections[:, 5].long().numpy(), labels[:, 0].long().numpy()
        matched_labels = matched_detections = np.zeros(0, dtype=int)
        if len(detections) and len(labels):
            iou = box_iou(labels[:, 1:].float(), detections[:, :4].float()).numpy()
            row, col = np.nonzero(iou > self.iou_threshold)
            if len(row):
                matched_labels, matched_detections = unique_pairs(row, col, iou[row, col])
        np.add.at(self.matrix, (pred_cls[matched_detections], true_cls[matched_labels]), 1)
        missed = np.setdiff1d(np.arange(len(labels)), matched_labels)
        np.add.at(self.matrix, (self.nc, true_cls[missed]), 1)
        spurious = np.setdiff1d(np.arange(len(detections)), matched_detections)
        np.add.at(self.matrix, (pred_cls[spurious], self.nc), 1)
