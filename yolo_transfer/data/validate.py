"""Per-file validation of images and labels, cached per dataset, -> validated Samples + ValidationReport.

Every image is decoded once (OpenCV, EXIF orientation applied) and every label checked; a file that cannot be
used is skipped and named in the report with its reason, a file that needed a fix is named with the fix.
Results are cached under ``$YOLO_TRANSFER_CACHE`` (or ``~/.cache/yolo-transfer``), keyed per file on size and
mtime, so a changed file is checked again and nothing is ever written into the dataset: a JPEG whose end is
missing is decoded and re-saved (as the reference does in place) into ``<cache>/repaired/``, and its sample
points there.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.progress import track

from yolo_transfer.data.formats import (
    IMAGE_SUFFIXES,
    SPLITS,
    DatasetSpec,
    RawSample,
    parse_voc_xml,
    read_dataset,
)
from yolo_transfer.errors import DataError, LabelError

CACHE_VERSION = 2
CLIP_TOLERANCE = 0.02  # box edges up to this far outside [0, 1] are clipped; further out the file is rejected
MIN_IMAGE_SIDE = 10
MIN_BOX_SIZE = 1e-6  # normalised; smaller sides are zero for all purposes (and in float32)
DECODABLE_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP"}
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
JPEG_END = b"\xff\xd9"
MIN_DECODED_FRACTION = 0.9  # a truncated JPEG is repaired when its data reaches this far into the image


@dataclass(frozen=True)
class Sample:
    """A validated image; labels are ``(n, 5)`` float32 ``[cls, xc, yc, w, h]``, normalised."""

    image: Path
    labels: np.ndarray
    width: int
    height: int


@dataclass
class ValidationReport:
    """Counts, and every skipped or repaired file as ``{"file", "reason"}``."""

    names: list[str]
    counts: dict = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    repaired: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary_line(self) -> str:
        """One line for training logs: images used, backgrounds, skipped and repaired files, notes."""
        line = (
            f"data: {self.counts.get('images', 0)} images ({self.counts.get('backgrounds', 0)} backgrounds), "
            f"{len(self.skipped)} skipped, {len(self.repaired)} repaired"
        )
        if self.skipped:
            line += f" - first skipped: {Path(self.skipped[0]['file']).name}: {self.skipped[0]['reason']}"
        return "; ".join([line, *self.notes])

    def to_dict(self) -> dict:
        return {
            "counts": self.counts,
            "skipped": self.skipped,
            "repaired": self.repaired,
            "notes": self.notes,
        }


@dataclass
class LoadedDataset:
    """A validated dataset: class names, the samples of each split and the report."""

    names: list[str]
    root: Path
    source: Path
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    report: ValidationReport

    @property
    def nc(self) -> int:
        return len(self.names)


def load_dataset(source: str | Path, val_fraction: float = 0.2, seed: int = 0) -> LoadedDataset:
    """Read a data.yaml, VOC folder or COCO json and validate every file (cached); DataError if unusable."""
    data = validate_dataset(read_dataset(source, val_fraction, seed))
    for split in ("train", "val"):
        if not getattr(data, split):
            reasons = sorted({s["reason"] for s in data.report.skipped})[:3]
            raise DataError(
                f"{data.source}: no usable {split} images "
                f"({len(data.report.skipped)} skipped: {'; '.join(reasons) or 'none found'})"
            )
    return data


PROGRESS_MIN_IMAGES = 2000  # datasets this large get a progress bar with ETA while they are checked


def validate_dataset(spec: DatasetSpec, cache_dir: Path | None = None) -> LoadedDataset:
    """Check every sample of every split of `spec` (cached per file) and count what is left."""
    cache_dir = cache_dir or default_cache_dir()
    cache_file = cache_dir / "validation" / f"{_dataset_key(spec)}.json"
    cached = _read_cache(cache_file)
    raw = [(split, s) for split in SPLITS for s in spec.splits.get(split, [])]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        checks = pool.map(
            lambda item: _cached_check(item[1], spec.names, cached, cache_dir / "repaired"), raw
        )
        quiet = len(raw) < PROGRESS_MIN_IMAGES  # a bar with ETA only where checking takes a while
        entries = list(track(checks, "checking images", total=len(raw), transient=True, disable=quiet))
    _write_cache(cache_file, {str(s.image): e for (_, s), e in zip(raw, entries, strict=True)})

    report = ValidationReport(spec.names, notes=list(spec.notes))
    report.skipped += [{"file": str(f), "reason": r} for f, r in spec.orphans]
    splits: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    label_states = {"missing": 0, "empty": 0}
    for (split, raw_sample), entry in zip(raw, entries, strict=True):
        if "skip" in entry:
            report.skipped.append(entry["skip"])
            continue
        report.repaired += entry["repairs"]
        label_states[entry["label_state"]] = label_states.get(entry["label_state"], 0) + 1
        labels = np.array(entry["labels"], dtype=np.float32).reshape(-1, 5)
        image = Path(entry.get("repaired_image") or raw_sample.image)
        splits[split].append(Sample(image, labels, entry["width"], entry["height"]))
    report.counts = _count(splits, spec.names, label_states)
    return LoadedDataset(
        spec.names, spec.root, spec.source, splits["train"], splits["val"], splits["test"], report
    )


def default_cache_dir() -> Path:
    return Path(os.environ.get("YOLO_TRANSFER_CACHE") or Path.home() / ".cache" / "yolo-transfer")


# ----------------------------------------------------------------------------------------------- one sample


def check_sample(raw: RawSample, names: list[str], repair_dir: Path) -> dict:
    """Validate one image and its labels -> a json-able cache entry (``skip`` or labels/size/repairs).

    ``repaired_image`` is set when the pixels come from a repaired copy under `repair_dir`.
    """
    try:
        width, height, image_repairs, pixels = check_image(raw.image, repair_dir)
    except DataError as err:
        return {"skip": {"file": str(raw.image), "reason": str(err)}}
    except OSError as err:
        return {"skip": {"file": str(raw.image), "reason": f"cannot read the file ({err.strerror})"}}
    try:
        labels, label_repairs, state = _read_labels(raw, names, width, height)
    except LabelError as err:  # COCO problems are named by image: the json holds every image's annotations
        if raw.boxes is not None:
            return {"skip": {"file": str(raw.image), "reason": f"annotations: {err}"}}
        return {"skip": {"file": str(raw.label_file), "reason": str(err)}}
    except OSError as err:
        return {"skip": {"file": str(raw.label_file), "reason": f"cannot read the file ({err.strerror})"}}
    repairs = []
    if image_repairs:
        repairs.append({"file": str(raw.image), "reason": "; ".join(image_repairs)})
    if label_repairs:
        repairs.append({"file": str(raw.label_file), "reason": "; ".join(label_repairs)})
    return {
        "labels": labels.tolist(),
        "width": width,
        "height": height,
        "repairs": repairs,
        "label_state": state,
        "repaired_image": str(pixels) if pixels != raw.image else None,
    }


def check_image(path: Path, repair_dir: Path) -> tuple[int, int, list[str], Path]:
    """Decode an image as the loader will; return its (width, height), the conversions it needs and the file
    whose pixels the loader reads (`path`, or the repaired copy of a truncated JPEG under `repair_dir`).

    Raises DataError (reason only) for a missing, zero-byte, unsupported, undecodable or tiny file, and for a
    JPEG with too much of its end missing.
    """
    if not path.is_file():
        raise DataError("image not found")
    if path.stat().st_size == 0:
        raise DataError("zero-byte file")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"unsupported image format '{path.suffix}'")
    pixels, repairs = path, []
    if _is_truncated_jpeg(path):
        pixels = repair_truncated_jpeg(path, repair_dir)
        repairs.append("truncated JPEG (no end-of-image marker): decoded and re-saved into the cache")
    try:
        with Image.open(path) as im:
            if im.format not in DECODABLE_FORMATS:
                raise DataError(f"unsupported image format {im.format}")
            mode, orientation = im.mode, im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise DataError("unreadable image (not a known image format)") from None
    image = cv2.imread(str(pixels), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)  # EXIF orientation applied
    if image is None:
        raise DataError("unreadable image (decoding failed)")
    height, width = image.shape[:2]
    if min(width, height) < MIN_IMAGE_SIDE:
        raise DataError(f"image too small ({width}x{height}, both sides must be >= {MIN_IMAGE_SIDE} px)")
    if orientation not in (1, None):
        repairs.append(f"EXIF orientation {orientation} applied")
    if image.dtype != np.uint8:
        repairs.append(f"{8 * image.dtype.itemsize}-bit image converted to 8-bit")
    if mode in GRAYSCALE_MODES:
        repairs.append("grayscale image converted to RGB")
    elif "A" in mode:
        repairs.append(f"{mode} image converted to RGB (alpha dropped)")
    elif mode not in ("RGB", "P", "YCbCr"):
        repairs.append(f"{mode} image converted to RGB")
    return width, height, repairs, pixels


def repair_truncated_jpeg(path: Path, repair_dir: Path) -> Path:
    """Decode a JPEG whose end is missing and re-save it (quality 100, EXIF orientation applied, as the
    reference does in place) as ``repair_dir/<hash of path>/<name>``; return that copy.

    Raises DataError when it cannot be decoded or its data stops before MIN_DECODED_FRACTION of the image.
    """
    data = path.read_bytes()
    try:
        fraction = _decoded_fraction(data)
        with Image.open(io.BytesIO(data + JPEG_END)) as im:
            image = ImageOps.exif_transpose(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise DataError("truncated JPEG that cannot be decoded") from None
    if fraction < MIN_DECODED_FRACTION:
        raise DataError(f"truncated JPEG: its data stops {fraction:.0%} into the image")
    out = repair_dir / hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16] / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".tmp", delete=False) as f:
        image.save(f, "JPEG", quality=100, subsampling=0)
    os.replace(f.name, out)
    return out


def _decoded_fraction(data: bytes, cell: int = 16) -> float:
    """How far (0-1, in raster order of 16 px cells) the data of a truncated JPEG reaches into the image.

    The decoder fills what is missing from the last block it read, so dropping a few more bytes changes the
    image only from where the data stops: the first changed cell marks it (1.0 when nothing changes). A pixel
    counts as changed only when the one above it changed too: chroma upsampling blurs a change one row up.
    """
    decoded = np.asarray(_decode_jpeg(data))
    for drop in (8, 64, 512):
        changed = (decoded != np.asarray(_decode_jpeg(data[:-drop]))).reshape(*decoded.shape[:2], -1).any(2)
        changed[1:] &= changed[:-1].copy()
        changed[0] = False
        if changed.any():
            rows, cols = -(-changed.shape[0] // cell), -(-changed.shape[1] // cell)
            padded = np.zeros((rows * cell, cols * cell), bool)
            padded[: changed.shape[0], : changed.shape[1]] = changed
            return int(np.argmax(padded.reshape(rows, cell, cols, cell).any((1, 3)))) / (rows * cols)
    return 1.0


def _decode_jpeg(data: bytes) -> Image.Image:
    """Decode JPEG bytes whose end is missing: an end-of-image marker is added."""
    with Image.open(io.BytesIO(data + JPEG_END)) as im:
        im.load()
        return im.copy()


def parse_label_text(text: str, nc: int, source: str = "") -> tuple[np.ndarray, list[str]]:
    """Parse YOLO label text into ``(n, 5)`` ``[cls, xc, yc, w, h]`` rows; return them with the repairs made.

    Rows are ``cls xc yc w h`` or a polygon ``cls x1 y1 x2 y2 x3 y3 ...`` (turned into its box). Raises
    LabelError naming `source` (when given) and the line for anything that cannot be used.
    """
    prefix = f"{source}: " if source else ""
    boxes = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{prefix}line {line_no}"
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise LabelError(f"{where}: {len(fields)} columns (need 5: class xc yc w h, or a polygon)")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise LabelError(f"{where}: non-numeric value") from None
        if len(fields) == 5:
            cls, xc, yc, w, h = values
            boxes.append([cls, xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2])
        else:
            xs, ys = np.array(values[1::2]), np.array(values[2::2])
            boxes.append([values[0], xs.min(), ys.min(), xs.max(), ys.max()])
        if not np.isfinite(values).all():
            raise LabelError(f"{where}: NaN or infinite value")
    return check_boxes(np.array(boxes, dtype=np.float64).reshape(-1, 5), nc, source)


def check_boxes(boxes: np.ndarray, nc: int, source: str = "") -> tuple[np.ndarray, list[str]]:
    """Check ``[cls, x1, y1, x2, y2]`` rows normalised to [0, 1] -> ``[cls, xc, yc, w, h]`` float32 + repairs.

    Rejects bad class ids and boxes far outside the image; clips small excess, drops zero/negative-size boxes
    and removes duplicate rows, each named in the repairs.
    """
    prefix, repairs = f"{source}: " if source else "", []
    if not np.isfinite(boxes).all():
        raise LabelError(f"{prefix}NaN or infinite value")
    cls = boxes[:, 0]
    bad_cls = (cls < 0) | (cls >= nc) | (cls != np.round(cls))
    if bad_cls.any():
        raise LabelError(f"{prefix}class id {cls[bad_cls][0]:g} is not an integer in 0..{nc - 1}")
    coords = boxes[:, 1:]
    outside = (coords < -CLIP_TOLERANCE) | (coords > 1 + CLIP_TOLERANCE)
    if outside.any():
        row = int(np.nonzero(outside.any(1))[0][0])
        raise LabelError(f"{prefix}box {row + 1} lies outside the image (edges {np.round(coords[row], 3)})")
    clipped = coords.clip(0.0, 1.0)
    if (np.abs(clipped - coords) > 1e-6).any():
        repairs.append("coordinates slightly outside [0, 1] clipped")
    size = clipped[:, 2:] - clipped[:, :2]
    keep = (size >= MIN_BOX_SIZE).all(1)
    if not keep.all():
        repairs.append(f"removed {int((~keep).sum())} box(es) of zero or negative size")
    xywh = np.concatenate([cls[:, None], (clipped[:, :2] + clipped[:, 2:]) / 2, size], axis=1)[keep]
    labels, first = np.unique(xywh.astype(np.float32), axis=0, return_index=True)
    if len(labels) < len(xywh):
        repairs.append(f"removed {len(xywh) - len(labels)} duplicate label(s)")
    return labels[np.argsort(first)].reshape(-1, 5), repairs


def _read_labels(
    raw: RawSample, names: list[str], width: int, height: int
) -> tuple[np.ndarray, list[str], str]:
    """Labels of one sample in YOLO form, with repairs and the state "ok" | "empty" | "missing".

    Errors and repairs name no file: the report entry carries it."""
    if raw.boxes is not None:  # COCO: pixel xyxy rows from the json
        pixel_boxes, size = raw.boxes, (width, height)
    elif raw.label_file is None or not raw.label_file.is_file():
        return np.zeros((0, 5), np.float32), [], "missing"
    elif raw.label_file.suffix.lower() == ".xml":
        pixel_boxes, xml_size = parse_voc_xml(raw.label_file, names)
        size = xml_size or (width, height)
    else:
        try:
            text = raw.label_file.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise LabelError("not UTF-8 text") from None
        labels, repairs = parse_label_text(text, len(names))
        return labels, repairs, "ok" if len(labels) else "empty"
    scale = np.array([1.0, size[0], size[1], size[0], size[1]])
    labels, repairs = check_boxes(pixel_boxes / scale, len(names))
    return labels, repairs, "ok" if len(labels) else "empty"


def _is_truncated_jpeg(path: Path) -> bool:
    """A JPEG (FFD8 start) must end with the FFD9 end-of-image marker (trailing zero padding allowed)."""
    with path.open("rb") as f:
        if f.read(2) != b"\xff\xd8":
            return False
        f.seek(max(0, path.stat().st_size - 1024))
        return not f.read().rstrip(b"\x00").endswith(b"\xff\xd9")


# ----------------------------------------------------------------------------------------------- cache


def _file_stat(path: Path | None) -> list[int]:
    try:
        st = path.stat() if path is not None else None
    except OSError:
        st = None
    return [st.st_size, st.st_mtime_ns] if st else [-1, -1]


def _cached_check(raw: RawSample, names: list[str], cached: dict, repair_dir: Path) -> dict:
    stat = _file_stat(raw.image) + _file_stat(raw.label_file)
    hit = cached.get(str(raw.image))
    if (
        hit is not None
        and hit.get("stat") == stat
        and hit.get("label_file") == str(raw.label_file)
        and (not hit.get("repaired_image") or Path(hit["repaired_image"]).is_file())
    ):
        return hit
    return {**check_sample(raw, names, repair_dir), "stat": stat, "label_file": str(raw.label_file)}


def _dataset_key(spec: DatasetSpec) -> str:
    key = json.dumps([CACHE_VERSION, spec.format, str(spec.source), spec.names])
    return hashlib.sha1(key.encode()).hexdigest()[:20]


def _read_cache(cache_file: Path) -> dict:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("entries", {}) if isinstance(data, dict) and data.get("version") == CACHE_VERSION else {}


def _write_cache(cache_file: Path, entries: dict) -> None:
    """Atomic write; a cache folder that cannot be written only costs the speed-up."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cache_file.parent, suffix=".tmp", delete=False) as f:
            json.dump({"version": CACHE_VERSION, "entries": entries}, f)
        os.replace(f.name, cache_file)
    except OSError:
        pass


# ----------------------------------------------------------------------------------------------- counts


def _count(splits: dict[str, list[Sample]], names: list[str], label_states: dict[str, int]) -> dict:
    per_class = np.zeros(len(names), dtype=int)
    per_split = {}
    for split, samples in splits.items():
        n_boxes = sum(len(s.labels) for s in samples)
        per_split[split] = {
            "images": len(samples),
            "instances": n_boxes,
            "backgrounds": sum(len(s.labels) == 0 for s in samples),
        }
        for s in samples:
            per_class += np.bincount(s.labels[:, 0].astype(int), minlength=len(names))
    return {
        "images": sum(v["images"] for v in per_split.values()),
        "instances": int(per_class.sum()),
        "backgrounds": sum(v["backgrounds"] for v in per_split.values()),
        "missing_labels": label_states["missing"],
        "empty_labels": label_states["empty"],
        "splits": per_split,
        "instances_per_class": dict(zip(names, per_class.tolist(), strict=True)),
    }
