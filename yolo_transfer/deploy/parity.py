"""The export-time parity check: the exported model against the PyTorch one on the same letterboxed input.

Box coordinates are compared divided by the input width/height, so every compared number (box, objectness,
class probability, NMS confidence) lives on the same 0-1 scale and one tolerance fits all; in input pixels
the fp32 tolerance of 1e-4 is 0.064 px at 640. Detections after NMS must agree box for box: same number,
same classes, coordinates and confidences within the tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from yolo_transfer.data.letterbox import letterbox
from yolo_transfer.engine.postprocess import non_max_suppression
from yolo_transfer.errors import ExportError

TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}


@dataclass(frozen=True)
class ParityCheck:
    """One input shape: the largest difference and the number of detections (equal in both models)."""

    shape: tuple[int, int, int, int]
    max_abs_diff: float
    detections: int


@dataclass(frozen=True)
class ParityReport:
    tolerance: float
    checks: list[ParityCheck]

    @property
    def max_abs_diff(self) -> float:
        return max(check.max_abs_diff for check in self.checks)

    def describe(self) -> str:
        shapes = ", ".join(f"{b}x{c}x{h}x{w} ({check.detections} det)"
                           for check in self.checks for b, c, h, w in [check.shape])  # fmt: skip
        return f"parity max abs diff {self.max_abs_diff:.2e} <= {self.tolerance:g} on {shapes}"


def parity_inputs(
    image_bgr: np.ndarray, imgsz: int, batch: int, dynamic: bool, stride: int
) -> list[torch.Tensor]:
    """Letterboxed batches of ``image_bgr`` (flipped copies fill a batch): the export shape, and with
    ``dynamic`` also one more image per batch and a rectangular size (one stride narrower)."""
    sizes = [(imgsz, imgsz)]
    batches = [batch]
    if dynamic:
        sizes.append((imgsz, imgsz - stride if imgsz > stride else imgsz + stride))
        batches.append(batch + 1)
    return [letterboxed_batch(image_bgr, size, n, stride) for size in sizes for n in batches]


def letterboxed_batch(image_bgr: np.ndarray, size: tuple[int, int], batch: int, stride: int) -> torch.Tensor:
    """(batch, 3, h, w) float RGB in [0, 1]: the image, then its flips in turn."""
    boxed = letterbox(image_bgr, size, auto=False, stride=stride)[0][:, :, ::-1]
    variants = [boxed, boxed[:, ::-1], boxed[::-1], boxed[::-1, ::-1]]
    stack = np.stack([variants[i % len(variants)].transpose(2, 0, 1) for i in range(batch)])
    return torch.from_numpy(np.ascontiguousarray(stack)).float() / 255


def check_parity(
    reference: Callable[[torch.Tensor], torch.Tensor],
    exported: Callable[[torch.Tensor], torch.Tensor],
    inputs: list[torch.Tensor],
    *,
    dtype: torch.dtype,
    nms: bool,
) -> ParityReport:
    """Run both models on every input; ExportError when they differ by more than the tolerance."""
    tolerance = TOLERANCE[dtype]
    checks = []
    for images in inputs:
        with torch.no_grad():
            expected = reference(images).float().cpu()
        got = exported(images).float().cpu()
        height, width = images.shape[2:]
        if nms:
            diff, detections = compare_detections(expected, got, width, height, first_box_column=1)
        else:
            raw_diff = max_abs_diff(normalised(expected, width, height), normalised(got, width, height))
            per_image = [
                compare_detections(a, b, width, height, first_box_column=0)
                for a, b in zip(non_max_suppression(expected), non_max_suppression(got), strict=True)
            ]
            diff = max(raw_diff, *(d for d, _ in per_image))
            detections = sum(n for _, n in per_image)
        checks.append(ParityCheck(tuple(images.shape), diff, detections))
        if diff > tolerance:
            raise ExportError(
                f"parity check failed on a {tuple(images.shape)} input: "
                f"max abs diff {diff:.2e} > {tolerance:g}"
            )
    return ParityReport(tolerance, checks)


def normalised(output: torch.Tensor, width: int, height: int, first_box_column: int = 0) -> torch.Tensor:
    """A copy with the 4 box columns from ``first_box_column`` on divided by the input width/height."""
    scaled = output.clone()
    columns = slice(first_box_column, first_box_column + 4)
    scaled[..., columns] /= scaled.new_tensor([width, height, width, height])
    return scaled


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise ExportError(f"parity check failed: output shapes differ ({tuple(a.shape)} vs {tuple(b.shape)})")
    return float((a - b).abs().max()) if a.numel() else 0.0


def compare_detections(
    expected: torch.Tensor, got: torch.Tensor, width: int, height: int, first_box_column: int
) -> tuple[float, int]:
    """(max abs diff, count) of two detection lists that must match row for row with the same classes."""
    if len(expected) != len(got) or not torch.equal(expected[:, -1], got[:, -1]):
        raise ExportError(
            f"parity check failed: {len(got)} detections after NMS, the PyTorch model finds {len(expected)}"
            " (or their classes differ)"
        )
    a = normalised(expected, width, height, first_box_column)
    b = normalised(got, width, height, first_box_column)
    return max_abs_diff(a, b), len(expected)


def read_check_image(path: str | None, imgsz: int) -> np.ndarray:
    """The parity image: the given file (BGR), or a built-in synthetic scene of ``imgsz`` pixels."""
    if path is not None:
        image = cv2.imread(str(path))
        if image is None:
            raise ExportError(f"{path}: not a readable image (--check-image)")
        return image
    from yolo_transfer.data.synthetic import class_colour, domain_classes, draw_image

    names = domain_classes("source", 0.0)
    colours = [class_colour(name, "source", 0.0) for name in names]
    return draw_image(np.random.default_rng(0), names, colours, imgsz, 0.0)[0]
