"""The trainer's speed measures change nothing but speed: channels_last and BN-folded frozen layers give the
plain path's loss and gradients, frozen weights and BN buffers stay bit-identical, a frozen first layer lets
the batch go before the loss, the multi-tensor optimizer and EMA equal their loops; --val-every, the RAM cache
choice and the loading line."""

import copy
import csv
import math
import os
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from yolo_transfer.cli import build_parser
from yolo_transfer.data import build_dataloader, load_dataset, load_hyp
from yolo_transfer.data.dataset import YoloDataset
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.data.validate import Sample
from yolo_transfer.engine import loading_plan
from yolo_transfer.engine.device import training_input
from yolo_transfer.engine.ema import ModelEMA
from yolo_transfer.engine.evaluate import validation_forward_batch
from yolo_transfer.engine.fused_frozen import fused_prefix
from yolo_transfer.engine.loading_plan import plan_loading
from yolo_transfer.engine.loss import ComputeLoss, scale_loss_gains
from yolo_transfer.engine.optim import build_optimizer
from yolo_transfer.engine.train_config import config_from_args
from yolo_transfer.engine.trainer import TrainConfig, Trainer
from yolo_transfer.models import build_model
from yolo_transfer.strategies import load_strategy
from yolo_transfer.strategies.trainable import apply_phase

TINY = {"imgsz": 64, "batch": 4, "workers": 0, "device": "cpu"}
BACKBONE = tuple(f"model.{i}." for i in range(10))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """16 synthetic images at 64 px: 12 train, 4 val."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_TRANSFER_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield make_domain(tmp_path_factory.mktemp("tiny"), "target", n_images=16, imgsz=64, seed=3)


def _model_with_real_bn_statistics(nc: int = 3, seed: int = 0):
    """yolov5n whose BN layers hold non-trivial statistics and affine values, so folding them matters."""
    torch.manual_seed(seed)
    model = build_model("yolov5n", nc=nc)
    generator = torch.Generator().manual_seed(seed)
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            n = layer.num_features
            layer.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            layer.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


def _loss_and_grads(model, images, targets, prefix, stand_ins=None, memory_format=torch.contiguous_format):
    hyp = scale_loss_gains(load_hyp("low"), 3, 3, images.shape[-1])
    model = model.to(memory_format=memory_format)
    preds = model(images.contiguous(memory_format=memory_format), no_grad_prefix=prefix, stand_ins=stand_ins)
    loss, _ = ComputeLoss(model, hyp)(preds, targets)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("strategy", ["full", "freeze"])
def test_channels_last_and_folded_prefix_give_the_plain_first_step(strategy):
    plain = _model_with_real_bn_statistics()
    fast = copy.deepcopy(plain)
    phase = load_strategy(strategy, epochs=1).phases[0]
    prefix = apply_phase(plain, phase).prefix
    assert apply_phase(fast, phase).prefix == prefix == (10 if strategy == "freeze" else 0)
    stand_ins = fused_prefix(fast, prefix, phase.bn, torch.channels_last)
    assert (stand_ins is not None) == (strategy == "freeze")
    torch.manual_seed(1)
    images = torch.rand(2, 3, 96, 96)
    boxes = [[0, 1, 0.5, 0.5, 0.4, 0.3], [1, 2, 0.3, 0.6, 0.2, 0.5], [1, 0, 0.7, 0.2, 0.3, 0.3]]
    targets = torch.tensor(boxes)

    loss, grads = _loss_and_grads(plain, images, targets, prefix)
    fast_loss, fast_grads = _loss_and_grads(fast, images, targets, prefix, stand_ins, torch.channels_last)

    # The folded prefix rounds differently from conv + BN: the loss moved 2.4e-5 relative on an AVX-512 host
    # (under 1e-5 on others); a wrong fold or layout moves it by O(1).
    assert torch.allclose(fast_loss, loss, rtol=1e-4), (fast_loss, loss)
    assert grads.keys() == fast_grads.keys() and grads
    assert not any(name.startswith(BACKBONE) for name in grads) or strategy == "full"
    # Each tensor relative to its norm. The prefix's features agree to ~5e-7; the training layers' BN over a
    # batch of 2 tiny images (the P5 level is 3x3) amplifies that: channels_last alone moves gradients by
    # ~2e-3 here, a wrong fold or layout by O(1).
    for name, grad in grads.items():
        assert (fast_grads[name] - grad).norm() <= 1e-2 * grad.norm() + 1e-8, name
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values(), strict=True):
        if strategy == "freeze" and name.startswith(BACKBONE):  # folding left the frozen layers as they were
            assert torch.equal(a, b), name
        else:  # BN statistics of training layers moved by the batch's statistics, amplified as the gradients
            assert (a.float() - b.float()).norm() <= 1e-3 * a.float().norm() + 1e-6, name


@pytest.mark.parametrize("prefix", [0, 10])
def test_training_input_is_the_scaled_batch_and_a_frozen_first_layer_lets_it_go(prefix):
    batch = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    inputs = training_input(batch, torch.device("cpu"), torch.channels_last)
    assert inputs.dtype == torch.float32 and inputs.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(inputs, batch.float() / 255)
    model = build_model("yolov5n", nc=3).to(memory_format=torch.channels_last)
    alive = weakref.ref(inputs)
    preds = model(inputs, no_grad_prefix=prefix)
    del inputs  # what the trainer does after the forward
    # all trainable: the first conv keeps its input for the weight gradient; frozen: nothing keeps it
    assert (alive() is None) == (prefix > 0)
    sum(p.sum() for p in preds).backward()


def test_folding_needs_frozen_statistics():
    model = _model_with_real_bn_statistics()
    assert fused_prefix(model, 10, "train") is None  # BN in train mode: its statistics still move
    assert fused_prefix(model, 0, "frozen") is None


def test_foreach_optimizer_and_ema_equal_their_loops():
    model = _model_with_real_bn_statistics()
    models = [copy.deepcopy(model) for _ in range(2)]
    emas = [ModelEMA(m) for m in models]
    optimizers = [build_optimizer(m, "SGD", 0.01, 0.9, 5e-4) for m in models]
    assert all(group["foreach"] is True for group in optimizers[0].param_groups)
    for group in optimizers[1].param_groups:
        group["foreach"] = False  # the per-parameter loop
    for step in range(3):
        torch.manual_seed(step)
        noise = [torch.randn_like(p) for p in models[0].parameters()]
        for m, optimizer, ema in zip(models, optimizers, emas, strict=True):
            for p, g in zip(m.parameters(), noise, strict=True):
                p.grad = g.clone()
            optimizer.step()
            if ema is emas[0]:
                ema.update(m)
            else:  # the per-tensor loop the multi-tensor lerp replaced
                ema.updates += 1
                d, state = ema.current_decay(), m.state_dict()
                for key, value in ema.ema.state_dict().items():
                    if value.dtype.is_floating_point:
                        value.lerp_(state[key], 1 - d)
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(emas[0].ema.state_dict().values(), emas[1].ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_frozen_run_keeps_backbone_bit_identical_and_validates_every_second_epoch(
    tiny, tmp_path, capsys, monkeypatch
):
    data = load_dataset(tiny)
    model = _model_with_real_bn_statistics(len(data.names))
    start = copy.deepcopy(model.state_dict())
    config = TrainConfig(data=str(tiny), out=tmp_path / "run", epochs=3, val_every=2, **TINY)
    trainer = Trainer(model, data, load_strategy("freeze", epochs=3), config, config.out)
    releases, forward_sizes = [], []
    monkeypatch.setattr("yolo_transfer.engine.trainer.release_free_heap", lambda: releases.append(1))
    trainer.ema.ema.register_forward_pre_hook(lambda module, args: forward_sizes.append(len(args[0])))
    inputs, input_alive_at_loss = [], []  # the frozen first layer lets the batch go before loss and backward
    model.register_forward_pre_hook(lambda module, args: inputs.append(weakref.ref(args[0])))
    compute_loss = trainer.compute_loss

    def loss_noting_the_input(*args):
        input_alive_at_loss.append(inputs[-1]() is not None)
        return compute_loss(*args)

    trainer.compute_loss = loss_noting_the_input
    summary = trainer.fit()
    assert input_alive_at_loss and not any(input_alive_at_loss)
    assert len(releases) == 2  # the heap's free pages go back after each of the two validations
    assert max(forward_sizes) == validation_forward_batch(config.batch) == config.batch // 2  # half batches

    for name, tensor in start.items():
        if name.startswith(BACKBONE):  # frozen weights and BN buffers, in the model and in its EMA
            assert torch.equal(model.state_dict()[name], tensor), name
            assert torch.equal(trainer.ema.ema.state_dict()[name], tensor), name
    assert not torch.equal(model.state_dict()["model.17.cv1.conv.weight"], start["model.17.cv1.conv.weight"])
    with open(config.out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    validated = [not math.isnan(float(row["metrics/mAP_0.5:0.95"])) for row in rows]
    assert validated == [False, True, True]  # epoch 2 by --val-every, epoch 3 as the last
    assert summary["best"]["epoch"] in (2, 3) and summary["final"]["epoch"] == 3
    assert not math.isnan(summary["time_to_95pct_best_s"])
    assert set(summary["time_breakdown_s"]) >= {"data", "forward", "backward", "optimizer", "validation"}
    out = capsys.readouterr().out
    assert "loading: 0 loader workers" in out and "RAM image cache on (auto, fits" in out
    assert "not validated" in out and "data wait" in out
    assert trainer.val_loader.dataset.cached is not None and trainer.active.loader.dataset.cached is not None


def test_the_loaders_keep_their_workers_from_one_epoch_to_the_next(tiny, tmp_path, monkeypatch):
    # each sample reports the process that loaded it (in place of its path): the same worker processes serve
    # every pass, of the val loader and of the shuffled, augmenting training loader (whose batches stay those
    # of workers started every epoch: test_augment.py)
    load = YoloDataset.__getitem__
    monkeypatch.setattr(YoloDataset, "__getitem__", lambda self, i: (*load(self, i)[:2], os.getpid(), None))
    data = load_dataset(tiny)
    hyp = load_hyp("low")

    def loading_processes(loader) -> list[set[int]]:
        return [{pid for _, _, pids, _ in loader for pid in pids} for _ in range(2)]

    val = build_dataloader(data.val, 64, 4, augment=False, hyp=hyp, rect=True, workers=1)
    train = build_dataloader(data.train, 64, 4, augment=True, hyp=hyp, shuffle=True, workers=1)
    for loader in (val, train):
        passes = loading_processes(loader)
        assert passes[0] == passes[1] and len(passes[0]) == 1 and os.getpid() not in passes[0]
    no_workers = build_dataloader(data.val, 64, 4, augment=False, hyp=hyp, workers=0)
    assert not no_workers.persistent_workers  # nothing to keep (torch refuses the option without workers)
    config = TrainConfig(
        data=str(tiny), out=tmp_path / "run", epochs=1, noplots=True, **{**TINY, "workers": 1}
    )
    trainer = Trainer(
        build_model("yolov5n", nc=len(data.names)), data, load_strategy("full", epochs=1), config, config.out
    )
    assert trainer.val_loader.persistent_workers and trainer.val_loader.num_workers == 1
    trainer.active = trainer._start_phase(None)
    assert trainer.active.loader.persistent_workers and trainer.active.loader.num_workers == 1


def _samples(n: int, width: int = 640, height: int = 480) -> list[Sample]:
    return [Sample(Path(f"{i}.jpg"), np.zeros((0, 5), np.float32), width, height) for i in range(n)]


def test_cache_is_automatic_when_the_images_fit_and_can_be_forced(monkeypatch):
    cpu = torch.device("cpu")
    plan = plan_loading(_samples(10), 320, cpu, workers=None, cache=None)
    assert plan.cache and plan.cache_bytes == 10 * 320 * 240 * 3 and plan.cache_reason == "auto, fits"
    monkeypatch.setattr(loading_plan, "cache_budget_bytes", lambda: 1000)
    too_large = plan_loading(_samples(10), 320, cpu, workers=None, cache=None)
    assert not too_large.cache and too_large.cache_reason == "auto, too large"
    assert plan_loading(_samples(10), 320, cpu, workers=None, cache=True).cache
    kept_off = plan_loading(_samples(1), 320, cpu, workers=2, cache=False)
    assert not kept_off.cache and kept_off.workers == 2 and "--no-cache" in kept_off.line()


def test_workers_and_threads_follow_the_cores(monkeypatch):
    monkeypatch.setattr(loading_plan, "available_cores", lambda: 2)
    with loading_plan.torch_threads(2):
        plan = plan_loading(_samples(1), 64, torch.device("cpu"), workers=None, cache=None)
        assert (plan.workers, plan.threads) == (0, 2)
        # workers asked for on the CPU share the cores: torch keeps a thread per core (the module docstring
        # has the measurement)
        assert plan_loading(_samples(1), 64, torch.device("cpu"), workers=2, cache=None).threads == 2
    monkeypatch.setattr(loading_plan, "available_cores", lambda: 16)
    assert plan_loading(_samples(1), 64, torch.device("cpu"), workers=None, cache=None).workers == 4
    assert plan_loading(_samples(1), 64, torch.device("cuda"), workers=None, cache=None).workers == 8
    assert plan_loading(_samples(1), 64, torch.device("cuda"), None, None, processes=4).workers == 3


def test_a_run_trains_with_its_planned_threads_and_leaves_the_process_count_as_it_was(
    tiny, tmp_path, monkeypatch
):
    monkeypatch.setattr(loading_plan, "available_cores", lambda: 1)  # the plan: one torch thread
    config = TrainConfig(data=str(tiny), out=tmp_path / "run", epochs=1, noplots=True, **TINY)
    data = load_dataset(tiny)
    with loading_plan.torch_threads(3):  # the caller's count, restored after the test
        trainer = Trainer(
            build_model("yolov5n", nc=len(data.names)),
            data,
            load_strategy("full", epochs=1),
            config,
            config.out,
        )
        # the plan gives the run one thread; building the trainer sets nothing yet
        assert trainer.loading.threads == 1 and torch.get_num_threads() == 3
        compute_loss, threads_in_steps = trainer.compute_loss, []

        def loss_noting_the_threads(*args):
            threads_in_steps.append(torch.get_num_threads())
            return compute_loss(*args)

        trainer.compute_loss = loss_noting_the_threads
        trainer.fit()
        assert threads_in_steps and set(threads_in_steps) == {1}
        assert torch.get_num_threads() == 3  # a later run or test in this process keeps its own count


@pytest.mark.parametrize(("flags", "cache"), [([], None), (["--cache"], True), (["--no-cache"], False)])
def test_cache_flags(flags, cache, tmp_path):
    args = build_parser().parse_args(["train", "--data", "d.yaml", "--out", str(tmp_path), *flags])
    config = config_from_args(args)
    assert config.cache is cache and config.workers is None and config.val_every == 1
