"""benchmarks/class_subset.py: a dataset cut down to some of its classes, renumbered, for the study."""

from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

from yolo_transfer.data import LoadedDataset, Sample, ValidationReport


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
