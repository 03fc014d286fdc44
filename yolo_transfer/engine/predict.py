"""``yolo-transfer predict``: detections on image files and folders, as detect.py makes them.

Each image is letterboxed with ``auto=True`` (padding only to the next multiple of 32), run through the fused
model, filtered with NMS and scaled back to its own pixels. Results go to ``OUT/predictions.json`` and one
annotated copy per image in ``OUT``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.console import Console

from yolo_transfer.data.formats import IMAGE_SUFFIXES
from yolo_transfer.data.letterbox import letterbox
from yolo_transfer.deploy.runtime import load_inference_model
from yolo_transfer.engine.device import select_device
from yolo_transfer.engine.inference_size import inference_imgsz
from yolo_transfer.engine.outputs import ensure_writable_dir, write_atomic, write_image
from yolo_transfer.engine.postprocess import non_max_suppression, scale_boxes
from yolo_transfer.engine.train_progress import counting_bars
from yolo_transfer.errors import ConfigError, DataError
from yolo_transfer.models import DetectionModel
from yolo_transfer.option_checks import listed, require_any_source

STRIDE = 32
UNWRITABLE_SUFFIXES = (".dng", ".mpo")  # OpenCV reads them but cannot encode them: annotated as .jpg


def collect_images(sources: list[str], console: Console) -> tuple[list[Path], bool]:
    """Image files named directly or found (sorted) in folders; missing paths are reported and skipped.

    DataError naming the sources when they give no image file at all."""
    require_any_source(sources)
    images, has_folder = [], False
    for source in map(Path, sources):
        if source.is_dir():
            has_folder = True
            images += sorted(
                p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        elif source.is_file():
            images.append(source)
        else:
            console.print(f"skipped {source}: no such file or folder", markup=False)
    if not images:
        raise DataError(f"{listed(sources)}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return images, has_folder


@torch.no_grad()
def detect(
    model: DetectionModel, image_bgr: np.ndarray, imgsz: int, conf: float, iou: float, max_det: int
) -> torch.Tensor:
    """(n, 6) detections [x1, y1, x2, y2, conf, cls] in the pixels of ``image_bgr``."""
    device = next(model.parameters()).device
    padded, _, _ = letterbox(image_bgr, imgsz, auto=True, stride=STRIDE)
    tensor = torch.from_numpy(np.ascontiguousarray(padded[:, :, ::-1].transpose(2, 0, 1))).to(device)
    decoded, _ = model(tensor[None].float() / 255)
    found = non_max_suppression(decoded, conf, iou, max_det=max_det)[0].cpu()
    found[:, :4] = scale_boxes(padded.shape[:2], found[:, :4], image_bgr.shape[:2])
    return found


def annotate(image_bgr: np.ndarray, found: torch.Tensor, names: list[str]) -> np.ndarray:
    """A copy of the image with one labelled box per detection."""
    canvas = image_bgr.copy()
    thickness = max(round(sum(canvas.shape[:2]) / 2 * 0.003), 2)
    for x1, y1, x2, y2, score, cls in found.tolist():
        color = class_color(int(cls))
        cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), color, thickness, cv2.LINE_AA)
        label = f"{names[int(cls)]} {score:.2f}"
        scale = thickness / 3
        (width, height), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(thickness - 1, 1))
        top = int(y1) - height - 3 if int(y1) - height - 3 >= 0 else int(y1) + height + 3
        cv2.rectangle(canvas, (int(x1), top), (int(x1) + width, int(y1)), color, -1, cv2.LINE_AA)
        text_y = int(y1) - 2 if top < int(y1) else int(y1) + height + 2
        cv2.putText(
            canvas,
            label,
            (int(x1), text_y),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            max(thickness - 1, 1),
            cv2.LINE_AA,
        )
    return canvas


def class_color(index: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour per class."""
    hue = int(index * 0.618034 % 1 * 180)  # golden-ratio steps keep neighbouring classes apart
    return tuple(int(c) for c in cv2.cvtColor(np.uint8([[[hue, 200, 230]]]), cv2.COLOR_HSV2BGR)[0, 0])


def unique_path(folder: Path, name: str, taken: set[str]) -> Path:
    """``folder/name``, with a numeric suffix when an earlier image of this run already used the name."""
    stem, suffix, candidate, n = Path(name).stem, Path(name).suffix, name, 1
    while candidate in taken:
        candidate, n = f"{stem}_{n}{suffix}", n + 1
    taken.add(candidate)
    return folder / candidate


def image_record(path: Path, image: np.ndarray, found: torch.Tensor, names: list[str]) -> dict:
    """One entry of predictions.json."""
    detections = [
        {"class_id": int(c), "name": names[int(c)], "conf": round(s, 5), "xyxy": [round(v, 2) for v in box]}
        for *box, s, c in found.tolist()
    ]
    return {"image": str(path), "width": image.shape[1], "height": image.shape[0], "detections": detections}


def predict_command(args) -> int:
    """``yolo-transfer predict WEIGHTS SOURCE... [--imgsz --conf --iou --max-det --device --out]``."""
    if args.imgsz is not None and (args.imgsz < STRIDE or args.imgsz % STRIDE):
        raise ConfigError(f"--imgsz must be a positive multiple of {STRIDE}, got {args.imgsz}")
    out = ensure_writable_dir(args.out)
    console = Console(soft_wrap=True, highlight=False)
    images, has_folder = collect_images(args.source, console)
    model, metadata = load_inference_model(args.weights)  # also .onnx / .torchscript exports
    args.imgsz, warning = inference_imgsz(args.imgsz, metadata)  # default: the size the weights trained at
    if warning:
        console.print(warning, markup=False)
    model = model.fuse().to(select_device(args.device))
    out.mkdir(parents=True, exist_ok=True)
    results, taken = [], set()
    progress = counting_bars(console, disable=not has_folder)
    with progress:
        for path in progress.track(images, description="predict"):
            image = cv2.imread(str(path))
            if image is None:
                progress.console.print(f"skipped {path}: not a readable image", markup=False)
                continue
            found = detect(model, image, args.imgsz, args.conf, args.iou, args.max_det)
            name = path.name if path.suffix.lower() not in UNWRITABLE_SUFFIXES else f"{path.stem}.jpg"
            write_image(unique_path(out, name, taken), annotate(image, found, model.names))
            results.append(image_record(path, image, found, model.names))
            counts = Counter(d["name"] for d in results[-1]["detections"])
            summary = ", ".join(f"{n} {name}" for name, n in counts.most_common()) or "no detections"
            progress.console.print(f"{path}: {summary}", markup=False)
    if not results:
        raise DataError(f"{listed(images)}: not a readable image (none of the {len(images)} files)")
    write_atomic(out / "predictions.json", json.dumps(results, indent=1).encode())
    console.print(
        f"{len(results)} images, {sum(len(r['detections']) for r in results)} detections -> {out}",
        markup=False,
    )
    return 0
