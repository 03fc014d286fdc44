"""A YOLO copy of a dataset with its objects at another scale in the frame: zoomed in or out.

The study uses it to ask whether object size, not the domain, decides between strategies on far data of known
classes: license_plates' vehicles (three in four boxes large) favoured ``full`` where dawn_fog's foggy roads
(one box in six large) favoured ``staged``. Two directions, each a model of a camera, not a real one:

- ``in`` (default): each image cropped to a square ``margin`` times its largest box's longer side (at least
  ``min_side`` pixels, at most the image's shorter side), centred on that box and moved inside the image: the
  source's own pixels. Boxes are clipped to the crop and kept when at least ``VISIBLE_SHARE`` of their area is
  inside.
- ``out``: each image shrunk by ``ratio`` and placed on a canvas of its own size filled with its mean colour,
  at a position drawn per image (SSD's "zoom out" expansion, with a fixed ratio): every box ``ratio`` times
  smaller, none lost.

Images without labels are left out. The draws are seeded per image, so a copy is reproducible. ::

    python benchmarks/object_scale.py ../shared/data/dawn_fog/data.yaml \\
        --out runs/study/subsets/dawn_fog-zoom
    python benchmarks/object_scale.py runs/study/subsets/license_plates-car-mono/data.yaml --zoom out \\
        --out runs/study/subsets/license_plates-car-mono-zoomout
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np

from yolo_transfer.data import Sample, load_dataset
from yolo_transfer.data.convert import move_yolo_dataset, write_yolo_dataset

MARGIN = 1.5  # crop side / the largest box's longer side: the largest object spans two thirds of it
MIN_SIDE = 256  # pixels: the study's 320 px upscales a crop at most 1.25x (more only if the image is smaller)
VISIBLE_SHARE = 0.25  # a clipped box is kept when at least this share of its area is inside the crop
RATIO = 3.0  # zoom out: each side shrinks this much (license_plates' vehicles: 75% large boxes -> 51%)


def crop_window(labels: np.ndarray, width: int, height: int, margin: float, min_side: int) -> tuple[int, ...]:
    """The square ``(x0, y0, x1, y1)`` in pixels around the largest of ``labels`` (``[cls, xc, yc, w, h]``,
    normalised), ``margin`` times its longer side, at least ``min_side``, inside the image."""
    boxes = labels[:, 1:5] * np.array([width, height, width, height], np.float32)
    xc, yc, w, h = boxes[int(np.argmax(boxes[:, 2] * boxes[:, 3]))]
    side = int(round(min(max(margin * max(w, h), min_side), width, height)))
    x0 = int(round(min(max(xc - side / 2, 0), width - side)))
    y0 = int(round(min(max(yc - side / 2, 0), height - side)))
    return x0, y0, x0 + side, y0 + side


def clip_labels(labels: np.ndarray, width: int, height: int, window: tuple[int, ...]) -> np.ndarray:
    """``labels`` (normalised to the image) as normalised to ``window``, clipped, keeping the boxes with at
    least VISIBLE_SHARE of their area inside."""
    x0, y0, x1, y1 = window
    scale = np.array([width, height, width, height], np.float32)
    xc, yc, w, h = (labels[:, 1:5] * scale).T
    left, top = np.clip(xc - w / 2, x0, x1), np.clip(yc - h / 2, y0, y1)
    right, bottom = np.clip(xc + w / 2, x0, x1), np.clip(yc + h / 2, y0, y1)
    inside = (right - left) * (bottom - top)
    keep = inside >= VISIBLE_SHARE * w * h
    side_x, side_y = x1 - x0, y1 - y0
    clipped = np.stack(
        [
            labels[:, 0],
            ((left + right) / 2 - x0) / side_x,
            ((top + bottom) / 2 - y0) / side_y,
            (right - left) / side_x,
            (bottom - top) / side_y,
        ],
        axis=1,
    )
    return clipped[keep].astype(np.float32)


def zoom_in(
    image: np.ndarray, labels: np.ndarray, margin: float, min_side: int
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` cropped around the largest of ``labels`` (``crop_window``), and the clipped labels."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = window = crop_window(labels, width, height, margin, min_side)
    return image[y0:y1, x0:x1], clip_labels(labels, width, height, window)


def zoom_out(
    image: np.ndarray, labels: np.ndarray, ratio: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` shrunk by ``ratio`` at a random place on a canvas of its size filled with its mean colour,
    and ``labels`` (normalised) moved with it."""
    height, width = image.shape[:2]
    small_w, small_h = max(1, round(width / ratio)), max(1, round(height / ratio))
    x0, y0 = int(rng.integers(0, width - small_w + 1)), int(rng.integers(0, height - small_h + 1))
    canvas = np.empty_like(image)
    canvas[:] = image.reshape(-1, image.shape[2]).mean(axis=0).round().astype(image.dtype)
    canvas[y0 : y0 + small_h, x0 : x0 + small_w] = cv2.resize(
        image, (small_w, small_h), interpolation=cv2.INTER_AREA
    )
    moved = labels.copy()
    moved[:, 1] = (x0 + labels[:, 1] * small_w) / width
    moved[:, 2] = (y0 + labels[:, 2] * small_h) / height
    moved[:, 3] = labels[:, 3] * small_w / width
    moved[:, 4] = labels[:, 4] * small_h / height
    return canvas, moved


def scaled_copy(
    data: str | Path,
    out: str | Path,
    zoom: str = "in",
    margin: float = MARGIN,
    min_side: int = MIN_SIDE,
    ratio: float = RATIO,
) -> Path:
    """Write ``data`` (any dataset yolo-transfer reads) to ``out`` with every labelled image zoomed ``zoom``
    ("in" or "out"); return its data.yaml. An existing copy is reused."""
    out = Path(out)
    yaml_path = out / "data.yaml"
    if yaml_path.is_file():
        return yaml_path
    source = load_dataset(data, val_fraction=0.2, seed=0)
    frames = out.with_name(out.name + ".frames")
    shutil.rmtree(frames, ignore_errors=True)

    def scale(samples: list[Sample], split: str) -> list[Sample]:
        (frames / split).mkdir(parents=True, exist_ok=True)
        scaled = []
        for index, sample in enumerate(samples):
            if not len(sample.labels):
                continue
            image = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)  # EXIF-corrected, as the labels are
            name = f"{index:05d}_{sample.image.stem}.png"  # lossless: no second JPEG pass
            if zoom == "in":
                pixels, labels = zoom_in(image, sample.labels, margin, min_side)
            else:
                rng = np.random.default_rng(zlib.crc32(f"{split}/{name}".encode()))
                pixels, labels = zoom_out(image, sample.labels, ratio, rng)
            cv2.imwrite(str(frames / split / name), pixels)
            height, width = pixels.shape[:2]
            scaled.append(Sample(image=frames / split / name, labels=labels, width=width, height=height))
        return scaled

    copy = dataclasses.replace(
        source,
        train=scale(source.train, "train"),
        val=scale(source.val, "val"),
        test=scale(source.test, "test"),
    )
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_yolo_dataset(copy, partial)
    shutil.rmtree(frames)
    return move_yolo_dataset(partial, out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="data.yaml (or any dataset yolo-transfer reads)")
    parser.add_argument("--out", required=True, help="output folder (reused if it holds a finished copy)")
    parser.add_argument("--zoom", choices=("in", "out"), default="in", help="objects larger (in) or smaller")
    parser.add_argument("--margin", type=float, default=MARGIN, help="in: crop side / the largest box's side")
    parser.add_argument("--min-side", type=int, default=MIN_SIDE, help="in: smallest crop side in pixels")
    parser.add_argument("--ratio", type=float, default=RATIO, help="out: how many times smaller each side")
    args = parser.parse_args()
    if args.margin < 1.0 or args.min_side < 1 or args.ratio < 1.0:
        parser.error(
            f"--margin {args.margin}, --min-side {args.min_side}, --ratio {args.ratio}: need margin >= 1, "
            "min side >= 1, ratio >= 1"
        )
    print(f"wrote {scaled_copy(args.data, args.out, args.zoom, args.margin, args.min_side, args.ratio)}")


if __name__ == "__main__":
    main()
