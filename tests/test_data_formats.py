"""Dataset readers: coco8 (YOLO yaml), raccoon and BCCD (VOC), COCO json, Roboflow-style yaml, convert."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
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
    (tmp_path / "folder" / "labels").mkdir(parents=True)
    (tmp_path / "folder" / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "folder" / "notes.xml").write_text("<config><name>x</name></config>")  # xml, but not VOC
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "folder")
    message = str(err.value)
    assert message.startswith(str(tmp_path / "folder")) and "\n" not in message
    assert all(word in message for word in ("data.yaml", "Pascal VOC .xml", "COCO instances .json"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a COCO instances json"):
        load_dataset(tmp_path / "bad.json")


# ------------------------------------------------------------------------------------------- VOC by content

VOC_NAMES = ["cat", "dog"]
VOC_BOXES = {  # image stem -> VOC objects (name, xmin, ymin, xmax, ymax), 1-based pixels of a 80x60 image
    "a1": [("cat", 11, 11, 41, 31)],
    "a2": [("dog", 21, 6, 61, 51), ("cat", 1, 1, 20, 20)],
    "a3": [("dog", 31, 21, 71, 56)],
    "a4": [("cat", 5, 5, 25, 45)],
}


def _voc_xml(filename: str, objects: list[tuple]) -> str:
    body = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
        f"<ymax>{y2}</ymax></bndbox></object>"
        for name, x1, y1, x2, y2 in objects
    )
    return (
        f"<annotation><folder>x</folder><filename>{filename}</filename>"
        f"<size><width>80</width><height>60</height><depth>3</depth></size>{body}</annotation>"
    )


def _expected_labels(objects: list[tuple]) -> np.ndarray:
    rows = []
    for name, x1, y1, x2, y2 in objects:
        x1, y1, x2, y2 = x1 - 1, y1 - 1, x2 - 1, y2 - 1
        rows.append([VOC_NAMES.index(name), (x1 + x2) / 160, (y1 + y2) / 120, (x2 - x1) / 80, (y2 - y1) / 60])
    return np.array(rows, np.float32)


def _write_voc(
    root: Path, image_dir: str, xml_dir: str, *, xml_stem=lambda s: s, split_of=lambda s: ""
) -> None:
    """The four VOC_BOXES images under ``root/<split>/<image_dir>``, their xml under ``<xml_dir>``."""
    for stem, objects in VOC_BOXES.items():
        split = split_of(stem)
        images, xmls = root / split / image_dir, root / split / xml_dir
        images.mkdir(parents=True, exist_ok=True)
        xmls.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / f"{stem}.jpg"), np.full((60, 80, 3), 90, np.uint8))
        (xmls / f"{xml_stem(stem)}.xml").write_text(_voc_xml(f"{stem}.jpg", objects))


def _assert_voc_samples(data, expected_splits: dict[str, set[str]] | None = None) -> None:
    assert data.names == VOC_NAMES and data.report.skipped == []
    samples = {s.image.stem: s for s in data.train + data.val + data.test}
    assert set(samples) == set(VOC_BOXES)
    for stem, objects in VOC_BOXES.items():
        np.testing.assert_allclose(samples[stem].labels, _expected_labels(objects), atol=1e-6)
    if expected_splits:
        for split, stems in expected_splits.items():
            assert {s.image.stem for s in getattr(data, split)} == stems


@pytest.mark.parametrize(
    "image_dir, xml_dir",
    [("images", "annots"), ("images", "labels"), ("JPEGImages", "Annotations"), ("images", "")],
    ids=["annots+images", "labels+images", "Annotations+JPEGImages", "xml-next-to-images"],
)
def test_voc_is_found_by_content(tmp_path, image_dir, xml_dir):
    _write_voc(tmp_path / "ds", image_dir, xml_dir)
    data = load_dataset(tmp_path / "ds", val_fraction=0.25)
    _assert_voc_samples(data)
    assert (len(data.train), len(data.val)) == (3, 1)


def test_voc_split_folders_and_image_from_filename(tmp_path):
    """Roboflow/Kaggle style: train/ and valid/ folders with xml next to the images, named otherwise."""
    splits = {"a1": "train", "a2": "train", "a3": "valid", "a4": "test"}
    _write_voc(tmp_path / "ds", "", "", xml_stem=lambda s: f"annotation_{s}", split_of=splits.get)
    (tmp_path / "ds" / "train" / "background.jpg").write_bytes((tmp_path / "ds/train/a1.jpg").read_bytes())
    (tmp_path / "ds" / "train" / "lost.xml").write_text(_voc_xml("nowhere.jpg", [("cat", 1, 1, 9, 9)]))
    data = load_dataset(tmp_path / "ds")
    assert {s.image.stem for s in data.train} == {"a1", "a2", "background"}
    assert {s.image.stem for s in data.val} == {"a3"} and {s.image.stem for s in data.test} == {"a4"}
    assert data.report.counts["backgrounds"] == 1
    assert [(Path(e["file"]).name, e["reason"]) for e in data.report.skipped] == [
        ("lost.xml", "annotation without an image")
    ]
    samples = {s.image.stem: s for s in data.train + data.val + data.test}
    for stem, objects in VOC_BOXES.items():
        np.testing.assert_allclose(samples[stem].labels, _expected_labels(objects), atol=1e-6)
    out = tmp_path / "converted"
    assert main(["data", "convert", "--format", "voc", str(tmp_path / "ds"), "--out", str(out)]) == 0
    converted = load_dataset(out / "data.yaml")
    assert converted.names == VOC_NAMES
    assert converted.report.counts["splits"] == data.report.counts["splits"]


def test_voc_image_found_by_filename_in_another_folder(tmp_path):
    """xml named otherwise than the image, in a separate folder: the image comes from <filename>."""
    _write_voc(tmp_path / "ds", "pictures", "xml", xml_stem=lambda s: f"{s}_labels")
    data = load_dataset(tmp_path / "ds", val_fraction=0.25)
    _assert_voc_samples(data)


def test_roboflow_coco_folder_with_split_jsons(tmp_path):
    """A folder of train/ and valid/ COCO exports (``_annotations.coco.json``) reads as one dataset."""
    yaml_path, json_path = _synthetic_as_coco(tmp_path)
    names = yaml.safe_load(yaml_path.read_text())["names"]
    data = json.loads(json_path.read_text())
    root = tmp_path / "export"
    for split, folder in (("train", "train"), ("val", "valid")):
        (root / folder).mkdir(parents=True)
        images = [im for im in data["images"] if im["file_name"].startswith(f"{split}/")]
        ids = {im["id"] for im in images}
        for im in images:
            (tmp_path / "yolo" / "images" / im["file_name"]).rename(
                root / folder / Path(im["file_name"]).name
            )
            im["file_name"] = Path(im["file_name"]).name
        export = {
            **data,
            "images": images,
            "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
        }
        (root / folder / "_annotations.coco.json").write_text(json.dumps(export))
    loaded = load_dataset(root)
    assert loaded.names == names
    assert len(loaded.train) + len(loaded.val) + len(loaded.report.skipped) == len(data["images"])
    assert len(loaded.report.skipped) == 1  # the bad bbox of _synthetic_as_coco
    assert {s.image.parent.name for s in loaded.val} == {"valid"} and loaded.val
    out = tmp_path / "converted"
    assert main(["data", "convert", "--format", "coco", str(root), "--out", str(out)]) == 0
    converted = load_dataset(out / "data.yaml")
    assert converted.report.counts["instances"] == loaded.report.counts["instances"]
    assert (len(converted.train), len(converted.val)) == (len(loaded.train), len(loaded.val))


def test_folder_with_one_dataset_yaml_of_another_name():
    data = load_dataset(shared_path("data", "coco8"))  # coco8/coco8.yaml, no data.yaml
    assert (len(data.train), len(data.val)) == (4, 4)
