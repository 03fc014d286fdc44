"""benchmarks/class_subset.py: a dataset cut down to some of its classes, renumbered, for the study."""

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

from yolo_transfer.data import LoadedDataset, Sample, ValidationReport, load_dataset
from yolo_transfer.data.synthetic import make_domain


@pytest.fixture(scope="module")
def class_subset():
    return load_benchmark("class_subset")


def sample(name: str, classes: list[int]) -> Sample:
    labels = np.array([[c, 0.5, 0.5, 0.1, 0.1] for c in classes], dtype=np.float32).reshape(-1, 5)
    return Sample(Path(f"{name}.jpg"), labels, 64, 64)


def test_keep_classes_renumbers_in_the_given_order_and_leaves_out_images_without_them(class_subset):
    names = ["boat", "car", "dock"]
    data = LoadedDataset(
        names, Path("."), Path("d.yaml"),
        train=[sample("mixed", [0, 2, 1]), sample("dock", [2]), sample("empty", [])],
        val=[sample("car", [1])], test=[], report=ValidationReport(names),
    )  # fmt: skip
    kept = class_subset.keep_classes(data, ["car", "boat"])
    assert kept.names == ["car", "boat"]
    assert [s.image.stem for s in kept.train] == ["mixed"] and [s.image.stem for s in kept.val] == ["car"]
    assert kept.train[0].labels[:, 0].tolist() == [1, 0]  # boat -> 1, car -> 0; the dock box is gone
    assert kept.val[0].labels[:, 0].tolist() == [0]
    assert data.train[0].labels[:, 0].tolist() == [0, 2, 1]  # the source is not changed


def test_keep_classes_names_a_class_the_dataset_lacks(class_subset):
    data = LoadedDataset(["boat"], Path("."), Path("d.yaml"), [], [], [], ValidationReport(["boat"]))
    with pytest.raises(ValueError, match="d.yaml: no class car"):
        class_subset.keep_classes(data, ["car"])


def test_keep_classes_renames_a_kept_class(class_subset):
    names = ["license-plate", "vehicle"]
    data = LoadedDataset(
        names, Path("."), Path("d.yaml"),
        train=[sample("both", [0, 1]), sample("plate", [0])], val=[], test=[], report=ValidationReport(names),
    )  # fmt: skip
    kept = class_subset.keep_classes(data, ["vehicle"], {"vehicle": "car"})
    assert kept.names == ["car"]  # the name COCO knows it by: the label-overlap check and the head transfer
    assert [s.image.stem for s in kept.train] == ["both"] and kept.train[0].labels[:, 0].tolist() == [0]


def test_command_line_renames_with_old_equals_new(class_subset, tmp_path, monkeypatch):
    source = make_domain(tmp_path / "source", "source", n_images=6, imgsz=64, shift=0.0)
    first = load_dataset(source).names[0]
    argv = ["class_subset.py", str(source), "--classes", f"{first}=car", "--out", str(tmp_path / "cut")]
    monkeypatch.setattr(sys, "argv", argv)
    class_subset.main()
    assert load_dataset(tmp_path / "cut" / "data.yaml").names == ["car"]
