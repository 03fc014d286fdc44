"""Augmentation and loaders: boxes stay on their objects, seeded determinism, rect batches, presets."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolo_transfer.data import Sample, build_dataloader, load_hyp
from yolo_transfer.data.augment import augment_hsv, box_candidates, mosaic4, random_perspective
from yolo_transfer.data.dataset import YoloDataset, collate, rect_batch_shapes
from yolo_transfer.errors import ConfigError

# one pure colour per class (BGR on disk); the background is dark grey, the letterbox/mosaic pad is 114 grey
CLASS_BGR = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255)]
BACKGROUND = 30


def _write_samples(folder: Path, n: int, seed: int = 0) -> list[Sample]:
    """PNG images (lossless) with 1-3 solid, non-overlapping rectangles whose colour gives their class."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        w, h = int(rng.integers(160, 320)), int(rng.integers(160, 320))
        image = np.full((h, w, 3), BACKGROUND, np.uint8)
        labels = []
        for k in range(int(rng.integers(1, 4))):
            cls = int(rng.integers(len(CLASS_BGR)))
            x1 = int(rng.integers(k * w // 3, k * w // 3 + w // 6))  # each object in its own third
            x2 = x1 + int(rng.integers(w // 12, w // 6))
            y1 = int(rng.integers(0, h // 2))
            y2 = y1 + int(rng.integers(h // 8, h // 2))
            image[y1:y2, x1:x2] = CLASS_BGR[cls]
            labels.append([cls, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h])
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), image)
        samples.append(Sample(path, np.array(labels, np.float32), w, h))
    return samples


def _colour_fraction(image_rgb: np.ndarray, box_xyxy: np.ndarray, cls: int) -> float | None:
    """Share of the pixels inside the box with the class colour; its 2 px rim (blended by resizing) is left
    out. None for boxes too small to judge."""
    x1, y1, x2, y2 = np.round(box_xyxy + [2, 2, -2, -2]).astype(int)
    if min(x2 - x1, y2 - y1) < 4:
        return None
    patch = image_rgb[y1:y2, x1:x2].astype(int)
    target = np.array(CLASS_BGR[cls][::-1])
    return float((np.abs(patch - target).max(-1) < 40).mean())


@pytest.mark.parametrize(
    "overrides, min_fraction, mean_fraction",
    [
        ({"mosaic": 1.0, "scale": 0.5, "translate": 0.1, "fliplr": 0.5, "flipud": 0.5}, 0.9, 0.97),
        ({"mosaic": 0.0, "scale": 0.5, "translate": 0.2, "fliplr": 0.5, "flipud": 0.5}, 0.9, 0.97),
        # rotated rectangles fill less of their boxes, least when cut by the image border
        ({"mosaic": 1.0, "scale": 0.3, "degrees": 15.0, "shear": 5.0}, 0.1, 0.75),
    ],
)
def test_augmented_boxes_cover_their_objects_pixels(tmp_path, overrides, min_fraction, mean_fraction):
    samples = _write_samples(tmp_path / "imgs", 12)
    hyp = load_hyp("none", **overrides)
    loader = build_dataloader(samples, 160, 6, augment=True, hyp=hyp, shuffle=True, seed=1)
    fractions = []
    for _ in range(2):
        for images, targets, _, _ in loader:
            for i, cls, xc, yc, w, h in targets.tolist():
                box = np.array([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2]) * images.shape[-1]
                fraction = _colour_fraction(images[int(i)].permute(1, 2, 0).numpy(), box, int(cls))
                if fraction is not None:
                    assert fraction >= min_fraction, f"box {box.round()} of class {cls}: only {fraction:.2f}"
                    fractions.append(fraction)
    assert len(fractions) >= 20 and np.mean(fractions) >= mean_fraction


def test_boxes_follow_a_left_right_flip(tmp_path):
    samples = _write_samples(tmp_path / "imgs", 4)
    plain = build_dataloader(samples, 160, 4, augment=True, hyp=load_hyp("none"), seed=0)
    flipped = build_dataloader(samples, 160, 4, augment=True, hyp=load_hyp("none", fliplr=1.0), seed=0)
    (img_a, tgt_a, _, _), (img_b, tgt_b, _, _) = next(iter(plain)), next(iter(flipped))
    assert torch.equal(img_a.flip(-1), img_b)
    np.testing.assert_allclose(tgt_b[:, 2], 1 - tgt_a[:, 2], atol=1e-6)
    np.testing.assert_allclose(tgt_b[:, 3:], tgt_a[:, 3:], atol=1e-6)


def test_loader_is_deterministic_with_a_seed(tmp_path):
    samples = _write_samples(tmp_path / "imgs", 10)
    hyp = load_hyp("high", degrees=5.0)

    def run(seed: int, workers: int = 0) -> list:
        loader = build_dataloader(
            samples, 128, 4, augment=True, hyp=hyp, shuffle=True, seed=seed, workers=workers
        )
        return [(images, targets, paths) for images, targets, paths, _ in loader]

    first, again, other = run(7), run(7), run(8)
    for (ia, ta, pa), (ib, tb, pb) in zip(first, again, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ta, tb) and pa == pb
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    with_workers, with_workers_again = run(7, workers=1), run(7, workers=1)
    for (ia, ta, _), (ib, tb, _) in zip(with_workers, with_workers_again, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ta, tb)
    # each worker draws its own augmentation stream (as in yolov5): another worker count, other batches
    assert [paths for _, _, paths in with_workers] == [paths for _, _, paths in first]  # same data order
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, with_workers, strict=True))


def _seed_worker(_: int) -> None:
    """A worker started for the epoch: its augmentation stream seeded from the loader's seed for it."""
    info = torch.utils.data.get_worker_info()
    info.dataset.rng = np.random.default_rng(info.seed)


@pytest.mark.parametrize("n_samples", [12, 11])  # whole batches, and a partial last one
def test_kept_workers_give_the_batches_of_workers_started_every_epoch(tmp_path, n_samples):
    # the plain loader: torch's shuffling DataLoader whose workers start anew each epoch, each seeded from the
    # loader's generator (worker k: the epoch's base seed + k); mosaic turned off before the last epoch
    samples = _write_samples(tmp_path / "imgs", n_samples)
    hyp = load_hyp("high", mixup=0.5)

    def epochs(loader, generator) -> tuple[list, torch.Tensor]:
        batches = []
        for epoch in range(3):
            loader.dataset.mosaic = epoch < 2
            batches += [(images, targets, paths) for images, targets, paths, _ in loader]
        return batches, generator.get_state()

    generator = torch.Generator().manual_seed(3)
    dataset = YoloDataset(samples, 128, augment=True, hyp=hyp, seed=3)
    plain = torch.utils.data.DataLoader(
        dataset, batch_size=4, shuffle=True, num_workers=2, collate_fn=collate, worker_init_fn=_seed_worker,
        generator=generator,
    )  # fmt: skip
    expected, expected_state = epochs(plain, generator)
    kept = build_dataloader(samples, 128, 4, augment=True, hyp=hyp, shuffle=True, seed=3, workers=2)
    assert kept.persistent_workers
    batches, state = epochs(kept, kept.batch_sampler.generator)
    assert len(batches) == len(expected) == 3 * -(-n_samples // 4)
    for (ia, ta, pa), (ib, tb, pb) in zip(batches, expected, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ta, tb) and pa == pb
    assert torch.equal(state, expected_state)  # what a resume state saves at an epoch's end


@pytest.mark.skipif(sys.platform != "linux", reason="loader workers are forked on Linux only")
def test_loader_workers_are_forked_whatever_the_process_default_with_the_same_batches(tmp_path):
    samples = _write_samples(tmp_path / "imgs", 8)
    hyp = load_hyp("low")
    loader = lambda: build_dataloader(  # noqa: E731
        samples, 128, 4, augment=True, hyp=hyp, shuffle=True, seed=3, workers=1
    )
    assert build_dataloader(samples, 128, 4, augment=True, hyp=hyp).multiprocessing_context is None
    forking = loader()
    assert forking.multiprocessing_context.get_start_method() == "fork"  # also where compare spawned the run
    forked = [(images, targets) for images, targets, _, _ in forking]
    spawning = loader()
    spawning.multiprocessing_context = multiprocessing.get_context("spawn")  # what a spawned run used to do
    spawned = [(images, targets) for images, targets, _, _ in spawning]
    for (ia, ta), (ib, tb) in zip(forked, spawned, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ta, tb)


def test_ram_cache_gives_the_same_batches(tmp_path):
    samples = _write_samples(tmp_path / "imgs", 6)
    kwargs = {"augment": True, "hyp": load_hyp("low"), "shuffle": True, "seed": 3}
    plain = list(build_dataloader(samples, 128, 3, **kwargs))
    cached = list(build_dataloader(samples, 128, 3, cache_ram=True, **kwargs))
    for a, b in zip(plain, cached, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_batches_come_rgb_and_channels_last_so_the_model_input_is_one_copy(tmp_path):
    samples = _write_samples(tmp_path / "imgs", 3)
    loader = build_dataloader(samples, 160, 3, augment=False, hyp=load_hyp("none"))
    images, targets, _, _ = next(iter(loader))
    assert images.shape == (3, 3, 160, 160) and images.is_contiguous(memory_format=torch.channels_last)
    assert images.contiguous(memory_format=torch.channels_last) is images  # the trainer's layout step is free
    for image_index, cls, xc, yc, _, _ in targets.tolist():  # each box's centre has its class colour, as RGB
        pixel = images[int(image_index), :, int(yc * 160), int(xc * 160)]
        assert pixel.tolist() == list(CLASS_BGR[int(cls)][::-1])


def test_rect_validation_batches_pad_half_a_stride(tmp_path):
    samples = _write_samples(tmp_path / "imgs", 9)
    loader = build_dataloader(samples, 320, 4, augment=False, hyp=load_hyp("low"), rect=True, pad=0.5)
    aspects = sorted(s.height / s.width for s in samples)
    seen = []
    for b, (images, targets, paths, shapes) in enumerate(loader):
        batch = aspects[4 * b : 4 * b + 4]
        lo, hi = min(batch), max(batch)
        hw = (hi, 1.0) if hi < 1 else (1.0, 1 / lo) if lo > 1 else (1.0, 1.0)
        expected = tuple(int(np.ceil(v * 320 / 32 + 0.5) * 32) for v in hw)
        assert tuple(images.shape[2:]) == expected
        for i, ((h0, w0), ((gain_h, gain_w), (pad_w, pad_h))) in enumerate(shapes):
            sample = next(s for s in samples if str(s.image) == paths[i])
            assert (h0, w0) == (sample.height, sample.width)
            assert gain_h == pytest.approx(320 / max(h0, w0), rel=0.01) == pytest.approx(gain_w, rel=0.01)
            assert 0 <= pad_w <= expected[1] / 2 and 0 <= pad_h <= expected[0] / 2
        assert targets[:, 0].max() < len(paths)
        seen += paths
    assert sorted(seen) == sorted(str(s.image) for s in samples)
    with pytest.raises(ConfigError, match="rect"):
        build_dataloader(samples, 320, 4, augment=False, hyp=load_hyp("low"), rect=True, shuffle=True)


def test_rect_batch_shapes_for_landscape_and_portrait():
    landscape = [Sample(Path("a"), np.zeros((0, 5), np.float32), 640, 480)] * 2
    portrait = [Sample(Path("b"), np.zeros((0, 5), np.float32), 480, 640)] * 2
    assert rect_batch_shapes(landscape, 640, 2, 32, 0.5) == [(512, 672)] * 2  # ceil(0.75*20+0.5)=16 -> 512
    assert rect_batch_shapes(portrait, 640, 2, 32, 0.0) == [(640, 480)] * 2


def test_close_mosaic_switches_to_letterboxed_single_images(tmp_path):
    samples = _write_samples(tmp_path / "imgs", 4)
    loader = build_dataloader(samples, 160, 4, augment=True, hyp=load_hyp("none", mosaic=1.0), seed=0)
    assert loader.dataset.mosaic
    loader.dataset.mosaic = False
    images, targets, paths, shapes = next(iter(loader))
    assert len(targets) == sum(len(s.labels) for s in samples) and all(s is not None for s in shapes)


def test_mosaic_places_four_tiles_around_the_centre():
    rng = np.random.default_rng(0)
    tiles = [
        (np.full((50, 80, 3), 10 * (k + 1), np.uint8), np.array([[k, 0, 0, 80, 50]], np.float32))
        for k in range(4)
    ]
    canvas, labels = mosaic4(tiles, 100, rng)
    assert canvas.shape == (200, 200, 3)
    for k, (_, x1, y1, x2, y2) in enumerate(labels):
        assert (canvas[int(y1) : int(y2), int(x1) : int(x2)] == 10 * (k + 1)).all()
    assert np.isclose(labels[0, 3], labels[1, 1]) and np.isclose(labels[0, 4], labels[2, 2])  # shared centre


def test_random_perspective_identity_and_box_filter():
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    labels = np.array([[1, 10, 10, 30, 40]], np.float32)
    out, out_labels = random_perspective(image, labels, np.random.default_rng(0), translate=0.0, scale=0.0)
    assert np.array_equal(out, image) and np.allclose(out_labels, labels)
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float).T
    after = np.array([[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 3, 3]], float).T
    assert box_candidates(before, after).tolist() == [True, False, False]  # too thin; lost 91% of its area


def test_hsv_with_zero_gains_is_identity_and_value_gain_keeps_hue():
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(augment_hsv(image, np.random.default_rng(0), 0, 0, 0), image)
    brighter = augment_hsv(image, np.random.default_rng(1), 0.0, 0.0, 0.9)
    hue_before = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[..., 0].astype(int)
    hue_after = cv2.cvtColor(brighter, cv2.COLOR_BGR2HSV)[..., 0].astype(int)
    saturated = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[..., 1] > 100
    assert np.median(np.abs(hue_after - hue_before)[saturated]) <= 2 and not np.array_equal(brighter, image)


def test_hyp_presets_mirror_the_reference_and_take_overrides(tmp_path):
    low, med, high, none = (load_hyp(p) for p in ("low", "med", "high", "none"))
    assert set(low) == set(med) == set(high) == set(none)
    assert (low["lrf"], low["scale"], low["mixup"], low["obj"], low["cls"]) == (0.01, 0.5, 0.0, 1.0, 0.5)
    assert (med["lrf"], med["scale"], med["mixup"], med["copy_paste"]) == (0.1, 0.9, 0.1, 0.0)
    assert (high["scale"], high["mixup"], high["copy_paste"], high["obj"]) == (0.9, 0.1, 0.1, 0.7)
    augmentation = (
        "hsv_h",
        "hsv_s",
        "hsv_v",
        "degrees",
        "translate",
        "scale",
        "shear",
        "perspective",
        "flipud",
        "fliplr",
        "mosaic",
        "mixup",
        "copy_paste",
    )
    assert all(none[k] == 0 for k in augmentation)
    assert all(none[k] == low[k] for k in low if k not in augmentation)
    assert low["close_mosaic"] == 0 and load_hyp(None) == low
    assert load_hyp("low", lr0=0.002, mosaic=None)["lr0"] == 0.002
    assert load_hyp("low", mosaic=None)["mosaic"] == 1.0
    custom = tmp_path / "hyp.yaml"
    custom.write_text("lr0: 0.003\nmixup: 0.2\n")
    assert (load_hyp(custom)["lr0"], load_hyp(custom)["mixup"], load_hyp(custom)["box"]) == (0.003, 0.2, 0.05)
    with pytest.raises(ConfigError, match="mosiac"):
        load_hyp("low", mosiac=0.5)
    with pytest.raises(ConfigError, match="not a preset"):
        load_hyp("extreme")
    custom.write_text("lr0: fast\n")
    with pytest.raises(ConfigError, match="lr0 must be a number"):
        load_hyp(custom)
