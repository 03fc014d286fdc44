"""benchmarks/sensor_shift.py: a dataset seen through a simulated sensor (thermal-like, monochrome, night)."""

import cv2
import numpy as np
import pytest
import yaml
from conftest import load_benchmark

from yolo_transfer.data import load_dataset


@pytest.fixture(scope="module")
def sensor_shift():
    return load_benchmark("sensor_shift")


def test_thermal_like_inverts_luminance_at_lower_resolution_in_three_equal_channels(sensor_shift):
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 30:] = (255, 255, 255)  # dark left half, white right half
    image[10, 5] = (255, 255, 255)  # one bright pixel: averaged away at half resolution
    out = sensor_shift.thermal_like(image, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert out[:, :25, 0].mean() > 230 and out[:, 35:, 0].mean() < 25  # inverted
    assert out[10, 5, 0] > 150  # the single bright pixel does not survive as a dark one
    noise = out[:, :25, 0].astype(float) - 255
    assert 2 < noise.std() < 10  # sensor noise, clipped at white
    again = sensor_shift.thermal_like(image, np.random.default_rng(0))
    assert np.array_equal(out, again)


def test_monochrome_keeps_luminance_and_resolution_with_light_noise_in_three_equal_channels(sensor_shift):
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 30:] = (0, 0, 255)  # black left half, red right half (luminance 76)
    image[10, 5] = (255, 255, 255)  # one white pixel: kept at full resolution
    out = sensor_shift.monochrome(image, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert abs(out[:, 35:, 0].mean() - 76) < 1  # not inverted: red's luminance, not 255 - 76
    assert out[10, 5, 0] > 240
    assert 2 < out[:, 35:, 0].astype(float).std() < 4  # sensor noise of 3 grey levels
    assert np.array_equal(out, sensor_shift.monochrome(image, np.random.default_rng(0)))

    weak = sensor_shift.monochrome(image, np.random.default_rng(0), colour=0.2).astype(float)
    red = weak[:, 35:].mean(axis=(0, 1))  # a fifth of red's colour kept: 0.2 * (0, 0, 255) + 0.8 * 76
    assert np.allclose(red, (61, 61, 112), atol=1)
    assert np.array_equal(weak[..., 0], weak[..., 1])  # the same noise in every channel, as out's


def test_low_light_darkens_keeps_colour_and_adds_shot_noise_independent_per_channel(sensor_shift):
    image = np.full((60, 80, 3), 128, np.uint8)  # mid-grey on the left
    image[:, 40:] = (0, 0, 200)  # red on the right
    image[:10, :10] = 0  # a black corner
    out = sensor_shift.low_light(image, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    grey = out[10:, :40].astype(float)
    assert np.allclose(grey.mean(axis=(0, 1)), 0.6 * 128, atol=1)  # darker than by day, still grey
    assert 8.5 < grey.std() < 11.5  # 64 electrons of shot noise and 2 of read noise, times the gain 1.2
    noise = (grey - grey.mean(axis=(0, 1))).reshape(-1, 3)
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 0.1  # colour noise: each channel its own
    red = out[:, 45:].astype(float).mean(axis=(0, 1))
    assert red[0] < 2 and red[1] < 2 and abs(red[2] - 0.6 * 200) < 1.5  # the colour stays red
    assert out[:10, :10].mean() < 2  # black stays black: read noise only, clipped
    assert np.array_equal(out, sensor_shift.low_light(image, np.random.default_rng(0)))


def test_sensor_copy_keeps_labels_and_splits_and_leaves_the_source_alone(sensor_shift, tmp_path):
    source = tmp_path / "source"
    for split, colour in (("train", 40), ("val", 200)):
        (source / "images" / split).mkdir(parents=True)
        (source / "labels" / split).mkdir(parents=True)
        for index in range(2):
            image = np.full((32, 48, 3), colour, np.uint8)
            cv2.imwrite(str(source / "images" / split / f"{split}{index}.jpg"), image)
            (source / "labels" / split / f"{split}{index}.txt").write_text("1 0.5 0.5 0.25 0.5\n")
    spec = {"path": str(source), "train": "images/train", "val": "images/val", "names": ["person", "car"]}
    (source / "data.yaml").write_text(yaml.safe_dump(spec))
    before = sorted(p.read_bytes() for p in source.rglob("*") if p.is_file())

    out = sensor_shift.sensor_copy(source / "data.yaml", tmp_path / "thermal")
    copy = load_dataset(out)
    assert copy.names == ["person", "car"] and len(copy.train) == 2 and len(copy.val) == 2
    assert all(s.labels.tolist() == [[1, 0.5, 0.5, 0.25, 0.5]] for s in copy.train + copy.val)
    pixels = cv2.imread(str(copy.val[0].image))
    assert copy.val[0].image.suffix == ".png" and abs(pixels.mean() - 55) < 5  # 200 inverted
    assert yaml.safe_load(out.read_text())["path"] == str((tmp_path / "thermal").resolve())
    assert not (tmp_path / "thermal.partial").exists()
    assert sorted(p.read_bytes() for p in source.rglob("*") if p.is_file()) == before

    stamp = out.stat().st_mtime_ns
    again = sensor_shift.sensor_copy(source / "data.yaml", tmp_path / "thermal")  # reused, not rewritten
    assert again == out and out.stat().st_mtime_ns == stamp

    mono = load_dataset(sensor_shift.sensor_copy(source / "data.yaml", tmp_path / "mono", sensor="mono"))
    assert abs(cv2.imread(str(mono.val[0].image)).mean() - 200) < 2  # the same image, not inverted
    night = load_dataset(sensor_shift.sensor_copy(source / "data.yaml", tmp_path / "night", sensor="night"))
    assert abs(cv2.imread(str(night.val[0].image)).mean() - 0.6 * 200) < 2  # darker, not inverted
