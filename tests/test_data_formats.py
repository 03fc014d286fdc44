"""Dataset readers: coco8 (YOLO yaml), raccoon and BCCD (VOC), COCO json, Roboflow-style yaml, convert."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import shared_path

from yolo_transfer.cli import main
from yolo_transfer.data import load_dataset
from yolo_transfer.data.formats import read_dataset, yolo_label_path
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.errors import DataError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("YOLO_TRANSFER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _label_rows(label_dir: Path) -> int:
    return sum(len(p.read_text().split("\n")) - 1 for p in label_dir.glob("*.txt"))


def test_coco8_counts():
    root = shared_path("data", "coco8")
    data = load_dataset(root / "coco8.yaml")
    assert len(data.names) == 80 and data.names[0] == "person" and data.names[79] == "toothbrush"
    assert (len(data.train), len(data.val), len(data.test)) == (4, 4, 0)
    counts = data.report.counts
    assert counts["splits"]["val"]["instances"] == 17  # SOURCE.txt: "the 4 val images (17 boxes)"
    assert counts["splits"]["train"]["instances"] == _label_rows(root / "labels" / "train")
    assert data.report.skipped == [] and data.report.repaired == [] and data.report.notes == []


def test_raccoon_voc_counts_and_val_split():
    data = load_dataset(shared_path("data", "raccoon"), val_fraction=0.2, seed=0)
    counts = data.report.counts
    assert data.names == ["raccoon"]
    assert counts["images"] == 200 and counts["instances"] == 217  # SOURCE.txt: 200 images, 217 boxes
    assert (len(data.train), len(data.val)) == (160, 40)
    assert any("no val split" in note for note in data.report.notes)
    grayscale = [e for e in data.report.repaired if "grayscale" in e["reason"]]
    assert len(grayscale) == 3 and data.report.skipped == []  # SOURCE.txt: 3 grayscale images
    again = load_dataset(shared_path("data", "raccoon"), val_fraction=0.2, seed=0)
    assert [s.image for s in again.val] == [s.image for s in data.val]  # the split is seeded
    other = load_dataset(shared_path("data", "raccoon"), val_fraction=0.2, seed=1)
    assert [s.image for s in other.val] != [s.image for s in data.val]


def test_bccd_voc_counts_splits_and_zero_area_boxes():
    data = load_dataset(shared_path("data", "bccd"))
    counts = data.report.counts
    assert data.names == ["Platelets", "RBC", "WBC"]
    assert (len(data.train), len(data.val), len(data.test)) == (205, 87, 72)  # ImageSets/Main
    # SOURCE.txt: 4888 boxes (RBC 4155, WBC 372, Platelets 361) of which 2 zero-area RBC boxes are dropped
    assert counts["instances_per_class"] == {"Platelets": 361, "RBC": 4155 - 2, "WBC": 372}
    repaired = {Path(e["file"]).stem: e["reason"] for e in data.report.repaired}
    assert set(repaired) == {"BloodImage_00338", "BloodImage_00343"}
    assert all("zero or negative size" in reason for reason in repaired.values())
    assert data.report.skipped == []
    sample = {s.image.stem: s for s in data.train}["BloodImage_00001"]
    assert (sample.width, sample.height) == (640, 480)
    xml = ET.parse(shared_path("data", "bccd", "BCCD", "Annotations", "BloodImage_00001.xml")).getroot()
    expected = []
    for obj in xml.iter("object"):  # VOC pixels are 1-based: one is subtracted from every coordinate
        x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}")) - 1 for k in ("xmin", "ymin", "xmax", "ymax"))
        cls = data.names.index(obj.findtext("name"))
        expected.append([cls, (x1 + x2) / 1280, (y1 + y2) / 960, (x2 - x1) / 640, (y2 - y1) / 480])
    np.testing.assert_allclose(sample.labels, expected, atol=1e-6)


@pytest.mark.parametrize("name, fmt", [("raccoon", "voc"), ("bccd", "voc")])
def test_convert_voc_writes_an_equivalent_yolo_dataset(name, fmt, tmp_path):
    source = load_dataset(shared_path("data", name))
    out = tmp_path / f"{name}-yolo"
    assert main(["data", "convert", "--format", fmt, str(shared_path("data", name)), "--out", str(out)]) == 0
    converted = load_dataset(out / "data.yaml")
    assert converted.names == source.names
    assert converted.report.counts["instances_per_class"] == source.report.counts["instances_per_class"]
    for split in ("train", "val", "test"):
        before, after = getattr(source, split), getattr(converted, split)
        assert len(before) == len(after)
        by_stem = {s.image.stem: s for s in after}
        for sample in before:
            np.testing.assert_allclose(by_stem[sample.image.stem].labels, sample.labels, atol=2e-6)
    assert json.loads((out / "report.json").read_text())["counts"]["images"] == source.report.counts["images"]


def _synthetic_as_coco(tmp_path: Path) -> tuple[Path, Path]:
    """A small synthetic YOLO dataset and the same data as COCO json (category ids 3, 7, ...; a bad bbox)."""
    yaml_path = make_domain(tmp_path / "yolo", "source", n_images=12, imgsz=64, seed=3)
    names = yaml.safe_load(yaml_path.read_text())["names"]
    cat_ids = [3 + 4 * i for i in range(len(names))]
    images, annotations = [], []
    for image_id, image in enumerate(sorted((tmp_path / "yolo" / "images").rglob("*.jpg"))):
        images.append(
            {"id": image_id, "file_name": f"{image.parent.name}/{image.name}", "width": 64, "height": 64}
        )
        for cls, xc, yc, w, h in np.loadtxt(yolo_label_path(image), ndmin=2):
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": image_id,
                    "category_id": cat_ids[int(cls)],
                    "bbox": [(xc - w / 2) * 64, (yc - h / 2) * 64, w * 64, h * 64],
                    "iscrowd": 0,
                }
            )
    annotations.append(
        {"id": len(annotations), "image_id": 0, "category_id": 3, "bbox": [1, 1, 9, 9], "iscrowd": 1}
    )
    annotations.append(
        {"id": len(annotations), "image_id": 1, "category_id": 3, "bbox": "oops", "iscrowd": 0}
    )
    categories = [{"id": i, "name": n} for i, n in zip(cat_ids, names, strict=True)][::-1]
    json_path = tmp_path / "yolo" / "images" / "instances.json"
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return yaml_path, json_path


def test_coco_json_matches_the_yolo_labels_and_converts(tmp_path):
    yaml_path, json_path = _synthetic_as_coco(tmp_path)
    images_sorted = sorted((tmp_path / "yolo" / "images").rglob("*.jpg"))
    yolo = load_dataset(yaml_path)
    coco = load_dataset(json_path, val_fraction=0.25)
    assert coco.names == yolo.names
    assert any("1 crowd" in note for note in coco.report.notes)
    assert len(coco.train) + len(coco.val) == 11
    assert [Path(e["file"]).name for e in coco.report.skipped] == [images_sorted[1].name]
    assert "annotations: NaN" in coco.report.skipped[0]["reason"]
    yolo_labels = {s.image.name: s.labels for s in yolo.train + yolo.val}
    for sample in coco.train + coco.val:
        np.testing.assert_allclose(sample.labels, yolo_labels[sample.image.name], atol=1e-5)

    out = tmp_path / "coco-yolo"
    assert main(["data", "convert", "--format", "coco", str(json_path), "--out", str(out)]) == 0
    converted = load_dataset(out / "data.yaml").report.counts
    assert (
        converted["instances"]
        == coco.report.counts["instances"]
        == yolo.report.counts["instances"] - len(yolo_labels[images_sorted[1].name])
    )


def test_roboflow_yaml_with_stale_path_and_dict_names(tmp_path):
    root = tmp_path / "export"
    yaml_path = make_domain(tmp_path / "plain", "source", n_images=10, imgsz=64)
    for split, folder in (
        ("train", "train"),
        ("val", "valid"),
    ):  # Roboflow layout: <split>/images, <split>/labels
        (root / folder).mkdir(parents=True)
        (tmp_path / "plain" / "images" / split).rename(root / folder / "images")
        (tmp_path / "plain" / "labels" / split).rename(root / folder / "labels")
    names = yaml.safe_load(yaml_path.read_text())["names"]
    spec = {
        "path": "/nonexistent/roboflow/export",
        "train": "../train/images",
        "val": "../valid/images",
        "nc": len(names),
        "names": dict(enumerate(names)),
    }
    (root / "data.yaml").write_text(yaml.safe_dump(spec))
    data = load_dataset(root / "data.yaml")
    assert data.names == names and (len(data.train), len(data.val)) == (8, 2)
    assert data.report.counts["instances"] > 0
    assert any("does not exist" in note for note in data.report.notes)


def test_yaml_image_lists_and_missing_val(tmp_path):
    yaml_path = make_domain(tmp_path / "d", "source", n_images=10, imgsz=64)
    train_images = sorted((tmp_path / "d" / "images" / "train").glob("*.jpg"))
    (tmp_path / "d" / "train.txt").write_text("".join(f"./images/train/{p.name}\n" for p in train_images[:5]))
    spec = yaml.safe_load(yaml_path.read_text())
    (tmp_path / "d" / "list.yaml").write_text(yaml.safe_dump({"train": "train.txt", "names": spec["names"]}))
    data = load_dataset(tmp_path / "d" / "list.yaml", val_fraction=0.2)
    assert (len(data.train), len(data.val)) == (4, 1)
    assert any("made one from 20%" in note for note in data.report.notes)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"train": "images/train", "val": "images/val", "nc": 3, "names": ["a", "b"]}, "nc=3 but 2 names"),
        ({"val": "images/val", "names": ["a"]}, "no 'train' entry"),
        ({"train": "images/nowhere", "names": ["a"]}, "train entry 'images/nowhere' not found"),
        ({"train": "images/train", "names": {0: "a", 2: "b"}}, "indices 0..1"),
        ({"train": "images/train"}, "'names' must be"),
    ],
)
def test_bad_yaml_is_one_clear_error(tmp_path, spec, message):
    make_domain(tmp_path / "d", "source", n_images=4, imgsz=64)
    (tmp_path / "d" / "bad.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(DataError, match=message) as err:
        read_dataset(tmp_path / "d" / "bad.yaml")
    assert "bad.yaml" in str(err.value)


def test_missing_or_unknown_dataset_paths(tmp_path):
    with pytest.raises(DataError, match="dataset not found"):
        load_dataset(tmp_path / "nothing.yaml")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="no data.yaml, and not a Pascal VOC folder"):
        load_dataset(tmp_path / "folder")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a COCO instances json"):
        load_dataset(tmp_path / "bad.json")
