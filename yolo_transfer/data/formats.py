"""Dataset readers: YOLO data.yaml, Pascal VOC folders and COCO instances json -> DatasetSpec.

A reader only finds images and where their labels live; nothing is opened or checked here except the
dataset description itself (yaml, VOC split lists, COCO json). `validate.py` checks every file.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from yolo_transfer.errors import DataError, LabelError

IMAGE_SUFFIXES = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm")
# other image files in a dataset folder are listed too, so that validation reports them as unsupported
LISTED_SUFFIXES = IMAGE_SUFFIXES + (".gif", ".heic", ".heif", ".avif", ".svg", ".ico")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RawSample:
    """One image and where its labels come from, before validation.

    `label_file` is a YOLO ``.txt`` or a VOC ``.xml`` (parsed by validation), or the COCO json whose rows are
    already in `boxes` as ``[cls, x1, y1, x2, y2]`` pixels. None: no label file (a background image).
    """

    image: Path
    label_file: Path | None
    boxes: np.ndarray | None = None


@dataclass
class DatasetSpec:
    """What a dataset description says: class names and the raw samples of each split."""

    names: list[str]
    root: Path
    source: Path
    format: str  # "yolo" | "voc" | "coco"
    splits: dict[str, list[RawSample]]
    notes: list[str] = field(default_factory=list)
    orphans: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason) found by the reader


def read_dataset(source: str | Path, val_fraction: float = 0.2, seed: int = 0) -> DatasetSpec:
    """Read a data.yaml, a Pascal VOC folder or a COCO json; make a seeded val split when there is none."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: dataset not found")
    if path.is_dir() and (path / "data.yaml").is_file():
        path = path / "data.yaml"
    if path.suffix.lower() in (".yaml", ".yml"):
        spec = read_yolo_yaml(path)
    elif path.suffix.lower() == ".json":
        spec = read_coco(path)
    elif path.is_dir():
        spec = read_voc(path)
    else:
        raise DataError(f"{path}: expected a data.yaml, a Pascal VOC folder or a COCO instances json")
    if not spec.splits.get("val"):
        make_val_split(spec, val_fraction, seed)
    return spec


def make_val_split(spec: DatasetSpec, val_fraction: float, seed: int) -> None:
    """Move a seeded random `val_fraction` of the train samples into a new val split (noted in the spec)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"{spec.source}: no val split and --val-fraction {val_fraction} is not in (0, 1)")
    train = spec.splits.get("train", [])
    n_val = max(1, round(len(train) * val_fraction)) if len(train) > 1 else 0
    order = np.random.default_rng(seed).permutation(len(train))
    val_idx = set(order[:n_val].tolist())
    spec.splits["val"] = [s for i, s in enumerate(train) if i in val_idx]
    spec.splits["train"] = [s for i, s in enumerate(train) if i not in val_idx]
    spec.notes.append(
        f"no val split: made one from {val_fraction:.0%} of train ({n_val} images, seed {seed})"
    )


# ----------------------------------------------------------------------------------------------- YOLO yaml


def read_yolo_yaml(yaml_path: Path) -> DatasetSpec:
    """A yolov5/ultralytics data.yaml (also Roboflow exports with ``../train/images`` and a stale `path`)."""
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DataError(f"{yaml_path}: cannot read dataset yaml ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise DataError(f"{yaml_path}: dataset yaml must be a mapping with train/val/names")
    names = _parse_names(data, yaml_path)
    notes: list[str] = []
    root = _resolve_root(data.get("path"), yaml_path, notes)
    if not data.get("train"):
        raise DataError(f"{yaml_path}: no 'train' entry")
    splits = {}
    for split in SPLITS:
        entries = data.get(split)
        if entries:
            images = _list_images(entries, root, yaml_path, split)
            splits[split] = [RawSample(image, yolo_label_path(image)) for image in images]
    return DatasetSpec(names, root, yaml_path.resolve(), "yolo", splits, notes)


def yolo_label_path(image: Path) -> Path:
    """Swap the last ``images`` path component for ``labels`` and the suffix for ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _parse_names(data: dict, yaml_path: Path) -> list[str]:
    names, nc = data.get("names"), data.get("nc")
    if isinstance(names, dict):
        try:
            by_index = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataError(f"{yaml_path}: 'names' keys must be class indices 0..nc-1") from None
        if sorted(by_index) != list(range(len(by_index))):
            raise DataError(f"{yaml_path}: 'names' keys must be the indices 0..{len(by_index) - 1}")
        names = [by_index[i] for i in range(len(by_index))]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    elif names is None and isinstance(nc, int) and nc > 0:
        names = [f"class{i}" for i in range(nc)]
    else:
        raise DataError(f"{yaml_path}: 'names' must be a list or a {{index: name}} mapping")
    if not names:
        raise DataError(f"{yaml_path}: 'names' is empty")
    if nc is not None and (not isinstance(nc, int) or nc != len(names)):
        raise DataError(f"{yaml_path}: nc={nc!r} but {len(names)} names are given")
    return names


def _resolve_root(path_entry: object, yaml_path: Path, notes: list[str]) -> Path:
    """The `path` key: relative to the yaml's folder; a stale absolute path falls back to that folder."""
    yaml_dir = yaml_path.parent.resolve()
    if not path_entry:
        return yaml_dir
    root = Path(str(path_entry)).expanduser()
    root = root if root.is_absolute() else yaml_dir / root
    if root.is_dir():
        return root.resolve()
    notes.append(f"'path: {path_entry}' does not exist; using the yaml's folder {yaml_dir}")
    return yaml_dir


def _resolve_entry(entry: str, root: Path, yaml_dir: Path) -> Path | None:
    """A train/val/test entry: relative to root, then to the yaml; Roboflow's ``../x`` also as ``root/x``."""
    path = Path(entry).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    candidates = [root / path, yaml_dir / path]
    if entry.startswith("../"):
        candidates.append(root / entry[3:])
    return next((c.resolve() for c in candidates if c.exists()), None)


def _list_images(entries: object, root: Path, yaml_path: Path, split: str) -> list[Path]:
    entries = entries if isinstance(entries, list) else [entries]
    images: list[Path] = []
    for entry in entries:
        path = _resolve_entry(str(entry), root, yaml_path.parent.resolve())
        if path is None:
            raise DataError(f"{yaml_path}: {split} entry '{entry}' not found (root {root})")
        if path.is_dir():
            images += sorted(
                p for p in path.rglob("*") if p.suffix.lower() in LISTED_SUFFIXES and p.is_file()
            )
        elif path.suffix.lower() == ".txt":
            images += _read_image_list(path, root)
        else:
            images.append(path)
    if not images:
        raise DataError(f"{yaml_path}: no images found for {split} ({entries})")
    return images


def _read_image_list(list_file: Path, root: Path) -> list[Path]:
    """A txt list of images; ``./x`` lines are relative to the list's folder, other relative lines to root."""
    images = []
    for line in list_file.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        path = Path(line)
        if line.startswith("./"):
            path = list_file.parent / line[2:]
        elif not path.is_absolute():
            path = root / path if (root / path).exists() else list_file.parent / path
        images.append(path.resolve())
    return images


# ----------------------------------------------------------------------------------------------- Pascal VOC


def read_voc(folder: Path) -> DatasetSpec:
    """A Pascal VOC folder (Annotations/ + JPEGImages/ or images/, optional ImageSets/Main split lists).

    `folder` may also be a parent holding such folders (e.g. VOCdevkit/); their splits are concatenated.
    Class names are the sorted set of object names in the xml files.
    """
    roots = (
        [folder] if _voc_dirs(folder) else sorted(d for d in folder.iterdir() if d.is_dir() and _voc_dirs(d))
    )
    if not roots:
        raise DataError(
            f"{folder}: no data.yaml, and not a Pascal VOC folder (Annotations/ + JPEGImages/ or images/)"
        )
    splits: dict[str, list[RawSample]] = {}
    orphans: list[tuple[Path, str]] = []
    names: set[str] = set()
    for root in roots:
        ann_dir, img_dir = _voc_dirs(root)
        for split, samples in _voc_splits(root, ann_dir, img_dir, orphans).items():
            splits.setdefault(split, []).extend(samples)
        names |= _voc_names(ann_dir)
    if not names:
        raise DataError(f"{folder}: no object names found in the VOC annotations")
    return DatasetSpec(sorted(names), folder.resolve(), folder.resolve(), "voc", splits, orphans=orphans)


def _voc_dirs(root: Path) -> tuple[Path, Path] | None:
    ann = next((root / d for d in ("Annotations", "annotations") if (root / d).is_dir()), None)
    img = next((root / d for d in ("JPEGImages", "images") if (root / d).is_dir()), None)
    return (ann, img) if ann and img else None


def _voc_splits(root: Path, ann_dir: Path, img_dir: Path, orphans: list) -> dict[str, list[RawSample]]:
    images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in LISTED_SUFFIXES}
    xmls = {p.stem: p for p in sorted(ann_dir.glob("*.xml"))}
    orphans += [(xml, "annotation without an image") for stem, xml in xmls.items() if stem not in images]
    sets_dir = root / "ImageSets" / "Main"
    lists = {s: sets_dir / f"{s}.txt" for s in SPLITS if (sets_dir / f"{s}.txt").is_file()}
    if "train" not in lists and (sets_dir / "trainval.txt").is_file():
        lists["train"] = sets_dir / "trainval.txt"
    if not lists:
        return {"train": [RawSample(img, xmls.get(stem)) for stem, img in images.items()]}
    splits = {}
    for split, list_file in lists.items():
        ids = [line.split()[0] for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        splits[split] = []
        for image_id in ids:
            if image_id in images:
                splits[split].append(RawSample(images[image_id], xmls.get(image_id)))
            else:
                orphans.append((list_file, f"id {image_id} has no image"))
    return splits


def _voc_names(ann_dir: Path) -> set[str]:
    names = set()
    for xml in ann_dir.glob("*.xml"):
        try:
            names |= {(o.findtext("name") or "").strip() for o in ET.parse(xml).getroot().iter("object")}
        except ET.ParseError:
            continue  # reported per file by validation
    names.discard("")
    return names


def parse_voc_xml(xml_path: Path, names: list[str]) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Objects of a VOC xml as ``[cls, x1, y1, x2, y2]`` 0-based pixels and the xml's (width, height).

    VOC boxes are 1-based: one is subtracted from every coordinate (as the reference's VOC conversion).
    LabelError messages name no file (the validation report carries it).
    """
    try:
        root = ET.parse(xml_path).getroot()
        size = root.find("size")
        width = int(float(size.findtext("width", "0"))) if size is not None else 0
        height = int(float(size.findtext("height", "0"))) if size is not None else 0
        rows = []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            box = obj.find("bndbox")
            if box is None:
                raise LabelError(f"object '{name}' has no bndbox")
            coords = [float(box.findtext(k, "nan")) - 1.0 for k in ("xmin", "ymin", "xmax", "ymax")]
            if name not in names:
                raise LabelError(f"unknown class '{name}'")
            rows.append([names.index(name), *coords])
    except ET.ParseError as err:
        raise LabelError(f"malformed xml ({err})") from None
    except (ValueError, OverflowError):
        raise LabelError("non-numeric size or box coordinate") from None
    boxes = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return boxes, ((width, height) if width > 0 and height > 0 else None)


# ----------------------------------------------------------------------------------------------- COCO json


def read_coco(json_path: Path) -> DatasetSpec:
    """A COCO instances json; images are looked for next to it, in ``images/``, or in ``[images/]<split>/``.

    Category ids are mapped to 0..nc-1 in id order; crowd annotations are left out (counted in the notes). A
    malformed bbox is kept as NaN so that validation skips and reports its image.
    """
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        categories = sorted(data["categories"], key=lambda c: c["id"])
        class_index = {c["id"]: i for i, c in enumerate(categories)}
        names = [str(c["name"]) for c in categories]
        files = {im["id"]: str(im["file_name"]) for im in data["images"]}
        rows: dict = {image_id: [] for image_id in files}
        n_crowd = 0
        for ann in data.get("annotations", []):
            if ann.get("iscrowd"):
                n_crowd += 1
            elif ann["image_id"] in rows:
                rows[ann["image_id"]].append([class_index.get(ann.get("category_id"), -1), *_coco_xyxy(ann)])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{json_path}: not a COCO instances json ({type(err).__name__}: {err})") from None
    image_dir = _coco_image_dir(json_path, list(files.values()))
    samples = [
        RawSample(
            (image_dir / files[i]).resolve(),
            json_path.resolve(),
            np.array(rows[i], np.float64).reshape(-1, 5),
        )
        for i in files
    ]
    notes = [f"{n_crowd} crowd annotations left out"] if n_crowd else []
    return DatasetSpec(names, image_dir.resolve(), json_path.resolve(), "coco", {"train": samples}, notes)


def _coco_xyxy(annotation: dict) -> list[float]:
    """A COCO ``[x, y, w, h]`` bbox as ``[x1, y1, x2, y2]``; NaNs when it is malformed."""
    try:
        x, y, w, h = (float(v) for v in annotation["bbox"])
    except (KeyError, TypeError, ValueError):
        return [np.nan] * 4
    return [x, y, x + w, y + h]


def _coco_image_dir(json_path: Path, file_names: list[str]) -> Path:
    if not file_names:
        raise DataError(f"{json_path}: the json lists no images")
    split = json_path.stem.removeprefix("instances_")
    bases = [json_path.parent, json_path.parent.parent]
    candidates = [d for b in bases for d in (b, b / "images", b / split, b / "images" / split)]
    for directory in candidates:
        if (directory / file_names[0]).is_file():
            return directory
    raise DataError(
        f"{json_path}: cannot find image '{file_names[0]}' next to the json, in images/ or {split}/"
    )
