"""Training augmentations (spec §8.4): mosaic, random perspective with box filtering, HSV, flips, mixup.

Images are HWC BGR uint8 (OpenCV). Labels here are ``(n, 5)`` ``[cls, x1, y1, x2, y2]`` in pixels, except for
`random_flips`, which works on normalised ``[cls, xc, yc, w, h]`` as the reference does after conversion.
Every function draws its randomness from the numpy Generator it is given.
"""

from __future__ import annotations

import cv2
import numpy as np

PAD_VALUE = 114


def xywhn_to_xyxy(labels: np.ndarray, width: float, height: float, padw: float = 0.0, padh: float = 0.0):
    """Normalised ``[cls, xc, yc, w, h]`` -> pixel ``[cls, x1, y1, x2, y2]`` (image size, then offset)."""
    out = labels.copy()
    out[:, 1] = width * (labels[:, 1] - labels[:, 3] / 2) + padw
    out[:, 2] = height * (labels[:, 2] - labels[:, 4] / 2) + padh
    out[:, 3] = width * (labels[:, 1] + labels[:, 3] / 2) + padw
    out[:, 4] = height * (labels[:, 2] + labels[:, 4] / 2) + padh
    return out


def xyxy_to_xywhn(labels: np.ndarray, width: int, height: int, eps: float = 1e-3) -> np.ndarray:
    """Pixel ``[cls, x1, y1, x2, y2]`` -> normalised ``[cls, xc, yc, w, h]``, clipped to the image first."""
    boxes = labels[:, 1:].copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width - eps)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height - eps)
    xywh = np.stack(
        [
            (boxes[:, 0] + boxes[:, 2]) / 2 / width,
            (boxes[:, 1] + boxes[:, 3]) / 2 / height,
            (boxes[:, 2] - boxes[:, 0]) / width,
            (boxes[:, 3] - boxes[:, 1]) / height,
        ],
        axis=1,
    )
    return np.concatenate([labels[:, :1], xywh], axis=1).astype(np.float32)


def mosaic4(tiles: list[tuple[np.ndarray, np.ndarray]], size: int, rng: np.random.Generator):
    """Place 4 (image, pixel xyxy labels) tiles around a random centre of a 2*size canvas.

    Tile k touches the centre with its bottom-right, bottom-left, top-right or top-left corner and is cropped
    to the canvas; labels are shifted with it and clipped to the canvas.
    """
    canvas = np.full((2 * size, 2 * size, 3), PAD_VALUE, dtype=np.uint8)
    xc, yc = (int(v) for v in rng.uniform(size / 2, 3 * size / 2, 2))
    all_labels = []
    for k, (image, labels) in enumerate(tiles):
        h, w = image.shape[:2]
        left = xc - w if k in (0, 2) else xc
        top = yc - h if k in (0, 1) else yc
        x1, y1, x2, y2 = max(left, 0), max(top, 0), min(left + w, 2 * size), min(top + h, 2 * size)
        canvas[y1:y2, x1:x2] = image[y1 - top : y2 - top, x1 - left : x2 - left]
        shifted = labels.copy()
        shifted[:, [1, 3]] += left
        shifted[:, [2, 4]] += top
        all_labels.append(shifted)
    labels = np.concatenate(all_labels, 0)
    labels[:, 1:] = labels[:, 1:].clip(0, 2 * size)
    return canvas, labels


def random_perspective(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    degrees=0.0,
    translate=0.1,
    scale=0.5,
    shear=0.0,
    perspective=0.0,
    border: int = 0,
):
    """Warp the image by M = T·S·R·P·C (spec §8.4) and move the boxes; keep only `box_candidates`.

    The output is the input size + 2*border (border = -size/2 turns a 2*size mosaic into size x size).
    """
    height, width = image.shape[0] + 2 * border, image.shape[1] + 2 * border
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -image.shape[1] / 2, -image.shape[0] / 2
    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = rng.uniform(-perspective, perspective, 2)
    rotate = np.eye(3)
    angle, zoom = rng.uniform(-degrees, degrees), rng.uniform(1 - scale, 1 + scale)
    rotate[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=zoom)
    skew = np.eye(3)
    skew[0, 1], skew[1, 0] = np.tan(np.radians(rng.uniform(-shear, shear, 2)))
    move = np.eye(3)
    move[0, 2], move[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate, 2) * (width, height)
    matrix = move @ skew @ rotate @ persp @ centre

    if border != 0 or (matrix != np.eye(3)).any():
        fill = (PAD_VALUE,) * 3
        if perspective:
            image = cv2.warpPerspective(image, matrix, dsize=(width, height), borderValue=fill)
        else:
            image = cv2.warpAffine(image, matrix[:2], dsize=(width, height), borderValue=fill)
    if not len(labels):
        return image, labels

    corners = np.ones((len(labels) * 4, 3))
    corners[:, :2] = labels[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(-1, 2)  # x1y1, x2y2, x1y2, x2y1
    corners = corners @ matrix.T
    corners = (corners[:, :2] / corners[:, 2:3] if perspective else corners[:, :2]).reshape(-1, 8)
    xs, ys = corners[:, 0::2], corners[:, 1::2]
    boxes = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    keep = box_candidates(labels[:, 1:5].T * zoom, boxes.T)
    out = labels[keep].copy()
    out[:, 1:5] = boxes[keep]
    return image, out


def box_candidates(before: np.ndarray, after: np.ndarray, wh_thr=2.0, ar_thr=100.0, area_thr=0.1, eps=1e-16):
    """Which (4, n) xyxy boxes survive a warp: sides > wh_thr px, area kept > area_thr, aspect < ar_thr."""
    w1, h1 = before[2] - before[0], before[3] - before[1]
    w2, h2 = after[2] - after[0], after[3] - after[1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def augment_hsv(image: np.ndarray, rng: np.random.Generator, hgain=0.5, sgain=0.5, vgain=0.5) -> np.ndarray:
    """Random HSV gains applied with 256-entry lookup tables in OpenCV's HSV space (hue wraps at 180)."""
    if not (hgain or sgain or vgain):
        return image
    gains = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_hue = ((x * gains[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def random_flips(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, flipud=0.0, fliplr=0.5):
    """Flip up-down / left-right with these probabilities; labels are normalised ``[cls, xc, yc, w, h]``."""
    labels = labels.copy()
    if rng.random() < flipud:
        image = cv2.flip(image, 0)
        labels[:, 2] = 1 - labels[:, 2]
    if rng.random() < fliplr:
        image = cv2.flip(image, 1)
        labels[:, 1] = 1 - labels[:, 1]
    return image, labels


def mixup(
    image: np.ndarray, labels: np.ndarray, image2: np.ndarray, labels2: np.ndarray, rng: np.random.Generator
):
    """Blend two equally sized images with a Beta(32, 32) ratio and keep the labels of both."""
    ratio = rng.beta(32.0, 32.0)
    blended = (image.astype(np.float32) * ratio + image2.astype(np.float32) * (1 - ratio)).astype(np.uint8)
    return blended, np.concatenate([labels, labels2], 0)
