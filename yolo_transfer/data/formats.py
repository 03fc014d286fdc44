"""Dataset readers: YOLO data.yaml, Pascal VOC folders and COCO instances json -> DatasetSpec.

A reader only finds images and where their labels live; nothing is opened or checked here except the
dataset description itself (yaml, VOC split lists, COCO json). `validate.py` checks every file.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import numpy as np
import yaml

from yolo_transfer.errors import DataError, LabelError
from yolo_transfer.option_checks import require_dataset

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
    path = require_dataset(source)
    if path.is_dir() and (path / "data.yaml").is_file():
        path = path / "data.yaml"
    if path.suffix.lower() in (".yaml", ".yml"):
        spec = read_yolo_yaml(path)
    elif path.suffix.lower() == ".json":
        spec = read_coco(path)
    elif path.is_dir():
        spec = read_folder(path)
    else:
        raise DataError(f"{path}: expected a data.yaml, a Pascal VOC folder or a COCO instances json")
    if not spec.splits.get("val"):
        make_val_split(spec, val_fraction, seed)
    return spec


def read_folder(folder: Path) -> DatasetSpec:
    """A dataset folder found by content: its YOLO yaml, else VOC xml under it, else its COCO json(s)."""
    yamls = [p for p in sorted(folder.glob("*.y*ml")) if p.suffix in (".yaml", ".yml") and _is_data_yaml(p)]
    if len(yamls) == 1:
        return read_yolo_yaml(yamls[0])
    annotations = find_voc_annotations(folder)
    if annotations:
        return read_voc(folder, annotations)
    jsons = find_coco_jsons(folder)
    if jsons:
        return read_coco_splits(folder, jsons)
    several = f" ({len(yamls)} dataset yaml files: pass one)" if yamls else ""
    raise DataError(
        f"{folder}: no dataset found{several}: looked for a data.yaml (YOLO), Pascal VOC .xml annotations "
        "and a COCO instances .json"
    )


def _is_data_yaml(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "train" in data


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

SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass(frozen=True)
class VocAnnotation:
    """One Pascal VOC xml: the image its ``<filename>`` names and its object names (empty when malformed)."""

    xml: Path
    filename: str
    names: frozenset[str]


def find_voc_annotations(folder: Path) -> list[VocAnnotation]:
    """Every xml under `folder` whose root element is ``<annotation>`` (VOC), wherever it lies.

    A malformed xml is kept when it lies next to VOC ones, so that validation reports it.
    """
    found, malformed = [], []
    for xml in sorted(folder.resolve().rglob("*.xml")):
        try:
            root = ET.parse(xml).getroot()
        except (ET.ParseError, OSError):
            malformed.append(VocAnnotation(xml, "", frozenset()))
            continue
        if root.tag == "annotation":
            names = frozenset((o.findtext("name") or "").strip() for o in root.iter("object")) - {""}
            found.append(VocAnnotation(xml, (root.findtext("filename") or "").strip(), names))
    voc_dirs = {a.xml.parent for a in found}
    return sorted(found + [m for m in malformed if m.xml.parent in voc_dirs], key=lambda a: a.xml)


def read_voc(folder: Path, annotations: list[VocAnnotation] | None = None) -> DatasetSpec:
    """Pascal VOC found by content: the ``<annotation>`` xml files anywhere under `folder`.

    Covers Annotations/ + JPEGImages/ (also VOCdevkit/ with several years), annots/ or labels/ next to
    images/, and xml next to the images (Kaggle, Roboflow exports). An xml's image is the one with the same
    stem, else the one its ``<filename>`` names; among several, the one sharing the most folder names with the
    xml. Splits come from ImageSets/Main lists next to the annotation folder, else from train/val/test folder
    names in the image's path; the rest is train. Images without an xml in a folder of annotated images are
    backgrounds. Class names are the sorted object names.
    """
    folder = folder.resolve()
    annotations = find_voc_annotations(folder) if annotations is None else annotations
    if not annotations:
        raise DataError(f"{folder}: no Pascal VOC annotations (.xml files with an <annotation> root) found")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in LISTED_SUFFIXES and p.is_file())
    by_stem: dict[str, list[Path]] = defaultdict(list)
    by_name: dict[str, list[Path]] = defaultdict(list)
    for image in images:
        by_stem[image.stem].append(image)
        by_name[image.name].append(image)
    orphans: list[tuple[Path, str]] = []
    label_of: dict[Path, Path] = {}
    for annotation in annotations:
        image = _voc_image(annotation, by_stem, by_name)
        if image is None:
            orphans.append((annotation.xml, "annotation without an image"))
        elif image in label_of:
            orphans.append((annotation.xml, f"a second annotation of {image.name} (left out)"))
        else:
            label_of[image] = annotation.xml
    annotated_dirs = {image.parent for image in label_of}
    samples = [RawSample(image, label_of.get(image)) for image in images if image.parent in annotated_dirs]
    names = sorted(set().union(*(a.names for a in annotations)))
    if not names:
        raise DataError(f"{folder}: no object names found in the VOC annotations")
    return DatasetSpec(names, folder, folder, "voc", _voc_splits(folder, samples, orphans), orphans=orphans)


def _voc_image(
    annotation: VocAnnotation, by_stem: dict[str, list[Path]], by_name: dict[str, list[Path]]
) -> Path | None:
    named = PureWindowsPath(annotation.filename).name  # also strips a Windows or POSIX folder
    candidates = by_stem.get(annotation.xml.stem) or by_name.get(named) or by_stem.get(Path(named).stem, [])
    xml_folders = set(annotation.xml.parent.parts)
    return max(candidates, key=lambda image: len(xml_folders & set(image.parent.parts)), default=None)


def _voc_splits(folder: Path, samples: list[RawSample], orphans: list) -> dict[str, list[RawSample]]:
    """Split by the ImageSets/Main lists of each VOC root (listed ids only), else by folder names."""
    by_root: dict[Path, list[RawSample]] = defaultdict(list)
    for sample in samples:  # the folder above the image folder (never above `folder`) may hold ImageSets/
        by_root[sample.image.parent.parent if sample.image.parent != folder else folder].append(sample)
    splits: dict[str, list[RawSample]] = {}
    for root, root_samples in by_root.items():
        lists = _voc_split_lists(root)
        if not lists:
            for sample in root_samples:
                splits.setdefault(_split_of(sample.image.parent.relative_to(folder).parts), []).append(sample)
            continue
        by_id = {sample.image.stem: sample for sample in root_samples}
        for split, list_file in lists.items():
            lines = list_file.read_text(encoding="utf-8").splitlines()
            for image_id in (line.split()[0] for line in lines if line.strip()):
                if image_id in by_id:
                    splits.setdefault(split, []).append(by_id[image_id])
                else:
                    orphans.append((list_file, f"id {image_id} has no image"))
    return splits


def _voc_split_lists(root: Path) -> dict[str, Path]:
    sets_dir = root / "ImageSets" / "Main"
    lists = {s: sets_dir / f"{s}.txt" for s in SPLITS if (sets_dir / f"{s}.txt").is_file()}
    if "train" not in lists and (sets_dir / "trainval.txt").is_file():
        lists["train"] = sets_dir / "trainval.txt"
    return lists


def _split_of(words: Iterable[str]) -> str:
    """The split a path's folder names (or a file name's words) name: train/val/valid/test/...; else train."""
    return next((SPLIT_WORDS[w.lower()] for w in words if w.lower() in SPLIT_WORDS), "train")


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
        n_crowd, orphans, bad_category = 0, [], {}
        for ann in data.get("annotations", []):
            if ann.get("iscrowd"):
                n_crowd += 1
            elif ann["image_id"] not in rows:
                reason = f"annotation {ann.get('id')}: image_id {ann['image_id']} has no image in the json"
                orphans.append((json_path.resolve(), reason))
            elif ann.get("category_id") not in class_index:  # the image is skipped, not half-labelled
                bad_category.setdefault(ann["image_id"], ann.get("category_id"))
            else:
                rows[ann["image_id"]].append([class_index[ann["category_id"]], *_coco_xyxy(ann)])
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
        if i not in bad_category
    ]
    orphans += [
        ((image_dir / files[i]).resolve(), f"annotations: category_id {category} is not among the categories")
        for i, category in bad_category.items()
    ]
    notes = [f"{n_crowd} crowd annotations left out"] if n_crowd else []
    return DatasetSpec(
        names, image_dir.resolve(), json_path.resolve(), "coco", {"train": samples}, notes, orphans
    )


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


def find_coco_jsons(folder: Path) -> dict[str, Path]:
    """COCO json files of a folder by split: in it, in annotations/, or one per split folder (Roboflow).

    Names with ``instances`` or ``coco`` are preferred (COCO's annotations/ also holds captions, keypoints);
    the split is a word of the file name (``instances_val2017``) or its folder (``valid/``), else train.
    """
    found = sorted({*folder.glob("*.json"), *folder.glob("*/*.json")})
    found = [p for p in found if "instances" in p.name or "coco" in p.name.lower()] or found
    by_split: dict[str, list[Path]] = defaultdict(list)
    for json_path in found:
        folders = json_path.relative_to(folder).parent.parts
        words = [*re.split(r"[^a-z]+", json_path.stem.lower()), *folders]
        by_split[_split_of(words)].append(json_path)
    for split, paths in by_split.items():
        if len(paths) > 1:
            listed = ", ".join(p.name for p in paths)
            raise DataError(f"{folder}: {len(paths)} COCO json files for {split} ({listed}): pass one")
    return {split: paths[0] for split, paths in by_split.items()}


def read_coco_splits(folder: Path, jsons: dict[str, Path]) -> DatasetSpec:
    """One COCO json per split (same categories) read as one dataset rooted at `folder`."""
    specs = {split: read_coco(json_path) for split, json_path in jsons.items()}
    first_split, first = next(iter(specs.items()))
    for split, spec in specs.items():
        if spec.names != first.names:
            raise DataError(f"{jsons[split]}: its categories differ from those of {jsons[first_split]}")
    notes = [f"{split}: {note}" for split, spec in specs.items() for note in spec.notes]
    splits = {split: spec.splits["train"] for split, spec in specs.items()}
    orphans = [orphan for spec in specs.values() for orphan in spec.orphans]
    return DatasetSpec(first.names, folder.resolve(), folder.resolve(), "coco", splits, notes, orphans)
