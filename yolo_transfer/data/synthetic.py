"""Built-in demo data: a `source` domain to pretrain on and a `target` domain with a controlled shift.

Both are standard YOLO datasets (images/{train,val}, labels/{train,val}, data.yaml) of simple filled, outlined
shapes, a handful per image, on textured backgrounds. `shift` in [0, 1] moves the target away from the source
along four axes at once:

* classes: round(2 * shift) of the 4 source classes are replaced by new shapes (star, hexagon);
* colours: every class colour is hue-rotated by 60 degrees * shift;
* background: the smooth, blotchy source texture is blended towards a striped, grainy warm one;
* scale: objects shrink by up to 45 % (source: 10-35 % of the image side).

Deterministic by seed; the last 20 % of the images are the val split.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolo_transfer.errors import DataError

SOURCE_CLASSES = ["circle", "square", "triangle", "cross"]
NEW_CLASSES = ["star", "hexagon"]  # replace the last source classes in the target domain
CLASS_HUES = {"circle": 0, "square": 60, "triangle": 120, "cross": 28, "star": 150, "hexagon": 90}  # OpenCV
POLYGONS = {
    "circle": (64, 1.0),
    "square": (4, 1.0),
    "triangle": (3, 1.0),
    "hexagon": (6, 1.0),
    "star": (10, 0.45),
}  # vertices, inner radius of every second vertex
VAL_FRACTION = 0.2
MAX_OBJECTS = 5


def domain_classes(domain: str, shift: float) -> list[str]:
    """Class names of a domain: the source's, with round(2 * shift) of them replaced in the target."""
    if domain == "source":
        return list(SOURCE_CLASSES)
    n_new = round(2 * shift)
    return SOURCE_CLASSES[: len(SOURCE_CLASSES) - n_new] + NEW_CLASSES[:n_new]


def class_colour(name: str, domain: str, shift: float) -> tuple[int, int, int]:
    """The BGR fill colour of a class (target colours are hue-rotated by 60 degrees * shift)."""
    hue = (CLASS_HUES[name] + (30 * shift if domain == "target" else 0)) % 180
    hsv = np.array([[[hue, 230, 230]]], dtype=np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def make_domain(
    out: str | Path, domain: str, n_images: int = 500, imgsz: int = 320, shift: float = 0.5, seed: int = 0
) -> Path:
    """Write one domain as a YOLO dataset into `out` and return its data.yaml (reused if already identical).

    `shift` only affects the target domain. `out` must be empty, absent, or an earlier synthetic domain.
    """
    if domain not in ("source", "target"):
        raise DataError(f"synthetic domain must be 'source' or 'target', not '{domain}'")
    if not 0.0 <= shift <= 1.0:
        raise DataError(f"synthetic shift must be in [0, 1], got {shift}")
    if n_images < 2 or imgsz < 32:
        raise DataError(f"synthetic data needs n_images >= 2 and imgsz >= 32 (got {n_images}, {imgsz})")
    out = Path(out)
    params = {"domain": domain, "n_images": n_images, "imgsz": imgsz, "shift": float(shift), "seed": seed}
    yaml_path = out / "data.yaml"
    previous = _previous_params(yaml_path)
    if previous == params:
        return yaml_path
    if previous is None and out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: not empty and not a synthetic dataset; choose another folder")
    for sub in ("images", "labels"):
        shutil.rmtree(out / sub, ignore_errors=True)

    names = domain_classes(domain, shift)
    colours = [class_colour(n, domain, shift) for n in names]
    effective_shift = shift if domain == "target" else 0.0
    seeds = np.random.SeedSequence([seed, domain == "target"]).spawn(n_images)
    n_val = max(1, round(n_images * VAL_FRACTION))
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i, image_seed in enumerate(seeds):
        split = "val" if i >= n_images - n_val else "train"
        image, labels = draw_image(np.random.default_rng(image_seed), names, colours, imgsz, effective_shift)
        stem = f"{domain}_{i:05d}"
        cv2.imwrite(str(out / "images" / split / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        lines = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in labels]
        (out / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    data = {"train": "images/train", "val": "images/val", "nc": len(names), "names": names}
    yaml_path.write_text(yaml.safe_dump(data | {"synthetic": params}, sort_keys=False))
    return yaml_path


def draw_image(rng: np.random.Generator, names: list[str], colours: list, imgsz: int, shift: float):
    """One image (BGR uint8) and its labels ``[cls, xc, yc, w, h]`` normalised."""
    image = _background(rng, imgsz, shift)
    scale = 1.0 - 0.45 * shift
    boxes: list[np.ndarray] = []
    labels = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        for _attempt in range(10):  # find a spot that does not hide earlier objects
            cls = int(rng.integers(len(names)))
            radius = rng.uniform(0.05, 0.175) * scale * imgsz
            points = _shape_points(names[cls], radius, rng.uniform(0, 2 * np.pi))
            low, high = points.min(0), points.max(0)
            centre = rng.uniform(-low + 1, imgsz - high - 1)
            box = np.concatenate([low + centre, high + centre])
            if all(_iou(box, other) < 0.05 for other in boxes):
                break
        else:
            continue
        _draw(image, names[cls], points + centre, radius, colours[cls], rng)
        boxes.append(box)
        x1, y1, x2, y2 = box.clip(0, imgsz) / imgsz
        labels.append([cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
    return image, labels


def _background(rng: np.random.Generator, size: int, shift: float) -> np.ndarray:
    """Smooth colour blotches (source) blended with warm stripes and grain (target) by `shift`."""
    blotches = cv2.resize(
        rng.random((6, 6, 3), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC
    )
    source = 90 + 60 * blotches * np.float32([1.0, 0.8, 0.6])  # BGR, a cool tint
    if shift == 0:
        return source.clip(0, 255).astype(np.uint8)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 16)
    phase = np.arange(size, dtype=np.float32) * np.float32(2 * np.pi / period)
    u, v = phase * np.float32(np.cos(angle)), phase * np.float32(np.sin(angle))
    # sin(u_x + v_y) as a sum of two outer products
    stripes = 0.5 + 0.5 * (np.outer(np.cos(v), np.sin(u)) + np.outer(np.sin(v), np.cos(u)))
    texture = 0.7 * stripes + 0.3 * rng.random((size, size), dtype=np.float32)
    target = 60 + 120 * texture[..., None] * np.float32([0.5, 0.8, 1.0])  # BGR: warm orange-brown
    return ((1 - shift) * source + shift * target).clip(0, 255).astype(np.uint8)


def _shape_points(name: str, radius: float, angle: float) -> np.ndarray:
    """Polygon (k, 2) around the origin, rotated by `angle`; circles are 64-gons."""
    if name == "cross":
        arm = radius * 0.35
        corners = [(arm, radius), (arm, arm), (radius, arm), (radius, -arm), (arm, -arm), (arm, -radius)]
        half = np.array(corners)
        points = np.concatenate([half, -half])
    else:
        n_vertices, inner = POLYGONS[name]
        theta = np.arange(n_vertices) * 2 * np.pi / n_vertices
        r = radius * np.where(np.arange(n_vertices) % 2, inner, 1.0)
        points = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return points @ rotation.T


def _draw(image: np.ndarray, name: str, points: np.ndarray, radius: float, colour, rng) -> None:
    fill = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in colour)
    outline = tuple(c // 3 for c in fill)
    poly = np.round(points).astype(np.int32)
    cv2.fillPoly(image, [poly], fill, lineType=cv2.LINE_AA)
    cv2.polylines(image, [poly], True, outline, thickness=max(1, int(radius / 12)), lineType=cv2.LINE_AA)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union)


def _previous_params(yaml_path: Path) -> dict | None:
    try:
        return yaml.safe_load(yaml_path.read_text()).get("synthetic")
    except (OSError, AttributeError, yaml.YAMLError):
        return None
