"""benchmarks/object_scale.py: a dataset with its objects larger (cropped) or smaller (shrunk on a canvas)."""

import cv2
import numpy as np
import pytest
import yaml
from conftest import load_benchmark

from yolo_transfer.data import load_dataset


@pytest.fixture(scope="module")
def object_scale():
    return load_benchmark("object_scale")


def test_crop_window_is_a_square_around_the_largest_box_inside_the_image(object_scale):
    # 1000 x 600 image: a 100 x 60 box at (200, 300) and a larger 160 x 200 box at (900, 500)
    labels = np.array([[0, 0.2, 0.5, 0.1, 0.1], [1, 0.9, 500 / 600, 0.16, 200 / 600]], np.float32)
    x0, y0, x1, y1 = object_scale.crop_window(labels, 1000, 600, margin=1.5, min_side=100)
    assert x1 - x0 == y1 - y0 == 300  # 1.5 x the larger box's longer side (200)
    assert (x0, y0, x1, y1) == (700, 300, 1000, 600)  # centred on it, then moved inside the image
    assert object_scale.crop_window(labels, 1000, 600, margin=1.5, min_side=400)[2:] == (1000, 600)
    assert object_scale.crop_window(labels, 1000, 600, margin=10.0, min_side=100) == (400, 0, 1000, 600)


def test_clip_labels_renormalises_to_the_crop_and_drops_boxes_mostly_outside(object_scale):
    window = (100, 100, 300, 300)  # a 200 px square of a 400 x 400 image
    labels = np.array(
        [
            [2, 0.5, 0.5, 0.1, 0.1],  # 40 px box at the crop's centre: kept whole
            [3, 0.25, 0.5, 0.1, 0.1],  # from 80 to 120 px in x: half inside, clipped to 100-120
            [4, 0.24, 0.5, 0.1, 0.1],  # from 76 to 116 px: 16 of 40 px inside (0.4 >= 0.25), clipped
            [5, 0.22, 0.5, 0.1, 0.1],  # from 68 to 108 px: 8 of 40 px inside (0.2 < 0.25), dropped
            [1, 0.9, 0.9, 0.1, 0.1],  # outside
        ],
        np.float32,
    )
    clipped = object_scale.clip_labels(labels, 400, 400, window)
    assert clipped[:, 0].tolist() == [2, 3, 4]
    assert np.allclose(clipped[0, 1:], [0.5, 0.5, 0.2, 0.2])
    assert np.allclose(clipped[1, 1:], [0.05, 0.5, 0.1, 0.2])
    assert np.allclose(clipped[2, 1:], [0.04, 0.5, 0.08, 0.2])


def _source_with_a_centred_object(root):
    source = root / "source"
    for split in ("train", "val"):
        (source / "images" / split).mkdir(parents=True)
        (source / "labels" / split).mkdir(parents=True)
        for index in range(2):
            image = np.zeros((400, 600, 3), np.uint8)
            image[180:220, 280:320] = (0, 0, 255)  # the object: a red 40 px square at the centre
            cv2.imwrite(str(source / "images" / split / f"{split}{index}.png"), image)
            (source / "labels" / split / f"{split}{index}.txt").write_text("1 0.5 0.5 0.0666667 0.1\n")
    cv2.imwrite(str(source / "images" / "train" / "empty.png"), np.zeros((400, 600, 3), np.uint8))
    spec = {"path": str(source), "train": "images/train", "val": "images/val", "names": ["person", "car"]}
    (source / "data.yaml").write_text(yaml.safe_dump(spec))
    return source


def test_scaled_copy_crops_every_labelled_image_and_leaves_the_source_alone(object_scale, tmp_path):
    source = _source_with_a_centred_object(tmp_path)
    before = sorted(p.read_bytes() for p in source.rglob("*") if p.is_file())

    out = object_scale.scaled_copy(source / "data.yaml", tmp_path / "zoom", margin=2.0, min_side=80)
    copy = load_dataset(out)
    assert copy.names == ["person", "car"] and len(copy.train) == 2 and len(copy.val) == 2  # empty left out
    for sample in copy.train + copy.val:
        assert (sample.width, sample.height) == (80, 80)  # 2 x 40 px
        assert np.allclose(sample.labels, [[1, 0.5, 0.5, 0.5, 0.5]], atol=1e-3)
        pixels = cv2.imread(str(sample.image))
        assert pixels[40, 40].tolist() == [0, 0, 255] and pixels[5, 5].tolist() == [0, 0, 0]
    assert yaml.safe_load(out.read_text())["path"] == str((tmp_path / "zoom").resolve())
    assert not (tmp_path / "zoom.partial").exists() and not (tmp_path / "zoom.crops").exists()
    assert sorted(p.read_bytes() for p in source.rglob("*") if p.is_file()) == before

    stamp = out.stat().st_mtime_ns
    assert object_scale.scaled_copy(source / "data.yaml", tmp_path / "zoom") == out  # reused, not rewritten
    assert out.stat().st_mtime_ns == stamp


def test_zoom_out_shrinks_the_image_onto_a_mean_coloured_canvas_and_moves_the_boxes(object_scale):
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :100] = (200, 100, 0)  # left half coloured: the mean colour is (100, 50, 0)
    labels = np.array([[0, 0.25, 0.5, 0.5, 1.0], [1, 0.75, 0.25, 0.1, 0.2]], np.float32)
    out, moved = object_scale.zoom_out(image, labels, 2.0, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    width, height = 100, 50  # the shrunk image
    x0 = int(np.argmax((out[:, :, 0] == 200).any(axis=0)))  # where its coloured half starts
    y0 = int(np.argmax((out[:, :, 0] == 200).any(axis=1)))
    assert (out[y0 : y0 + height, x0 : x0 + width // 2] == (200, 100, 0)).all()
    assert (out[y0 : y0 + height, x0 + width // 2 : x0 + width] == 0).all()
    outside = np.ones(out.shape[:2], bool)
    outside[y0 : y0 + height, x0 : x0 + width] = False
    assert (out[outside] == (100, 50, 0)).all()
    expected = [
        [0, (x0 + 25) / 200, (y0 + 25) / 100, 0.25, 0.5],  # the coloured half, half as large
        [1, (x0 + 75) / 200, (y0 + 12.5) / 100, 0.05, 0.1],
    ]
    assert np.allclose(moved, expected)
    again = object_scale.zoom_out(image, labels, 2.0, np.random.default_rng(0))
    assert np.array_equal(again[0], out) and np.array_equal(again[1], moved)


def test_scaled_copy_zoomed_out_keeps_every_box_at_half_the_size(object_scale, tmp_path):
    source = _source_with_a_centred_object(tmp_path)
    out = object_scale.scaled_copy(source / "data.yaml", tmp_path / "out", zoom="out", ratio=2.0)
    copy = load_dataset(out)
    assert len(copy.train) == 2 and len(copy.val) == 2  # the unlabelled image left out, as zooming in does
    for sample in copy.train + copy.val:
        assert (sample.width, sample.height) == (600, 400)
        assert np.allclose(sample.labels[:, [0, 3, 4]], [[1, 0.0333333, 0.05]], atol=1e-4)
        xc, yc = sample.labels[0, 1] * 600, sample.labels[0, 2] * 400
        pixels = cv2.imread(str(sample.image))
        assert pixels[round(yc), round(xc)].tolist() == [0, 0, 255]  # the red object is where its box is
    positions = {tuple(sample.labels[0, 1:3].round(3)) for sample in copy.train + copy.val}
    assert len(positions) > 1  # a place drawn per image
