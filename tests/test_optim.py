"""Optimizer groups, LR lambdas, warmup and EMA against the reference (spec §3.2, §3.3, §5.1-5.3)."""

import math

import pytest
import torch

from yolo_transfer.engine.ema import ModelEMA
from yolo_transfer.engine.optim import (
    accumulate_steps,
    build_optimizer,
    lr_lambda,
    scaled_weight_decay,
    scheduled_lr,
    scheduled_momentum,
    set_schedule,
    warmup_accumulate,
    warmup_iterations,
)
from yolo_transfer.errors import ConfigError
from yolo_transfer.models import build_model
from yolo_transfer.strategies.trainable import freeze_modules

HYP = {"momentum": 0.937, "warmup_momentum": 0.8, "warmup_bias_lr": 0.1}


@pytest.fixture(scope="module")
def yolov5n():
    return build_model("yolov5n", nc=80)


def group_sizes(optimizer) -> list[tuple[str, float, int]]:
    return [(g["group_kind"], g["lr_scale"], len(g["params"])) for g in optimizer.param_groups]


def test_sgd_groups_match_the_reference_counts(yolov5n):
    optimizer = build_optimizer(yolov5n, "SGD", lr0=0.01, momentum=0.937, weight_decay=5e-4)
    # "57 weight(decay=0.0), 60 weight(decay=...), 60 bias" with biases as group 0 (v6.2+)
    assert group_sizes(optimizer) == [("bias", 1.0, 60), ("decay", 1.0, 60), ("norm", 1.0, 57)]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 5e-4, 0.0]
    assert all(g["nesterov"] and g["momentum"] == 0.937 for g in optimizer.param_groups)
    decay_params = optimizer.param_groups[1]["params"]
    assert all(p.ndim == 4 for p in decay_params)  # conv kernels only
    total = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert total == sum(p.numel() for p in yolov5n.parameters())


def test_only_trainable_parameters_join_and_scales_get_their_own_groups():
    model = build_model("yolov5n", nc=3)
    trainable_params = freeze_modules(model, list(range(10, 25)))  # backbone frozen
    optimizer = build_optimizer(
        model, "SGD", lr0=0.01, module_lr_scales={24: 1.0, **{i: 0.1 for i in range(10, 24)}}
    )
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == trainable_params
    kinds = group_sizes(optimizer)
    # Detect (module 24) has conv weights and biases but no BatchNorm; the neck has all three kinds
    assert kinds[:2] == [("bias", 1.0, 3), ("decay", 1.0, 3)]
    assert [k[:2] for k in kinds[2:]] == [("bias", 0.1), ("decay", 0.1), ("norm", 0.1)]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.001])
    frozen = {id(p) for p in model.model[:10].parameters()}
    assert not frozen & {id(p) for g in optimizer.param_groups for p in g["params"]}


def test_adam_variants_and_unknown_name(yolov5n):
    adam = build_optimizer(yolov5n, "Adam", lr0=1e-3, momentum=0.9, weight_decay=1e-4)
    adamw = build_optimizer(yolov5n, "AdamW", lr0=1e-3, momentum=0.9, weight_decay=1e-4)
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[0]["betas"] == (0.9, 0.999)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.0, 1e-4, 0.0]
    with pytest.raises(ConfigError, match="unknown optimizer"):
        build_optimizer(yolov5n, "RMSprop")


def test_accumulation_and_weight_decay_scaling():
    assert [accumulate_steps(b) for b in (16, 24, 128, 1)] == [4, 3, 1, 64]
    assert scaled_weight_decay(5e-4, 16) == pytest.approx(5e-4)  # 16 * 4 / 64
    assert scaled_weight_decay(5e-4, 24) == pytest.approx(5e-4 * 72 / 64)
    assert scaled_weight_decay(5e-4, 128) == pytest.approx(1e-3)


def test_lr_lambdas():
    linear = lr_lambda(10, 0.01)
    assert linear(0) == 1.0
    assert linear(9) == pytest.approx(0.01 + 0.99 / 10)  # the last epoch is not exactly lrf (§5.1)
    assert linear(5) == pytest.approx(0.505)
    cosine = lr_lambda(10, 0.1, cosine=True)
    assert cosine(0) == pytest.approx(1.0)
    assert cosine(5) == pytest.approx(0.55)
    assert cosine(10) == pytest.approx(0.1)
    assert cosine(3) == pytest.approx(((1 - math.cos(3 * math.pi / 10)) / 2) * (0.1 - 1) + 1)


def test_warmup_schedule():
    assert warmup_iterations(3.0, 10) == 100  # at least 100 iterations
    assert warmup_iterations(3.0, 50) == 150
    assert warmup_iterations(0.0, 50) == 0
    # biases fall from warmup_bias_lr, the others rise from 0, both linearly to lr0 * lf(epoch)
    assert scheduled_lr("bias", 0.01, 0, 100, 0.1) == pytest.approx(0.1)
    assert scheduled_lr("decay", 0.01, 0, 100, 0.1) == 0.0
    assert scheduled_lr("bias", 0.01, 50, 100, 0.1) == pytest.approx(0.055)
    assert scheduled_lr("norm", 0.01, 25, 100, 0.1) == pytest.approx(0.0025)
    assert scheduled_lr("bias", 0.01, 100, 100, 0.1) == pytest.approx(0.01)
    assert scheduled_lr("bias", 0.007, 250, 100, 0.1) == 0.007
    assert scheduled_momentum(0.937, 0, 100, 0.8) == pytest.approx(0.8)
    assert scheduled_momentum(0.937, 50, 100, 0.8) == pytest.approx(0.8685)
    assert scheduled_momentum(0.937, 101, 100, 0.8) == 0.937
    # accumulation ramps from 1 to 64 / batch over the warmup, then keeps its value
    assert [warmup_accumulate(i, 100, 16, 4) for i in (0, 10, 50, 100, 300)] == [1, 1, 2, 4, 4]


def test_set_schedule_scales_each_group(yolov5n):
    optimizer = build_optimizer(yolov5n, "SGD", lr0=0.01, module_lr_scales={i: 0.5 for i in range(10)})
    set_schedule(optimizer, lf_value=1.0, lr0=0.01, iteration=50, warmup_iters=100, hyp=HYP)
    for group in optimizer.param_groups:
        base = 0.055 if group["group_kind"] == "bias" else 0.005
        assert group["lr"] == pytest.approx(base * group["lr_scale"])
        assert group["momentum"] == pytest.approx(0.8685)
    set_schedule(optimizer, lf_value=0.5, lr0=0.01, iteration=500, warmup_iters=100, hyp=HYP)
    assert sorted({round(g["lr"], 8) for g in optimizer.param_groups}) == [0.0025, 0.005]


def test_steady_modules_skip_the_warmup(yolov5n):
    """Modules in ``steady`` get groups of their own that run at the scheduled LR and momentum at once."""
    optimizer = build_optimizer(yolov5n, "SGD", lr0=0.01, steady=set(range(10, 25)))
    owner = {id(p): i for i, module in enumerate(yolov5n.model) for p in module.parameters()}
    assert [g["warmup"] for g in optimizer.param_groups] == [True] * 3 + [False] * 3
    for group in optimizer.param_groups:
        assert {owner[id(p)] >= 10 for p in group["params"]} == {not group["warmup"]}
    set_schedule(optimizer, lf_value=1.0, lr0=0.01, iteration=0, warmup_iters=100, hyp=HYP)
    for group in optimizer.param_groups:
        if group["warmup"]:
            assert group["lr"] == pytest.approx(0.1 if group["group_kind"] == "bias" else 0.0)
            assert group["momentum"] == pytest.approx(0.8)
        else:
            assert (group["lr"], group["momentum"]) == (pytest.approx(0.01), pytest.approx(0.937))


def test_ema_decay_ramp_and_float_only_update():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    ema = ModelEMA(model)
    assert not any(p.requires_grad for p in ema.ema.parameters())
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(2.0)
    model[1].num_batches_tracked.fill_(7)
    before = ema.ema[0].weight.clone()
    ema.update(model)
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    assert ema.current_decay() == pytest.approx(d)
    torch.testing.assert_close(ema.ema[0].weight, d * before + (1 - d) * model[0].weight)
    torch.testing.assert_close(ema.ema[1].running_mean, torch.full((4,), (1 - d) * 2.0))
    assert ema.ema[1].num_batches_tracked.item() == 0  # integer buffers are not averaged
    ema.updates = 2000
    assert ema.current_decay() == pytest.approx(0.9999 * (1 - math.exp(-1)))
