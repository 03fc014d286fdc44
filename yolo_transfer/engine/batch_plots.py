"""A batch of network inputs tiled into one JPEG with its boxes: what the model saw and what it found.

Used for a training run's ``train_batch0.jpg`` (augmented mosaics with their labels),
``val_batch0_labels.jpg`` and ``val_batch0_pred.jpg``. Boxes are drawn with OpenCV in each class's colour
(as ``predict`` does).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import box_convert

from yolo_transfer.engine.outputs import write_image
from yolo_transfer.engine.predict import class_color

MAX_TILES = 16
MAX_SIDE = 1920  # pixels of the whole mosaic's longer side


def label_boxes(targets: torch.Tensor, batch_size: int, input_hw: tuple[int, int]) -> list[np.ndarray]:
    """Per image, ``(n, 6)`` [x1, y1, x2, y2, conf=1, cls] in input pixels from loader ``targets`` (N, 6)."""
    height, width = input_hw
    boxes = []
    for index in range(batch_size):
        mine = targets[targets[:, 0] == index]
        xyxy = box_convert(mine[:, 2:6] * mine.new_tensor([width, height, width, height]), "cxcywh", "xyxy")
        boxes.append(torch.cat((xyxy, torch.ones_like(mine[:, :1]), mine[:, 1:2]), 1).numpy())
    return boxes


def plot_batch(
    images: torch.Tensor, boxes: list[np.ndarray], names: list[str], path: Path, show_conf: bool = False
) -> None:
    """Tile up to 16 ``images`` (uint8 RGB, (B, 3, H, W)) with ``boxes`` per image ((n, 6) xyxy input pixels,
    conf, cls) into one JPEG at ``path``; ``show_conf`` adds the confidence to each label."""
    count = min(len(images), MAX_TILES)
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    height, width = images.shape[2:]
    scale = min(1.0, MAX_SIDE / (max(rows * height, columns * width)))
    tile_h, tile_w = round(height * scale), round(width * scale)
    mosaic = np.full((rows * tile_h, columns * tile_w, 3), 255, np.uint8)
    for index in range(count):
        tile = cv2.resize(images[index].permute(1, 2, 0).numpy()[:, :, ::-1], (tile_w, tile_h))
        tile = _draw_boxes(np.ascontiguousarray(tile), boxes[index], scale, names, show_conf)
        top, left = index // columns * tile_h, index % columns * tile_w
        mosaic[top : top + tile_h, left : left + tile_w] = tile
        cv2.rectangle(mosaic, (left, top), (left + tile_w - 1, top + tile_h - 1), (255, 255, 255), 2)
    write_image(path, mosaic, [cv2.IMWRITE_JPEG_QUALITY, 90])


def _draw_boxes(tile: np.ndarray, boxes: np.ndarray, scale: float, names: list[str], show_conf: bool):
    font_scale = max(0.3, min(tile.shape[:2]) / 900)
    for x1, y1, x2, y2, conf, cls in boxes.tolist():
        color = class_color(int(cls))
        top_left = (round(x1 * scale), round(y1 * scale))
        cv2.rectangle(tile, top_left, (round(x2 * scale), round(y2 * scale)), color, 1, cv2.LINE_AA)
        name = names[int(cls)] if int(cls) < len(names) else str(int(cls))
        label = f"{name} {conf:.2f}" if show_conf else name
        text_y = max(top_left[1] - 2, 8)
        cv2.putText(tile, label, (top_left[0], text_y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, color, 1)
    return tile
