"""Letterbox: resize keeping the aspect ratio and pad with grey to the network input shape (spec §8.3)."""

from __future__ import annotations

import cv2
import numpy as np

PAD_COLOR = (114, 114, 114)


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int] = (640, 640),
    color=PAD_COLOR,
    auto: bool = True,
    scale_fill: bool = False,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Fit ``img`` (HWC) into ``new_shape`` (h, w); returns (image, (ratio_w, ratio_h), (pad_w, pad_h)).

    ``auto`` pads only to the next multiple of ``stride`` (detect.py); ``scale_fill`` stretches, unpadded;
    ``scaleup=False`` never enlarges. The padding per side is half the remainder, split with the reference's
    ±0.1 rounding, so an odd remainder puts the extra pixel at the bottom/right.
    """
    height, width = img.shape[:2]
    new_h, new_w = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    ratio = min(new_h / height, new_w / width)
    if not scaleup:
        ratio = min(ratio, 1.0)
    ratios = (ratio, ratio)
    unpadded_w, unpadded_h = round(width * ratio), round(height * ratio)
    pad_w, pad_h = new_w - unpadded_w, new_h - unpadded_h
    if auto:
        pad_w, pad_h = pad_w % stride, pad_h % stride
    elif scale_fill:
        pad_w, pad_h = 0, 0
        unpadded_w, unpadded_h = new_w, new_h
        ratios = (new_w / width, new_h / height)
    pad_w, pad_h = pad_w / 2, pad_h / 2
    if (width, height) != (unpadded_w, unpadded_h):
        img = cv2.resize(img, (unpadded_w, unpadded_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(pad_h - 0.1), round(pad_h + 0.1)
    left, right = round(pad_w - 0.1), round(pad_w + 0.1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return img, ratios, (pad_w, pad_h)
