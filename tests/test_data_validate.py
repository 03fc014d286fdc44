"""Per-file validation: a corrupt corpus covering every rule, the label parser under hypothesis, the cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from yolo_transfer.cli import main
from yolo_transfer.data import build_dataloader, load_dataset, load_hyp
from yolo_transfer.data import validate as validate_module
from yolo_transfer.data.formats import read_dataset
from yolo_transfer.data.validate import parse_label_text, validate_dataset
from yolo_transfer.errors import DataError, LabelError

NAMES = ["red", "green", "blue"]
COLOURS_BGR = [(0, 0, 220), (0, 200, 0), (220, 0, 0)]
GOOD_LABEL = "0 0.5 0.5 0.4 0.4\n"

# image problems: file name -> (skipped | repaired, words the reason must contain)
IMAGE_RULES = {
    "unreadable.jpg": ("skipped", "unreadable"),
    "zero_byte.jpg": ("skipped", "zero-byte"),
    "truncated.jpg": ("skipped", "truncated JPEG"),
    "truncated_end.jpg": ("repaired", "truncated JPEG (no end-of-image marker): decoded and re-saved"),
    "animation.gif": ("skipped", "unsupported"),
    "exif_rotated.jpg": ("repaired", "EXIF orientation 6"),
    "grayscale.png": ("repaired", "grayscale"),
    "rgba.png": ("repaired", "RGBA"),
    "deep16.png": ("repaired", "16-bit"),
}
# label problems: stem -> (label text, skipped | repaired, words the reason must contain)
LABEL_RULES = {
    "four_columns": ("0 0.5 0.5 0.2\n", "skipped", "4 columns"),
    "non_numeric": ("0 0.5 abc 0.2 0.2\n", "skipped", "non-numeric"),
    "nan_value": ("0 nan 0.5 0.2 0.2\n", "skipped", "NaN or infinite"),
    "inf_value": ("1 0.5 0.5 inf 0.2\n", "skipped", "NaN or infinite"),
    "far_outside": ("0 1.4 0.5 0.2 0.2\n", "skipped", "outside the image"),
    "class_too_big": ("3 0.5 0.5 0.2 0.2\n", "skipped", "class id 3"),
    "slightly_outside": ("0 0.5 0.5 1.02 0.3\n", "repaired", "clipped"),
    "zero_size": ("0 0.5 0.5 0 0.2\n1 0.3 0.3 0.2 0.2\n", "repaired", "zero or negative size"),
    "negative_size": ("0 0.5 0.5 -0.2 0.2\n1 0.3 0.3 0.2 0.2\n", "repaired", "zero or negative size"),
    "duplicates": ("2 0.3 0.3 0.2 0.2\n2 0.3 0.3 0.2 0.2\n0 0.7 0.7 0.2 0.2\n", "repaired", "1 duplicate"),
}


def _coloured_image(cls: int, size=(64, 48)) -> np.ndarray:
    """A dark image with one object of the class colour where GOOD_LABEL puts it."""
    w, h = size
    image = np.full((h, w, 3), 40, np.uint8)
    cv2.rectangle(image, (int(0.3 * w), int(0.3 * h)), (int(0.7 * w), int(0.7 * h)), COLOURS_BGR[cls], -1)
    return image


def _textured_jpeg(size=(160, 120)) -> bytes:
    """A JPEG of smooth noise (every block has detail), with the class-0 object where GOOD_LABEL puts it."""
    noise = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    image = cv2.GaussianBlur(noise, (5, 5), 0)
    w, h = size
    cv2.rectangle(image, (int(0.3 * w), int(0.3 * h)), (int(0.7 * w), int(0.7 * h)), COLOURS_BGR[0], -1)
    return cv2.imencode(".jpg", image)[1].tobytes()


def make_corrupt_corpus(root: Path) -> Path:
    """A YOLO dataset where every validation rule is hit by exactly one file, plus good images."""
    images, labels = root / "images" / "train", root / "labels" / "train"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for i in range(8):  # good images, a few per split
        split = "val" if i >= 6 else "train"
        cls = i % 3
        cv2.imwrite(str(root / "images" / split / f"good{i}.jpg"), _coloured_image(cls))
        (root / "labels" / split / f"good{i}.txt").write_text(GOOD_LABEL.replace("0", str(cls), 1))
    good_jpeg = (images / "good0.jpg").read_bytes()
    (images / "unreadable.jpg").write_text("this is not an image")
    (images / "zero_byte.jpg").write_bytes(b"")
    (images / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
    (images / "truncated_end.jpg").write_bytes(_textured_jpeg()[:-5])  # a few bytes missing at the end
    Image.new("RGB", (32, 32), (255, 0, 0)).save(images / "animation.gif")
    exif_image = Image.fromarray(np.ascontiguousarray(_coloured_image(0)[:, :, ::-1]))
    exif = exif_image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    exif_image.save(images / "exif_rotated.jpg", exif=exif.tobytes())
    cv2.imwrite(str(images / "grayscale.png"), cv2.cvtColor(_coloured_image(1), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(images / "rgba.png"), cv2.cvtColor(_coloured_image(2), cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(images / "deep16.png"), _coloured_image(0).astype(np.uint16) * 256)
    for name in IMAGE_RULES:
        (labels / f"{Path(name).stem}.txt").write_text(GOOD_LABEL)
    for stem, (text, _, _) in LABEL_RULES.items():
        cv2.imwrite(str(images / f"{stem}.jpg"), _coloured_image(0))
        (labels / f"{stem}.txt").write_text(text)
    cv2.imwrite(str(images / "empty_label.jpg"), np.full((48, 64, 3), 40, np.uint8))
    (labels / "empty_label.txt").write_text("\n")
    cv2.imwrite(str(images / "missing_label.jpg"), np.full((48, 64, 3), 40, np.uint8))
    cv2.imwrite(str(images / "polygon.jpg"), _coloured_image(1))
    (labels / "polygon.txt").write_text("1 0.3 0.3 0.7 0.3 0.7 0.7 0.3 0.7\n")
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"train": "images/train", "val": "images/val", "names": NAMES}))
    return data_yaml


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("YOLO_TRANSFER_CACHE", str(path))
    return path


@pytest.fixture
def corpus(tmp_path, cache_dir) -> Path:
    return make_corrupt_corpus(tmp_path / "corpus")


def _by_file(entries: list[dict]) -> dict[str, list[str]]:
    by_file: dict[str, list[str]] = {}
    for entry in entries:
        by_file.setdefault(Path(entry["file"]).name, []).append(entry["reason"])
    return by_file


def test_corrupt_corpus_reports_every_rule_once_and_keeps_the_rest(corpus):
    data = load_dataset(corpus)
    report = data.report
    skipped, repaired = _by_file(report.skipped), _by_file(report.repaired)
    expected = {name: rule for name, rule in IMAGE_RULES.items()}
    expected |= {f"{stem}.txt": (kind, words) for stem, (_, kind, words) in LABEL_RULES.items()}
    for file, (kind, words) in expected.items():
        found = skipped if kind == "skipped" else repaired
        assert len(found.get(file, [])) == 1, f"{file}: expected one {kind} entry, got {found.get(file)}"
        assert words in found[file][0], f"{file}: '{words}' not in '{found[file][0]}'"
    assert set(skipped) | set(repaired) == set(expected)  # nothing else is reported

    n_skipped = sum(kind == "skipped" for kind, _ in expected.values())
    n_train_files = len(list((corpus.parent / "images" / "train").iterdir()))
    assert len(data.train) == n_train_files - n_skipped
    assert len(data.val) == 2
    assert report.counts["missing_labels"] == 1 and report.counts["empty_labels"] == 1
    assert report.counts["backgrounds"] == 2

    samples = {s.image.name: s for s in data.train}
    assert (samples["exif_rotated.jpg"].width, samples["exif_rotated.jpg"].height) == (48, 64)
    assert len(samples["zero_size.jpg"].labels) == 1 and len(samples["negative_size.jpg"].labels) == 1
    assert len(samples["duplicates.jpg"].labels) == 2
    clipped = samples["slightly_outside.jpg"].labels[0]
    assert clipped[3] == pytest.approx(1.0) and clipped[1] == pytest.approx(0.5)
    np.testing.assert_allclose(samples["polygon.jpg"].labels, [[1, 0.5, 0.5, 0.4, 0.4]], atol=1e-6)
    assert "skipped" in report.summary_line()

    loader = build_dataloader(data.train, 64, 4, augment=True, hyp=load_hyp("low"), shuffle=True, seed=0)
    n_images = 0
    for images, targets, paths, _ in loader:
        assert images.shape[1:] == (3, 64, 64) and images.dtype == torch.uint8
        assert targets.shape[1] == 6 and (targets[:, 0] < len(paths)).all()
        assert ((targets[:, 2:] >= 0) & (targets[:, 2:] <= 1)).all()
        n_images += len(images)
    assert n_images == len(data.train)


def test_check_command_writes_report_with_every_file(corpus, tmp_path, capsys):
    out = tmp_path / "check"
    assert main(["data", "check", str(corpus), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    n_skipped = sum(kind == "skipped" for kind, _ in IMAGE_RULES.values())
    n_skipped += sum(kind == "skipped" for _, kind, _ in LABEL_RULES.values())
    assert len(report["skipped"]) == n_skipped
    assert all(set(entry) == {"file", "reason"} for entry in report["skipped"] + report["repaired"])
    assert report["counts"]["images"] == len(load_dataset(corpus).train) + 2
    assert report["counts"]["instances_per_class"]["red"] > 0
    assert "skipped" in capsys.readouterr().out


def test_nothing_usable_is_one_error_line_and_exit_2(tmp_path, cache_dir, capsys):
    root = tmp_path / "broken"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "images" / split / "a.jpg").write_bytes(b"")
    (root / "data.yaml").write_text(
        yaml.safe_dump({"train": "images/train", "val": "images/val", "nc": 1, "names": ["x"]})
    )
    assert main(["data", "check", str(root / "data.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no usable train images" in err and "\n" not in err
    with pytest.raises(DataError, match="no usable train images"):
        load_dataset(root / "data.yaml")


def test_short_training_run_on_the_rest_of_the_corpus(corpus, tmp_path):
    from yolo_transfer.engine.trainer import TrainConfig, train
    from yolo_transfer.strategies import load_strategy

    config = TrainConfig(
        data=str(corpus),
        out=tmp_path / "run",
        cfg="yolov5n",
        epochs=1,
        imgsz=64,
        batch=4,
        hyp="low",
        workers=0,
        seed=0,
        noplots=True,
    )
    summary = train(config, load_strategy("full", epochs=1))
    assert summary["epochs"] == 1
    assert (tmp_path / "run" / "weights" / "last.safetensors").is_file()
    rows = (tmp_path / "run" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 2  # header + one epoch


label_token = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-3, 5).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0.5", "1.0", "0", "x", "1,5", "0x10", "１"]),
    st.text(max_size=4),
)
near_valid_row = st.tuples(st.integers(-1, 4), *[st.floats(-0.1, 1.2) for _ in range(4)]).map(
    lambda row: " ".join(map(str, row))
)
label_text = st.one_of(
    st.text(),
    st.lists(st.lists(label_token, max_size=9).map(" ".join), max_size=6).map("\n".join),
    st.lists(near_valid_row, max_size=6).map("\n".join),
)


@settings(max_examples=400, deadline=None)
@given(label_text)
def test_label_parser_raises_only_label_error(text):
    try:
        labels, repairs = parse_label_text(text, nc=3, source="x.txt")
    except LabelError as err:
        assert str(err).startswith("x.txt") and "\n" not in str(err)
        return
    assert labels.dtype == np.float32 and labels.shape[1] == 5
    assert np.isfinite(labels).all()
    assert ((labels[:, 0] >= 0) & (labels[:, 0] < 3)).all()
    assert ((labels[:, 1:] >= 0) & (labels[:, 1:] <= 1)).all() and (labels[:, 3:] > 0).all()
    assert all(isinstance(r, str) for r in repairs)


def test_cache_reuses_results_and_rechecks_changed_files(corpus, cache_dir, monkeypatch):
    dataset_files_before = sorted(p for p in corpus.parent.rglob("*"))
    calls: list[str] = []
    real_check = validate_module.check_sample

    def counting_check(raw, names, repair_dir):
        calls.append(raw.image.name)
        return real_check(raw, names, repair_dir)

    monkeypatch.setattr(validate_module, "check_sample", counting_check)
    first = validate_dataset(read_dataset(corpus))
    n_files = len(calls)
    assert n_files == len(first.train) + len(first.val) + len(first.report.skipped)
    assert list(cache_dir.rglob("*.json")), "the cache is written under $YOLO_TRANSFER_CACHE"

    calls.clear()
    again = validate_dataset(read_dataset(corpus))
    assert calls == []
    assert again.report.to_dict() == first.report.to_dict()

    label = corpus.parent / "labels" / "train" / "good0.txt"
    label.write_text("1 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n")  # new size
    changed = validate_dataset(read_dataset(corpus))
    assert calls == ["good0.jpg"]
    assert len({s.image.name: s for s in changed.train}["good0.jpg"].labels) == 2

    calls.clear()
    image = corpus.parent / "images" / "train" / "good1.jpg"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # same size, new mtime
    validate_dataset(read_dataset(corpus))
    assert calls == ["good1.jpg"]
    assert sorted(p for p in corpus.parent.rglob("*")) == dataset_files_before  # nothing written there


@pytest.mark.parametrize("missing", [2, 5, 40])
def test_truncated_jpeg_is_repaired_into_the_cache_not_the_dataset(tmp_path, cache_dir, missing):
    """A JPEG with its last bytes missing decodes: it is re-saved under the cache and trains from there."""
    root = tmp_path / "d"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        cv2.imwrite(str(root / "images" / split / "good.jpg"), _coloured_image(0))
        (root / "labels" / split / "good.txt").write_text(GOOD_LABEL)
    whole = _textured_jpeg()
    broken = root / "images" / "train" / "broken.jpg"
    broken.write_bytes(whole[:-missing])
    (root / "labels" / "train" / "broken.txt").write_text(GOOD_LABEL)
    (root / "data.yaml").write_text(
        yaml.safe_dump({"train": "images/train", "val": "images/val", "names": NAMES})
    )
    files_before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    data = load_dataset(root / "data.yaml")
    assert data.report.skipped == []
    assert [e["file"] for e in data.report.repaired] == [str(broken)]
    sample = {s.image.name: s for s in data.train}["broken.jpg"]
    assert sample.image != broken and sample.image.is_relative_to(cache_dir / "repaired")
    assert (sample.width, sample.height) == (160, 120)
    repaired = cv2.imread(str(sample.image))
    original = cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(repaired.astype(int) - original).mean() < 2.0  # the same picture, re-encoded at quality 100
    assert sample.image.read_bytes().endswith(b"\xff\xd9")
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == files_before  # dataset untouched

    sample.image.unlink()  # a cleared repair folder: the cached entry is not trusted, the copy is made again
    again = {s.image.name: s for s in load_dataset(root / "data.yaml").train}["broken.jpg"]
    assert again.image == sample.image and again.image.is_file()


def test_jpeg_missing_half_its_data_is_skipped_with_how_far_it_reaches(tmp_path, cache_dir):
    whole = _textured_jpeg()
    path = tmp_path / "half.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"truncated JPEG: its data stops (\d+)% into the image") as err:
        validate_module.check_image(path, cache_dir / "repaired")
    assert 20 <= int(str(err.value).split("stops ")[1].split("%")[0]) <= 80
    assert not (cache_dir / "repaired").exists()
