"""Phase mechanics through the trainer: L2-SP as published, AdaBN, layer-wise decay, cosine LR, close-mosaic,
and the val split that does not depend on the training seed."""

import json
import math

import numpy as np
import pytest
import torch

from yolo_transfer.data import load_dataset
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine.image_stats import IMAGE_STATS_FILE
from yolo_transfer.engine.trainer import TrainConfig, Trainer, train
from yolo_transfer.models import build_model, save_model
from yolo_transfer.strategies import Phase, Strategy
from yolo_transfer.strategies.selection import select_modules

SMALL = {"imgsz": 128, "batch": 8, "workers": 0, "device": "cpu", "noplots": True}
HEAD_CONVS = {f"model.24.m.{level}.{kind}" for level in range(3) for kind in ("weight", "bias")}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("mechanics")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_TRANSFER_CACHE", str(root / "cache"))
        yield make_domain(root / "data", "target", n_images=24, imgsz=128, seed=5)


def test_l2sp_adabn_layer_decay_cosine_and_close_mosaic_through_the_trainer(shapes, tmp_path):
    data = load_dataset(shapes)
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=len(data.names))
    start = {name: value.clone() for name, value in model.state_dict().items()}
    phase = Phase("frozen", trainable=["neck", "head"], bn="recalibrate", layer_decay=0.5)
    strategy = Strategy("mechanics", "every mechanic at once", [phase], l2sp=0.01)
    config = TrainConfig(
        data=str(shapes), out=tmp_path / "run", epochs=2, cos_lr=True, close_mosaic=1, **SMALL
    )
    trainer = Trainer(model, data, strategy, config, config.out, fresh=HEAD_CONVS)
    assert trainer.hyp["mosaic"] == 1.0
    summary = trainer.fit()
    assert summary["epochs"] == 2 and (config.out / IMAGE_STATS_FILE).is_file()

    # L2-SP anchors the transferred weights only; they are not decayed towards zero, the fresh head is
    anchored = set(trainer.l2sp.anchor)
    assert anchored and not anchored & HEAD_CONVS
    params = dict(model.named_parameters())
    groups = trainer.active.optimizer.param_groups
    decay_of = {id(p): group["weight_decay"] for group in groups for p in group["params"]}
    trainable_anchored = [n for n in anchored if params[n].requires_grad]
    assert trainable_anchored and all(decay_of[id(params[n])] == 0.0 for n in trainable_anchored)
    assert decay_of[id(params["model.24.m.0.weight"])] > 0

    # layer-wise decay: module i's LR is lr0 * 0.5 ** (24 - i)
    scale_of = {id(p): group["lr_scale"] for group in groups for p in group["params"]}
    assert scale_of[id(params["model.10.conv.weight"])] == pytest.approx(0.5**14)
    assert scale_of[id(params["model.24.m.0.weight"])] == 1.0

    # AdaBN: the frozen backbone's statistics were re-estimated, its weights never moved
    backbone = tuple(f"model.{i}." for i in select_modules(["backbone"], 25, {"backbone": list(range(10))}))
    stats = [n for n in start if n.startswith(backbone) and n.endswith("running_mean")]
    weights = [n for n in start if n.startswith(backbone) and n.endswith(".weight")]
    state, ema = model.state_dict(), trainer.ema.ema.state_dict()
    assert all(not torch.equal(state[n], start[n]) for n in stats)
    assert all(torch.equal(state[n], ema[n]) for n in stats)  # the EMA took the new statistics
    assert all(torch.equal(state[n], start[n]) for n in weights)

    # cosine schedule and mosaic off for the last epoch
    lrf = trainer.hyp["lrf"]
    assert trainer.active.lf(0.5) == pytest.approx(((1 - math.cos(0.5 * math.pi / 2)) / 2) * (lrf - 1) + 1)
    assert trainer.active.loader.dataset.mosaic is False


def test_every_seed_is_validated_on_the_same_split(tmp_path):
    """Data without a val split: the split follows --split-seed, not --seed."""
    root = tmp_path / "data"
    yaml_path = make_domain(root, "target", n_images=20, imgsz=96, seed=6)
    (root / "train-only.yaml").write_text(
        yaml_path.read_text()
        .replace("val: images/val", "val: null")
        .replace("train: images/train", "train: images")
    )
    weights = tmp_path / "w.safetensors"
    names = load_dataset(yaml_path).names
    save_model(build_model("yolov5n", nc=len(names), names=names), weights, {})
    arrays = {}
    for seed in (0, 1):
        config = TrainConfig(
            data=str(root / "train-only.yaml"), out=tmp_path / f"s{seed}", weights=str(weights), epochs=1,
            seed=seed, split_seed=0, imgsz=96, batch=8, workers=0, device="cpu", noplots=True,
        )  # fmt: skip
        summary = train(config, Strategy("one", "all", [Phase("all")]))
        assert summary["config"]["split_seed"] == 0
        with np.load(config.out / IMAGE_STATS_FILE) as saved:
            arrays[seed] = (saved["labels_per_image"].copy(), saved["label_cls"].copy())
    assert np.array_equal(arrays[0][0], arrays[1][0]) and np.array_equal(arrays[0][1], arrays[1][1])


def test_patience_ends_each_phase_and_the_last_one_ends_the_run(shapes, tmp_path, monkeypatch):
    falling = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    monkeypatch.setattr("yolo_transfer.engine.trainer.fitness", lambda metrics: next(falling))
    data = load_dataset(shapes)
    strategy = Strategy("two", "d", [Phase("a", trainable=["head"], epochs=3), Phase("b")])
    config = TrainConfig(data=str(shapes), out=tmp_path / "run", epochs=6, patience=1, **SMALL)
    summary = Trainer(build_model("yolov5n", nc=len(data.names)), data, strategy, config, config.out).fit()
    phases = [(p["name"], p["epochs_run"], p["end_reason"]) for p in summary["phases"]]
    assert phases == [("a", 2, "early_stop"), ("b", 2, "early_stop")]
    assert summary["end_reason"] == "early_stop" and summary["epochs"] == 4


def test_train_strategy_auto_trains_what_advise_recommends(shapes, tmp_path, capsys):
    from yolo_transfer.cli import main

    names = load_dataset(shapes).names
    weights = tmp_path / "w.safetensors"
    save_model(build_model("yolov5n", nc=len(names), names=names), weights, {})
    base = ["train", "--data", str(shapes), "--strategy", "auto", "--epochs", "1", "--imgsz", "64",
            "--batch", "8", "--workers", "0", "--device", "cpu", "--noplots"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "no-weights")]) == 2
    assert "--strategy auto needs --weights" in capsys.readouterr().err
    assert main([*base, "--weights", str(weights), "--out", str(tmp_path / "run")]) == 0
    advised = capsys.readouterr().out.split("--strategy auto -> ")[1].split()[0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["strategy"] == advised and summary["epochs"] == 1
