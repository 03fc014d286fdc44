"""Transfer strategies: YAML phase plans, module selections and the mechanics each phase relies on."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json

import pytest
import torch

from yolo_transfer.cli import main
from yolo_transfer.data import load_dataset, load_hyp
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine import trainer as trainer_module
from yolo_transfer.engine.loss import ComputeLoss, scale_loss_gains
from yolo_transfer.engine.optim import build_optimizer
from yolo_transfer.engine.run_state import read_state, strip_prefix
from yolo_transfer.engine.trainer import TrainConfig, train
from yolo_transfer.errors import ConfigError
from yolo_transfer.models import build_model, load_model, save_model
from yolo_transfer.strategies import builtin_path, list_strategies, load_strategy
from yolo_transfer.strategies.phase import (
    Phase,
    Strategy,
    last_phase_epochs,
    read_strategy,
    resolve_phase_lengths,
    write_strategy,
)
from yolo_transfer.strategies.selection import select_modules, selection_from_freeze
from yolo_transfer.strategies.trainable import (
    L2SP,
    freeze_modules,
    module_lr_scales,
    no_grad_prefix,
    recalibrate_bn,
    resolve_modules,
    set_bn_mode,
)

BUILTINS = ["freeze", "full", "gradual", "head-only", "lp-ft", "staged", "surgical-early", "yolov5-default"]
P5_GROUPS = {"backbone": list(range(10)), "neck": list(range(10, 24)), "head": [24]}


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """These small models run far faster on one thread when other processes share the few CPU cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def p5(spec: list) -> list[int]:
    """Resolve a selection for the 25-module layout of the P5 models (yolov5n..x)."""
    return select_modules(spec, 25, P5_GROUPS)


# ---------------------------------------------------------------- YAML plans


def test_builtins_are_listed() -> None:
    assert list_strategies() == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_yaml_round_trip(name: str, tmp_path) -> None:
    original = read_strategy(builtin_path(name))
    assert original.name == name and original.description and "\n" not in original.description
    assert all(phase.lr0 is not None and phase.lr0 < 0.01 + 1e-12 for phase in original.phases)
    write_strategy(original, tmp_path / "raw.yaml")
    assert read_strategy(tmp_path / "raw.yaml") == original
    resolved = load_strategy(name, epochs=20)
    write_strategy(resolved, tmp_path / "resolved.yaml")
    assert read_strategy(tmp_path / "resolved.yaml") == resolved
    assert load_strategy(tmp_path / "resolved.yaml", epochs=20) == resolved


def test_builtin_trainable_sets() -> None:
    first = {name: p5(load_strategy(name, epochs=10).phases[0].trainable) for name in BUILTINS}
    assert first["full"] == list(range(25))
    assert first["freeze"] == list(range(10, 25))
    assert first["staged"] == list(range(10, 25))
    assert first["lp-ft"] == first["gradual"] == first["head-only"] == [24]
    assert first["surgical-early"] == [0, 1, 2, 3, 4, 24]
    gradual = load_strategy("gradual", epochs=10).phases
    assert [p5(phase.trainable) for phase in gradual][1:] == [list(range(10, 25)), list(range(25))]


def test_phase_lengths_resolve_against_the_budget() -> None:
    staged = load_strategy("staged", epochs=10)  # the frozen phase: at most 30% of the budget
    assert staged.phases[0].plateau == {"patience": 3, "max_epochs": 3, "min_delta": 0.0}
    assert staged.phases[1].epochs is None  # the rest of the budget, filled in by the trainer
    gradual = load_strategy("gradual", epochs=10)
    assert [phase.epochs for phase in gradual.phases] == [2, 2, None]
    # fractions round to at least one epoch, and every later phase keeps one epoch of the budget
    assert [phase.epochs for phase in load_strategy("gradual", epochs=3).phases] == [1, 1, None]
    capped = Strategy("s", "", [Phase("a", epochs=8), Phase("b", epochs=0.9), Phase("c")])
    assert [phase.epochs for phase in resolve_phase_lengths(capped, 10).phases] == [8, 1, None]
    with pytest.raises(ConfigError, match="needs at least 3 epochs"):
        load_strategy("gradual", epochs=2)


def test_a_plan_may_keep_the_leading_phases_the_last_of_them_running_to_the_end() -> None:
    staged = load_strategy("staged", epochs=13)
    assert staged.phases[1].min_epochs == 10 and last_phase_epochs(staged, 13) == 9  # 13 - round(3.9)
    assert last_phase_epochs(load_strategy("staged", epochs=14), 14) == 10
    frozen_only = load_strategy("staged", epochs=13, phases=1)
    (frozen,) = frozen_only.phases
    assert (frozen.epochs, frozen.plateau) == (None, None)  # no plateau ends it: it runs the whole budget
    assert dataclasses.replace(frozen, plateau=staged.phases[0].plateau) == staged.phases[0]
    freeze = load_strategy("freeze", epochs=13)  # what it trains is freeze's schedule, setting for setting
    assert (frozen_only.phases, frozen_only.head, frozen_only.l2sp) == (
        freeze.phases,
        freeze.head,
        freeze.l2sp,
    )
    assert load_strategy("staged", epochs=13, phases=2) == staged
    gradual = load_strategy("gradual", epochs=10, phases=2).phases
    assert [phase.epochs for phase in gradual] == [2, None]
    with pytest.raises(ConfigError, match="has 2 phases, not 3"):
        load_strategy("staged", epochs=13, phases=3)


def test_unknown_strategy_and_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'nope'.*full"):
        load_strategy("nope", epochs=10)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_strategy(tmp_path / "missing.yaml", epochs=10)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name: x\nphases: []\n", "has no phases"),
        ("name: x\nphases:\n  - {name: a, bn: drift}\n", "bn must be one of"),
        ("name: x\nphases:\n  - {name: a, trainable: [backbon]}\n", "'backbon' is not 'all', a group"),
        ("name: x\nphases:\n  - {name: a, trainable: [9-3]}\n", "ends before it starts"),
        ("name: x\nphases:\n  - {name: a, epochs: 2.5}\n", "epochs must be a positive whole number"),
        ("name: x\nphases:\n  - {name: a, epochs: 2, plateau: {patience: 2}}\n", "either epochs or plateau"),
        ("name: x\nphases:\n  - {name: a, plateau: {max_epochs: 3}}\n", "'patience'"),
        ("name: x\nphases:\n  - {name: a, plateau: {patience: 2, wait: 1}}\n", "unknown plateau key"),
        ("name: x\nphases:\n  - {name: a, lr0: -1}\n", "lr0 must be a number > 0"),
        ("name: x\nphases:\n  - {name: a, layer_decay: 1.5}\n", "layer_decay must be a number"),
        ("name: x\nphases:\n  - {name: a, lr_mult: {backbone: 0}}\n", r"lr_mult\[backbone\]"),
        ("name: x\nphases:\n  - {name: a, batch: 0}\n", "batch must be a positive integer or 'auto'"),
        ("name: x\nphases:\n  - {name: a, warmup_min_iterations: -1}\n", "warmup_min_iterations must"),
        ("name: x\nphases:\n  - {name: a, warmup_min_iterations: 2.5}\n", "warmup_min_iterations must"),
        ("name: x\nphases:\n  - {name: a, warmup_modules: head}\n", "warmup_modules must be all or new"),
        ("name: x\nphases:\n  - {name: a, frozen: [backbone]}\n", "unknown key.*frozen"),
        ("name: x\nphases:\n  - {name: a}\n  - {name: b}\n", "phase 'a' needs epochs or plateau"),
        ("name: x\nphases:\n  - {name: a, epochs: 1}\n  - {name: a}\n", "phase names must be unique"),
        ("name: x\nl2sp: -0.1\nphases:\n  - {name: a}\n", "l2sp must be a number >= 0"),
        ("name: x\nphases: [\n", "not valid YAML"),
        ("name: x\nphases:\n  - {name: a, epochs: 1}\n  - {name: b, min_epochs: 0}\n", "min_epochs must be"),
        ("name: x\nphases:\n  - {name: a, epochs: 1, min_epochs: 2}\n  - {name: b}\n", "only the last phase"),
        ("name: x\nphases:\n  - {name: a, min_epochs: 2}\n", "min_epochs needs phases before"),
    ],
)
def test_invalid_strategy_files_name_the_file_and_reason(tmp_path, text: str, reason: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=reason) as caught:
        load_strategy(path, epochs=10)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_custom_yaml_strategy(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "description: head, then all with layer-wise decay\nl2sp: 0.001\nphases:\n"
        "  - {name: warm, trainable: ['first:24'], bn: recalibrate, epochs: 0.25, batch: auto, hyp: none}\n"
        "  - {name: rest, layer_decay: 0.8, lr_mult: {'0-4': 0.5}}\n"
    )
    strategy = load_strategy(path, epochs=8)
    assert strategy.name == "mine" and strategy.l2sp == 0.001
    warm, rest = strategy.phases
    assert (warm.epochs, warm.bn, warm.batch, warm.hyp) == (2, "recalibrate", "auto", "none")
    assert p5(warm.trainable) == [24]
    assert rest.trainable == ["all"] and rest.epochs is None and rest.layer_decay == 0.8


def test_strategies_command_lists_every_builtin(capsys) -> None:
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    for name in BUILTINS:
        assert name in out
    assert "Kumar et al. 2022" in out and "ULMFiT" in out


# ---------------------------------------------------------------- module selections and --freeze


def test_selection_grammar() -> None:
    assert p5(["all"]) == list(range(25))
    assert p5(["backbone"]) == list(range(10))
    assert p5(["neck", "head"]) == list(range(10, 25))
    assert p5([3, "7", "20-22"]) == [3, 7, 20, 21, 22]
    assert p5(["first:10"]) == list(range(10, 25))
    assert p5(["not:backbone"]) == list(range(10, 25))
    assert p5(["all", "not:0-4", "not:head"]) == list(range(5, 24))
    with pytest.raises(ConfigError, match="module index 25 does not exist"):
        p5([25])
    with pytest.raises(ConfigError, match="leaves no module to train"):
        p5(["first:25"])
    with pytest.raises(ConfigError, match="no module group 'neck'"):
        select_modules(["neck"], 10, {"backbone": list(range(10))})


def test_freeze_follows_yolov5_semantics() -> None:
    # yolov5: one value N freezes range(N); several values are explicit indices ("3" differs from "3 4")
    assert p5(selection_from_freeze("3")) == p5(selection_from_freeze("0,1,2")) == list(range(3, 25))
    assert p5(selection_from_freeze("3 4")) == [0, 1, 2, *range(5, 25)]
    assert p5(selection_from_freeze("10")) == p5(selection_from_freeze("backbone")) == list(range(10, 25))
    assert p5(selection_from_freeze("24")) == [24]
    assert p5(selection_from_freeze("0")) == list(range(25))
    assert p5(selection_from_freeze("backbone,neck")) == [24]
    with pytest.raises(ConfigError, match="--freeze is empty"):
        selection_from_freeze(" ")
    with pytest.raises(ConfigError, match="--freeze: module selection item 'bakbone' is not"):
        selection_from_freeze("bakbone")


def test_freeze_option_sets_the_first_phase() -> None:
    freeze = load_strategy("freeze", epochs=10, freeze="24")
    assert p5(freeze.phases[0].trainable) == [24]
    staged = load_strategy("staged", epochs=10, freeze="0,1,2")
    assert p5(staged.phases[0].trainable) == list(range(3, 25))
    assert staged.phases[1:] == load_strategy("staged", epochs=10).phases[1:]
    default = load_strategy("staged", epochs=10)
    assert dataclasses.replace(staged.phases[0], trainable=default.phases[0].trainable) == default.phases[0]


# ---------------------------------------------------------------- mechanics on a small model


def small_model(nc: int = 2):
    torch.manual_seed(0)
    return build_model("yolov5n", nc=nc)


def random_batches(count: int, *, size: int = 64, batch: int = 4, brightness: int = 160, seed: int = 0):
    """Loader-like list of (uint8 images, targets, paths, shapes) with two boxes per image."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        images = torch.randint(brightness - 60, brightness + 60, (batch, 3, size, size), generator=generator)
        boxes = torch.rand(batch * 2, 4, generator=generator) * 0.3 + torch.tensor([0.35, 0.35, 0.1, 0.1])
        index = torch.arange(batch).repeat_interleave(2).float()[:, None]
        classes = torch.randint(0, 2, (batch * 2, 1), generator=generator).float()
        batches.append((images.to(torch.uint8), torch.cat((index, classes, boxes), 1), [], []))
    return batches


def train_steps(model, batches, trainable: list[int], *, steps: int, l2sp: L2SP | None = None):
    """A few real SGD steps (the trainer's optimizer and loss) on the given batches."""
    model.train()
    set_bn_mode(model, trainable, "frozen")
    optimizer = build_optimizer(model, "SGD", 0.01, 0.937, 5e-4)
    compute_loss = ComputeLoss(model, scale_loss_gains(load_hyp("low"), 3, model.detect.nc, 64))
    for step in range(steps):
        images, targets, _, _ = batches[step % len(batches)]
        loss, _ = compute_loss(model(images.float() / 255, no_grad_prefix=no_grad_prefix(trainable)), targets)
        if l2sp is not None:
            loss = loss + l2sp.penalty(model) * images.shape[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def module_index(state_name: str) -> int:
    return int(state_name.split(".")[1])


def bn_layers(model, modules: list[int]) -> list[torch.nn.BatchNorm2d]:
    return [m for i in modules for m in model.model[i].modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_freeze_counts_match_yolov5s() -> None:
    # spec §3.1: yolov5s --freeze 10 leaves 3,063,933 trainable parameters, --freeze 24 leaves 229,245
    model = build_model("yolov5s", nc=80)
    assert resolve_modules(["backbone"], model) == list(range(10))
    assert resolve_modules(["head"], model) == [24]
    assert freeze_modules(model, resolve_modules(selection_from_freeze("10"), model)) == 3_063_933
    assert freeze_modules(model, resolve_modules(selection_from_freeze("24"), model)) == 229_245
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert len(frozen) == 171 and all(module_index(name) < 24 for name in frozen)
    everything = sum(p.numel() for p in model.parameters())
    assert freeze_modules(model, resolve_modules(["all"], model)) == everything


def test_frozen_parameters_stay_bit_identical_after_optimizer_steps() -> None:
    model = small_model()
    trainable = resolve_modules(["neck", "head"], model)
    freeze_modules(model, trainable)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    train_steps(model, random_batches(2), trainable, steps=3)
    after = model.state_dict()
    for name, value in after.items():
        if module_index(name) < 10:  # parameters and BN statistics of the frozen backbone
            assert torch.equal(value, before[name]), name
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(module_index(name) >= 10 for name in changed)


@pytest.mark.parametrize("mode", ["frozen", "recalibrate", "train"])
def test_bn_statistics_of_frozen_modules(mode: str) -> None:
    model = small_model()
    trainable = resolve_modules(["neck", "head"], model)
    model.train()
    set_bn_mode(model, trainable, mode)
    frozen_bn, trained_bn = bn_layers(model, list(range(10))), bn_layers(model, trainable)
    frozen_before = [bn.running_mean.clone() for bn in frozen_bn]
    trained_before = [bn.running_mean.clone() for bn in trained_bn]
    with torch.no_grad():
        for images, *_ in random_batches(2):
            model(images.float() / 255)
    frozen_kept = all(torch.equal(bn.running_mean, b) for bn, b in zip(frozen_bn, frozen_before, strict=True))
    assert frozen_kept == (mode != "train")  # 'train' drifts as yolov5 does
    assert not any(torch.equal(bn.running_mean, b) for bn, b in zip(trained_bn, trained_before, strict=True))


def test_adabn_reestimates_statistics_on_the_data() -> None:
    model = small_model()
    batches = random_batches(3, brightness=200)
    backbone = list(range(10))
    # the data's statistics: the BN inputs of a train-mode pass (BN in train mode normalises with batch stats)
    probe = copy.deepcopy(model).train()
    seen: dict[int, list[torch.Tensor]] = {}
    for i, layer in enumerate(bn_layers(probe, backbone)):
        layer.register_forward_hook(lambda _m, inputs, _o, i=i: seen.setdefault(i, []).append(inputs[0]))
    with torch.no_grad():
        for images, *_ in batches[:2]:
            probe(images.float() / 255)
    inputs = [seen[i] for i in range(len(seen))]  # in layer order (execution order differs inside C3)
    expected_mean = [torch.stack([x.mean((0, 2, 3)) for x in xs]).mean(0) for xs in inputs]
    expected_var = [torch.stack([x.var((0, 2, 3), unbiased=True) for x in xs]).mean(0) for xs in inputs]

    params_before = {n: p.clone() for n, p in model.named_parameters()}
    neck_before = {n: v.clone() for n, v in model.state_dict().items() if module_index(n) >= 10}
    momenta = [bn.momentum for bn in model.modules() if isinstance(bn, torch.nn.BatchNorm2d)]
    model.eval()
    recalibrate_bn(model, batches, backbone, "cpu", max_batches=2)

    layers = bn_layers(model, backbone)
    assert all(int(bn.num_batches_tracked) == 2 for bn in layers)
    for bn, mean, var in zip(layers, expected_mean, expected_var, strict=True):
        assert torch.allclose(bn.running_mean, mean, atol=1e-5, rtol=1e-4)
        assert torch.allclose(bn.running_var, var, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(layers[0].running_mean, torch.zeros_like(layers[0].running_mean))
    assert all(torch.equal(v, neck_before[n]) for n, v in model.state_dict().items() if n in neck_before)
    assert all(torch.equal(p, params_before[n]) for n, p in model.named_parameters())
    assert [bn.momentum for bn in model.modules() if isinstance(bn, torch.nn.BatchNorm2d)] == momenta
    assert not model.training


def test_frozen_prefix_builds_no_autograd_graph() -> None:
    model = small_model()
    trainable = resolve_modules(["neck", "head"], model)
    freeze_modules(model, trainable)
    prefix = no_grad_prefix(trainable)
    assert prefix == 10 and no_grad_prefix(list(range(25))) == 0 and no_grad_prefix([0, 1, 24]) == 0
    outputs: dict[int, object] = {}
    for i, module in enumerate(model.model):
        module.register_forward_hook(lambda _m, _i, out, i=i: outputs.__setitem__(i, out))
    model.train()
    images = torch.rand(2, 3, 64, 64, requires_grad=True)  # even an input that wants gradients
    model(images, no_grad_prefix=prefix)
    assert all(outputs[i].grad_fn is None and not outputs[i].requires_grad for i in range(prefix))
    assert all(outputs[i].grad_fn is not None for i in range(prefix, 24))
    assert all(level.grad_fn is not None for level in outputs[24])

    def saved_bytes(model, prefix: int) -> int:
        total = 0

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(torch.rand(2, 3, 128, 128), no_grad_prefix=prefix)
        return total

    frozen = saved_bytes(model, prefix)
    freeze_modules(model, list(range(25)))
    full = saved_bytes(model, 0)
    assert frozen < 0.6 * full  # the backbone's activations are not kept for a backward pass


def test_module_lr_scales() -> None:
    model = small_model()
    gradual = load_strategy("gradual", epochs=10).phases[-1]
    scales = module_lr_scales(model, gradual)
    assert scales[24] == 1.0 and scales[10] == scales[23] == 0.385 and scales[0] == scales[9] == 0.148
    decay = Phase("decay", layer_decay=0.5, lr_mult={"head": 2.0, "0-1": 0.1})
    scales = module_lr_scales(model, decay)
    assert scales[24] == 2.0 and scales[23] == 0.5 and scales[20] == 0.5**4
    assert scales[1] == pytest.approx(0.1 * 0.5**23) and scales[0] == pytest.approx(0.1 * 0.5**24)
    assert module_lr_scales(model, Phase("plain")) == dict.fromkeys(range(25), 1.0)


def test_l2sp_pulls_towards_the_pretrained_weights() -> None:
    model = small_model()
    trainable = resolve_modules(["neck", "head"], model)
    freeze_modules(model, trainable)
    l2sp = L2SP(model, strength=0.5)
    assert l2sp.penalty(model).item() == 0.0
    conv = model.model[10].conv.weight
    with torch.no_grad():
        conv.add_(0.01)
        model.model[0].conv.weight.add_(1.0)  # frozen: not part of the penalty
    assert l2sp.penalty(model).item() == pytest.approx(0.5 * conv.numel() * 1e-4, rel=1e-4)

    def distance(m) -> float:
        params = dict(m.named_parameters())
        return sum(float((params[n].detach() - anchor).pow(2).sum()) for n, anchor in l2sp.anchor.items())

    batches = random_batches(2)
    plain, anchored = copy.deepcopy(model), copy.deepcopy(model)
    train_steps(plain, batches, trainable, steps=4)
    train_steps(anchored, batches, trainable, steps=4, l2sp=l2sp)
    assert distance(anchored) < distance(plain)


# ---------------------------------------------------------------- through the trainer

TWO_PHASE = """\
name: two-phase
description: neck and head until a plateau (no epoch can beat another by min_delta 1), then everything
phases:
  - {name: frozen-backbone, trainable: [neck, head], plateau: {patience: 1, max_epochs: 3, min_delta: 1.0}}
  - {name: all, trainable: [all], lr0: 0.002, warmup_epochs: 1.0, epochs: 1}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    """A tiny dataset (128 px), seeded start weights and the two-phase strategy file."""
    root = tmp_path_factory.mktemp("tiny")
    data = make_domain(root / "data", "target", n_images=20, imgsz=128, seed=0)
    names = load_dataset(data).names
    torch.manual_seed(0)
    start = root / "start.safetensors"
    save_model(build_model("yolov5n", nc=len(names), names=names), start, {"names": names})
    strategy_file = root / "two-phase.yaml"
    strategy_file.write_text(TWO_PHASE)
    return {"root": root, "data": data, "start": start, "strategy": strategy_file}


def tiny_config(tiny_run: dict, out_name: str, epochs: int) -> TrainConfig:
    return TrainConfig(
        data=str(tiny_run["data"]), out=tiny_run["root"] / out_name, weights=str(tiny_run["start"]),
        epochs=epochs, imgsz=128, batch=8, workers=0, seed=0, noplots=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def two_phase_run(tiny_run) -> dict:
    """The two-phase strategy through the trainer, watching its optimizers and its EMA."""
    optimizers, emas, steps = [], [], []

    def spy_optimizer(*args, **kwargs):
        optimizer = build_optimizer(*args, **kwargs)
        index = len(optimizers)
        owner = {id(p): i for i, module in enumerate(args[0].model) for p in module.parameters()}
        held = sorted({owner[id(p)] for group in optimizer.param_groups for p in group["params"]})
        optimizers.append({"modules": held, "with_parameters": sorted(set(owner.values()))})

        def before_step(opt, _args, _kwargs):
            lrs = {g["group_kind"]: g["lr"] / g["lr_scale"] for g in opt.param_groups}
            steps.append({"optimizer": index, "state_size": len(opt.state), **lrs})

        optimizer.register_step_pre_hook(before_step)
        return optimizer

    class SpyEMA(trainer_module.ModelEMA):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            emas.append(self)

    config = tiny_config(tiny_run, "two-phase", epochs=4)
    strategy = load_strategy(tiny_run["strategy"], epochs=4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "build_optimizer", spy_optimizer)
        patch.setattr(trainer_module, "ModelEMA", SpyEMA)
        summary = train(config, strategy)
    return {"summary": summary, "out": config.out, "optimizers": optimizers, "emas": emas, "steps": steps}


def read_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_trainer_keeps_frozen_weights_and_bn_statistics(tiny_run) -> None:
    config = tiny_config(tiny_run, "freeze", epochs=1)
    train(config, load_strategy("freeze", epochs=1))
    start, _ = load_model(tiny_run["start"])
    start_state = start.state_dict()
    raw, _ = read_state(config.out / "weights")  # the trained model itself, besides its EMA
    shipped, _ = load_model(config.out / "weights" / "last.safetensors")
    for state in (strip_prefix("model.", raw), shipped.state_dict()):
        for name, value in state.items():
            if module_index(name) < 10:  # backbone parameters and BatchNorm statistics
                assert torch.equal(value, start_state[name]), name
        assert any(not torch.equal(v, start_state[n]) for n, v in state.items() if module_index(n) >= 10)


def test_staged_switches_on_plateau(two_phase_run) -> None:
    phases = two_phase_run["summary"]["phases"]
    assert [(p["name"], p["epochs_run"], p["end_reason"]) for p in phases] == [
        ("frozen-backbone", 2, "plateau"),  # epoch 2 did not beat epoch 1 by min_delta: before max_epochs 3
        ("all", 1, "epochs"),
    ]
    assert phases[0]["trainable_params"] < phases[1]["trainable_params"]
    assert (phases[0]["lr0"], phases[1]["lr0"]) == (0.01, 0.002)  # hyp lr0, then the phase's own


def test_head_only_trains_at_a_third_of_the_other_builtins_rate(tiny_run) -> None:
    """head-only.yaml's lr0 0.003 (docs/advisor-study.md), the rate the study's `--lr0 0.003` runs used."""
    names = ("full", "freeze", "staged", "head-only")
    rates = {name: load_strategy(name, epochs=2).phases[0].lr0 for name in names}
    assert rates == {"full": 0.01, "freeze": 0.01, "staged": 0.01, "head-only": 0.003}
    config = tiny_config(tiny_run, "head-only", epochs=1)
    phases = train(config, load_strategy("head-only", epochs=1))["phases"]
    assert [(phase["name"], phase["lr0"]) for phase in phases] == [("head", 0.003)]
    config = dataclasses.replace(config, out=tiny_run["root"] / "head-only-lr0", lr0=0.001)
    assert train(config, load_strategy("head-only", epochs=1))["phases"][0]["lr0"] == 0.001


def test_unfrozen_parameters_join_with_fresh_state_and_rewarmed_lr(two_phase_run) -> None:
    first, second = two_phase_run["optimizers"]  # one per phase: the modules whose parameters each holds
    assert first["modules"] == [i for i in first["with_parameters"] if i >= 10]
    assert second["modules"] == second["with_parameters"] and 0 in second["modules"]
    steps = two_phase_run["steps"]
    phase1 = [s for s in steps if s["optimizer"] == 0]
    phase2 = [s for s in steps if s["optimizer"] == 1]
    assert phase1 and phase2
    assert phase2[0]["state_size"] == 0  # a new optimizer: no momentum carried over from phase 1
    assert phase2[0]["bias"] == pytest.approx(load_hyp("low")["warmup_bias_lr"])  # the warmup starts again
    assert phase2[0]["decay"] == 0.0 < phase1[-1]["decay"]
    assert [s["decay"] for s in phase2] == sorted(s["decay"] for s in phase2)


@pytest.mark.parametrize(("floor", "warmed_by_epoch_2"), [(None, False), (0, True)])
def test_warmup_floor_of_a_phase(tiny_run, tmp_path, floor: int | None, warmed_by_epoch_2: bool) -> None:
    """The reference's warmup lasts at least 100 iterations (here 33 epochs of 3 batches); a phase's
    ``warmup_min_iterations: 0`` makes ``warmup_epochs: 1`` one epoch, so epoch 2 runs at the scheduled LR."""
    line = "" if floor is None else f", warmup_min_iterations: {floor}"
    path = tmp_path / "warm.yaml"
    path.write_text(f"name: warm\ndescription: x\nphases:\n  - {{name: all, warmup_epochs: 1.0{line}}}\n")
    config = tiny_config(tiny_run, f"warm-{floor}", epochs=2)
    train(config, load_strategy(path, epochs=2))
    lr_epoch_2 = float(read_rows(config.out / "results.csv")[1]["x/lr2"])
    scheduled = 0.01 * (1 - 1 / 2 * (1 - load_hyp("low")["lrf"]))  # lr0 * lf(epoch index 1) of 2, linear
    assert (lr_epoch_2 == pytest.approx(scheduled)) is warmed_by_epoch_2
    if not warmed_by_epoch_2:
        assert lr_epoch_2 < scheduled * 0.1  # 6 of 100 warmup iterations done


def test_warmup_of_the_newly_trainable_modules_only(tiny_run, tmp_path) -> None:
    """``warmup_modules: new``: when everything unfreezes, only the backbone (new to training) re-warms; neck
    and head go on at the scheduled LR and momentum from the phase's first batch, at the nominal batch."""
    path = tmp_path / "carry.yaml"
    path.write_text(
        "name: carry\ndescription: x\nphases:\n"
        "  - {name: frozen-backbone, trainable: [neck, head], epochs: 1}\n"
        "  - {name: all, trainable: [all], lr0: 0.002, epochs: 1, warmup_epochs: 1.0, warmup_modules: new}\n"
    )
    seen = []
    real_step = trainer_module.Trainer._train_step

    def watch_step(self, active, images, targets, iteration):
        owner = {id(p): i for i, module in enumerate(self.model.model) for p in module.parameters()}
        groups = [
            ({owner[id(p)] for p in g["params"]}, g["warmup"], g["group_kind"], g["lr"], g["momentum"])
            for g in active.optimizer.param_groups
        ]
        seen.append((active.index, iteration, self.progress.accumulate, groups, set(owner.values())))
        return real_step(self, active, images, targets, iteration)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module.Trainer, "_train_step", watch_step)
        train(tiny_config(tiny_run, "carry", epochs=2), load_strategy(path, epochs=2))
    hyp = load_hyp("low")
    ((first, learning),) = [(groups, held) for index, i, _, groups, held in seen if (index, i) == (1, 0)]
    steady = set().union(*(modules for modules, warms, *_ in first if not warms))
    assert steady == {i for i in learning if i >= 10}  # the neck and head modules with parameters
    assert set().union(*(modules for modules, warms, *_ in first if warms)) == {i for i in learning if i < 10}
    for _, warms, kind, lr, momentum in first:
        if warms:  # the backbone starts its ramp as every module of built-in `staged` does
            assert lr == pytest.approx(hyp["warmup_bias_lr"] if kind == "bias" else 0.0)
            assert momentum == pytest.approx(hyp["warmup_momentum"])
        else:
            assert (lr, momentum) == (pytest.approx(0.002), pytest.approx(hyp["momentum"]))
    accumulate = {index: {a for i, _, a, *_ in seen if i == index} for index in (0, 1)}
    assert 1 in accumulate[0]  # the first phase's warmup ramps the accumulation from one batch
    assert accumulate[1] == {64 // 8}  # the second keeps the nominal 64 images per step


def test_ema_continues_across_phases(two_phase_run) -> None:
    (ema,) = two_phase_run["emas"]  # one EMA for the whole run, not one per phase
    assert ema.updates == len(two_phase_run["steps"])  # every optimizer step of both phases went into it


def test_phase_summary_in_checkpoint_and_results(two_phase_run) -> None:
    out, phases = two_phase_run["out"], two_phase_run["summary"]["phases"]
    _, metadata = load_model(out / "weights" / "last.safetensors")
    assert metadata["phases"] == phases
    assert json.loads((out / "summary.json").read_text())["phases"] == phases
    rows = read_rows(out / "results.csv")
    assert [row["phase"] for row in rows] == ["frozen-backbone"] * 2 + ["all"]
    counts = [int(float(row["trainable_params"])) for row in rows]
    assert counts == [phases[0]["trainable_params"]] * 2 + [phases[1]["trainable_params"]]


def test_resume_in_the_middle_of_a_phase(tiny_run, two_phase_run) -> None:
    config = tiny_config(tiny_run, "resumed", epochs=4)
    strategy = load_strategy(tiny_run["strategy"], epochs=4)
    real_save = trainer_module.Trainer._save

    def save_then_stop(self, is_best: bool) -> None:
        real_save(self, is_best)
        raise KeyboardInterrupt  # killed after epoch 1, inside the plateau phase

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module.Trainer, "_save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train(config, strategy)
    assert len(read_rows(config.out / "results.csv")) == 1
    summary = train(config, strategy, resume=True)
    assert summary["phases"] == two_phase_run["summary"]["phases"]
    resumed = read_rows(config.out / "results.csv")
    uninterrupted = read_rows(two_phase_run["out"] / "results.csv")
    assert len(resumed) == len(uninterrupted) == 3
    compared = [key for key in resumed[0] if key.startswith(("train/", "metrics/", "val/", "x/"))]
    for row, reference in zip(resumed, uninterrupted, strict=True):
        assert row["phase"] == reference["phase"]
        for key in compared:
            assert float(row[key]) == pytest.approx(float(reference[key]), rel=1e-5, abs=1e-7), key
