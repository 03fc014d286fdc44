"""A grid of predictions: the same validation images, one row per strategy (its best weights), GT on top.

The first row shows the ground-truth boxes in white (a colour no strategy gets); every other row shows one
strategy's detections in its colour, with the ground truth as thin grey outlines underneath so misses and
false positives stand out. Ground-truth boxes have a dark edge; labels are small, on a dark ground, and over a
box narrower than its label only the confidence (or the class name's start) is written.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from yolo_transfer.engine.outputs import write_image

TILE = 256
LABEL_WIDTH = 150
HEADER_HEIGHT = 26
GT_COLOR = (255, 255, 255)  # white: not in the strategy palette (compare/plots.py)
HALO_COLOR = (30, 30, 30)
FONT_SCALE = 0.3
GT_OUTLINE = (190, 190, 190)
TEXT_COLOR = (40, 40, 40)


def pick_samples(samples: list, count: int = 4) -> list:
    """Up to ``count`` labelled samples spread evenly over the (path-sorted) validation set."""
    labelled = sorted((s for s in samples if len(s.labels)), key=lambda s: str(s.image)) or list(samples)
    if len(labelled) <= count:
        return labelled
    step = len(labelled) / count
    return [labelled[int(i * step)] for i in range(count)]


def hex_to_bgr(color: str) -> tuple[int, int, int]:
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return blue, green, red


@torch.no_grad()
def detect(model, image_bgr: np.ndarray, imgsz: int, device: str, conf: float, iou: float) -> np.ndarray:
    """Detections ``(n, 6)`` [x1, y1, x2, y2, conf, cls] in the pixels of ``image_bgr``."""
    from yolo_transfer.data import letterbox
    from yolo_transfer.engine.postprocess import non_max_suppression, scale_boxes

    padded, _, _ = letterbox(image_bgr, (imgsz, imgsz), auto=False)
    tensor = torch.from_numpy(np.ascontiguousarray(padded[:, :, ::-1].transpose(2, 0, 1))).to(device)
    prediction = model(tensor[None].float() / 255.0)[0]
    boxes = non_max_suppression(prediction, conf_thres=conf, iou_thres=iou)[0]
    boxes[:, :4] = scale_boxes(tensor.shape[1:], boxes[:, :4], image_bgr.shape[:2])
    return boxes.cpu().numpy()


def write_prediction_grid(
    weights_by_strategy: dict[str, Path],
    samples: list,
    names: list[str],
    colors: dict[str, str],
    path: Path,
    *,
    imgsz: int,
    device: str = "cpu",
    conf: float = 0.15,
    iou: float = 0.45,
) -> Path:
    """Draw the grid (GT row + one row per strategy) for ``samples`` and write it as a PNG."""
    from yolo_transfer.models import load_model

    images = [cv2.imread(str(sample.image)) for sample in samples]
    gt_boxes = [
        _label_boxes(sample.labels, image.shape) for sample, image in zip(samples, images, strict=True)
    ]
    rows = [
        (
            "ground truth",
            [_tile(image, boxes, [], GT_COLOR, names) for image, boxes in zip(images, gt_boxes, strict=True)],
        )
    ]
    for strategy, weights in weights_by_strategy.items():
        model, _ = load_model(weights)
        model.to(device).eval()
        color = hex_to_bgr(colors[strategy])
        tiles = [
            _tile(image, detect(model, image, imgsz, device, conf, iou), boxes, color, names)
            for image, boxes in zip(images, gt_boxes, strict=True)
        ]
        rows.append((strategy, tiles))
    grid = _compose(rows, [Path(sample.image).name for sample in samples])
    write_image(path, grid)
    return path


def _label_boxes(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Normalised ``[cls, xc, yc, w, h]`` labels as pixel ``[x1, y1, x2, y2, 1, cls]`` rows."""
    height, width = shape[:2]
    boxes = np.zeros((len(labels), 6), dtype=np.float32)
    if len(labels):
        cls, xc, yc, w, h = np.asarray(labels, dtype=np.float32).T
        boxes[:, 0], boxes[:, 2] = (xc - w / 2) * width, (xc + w / 2) * width
        boxes[:, 1], boxes[:, 3] = (yc - h / 2) * height, (yc + h / 2) * height
        boxes[:, 4], boxes[:, 5] = 1.0, cls
    return boxes


def _tile(image: np.ndarray, boxes: np.ndarray, outlines: np.ndarray, color, names: list[str]) -> np.ndarray:
    """The image fitted into a TILE x TILE square, ``outlines`` in grey, ``boxes`` labelled in ``color``."""
    scale = TILE / max(image.shape[:2])
    resized = cv2.resize(
        image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA
    )
    tile = np.full((TILE, TILE, 3), 245, dtype=np.uint8)
    top, left = (TILE - resized.shape[0]) // 2, (TILE - resized.shape[1]) // 2
    tile[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    offset = np.array([left, top, left, top], dtype=np.float32)
    for box in outlines:
        x1, y1, x2, y2 = (box[:4] * scale + offset).round().astype(int)
        cv2.rectangle(tile, (x1, y1), (x2, y2), GT_OUTLINE, 1, cv2.LINE_AA)
    for box in boxes:
        x1, y1, x2, y2 = (box[:4] * scale + offset).round().astype(int)
        if color == GT_COLOR:  # white needs a dark edge to show on light images
            cv2.rectangle(tile, (x1, y1), (x2, y2), HALO_COLOR, 3, cv2.LINE_AA)
        cv2.rectangle(tile, (x1, y1), (x2, y2), color, 1 if color == GT_COLOR else 2, cv2.LINE_AA)
        text = _box_label(box, names, x2 - x1)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, 1)
        y_text = max(y1, th + 3)
        cv2.rectangle(tile, (x1, y_text - th - 3), (x1 + tw + 2, y_text), HALO_COLOR, -1)
        cv2.putText(
            tile, text, (x1 + 1, y_text - 2), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, color, 1, cv2.LINE_AA
        )
    return tile


def _box_label(box: np.ndarray, names: list[str], box_width: int) -> str:
    """``name conf`` (``name`` for ground truth); shortened to what fits over a box narrower than it."""
    cls = int(box[5])
    name = names[cls] if 0 <= cls < len(names) else str(cls)
    truth = box[4] >= 1.0
    text = name if truth else f"{name} {box[4]:.2f}"
    (width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, 1)
    if width <= box_width:
        return text
    return name[:3] if truth else f"{box[4]:.2f}"


def _compose(rows: list[tuple[str, list[np.ndarray]]], headers: list[str]) -> np.ndarray:
    """Rows of tiles with a label column on the left and image names on top, 4 px white gutters."""
    gap = 4
    columns = max(len(tiles) for _, tiles in rows)
    width = LABEL_WIDTH + columns * (TILE + gap)
    height = HEADER_HEIGHT + len(rows) * (TILE + gap)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for c, header in enumerate(headers):
        x = LABEL_WIDTH + c * (TILE + gap)
        cv2.putText(
            canvas,
            header[:34],
            (x + 2, HEADER_HEIGHT - 9),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.42,
            TEXT_COLOR,
            1,
            cv2.LINE_AA,
        )
    for r, (label, tiles) in enumerate(rows):
        y = HEADER_HEIGHT + r * (TILE + gap)
        cv2.putText(
            canvas, label[:16], (8, y + TILE // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, TEXT_COLOR, 1, cv2.LINE_AA
        )
        for c, tile in enumerate(tiles):
            x = LABEL_WIDTH + c * (TILE + gap)
            canvas[y : y + TILE, x : x + TILE] = tile
    return canvas
