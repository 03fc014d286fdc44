"""Budgets and the one cost model behind them: epochs within a time budget, measured phase costs, time=1."""

import dataclasses
import json
import os
import sys
import time

import pytest
import torch
from rich.console import Console

from yolo_transfer.cli import main
from yolo_transfer.compare.runner import (
    RunSpec,
    _train,
    in_fresh_process,
    plan_epochs,
    run_all,
    write_time_plans,
)
from yolo_transfer.data import load_dataset, load_hyp
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine.budget import epochs_within, parse_budget, schedule_seconds, time_fitted_length
from yolo_transfer.engine.cost import CostModel, _loader_start_seconds, loading_epoch_seconds, measure_costs
from yolo_transfer.engine.loading_plan import torch_threads
from yolo_transfer.errors import ConfigError
from yolo_transfer.models import build_model, save_model
from yolo_transfer.strategies import Phase, Strategy
from yolo_transfer.strategies.phase import resolve_phase_lengths
from yolo_transfer.strategies.trainable import resolve_modules

TWO_PHASES = Strategy(
    "two", "frozen half the budget, then all",
    [Phase("frozen", trainable=["head"], plateau={"patience": 2, "max_epochs": 0.5}), Phase("all")],
)  # fmt: skip


def test_epochs_within_a_time_budget():
    one = Strategy("one", "all", [Phase("all")])
    resolve_one = lambda epochs: resolve_phase_lengths(one, epochs)  # noqa: E731
    assert epochs_within(resolve_one, [10.0], budget_s=105) == 10
    assert epochs_within(resolve_one, [10.0], budget_s=5) == 0
    resolve_two = lambda epochs: resolve_phase_lengths(TWO_PHASES, epochs)  # noqa: E731
    assert schedule_seconds(resolve_two(100), [6.0, 10.0], 100) == 50 * 6 + 50 * 10
    assert epochs_within(resolve_two, [6.0, 10.0], budget_s=800) == 100
    assert epochs_within(resolve_two, [6.0, 10.0], budget_s=87) == 11  # 6 * 6 + 5 * 10 = 86


def test_a_time_budget_too_short_for_staged_unfreezing_is_spent_frozen():
    # an epoch of 100 images: 1 s with the backbone frozen, 2 s with every module training
    model = build_model("yolov5n", nc=1)
    step_s = {tuple(range(25)): 0.02, tuple(range(10, 25)): 0.01, (24,): 0.005}
    costs = CostModel(n_train=100, n_val=0, load_s=0.0, val_s=0.0, step_s=step_s, batch=10)
    # 24.3 s planned: staged fits 14 epochs, 4 frozen + 10 unfrozen (4 + 20 = 24 s), its min_epochs: both
    assert costs.time_plan("staged", model, 27) == (14, 2)
    # 22.5 s: 13 epochs would leave the unfrozen phase 9 < 10, so the frozen phase takes the time
    assert costs.time_plan("staged", model, 25) == (22, 1)
    assert costs.time_plan("freeze", model, 25) == (22, 1)  # what freeze plans: the same schedule
    assert costs.time_plan("full", model, 25) == (11, 1)
    assert costs.time_plan("gradual", model, 25)[1] == 3  # no min_epochs: every phase, however short
    assert costs.mean_epoch_seconds("staged", model, phases=1) == pytest.approx(1.0)
    assert costs.mean_epoch_seconds("staged", model) == pytest.approx(0.3 * 1.0 + 0.7 * 2.0)


def test_a_phase_slower_than_its_plan_is_fitted_to_the_time_left():
    # 20 s with the image cache filled, then 10 s an epoch: 10 more fit in 100 s
    assert time_fitted_length(30, [20.0, 10.0, 10.0], seconds_left=100.0) == (13, 10.0)
    # never beyond the plan
    assert time_fitted_length(13, [20.0, 10.0, 10.0], seconds_left=200.0) == (13, 10.0)
    # a slowdown counts from its first epoch (the mean would say 8.5 s); the next re-plan gives back
    assert time_fitted_length(30, [20.0, 5.0, 5.0, 16.0], seconds_left=100.0) == (10, 16.0)
    assert time_fitted_length(30, [20.0, 5.0, 5.0, 16.0, 5.0], seconds_left=84.0) == (15, 7.75)
    # no epoch fits: the budget stops it; one epoch sets no pace
    assert time_fitted_length(30, [20.0, 10.0], seconds_left=9.0) is None
    assert time_fitted_length(30, [20.0], seconds_left=10.0) is None


def test_budget_text():
    assert str(parse_budget("time=1.5")) == "time=1.5" and parse_budget("time=1.5").max_seconds == 90


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cost")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_TRANSFER_CACHE", str(root / "cache"))
        yield make_domain(root / "data", "target", n_images=30, imgsz=128, seed=4)


def test_measured_costs_follow_the_phases_and_leave_the_model_alone(tiny):
    data = load_dataset(tiny)
    model = build_model("yolov5n", nc=len(data.names))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    strategy = resolve_phase_lengths(TWO_PHASES, 10)
    costs = measure_costs(  # no workers, on any host: loading adds to the steps (workers: test below)
        model, [strategy], data, imgsz=128, batch=8, hyp=load_hyp("low"), device="cpu", workers=0
    )

    assert set(costs.step_s) == {(24,), tuple(range(25))}
    assert costs.step_s[(24,)] < costs.step_s[tuple(range(25))]  # the head alone is cheaper
    assert costs.load_s > 0 and costs.val_s > 0 and (costs.n_train, costs.n_val) == (24, 6)
    frozen, full = costs.strategy_epoch_seconds(strategy, model)
    assert costs.checkpoint_s > 0
    assert frozen == pytest.approx(
        24 * (costs.step_s[(24,)] + costs.load_s) + 6 * costs.val_s + costs.checkpoint_s
    )
    assert frozen < full
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (checked on GPU machines)")
def test_costs_are_measured_on_the_gpu(tiny):
    # compare --budget time=N on a GPU: every step and the validation are timed there
    data = load_dataset(tiny)
    model = build_model("yolov5n", nc=len(data.names))
    strategy = resolve_phase_lengths(TWO_PHASES, 10)
    costs = measure_costs(model, [strategy], data, imgsz=128, batch=8, hyp=load_hyp("low"), device="cuda")
    assert set(costs.step_s) == {(24,), tuple(range(25))} and min(costs.step_s.values()) > 0
    assert costs.val_s > 0 and costs.checkpoint_s > 0
    assert all(not parameter.is_cuda for parameter in model.parameters())  # timed on a copy


def test_costs_are_timed_with_the_threads_of_the_trainers_loading_plan(tiny, monkeypatch):
    data = load_dataset(tiny)
    model = build_model("yolov5n", nc=len(data.names))
    strategy = resolve_phase_lengths(TWO_PHASES, 10)
    monkeypatch.setattr("yolo_transfer.engine.loading_plan.available_cores", lambda: 1)
    seen = []
    monkeypatch.setattr(
        "yolo_transfer.engine.cost._validation_seconds",
        lambda *a: seen.append(torch.get_num_threads()) or 1.0,
    )
    options = {"imgsz": 128, "batch": 8, "hyp": load_hyp("low"), "device": "cpu", "repeats": 1}
    with torch_threads(2):  # the caller's count: the plan gives one core one thread, then restores it
        one_worker = measure_costs(model, [strategy], data, workers=1, **options)
        no_worker = measure_costs(model, [strategy], data, workers=0, **options)
        assert torch.get_num_threads() == 2
    assert (one_worker.workers, one_worker.threads) == (1, 1)  # one core: one thread, with a worker or not
    assert (no_worker.workers, no_worker.threads) == (0, 1)
    assert no_worker.loader_start_s == 0  # no workers to start (timed with them: the test below)
    assert seen == [1, 1]


def test_an_epoch_is_loaded_and_stepped_as_the_dataloader_schedules_whole_batches():
    assert loading_epoch_seconds(10, 4, 0.02, 0.03, workers=0) == pytest.approx(10 * 0.05)  # load, then step
    # the steps are slower: the workers run ahead, the first batch is the only wait
    assert loading_epoch_seconds(40, 4, 0.05, 0.03, workers=2) == pytest.approx(4 * 0.03 + 40 * 0.05)
    # a GPU epoch of 160 images over 8 workers is loading-bound: two rounds of building a batch of 16 (then
    # the second round's two steps), 1.6x the images' loading spread evenly over the workers
    gpu = loading_epoch_seconds(160, 16, 0.001, 0.04, workers=8)
    assert gpu == pytest.approx(2 * 16 * 0.04 + 2 * 16 * 0.001)
    assert gpu / (160 * 0.04 / 8) == pytest.approx(1.64)
    # a partial last batch: worker 0 builds batches 0 and 2 (4 and 2 images), worker 1 batch 1
    assert loading_epoch_seconds(10, 4, 0.01, 0.04, workers=2) == pytest.approx(0.24 + 2 * 0.01)
    costs = {"n_train": 10, "n_val": 5, "load_s": 0.03, "val_s": 0.1, "step_s": {(0,): 0.02}, "batch": 4}
    assert CostModel(**costs, checkpoint_s=0.5).phase_epoch_seconds([0]) == pytest.approx(
        10 * 0.05 + 5 * 0.1 + 0.5
    )
    assert CostModel(**costs, workers=2, loader_start_s=0.2).phase_epoch_seconds([0]) == pytest.approx(
        loading_epoch_seconds(10, 4, 0.02, 0.03, workers=2) + 0.2 + 5 * 0.1
    )


class _SlowImages(torch.utils.data.Dataset):
    """Images that take ``seconds`` each to load without using a core (the timing holds on a busy host)."""

    def __init__(self, n: int, seconds: float):
        self.n, self.seconds = n, seconds

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        time.sleep(self.seconds)
        return torch.zeros(1)


@pytest.mark.skipif(sys.platform != "linux", reason="times forked loader workers (the trainer's on Linux)")
@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # more workers than cores: they sleep
def test_the_epoch_model_and_the_measured_worker_start_match_a_real_dataloader():
    # 4 batches of 4 over 3 workers: worker 0 builds batches 0 and 3, so the last step waits for a second
    # round; the images' loading spread evenly over the workers would take 0.8 s / 3, the steps 0.16 s
    n, batch, workers, load_s, step_s = 16, 4, 3, 0.05, 0.01
    loader = torch.utils.data.DataLoader(
        _SlowImages(n, load_s), batch_size=batch, num_workers=workers, multiprocessing_context="fork"
    )
    modelled = loading_epoch_seconds(n, batch, step_s, load_s, workers)
    assert modelled == pytest.approx(0.44)
    worker_start = _loader_start_seconds(loader, load_s)  # passes without steps, beyond the model
    assert 0 < worker_start < 0.3
    start = time.perf_counter()
    for images in loader:
        time.sleep(len(images) * step_s)
    measured = time.perf_counter() - start
    assert measured >= 0.97 * modelled, (measured, modelled)
    assert measured == pytest.approx(modelled + worker_start, abs=0.1), (measured, modelled, worker_start)


@pytest.fixture(scope="module")
def seconds_epochs(tmp_path_factory):
    """A set whose epochs take a few seconds, as a real set's do: the per-epoch costs the plan can only
    approximate (validation of a changing model, bookkeeping) stay a small share of an epoch."""
    root = tmp_path_factory.mktemp("cost-second")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_TRANSFER_CACHE", str(root / "cache"))
        yield make_domain(root / "data", "target", n_images=240, imgsz=128, seed=4)


def test_a_one_minute_budget_ends_within_fifteen_percent_its_schedule_cut_only_by_slow_epochs(
    seconds_epochs, tmp_path
):
    # one loader worker (the default on two cores); the serial (no-worker) plan is the cost model's formula,
    # checked above without a minute of training
    root = tmp_path
    weights = root / "w.safetensors"
    names = load_dataset(seconds_epochs).names
    save_model(build_model("yolov5n", nc=len(names), names=names), weights, {})
    out = root / "cmp"
    code = main(
        ["compare", "--data", str(seconds_epochs), "--weights", str(weights), "--strategies", "full",
         "--budget", "time=1", "--imgsz", "128", "--batch", "8", "--workers", "1", "--device", "cpu",
         "--noplots", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    run = json.loads((out / "results.json").read_text())["runs"][0]
    plan = json.loads((out / "runs" / "full-s0" / "plan.json").read_text())
    assert plan["epochs"] >= 2 and plan["probe"]["epoch_seconds_estimate"] > 0
    probe = plan["probe"]  # the measurements behind the plan, the workers' per-epoch start among them
    assert (probe["batch"], probe["workers"]) == (8, 1) and probe["loader_start_s"] >= 0
    assert run["wall_seconds"] <= 60 * 1.15, run["wall_seconds"]
    assert run["wall_seconds"] >= 60 * 0.5, run["wall_seconds"]  # the schedule used the budget
    summary = json.loads((out / "runs" / "full-s0" / "summary.json").read_text())
    if summary["end_reason"] == "completed":  # the LR ran down, over the plan or a shortened one
        planned = summary["phases"][0].get("planned_epochs", summary["epochs"])
        assert planned == plan["epochs"] and summary["epochs"] <= planned
    else:  # the plan leaves a tenth of the budget spare: only epochs slower than measured can be cut
        assert summary["end_reason"] == "max_seconds"
        state = json.loads((out / "runs" / "full-s0" / "weights" / "last.state.json").read_text())
        epochs_done = state["progress"]["images_seen"] / plan["probe"]["n_train"]
        assert 60 / epochs_done > plan["probe"]["epoch_seconds_estimate"], (epochs_done, plan["probe"])


def test_a_step_that_trains_fewer_modules_is_never_timed_slower(tiny, monkeypatch):
    # stalls while the neck-and-head and the early-layers steps were timed make them look slower than
    # training every module; the head alone was timed undisturbed
    seconds = {(24,): 1.0, tuple(range(10, 25)): 3.0, tuple(range(25)): 2.0, (0, 1, 2, 3): 5.0}
    monkeypatch.setattr(
        "yolo_transfer.engine.cost._training_step",
        lambda model, phase, *args: lambda: seconds[tuple(resolve_modules(phase.trainable, model))] * 8,
    )
    phases = [
        Phase("head", trainable=["head"], epochs=1), Phase("all", epochs=1),
        Phase("neck-head", trainable=["neck", "head"], epochs=1), Phase("early", trainable=[0, 1, 2, 3]),
    ]  # fmt: skip
    data = load_dataset(tiny)
    costs = measure_costs(
        build_model("yolov5n", nc=len(data.names)), [Strategy("four", "", phases)], data, imgsz=128, batch=8,
        hyp=load_hyp("low"), device="cpu", repeats=1,
    )  # fmt: skip
    assert costs.step_s == {(24,): 1.0, tuple(range(10, 25)): 2.0, tuple(range(25)): 2.0, (0, 1, 2, 3): 2.0}


def test_a_step_is_timed_by_its_fastest_repeat(tiny, monkeypatch):
    # a disturbance only adds time: the whole-model step is slowed in four of its five timed repeats (its
    # median 2.4x the undisturbed time), the head's in none; the warm-up round is not counted
    rounds = {
        (24,): iter([9.0, 1.0, 1.0, 1.1, 1.0, 1.0]),
        tuple(range(25)): iter([9.0, 4.8, 2.0, 6.0, 4.8, 5.2]),
    }
    monkeypatch.setattr(
        "yolo_transfer.engine.cost._training_step",
        lambda model, phase, *args: lambda: next(rounds[tuple(resolve_modules(phase.trainable, model))]) * 8,
    )
    phases = [Phase("head", trainable=["head"], epochs=1), Phase("all", epochs=1)]
    data = load_dataset(tiny)
    costs = measure_costs(
        build_model("yolov5n", nc=len(data.names)), [Strategy("two", "", phases)], data, imgsz=128, batch=8,
        hyp=load_hyp("low"), device="cpu",
    )  # fmt: skip
    assert costs.step_s == {(24,): 1.0, tuple(range(25)): 2.0}
    assert all(next(values, None) is None for values in rounds.values())  # five rounds after the warm-up


def test_a_time_budget_plans_every_run_from_one_measurement(tiny, tmp_path, monkeypatch):
    names = load_dataset(tiny).names
    weights = tmp_path / "w.safetensors"
    save_model(build_model("yolov5n", nc=len(names), names=names), weights, {})
    options = {"imgsz": 128, "batch": 8, "hyp": "low", "device": "cpu", "workers": 0, "cache": None,
               "val_fraction": 0.2, "split_seed": 0}  # fmt: skip
    specs = [
        RunSpec(entry, entry, seed, tmp_path / "runs" / f"{entry}-s{seed}", str(tiny), str(weights),
                parse_budget("time=1"), 24, options)
        for seed in (0, 1) for entry in ("full", "freeze")
    ]  # fmt: skip
    measured = []

    def counting(model, strategies, *args, **kwargs):
        strategies = list(strategies)
        measured.append([strategy.name for strategy in strategies])
        return measure_costs(model, strategies, *args, **kwargs)

    monkeypatch.setattr("yolo_transfer.engine.cost.measure_costs", counting)
    planned = write_time_plans(specs)
    assert measured == [["full", "freeze"]]  # one measurement, both strategies' steps interleaved
    plans = {spec.run_dir.name: json.loads((spec.run_dir / "plan.json").read_text()) for spec in specs}
    assert planned == {"full": str(plans["full-s0"]["epochs"]), "freeze": str(plans["freeze-s0"]["epochs"])}
    for entry in ("full", "freeze"):  # every seed trains the same epochs
        assert plans[f"{entry}-s0"] == plans[f"{entry}-s1"]
    assert len({json.dumps(plan["probe"]["train_s_per_image"]) for plan in plans.values()}) == 1
    assert set(plans["full-s0"]["probe"]["train_s_per_image"]) == {
        ",".join(map(str, range(25))),
        ",".join(map(str, range(10, 25))),
    }
    assert write_time_plans(specs) == {} and len(measured) == 1  # a fixed plan is never measured again
    alone = dataclasses.replace(specs[0], run_dir=tmp_path / "alone")
    assert plan_epochs(alone)["probe"]["epochs"] >= 1 and measured[-1] == ["full"]  # a run on its own


def test_a_plan_without_the_last_phase_is_kept_and_trained_that_way(tmp_path, monkeypatch):
    options = {"imgsz": 128, "batch": 8, "hyp": "low", "device": "cpu", "workers": 0, "cache": None,
               "val_fraction": 0.2, "split_seed": 0}  # fmt: skip
    specs = [
        RunSpec(name, name, 0, tmp_path / f"{name}-s0", "d", "w", parse_budget("time=1"), 24, options)
        for name in ("staged", "full")
    ]  # fmt: skip
    plans = {"staged": (12, {"phases": 1}), "full": (7, {"phases": 1})}
    monkeypatch.setattr("yolo_transfer.engine.cost.epochs_for_time", lambda strategies, *a, **k: plans)
    why = "'frozen-backbone' only: 'all' would get fewer than its min_epochs 10"
    assert write_time_plans(specs) == {"staged": f"12 ({why})", "full": "7"}
    plan = json.loads((tmp_path / "staged-s0" / "plan.json").read_text())
    assert (plan["phases"], plan["left_out"]) == (1, why)
    assert json.loads((tmp_path / "full-s0" / "plan.json").read_text())["left_out"] is None
    trained = []

    def recording(config, strategy, resume):
        trained.append((config.epochs, strategy))

    monkeypatch.setattr("yolo_transfer.engine.trainer.train", recording)
    _train(specs[0])
    ((epochs, strategy),) = trained
    assert epochs == 12 and [(p.name, p.epochs, p.plateau) for p in strategy.phases] == [
        ("frozen-backbone", None, None)
    ]
    (tmp_path / "staged-s0" / "plan.json").write_text('{"epochs": 12}')  # a plan from before phases were kept
    _train(specs[0])
    assert [phase.name for phase in trained[-1][1].phases] == ["frozen-backbone", "all"]


def test_only_runs_that_go_one_at_a_time_on_one_device_are_planned_before_they_start(monkeypatch, tmp_path):
    spec = RunSpec("full", "full", 0, tmp_path / "full-s0", "d", "w", parse_budget("time=1"), 1)
    planned = []

    def recording(function, specs):  # the measurement runs in a process of its own, not in compare's
        assert function is write_time_plans
        planned.append(specs)
        return {}

    monkeypatch.setattr("yolo_transfer.compare.runner.in_fresh_process", recording)
    monkeypatch.setattr("yolo_transfer.compare.runner._run_processes", lambda *a: [])
    console = Console(quiet=True)
    run_all([spec], jobs=1, backend="local", console=console)
    assert planned == [[spec]]
    run_all([spec], jobs=2, backend="local", console=console)
    run_all([spec], jobs=1, backend="local", console=console, devices=["cuda:0", "cuda:1"])
    monkeypatch.setattr("yolo_transfer.compare.runner._run_ray", lambda *a: [])
    run_all([spec], jobs=1, backend="ray", console=console)
    assert planned == [[spec]]  # parallel runs, device lanes and Ray tasks measure where they run
    (tmp_path / "full-s0").mkdir()
    (tmp_path / "full-s0" / "plan.json").write_text('{"epochs": 3}')
    run_all([spec], jobs=1, backend="local", console=console)
    assert planned == [[spec]]  # planned runs start no measuring process


def test_a_fresh_process_returns_its_result_and_raises_its_errors_here():
    assert in_fresh_process(os.getpid) != os.getpid()
    with pytest.raises(ConfigError, match="--budget 'time=0': time must be a positive number"):
        in_fresh_process(parse_budget, "time=0")


def test_auto_is_advised_in_a_process_of_its_own(monkeypatch):
    from yolo_transfer.advise import recommend_strategy
    from yolo_transfer.compare import resolve_auto

    calls = []
    monkeypatch.setattr(
        "yolo_transfer.compare.in_fresh_process",
        lambda *args, **kwargs: calls.append((args, kwargs)) or "freeze",
    )
    budget = parse_budget("time=2")
    assert resolve_auto(["full", "freeze"], "d", "w", budget, 320, "cpu") == ["full", "freeze"] and not calls
    assert resolve_auto(["auto", "full", "freeze"], "d", "w", budget, 320, "cpu") == ["freeze", "full"]
    assert calls == [((recommend_strategy, "d", "w"), {"budget": "time=2", "imgsz": 320, "device": "cpu"})]
