"""Write a validated dataset (read from VOC or COCO) as a YOLO dataset: images/, labels/ and data.yaml."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from yolo_transfer.data.validate import LoadedDataset, Sample
from yolo_transfer.errors import DataError


def write_yolo_dataset(data: LoadedDataset, out: str | Path) -> Path:
    """Copy every usable image into ``out/images/<split>/``, write its labels and data.yaml; return the yaml.

    Images are copied byte for byte (EXIF included), so the labels, which refer to the EXIF-corrected image,
    stay right. Repeated file names get a numbered suffix.
    """
    out = Path(out)
    if out.resolve() == data.root.resolve() or data.root.resolve() in out.resolve().parents:
        raise DataError(f"{out}: the output folder must not be inside the source dataset {data.root}")
    splits = {"train": data.train, "val": data.val, "test": data.test}
    for split, samples in splits.items():
        if samples:
            _write_split(samples, out / "images" / split, out / "labels" / split)
    spec = {
        "path": str(out.resolve()),
        **{s: f"images/{s}" for s, v in splits.items() if v},
        "nc": data.nc,
        "names": data.names,
    }
    yaml_path = out / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return yaml_path


def move_yolo_dataset(source: str | Path, target: str | Path) -> Path:
    """Move a dataset written by ``write_yolo_dataset`` from ``source`` to ``target`` (a finished copy put in
    place in one step) and point its data.yaml at the new root; return that yaml."""
    source, target = Path(source), Path(target)
    source.rename(target)
    yaml_path = target / "data.yaml"
    spec = yaml.safe_load(yaml_path.read_text())
    spec["path"] = str(target.resolve())
    yaml_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return yaml_path


def _write_split(samples: list[Sample], image_dir: Path, label_dir: Path) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for sample in samples:
        stem, n = sample.image.stem, 1
        while stem in used:
            stem, n = f"{sample.image.stem}_{n}", n + 1
        used.add(stem)
        shutil.copy2(sample.image, image_dir / f"{stem}{sample.image.suffix}")
        rows = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in sample.labels.tolist()]
        (label_dir / f"{stem}.txt").write_text("".join(row + "\n" for row in rows))
