"""How the Detect head starts for new classes: the transferred rows (our default) or fresh (the reference)."""

import dataclasses

import pytest
import torch
from conftest import shared_path

from yolo_transfer.data import build_dataloader, load_dataset, load_hyp
from yolo_transfer.engine.evaluate import evaluate
from yolo_transfer.models import build_model, load_model
from yolo_transfer.models.checkpoint import read_official
from yolo_transfer.models.class_names import match_class_names
from yolo_transfer.models.transfer import transfer_weights
from yolo_transfer.strategies import load_strategy
from yolo_transfer.strategies.phase import strategy_from_dict, strategy_to_dict


def head_rows(model, level: int) -> torch.Tensor:
    return model.detect.m[level].weight.detach().view(model.detect.na, model.detect.no, -1)


@pytest.fixture(scope="module")
def official():
    return read_official(shared_path("weights", "yolov5n.pt"))


def test_transfer_copies_box_objectness_and_same_name_class_rows(official):
    state, metadata = official
    source, _ = load_model(shared_path("weights", "yolov5n.pt"))
    torch.manual_seed(0)
    target = build_model(metadata["cfg"], names=["dock", "Car"])
    report = transfer_weights(state, list(metadata["names"]), target, head="transfer")

    assert report.copied_box_objectness and report.copied_classes == ["Car"]
    car = list(metadata["names"]).index("car")
    for level in range(3):
        new, old = head_rows(target, level), head_rows(source, level)
        assert torch.equal(new[:, :5], old[:, :5])  # box and objectness of every anchor
        assert torch.equal(new[:, 5 + 1], old[:, 5 + car])  # 'Car' takes COCO's car
        assert not torch.equal(new[:, 5 + 0], old[:, 5 + 0])  # 'dock' is new: fresh
    assert "box and objectness rows copied" in report.summary()


def test_fresh_head_copies_nothing_as_the_reference(official):
    state, metadata = official
    source, _ = load_model(shared_path("weights", "yolov5n.pt"))
    target = build_model(metadata["cfg"], names=["dock", "car"])
    report = transfer_weights(state, list(metadata["names"]), target, head="fresh")

    assert not report.copied_box_objectness and report.copied_classes == []
    for level in range(3):
        assert not torch.equal(head_rows(target, level)[:, :5], head_rows(source, level)[:, :5])
    # everything else is transferred; the fresh Detect output convs are reported as such
    assert report.skipped == [
        f"model.24.m.{level}.{kind}" for level in range(3) for kind in ("weight", "bias")
    ]


def test_box_rows_need_the_checkpoints_anchors(official):
    """Box rows are only meaningful with the anchors they were trained for: without the checkpoint's anchors
    (a state that lacks them, so the config's own stay) they keep their fresh initialisation."""
    state, metadata = official
    anchors = [[12, 16, 20, 30, 30, 25], [40, 70, 70, 50, 60, 120], [120, 90, 160, 200, 370, 320]]
    target = build_model({**metadata["cfg"], "anchors": anchors}, names=["person", "dock"])
    without_anchors = {name: tensor for name, tensor in state.items() if not name.endswith("anchors")}
    report = transfer_weights(without_anchors, list(metadata["names"]), target, head="transfer")
    assert not report.copied_box_objectness and report.copied_classes == ["person"]


def test_a_single_known_class_scores_by_objectness(official):
    """With one class no loss trains the class output, so it is not copied (COCO's row would drift as the
    features move) but made constant: every detection's class probability is the same, its score the
    objectness."""
    state, metadata = official
    source, _ = load_model(shared_path("weights", "yolov5n.pt"))
    target = build_model(metadata["cfg"], names=["car"])
    report = transfer_weights(state, list(metadata["names"]), target, head="transfer")
    assert report.copied_box_objectness and report.copied_classes == [] and report.constant_class == "car"
    assert "one class (car): its score is the objectness" in report.summary()
    for level in range(3):
        assert torch.equal(head_rows(target, level)[:, :5], head_rows(source, level)[:, :5])
        assert not head_rows(target, level)[:, 5].any()  # zero weights: the class row ignores the features
    target.eval()
    with torch.no_grad():
        out = target(torch.rand(2, 3, 64, 64))[0]
    assert torch.allclose(out[..., 5], out[0, 0, 5]) and out[0, 0, 5] > 0.99  # constant, near 1
    fresh = build_model(metadata["cfg"], names=["car"])
    transfer_weights(state, list(metadata["names"]), fresh, head="fresh")
    assert head_rows(fresh, 0)[:, 5].any()  # the reference's fresh row is left as it is


def test_transferred_head_detects_before_any_training():
    """coco8 with two of its classes: the transferred head finds them at once, a fresh one cannot."""
    data = load_dataset(shared_path("data", "coco8", "coco8.yaml"))
    names = ["person", "dog"]
    val = []
    for sample in data.val:  # keep only the two classes (COCO 0 and 16), renumbered 0 and 1
        labels = sample.labels[(sample.labels[:, 0] == 0) | (sample.labels[:, 0] == 16)].copy()
        labels[:, 0] = labels[:, 0] == 16
        val.append(dataclasses.replace(sample, labels=labels))
    loader = build_dataloader(val, 640, 4, augment=False, hyp=load_hyp("none"), rect=True, pad=0.5)
    scores = {}
    for head in ("transfer", "fresh"):
        torch.manual_seed(0)
        model, metadata = load_model(shared_path("weights", "yolov5n.pt"), names=names, head=head)
        assert metadata["transfer"]["copied_box_objectness"] is (head == "transfer")
        scores[head] = evaluate(model, loader, names)["map50"]
    assert scores["transfer"] > 0.3 and scores["fresh"] < 0.05, scores  # 0.384 and 0.0 measured


def test_strategy_head_and_warmup_bias_lr_round_trip():
    data = {
        "name": "mine", "description": "d", "head": "fresh",
        "phases": [{"name": "all", "lr0": 0.02, "warmup_bias_lr": 0.0}],
    }  # fmt: skip
    strategy = strategy_from_dict(data, "mine.yaml")
    assert strategy.head == "fresh" and strategy.phases[0].warmup_bias_lr == 0.0
    assert strategy_from_dict(strategy_to_dict(strategy), "again.yaml") == strategy
    with pytest.raises(Exception, match="head must be one of transfer, fresh"):
        strategy_from_dict({**data, "head": "random"}, "bad.yaml")
    with pytest.raises(Exception, match="warmup_bias_lr must be a number >= 0"):
        strategy_from_dict({**data, "phases": [{"name": "a", "warmup_bias_lr": -1}]}, "bad.yaml")


def test_yolov5_default_is_the_reference_recipe():
    strategy = load_strategy("yolov5-default", epochs=30)
    (phase,) = strategy.phases
    assert strategy.head == "fresh" and phase.trainable == ["all"] and phase.lr0 == 0.01
    assert phase.warmup_epochs is None and phase.warmup_bias_lr is None  # hyp.scratch-low's 3 and 0.1


def test_driving_and_thermal_set_names_match_coco_classes():
    coco = ["person", "bicycle", "car", "motorcycle", "train", "traffic light"]
    names = ["Pedestrian", "Person_sitting", "persons", "motor", "Van", "Tram", "light", "Cyclist"]
    assert match_class_names(names, coco) == {  # FLIR/BDD100K's motor, KITTI's van, tram, person sitting
        "Pedestrian": "person",
        "Person_sitting": "person",
        "persons": "person",
        "motor": "motorcycle",
        "Van": "car",
        "Tram": "train",
    }  # an ambiguous "light" and a cyclist (rider and bicycle in one box) stay new classes


def test_class_rows_follow_plurals_and_common_synonyms(official):
    state, metadata = official
    source_names = list(metadata["names"])
    target = build_model(
        metadata["cfg"], names=["aeroplane", "people", "Motorbikes", "dock", "traffic_light"]
    )
    report = transfer_weights(state, source_names, target, head="transfer")
    assert report.copied_classes == ["aeroplane", "people", "Motorbikes", "traffic_light"]
    assert match_class_names(["aeroplane", "dock", "Cars"], source_names) == {
        "aeroplane": "airplane",
        "Cars": "car",
    }
    source, _ = load_model(shared_path("weights", "yolov5n.pt"))
    airplane = source_names.index("airplane")
    assert torch.equal(head_rows(target, 0)[:, 5 + 0], head_rows(source, 0)[:, 5 + airplane])
