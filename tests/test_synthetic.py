"""Built-in synthetic domains: valid YOLO datasets, deterministic, with a shift that does what it says."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from yolo_transfer.data import load_dataset
from yolo_transfer.data.synthetic import SOURCE_CLASSES, class_colour, domain_classes, make_domain
from yolo_transfer.errors import DataError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_TRANSFER_CACHE", str(tmp_path / "cache"))


def test_source_domain_is_a_clean_yolo_dataset(tmp_path):
    yaml_path = make_domain(tmp_path / "src", "source", n_images=40, imgsz=96, seed=0)
    spec = yaml.safe_load(yaml_path.read_text())
    assert spec["names"] == SOURCE_CLASSES and spec["nc"] == 4
    data = load_dataset(yaml_path)
    assert (len(data.train), len(data.val)) == (32, 8)  # fixed 20 % val split
    assert data.report.skipped == [] and data.report.repaired == []
    assert all((s.width, s.height) == (96, 96) for s in data.train + data.val)
    labels = np.concatenate([s.labels for s in data.train + data.val])
    assert set(labels[:, 0].astype(int)) == {0, 1, 2, 3}
    sides = np.sqrt(labels[:, 3] * labels[:, 4])
    assert sides.min() > 0.05 and sides.max() < 0.45  # objects 8-40 % of the image side, roughly
    per_image = [len(s.labels) for s in data.train]
    assert 1 <= np.mean(per_image) <= 5


def test_boxes_are_tight_around_the_drawn_objects(tmp_path):
    yaml_path = make_domain(tmp_path / "src", "source", n_images=10, imgsz=128, seed=1)
    data = load_dataset(yaml_path)
    for sample in data.train[:6]:
        image = cv2.imread(str(sample.image))
        for cls, xc, yc, w, h in sample.labels:
            colour = np.array(class_colour(SOURCE_CLASSES[int(cls)], "source", 0.0))
            box = np.array([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2]) * 128
            x1, y1, x2, y2 = box.round().astype(int)
            is_colour = np.abs(image.astype(int) - colour).max(-1) < 60
            inside = is_colour[y1:y2, x1:x2].sum()
            around = is_colour[max(y1 - 3, 0) : y2 + 3, max(x1 - 3, 0) : x2 + 3].sum()
            assert inside > 0.3 * (x2 - x1) * (y2 - y1), (
                f"{sample.image.name}: class {cls} box is mostly empty"
            )
            assert around - inside <= 0.05 * inside, f"{sample.image.name}: class {cls} object sticks out"


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = make_domain(tmp_path / "a", "target", n_images=6, imgsz=64, shift=0.7, seed=5)
    b = make_domain(tmp_path / "b", "target", n_images=6, imgsz=64, shift=0.7, seed=5)
    c = make_domain(tmp_path / "c", "target", n_images=6, imgsz=64, shift=0.7, seed=6)
    files = sorted(p.relative_to(a.parent) for p in a.parent.rglob("*.*") if p.name != "data.yaml")
    assert files and all((a.parent / f).read_bytes() == (b.parent / f).read_bytes() for f in files)
    assert any((a.parent / f).read_bytes() != (c.parent / f).read_bytes() for f in files)
    mtime = a.stat().st_mtime_ns
    assert make_domain(tmp_path / "a", "target", n_images=6, imgsz=64, shift=0.7, seed=5) == a
    assert a.stat().st_mtime_ns == mtime  # identical request: reused, not rewritten


def test_shift_controls_classes_colours_background_and_scale(tmp_path):
    assert domain_classes("target", 0.0) == SOURCE_CLASSES
    assert domain_classes("target", 0.5) == ["circle", "square", "triangle", "star"]
    assert domain_classes("target", 1.0) == ["circle", "square", "star", "hexagon"]
    assert class_colour("circle", "target", 0.0) == class_colour("circle", "source", 0.0)
    assert class_colour("circle", "target", 1.0) != class_colour("circle", "source", 0.0)

    def stats(domain: str, shift: float):
        data = load_dataset(
            make_domain(tmp_path / f"{domain}{shift}", domain, n_images=30, imgsz=96, shift=shift)
        )
        labels = np.concatenate([s.labels for s in data.train])
        images = np.stack([cv2.imread(str(s.image)) for s in data.train]).astype(float)
        return np.sqrt(labels[:, 3] * labels[:, 4]).mean(), images.mean(axis=(0, 1, 2))

    source_size, source_bgr = stats("source", 0.5)
    near_size, near_bgr = stats("target", 0.0)
    far_size, far_bgr = stats("target", 1.0)
    assert near_size == pytest.approx(source_size, rel=0.25)
    assert far_size < 0.75 * source_size  # objects shrink with the shift
    assert np.abs(near_bgr - source_bgr).max() < 15
    assert far_bgr[2] - far_bgr[0] > near_bgr[2] - near_bgr[0] + 15  # warmer (more red than blue) backgrounds


def test_bad_arguments_and_foreign_folders_are_refused(tmp_path):
    with pytest.raises(DataError, match="'source' or 'target'"):
        make_domain(tmp_path / "x", "middle")
    with pytest.raises(DataError, match="shift"):
        make_domain(tmp_path / "x", "target", shift=1.5)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        make_domain(tmp_path / "mine", "source", n_images=4, imgsz=64)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
