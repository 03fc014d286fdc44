"""Run strategies x seeds at one budget: in this process, in N spawned processes, or as Ray tasks.

Every run trains from the same weights on the same data with the same budget, options and seed list, into
``OUT/runs/<strategy>-s<seed>/`` (the trainer's folder layout). A run whose ``summary.json`` exists is
skipped; one with resume state (``weights/last.state.json``) resumes; one that raises is recorded with its
error (traceback in ``error.txt``) while the others go on. The epoch count each run's schedule gets (under a
time budget also the phases it runs) is fixed the first time it starts (``plan.json``), so a resumed run keeps
its schedule; under a time budget, runs that go one at a time on one device are all planned from one
measurement made before the first starts, in a process of its own (in parallel, on Ray or on several devices
each run measures where it runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from yolo_transfer.compare.parent_watch import end_with_parent
from yolo_transfer.compare.run_counter import RunCounter
from yolo_transfer.engine.budget import Budget, epochs_for_images
from yolo_transfer.engine.outputs import run_lock, write_atomic
from yolo_transfer.errors import ConfigError, YoloTransferError

Result = TypeVar("Result")

TIME_PROBE_OPTIONS = ("imgsz", "batch", "hyp", "device", "workers", "cache", "val_fraction", "split_seed")


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs; picklable so it can travel to a worker process or a Ray task."""

    strategy: str  # built-in name or YAML path, as load_strategy takes it
    label: str  # the strategy's name in folders and reports
    seed: int
    run_dir: Path
    data: str
    weights: str
    budget: Budget
    n_train: int
    options: dict = field(default_factory=dict)  # TrainConfig fields shared by all runs (imgsz, batch, ...)
    threads: int | None = None  # torch threads in a worker (parallel runs split the cores)
    log_file: bool = False  # send the run's output to run_dir/train.log (parallel runs)


@dataclass(frozen=True)
class RunOutcome:
    label: str
    seed: int
    run_dir: Path
    status: str  # done | skipped (finished earlier) | failed
    error: str | None = None
    seconds: float = 0.0


def plan_epochs(spec: RunSpec) -> dict:
    """The run's schedule length (for a time budget with the measurements behind it); fixed at first start."""
    plan_path = spec.run_dir / "plan.json"
    if not plan_path.is_file():
        if spec.budget.kind == "time":
            write_time_plans([spec])
        else:
            epochs = (
                int(spec.budget.value)
                if spec.budget.kind == "epochs"
                else epochs_for_images(spec.budget, spec.n_train)
            )
            write_atomic(plan_path, json.dumps({"epochs": epochs}, indent=2).encode())
    return json.loads(plan_path.read_text())


def write_time_plans(specs: list[RunSpec]) -> dict[str, str]:
    """Fix the schedule of every time-budgeted run in ``specs`` that has none yet, from one measurement of
    all their strategies on this machine (engine/cost.py): every seed of a strategy gets the same epochs,
    and a disturbance while timing hits every strategy alike, as in ``advise``. Returns the schedules
    planned, in words, by strategy label."""
    todo = _without_time_plan(specs)
    if not todo:
        return {}
    from yolo_transfer.engine.cost import epochs_for_time

    first = todo[0]
    plans = epochs_for_time(
        list(dict.fromkeys(spec.strategy for spec in todo)),
        first.budget.max_seconds,
        weights=first.weights,
        data=first.data,
        **{key: first.options[key] for key in TIME_PROBE_OPTIONS},
    )
    planned = {}
    for spec in todo:
        epochs, probe = plans[spec.strategy]
        left_out = _phases_left_out(spec.strategy, probe["phases"])
        plan = {"epochs": epochs, "phases": probe["phases"], "left_out": left_out, "probe": probe}
        write_atomic(spec.run_dir / "plan.json", json.dumps(plan, indent=2).encode())
        planned[spec.label] = f"{epochs} ({left_out})" if left_out else str(epochs)
    return planned


def _phases_left_out(strategy_name: str, phases: int) -> str | None:
    """Why a time plan runs only the first ``phases`` phases, e.g. "'frozen-backbone' only: 'all' would get
    fewer than its min_epochs 10"; None when it runs them all."""
    from yolo_transfer.engine.cost import NOMINAL_EPOCHS
    from yolo_transfer.strategies import load_strategy

    strategy = load_strategy(strategy_name, epochs=NOMINAL_EPOCHS)
    if phases == len(strategy.phases):
        return None
    kept = ", ".join(f"'{phase.name}'" for phase in strategy.phases[:phases])
    short = strategy.phases[phases]
    return f"{kept} only: '{short.name}' would get fewer than its min_epochs {short.min_epochs}"


def _without_time_plan(specs: list[RunSpec]) -> list[RunSpec]:
    return [s for s in specs if s.budget.kind == "time" and not (s.run_dir / "plan.json").is_file()]


def execute_run(spec: RunSpec) -> RunOutcome:
    """Train one strategy with one seed; never raises (a failure becomes a ``failed`` outcome)."""
    start = time.perf_counter()
    error_file = spec.run_dir / "error.txt"
    with contextlib.ExitStack() as stack:
        try:  # one process per run folder: another compare running this run now is refused
            stack.enter_context(run_lock(spec.run_dir))
        except YoloTransferError as err:
            return RunOutcome(
                spec.label, spec.seed, spec.run_dir, "failed", str(err), time.perf_counter() - start
            )
        error_file.unlink(missing_ok=True)
        if spec.log_file:
            log = stack.enter_context((spec.run_dir / "train.log").open("a"))
            stack.enter_context(contextlib.redirect_stdout(log))
            stack.enter_context(contextlib.redirect_stderr(log))
        try:
            _train(spec)
        except Exception as err:  # any failure of one run is recorded; the others go on
            error_file.write_text(traceback.format_exc())
            message = str(err) if isinstance(err, YoloTransferError) else f"{type(err).__name__}: {err}"
            return RunOutcome(
                spec.label, spec.seed, spec.run_dir, "failed", message, time.perf_counter() - start
            )
    return RunOutcome(spec.label, spec.seed, spec.run_dir, "done", None, time.perf_counter() - start)


def _train(spec: RunSpec) -> None:
    import torch

    from yolo_transfer.engine.run_state import state_exists
    from yolo_transfer.engine.trainer import TrainConfig, train
    from yolo_transfer.strategies import load_strategy

    if spec.threads:
        torch.set_num_threads(spec.threads)
    plan = plan_epochs(spec)
    strategy = load_strategy(spec.strategy, epochs=plan["epochs"], phases=plan.get("phases"))
    config = TrainConfig(
        data=spec.data,
        out=spec.run_dir,
        weights=spec.weights,
        epochs=plan["epochs"],
        seed=spec.seed,
        max_seconds=spec.budget.max_seconds,
        max_images=spec.budget.max_images,
        **spec.options,
    )
    train(config, strategy, resume=state_exists(spec.run_dir / "weights"))


def device_lanes(devices: str) -> list[str]:
    """``--devices 0,1`` -> ``["cuda:0", "cuda:1"]`` (``cpu,cpu`` -> two CPU lanes); each must exist."""
    from yolo_transfer.engine.device import select_device
    from yolo_transfer.engine.distributed import parse_devices

    kind, count, visible = parse_devices(devices)
    lanes = [f"cuda:{index}" for index in visible.split(",")] if kind == "cuda" else ["cpu"] * count
    for lane in lanes:
        select_device(lane)
    return lanes


def run_all(
    specs: list[RunSpec], *, jobs: int, backend: str, console: Console, devices: list[str] | None = None
) -> list[RunOutcome]:
    """Run every spec (skipping finished ones) and return the outcomes in the order of ``specs``.

    ``devices`` (local backend): one run at a time on each of these devices (e.g. ``cuda:0``, ``cuda:1``),
    instead of ``jobs`` runs on the device of the options."""
    for spec in specs:
        if (spec.run_dir / "summary.json").is_file():
            console.print(f"[dim]{spec.label} seed {spec.seed}: finished earlier, skipped[/]")
    todo = [spec for spec in specs if not (spec.run_dir / "summary.json").is_file()]
    skipped = [
        RunOutcome(spec.label, spec.seed, spec.run_dir, "skipped") for spec in specs if spec not in todo
    ]
    if not todo:
        outcomes = []
    elif backend == "ray":
        outcomes = _run_ray(todo, console)
    else:
        if not devices and jobs == 1:  # one run at a time on one device: one measurement plans them all
            planned = in_fresh_process(write_time_plans, todo) if _without_time_plan(todo) else {}
            if planned:
                epochs = ", ".join(f"{label} {words}" for label, words in planned.items())
                console.print(f"epochs that fit the budget, measured once for every run: {epochs}")
        outcomes = _run_processes(todo, devices or [None] * jobs, console)
    order = {(spec.label, spec.seed): i for i, spec in enumerate(specs)}
    return sorted(skipped + outcomes, key=lambda outcome: order[(outcome.label, outcome.seed)])


def in_fresh_process(function: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
    """``function(*args, **kwargs)`` in a spawned process that ends when it returns: what it loads (a model,
    a CUDA context, the measurement's buffers) is freed then, not held by this process while the runs train
    (measuring yolov5n on a CPU left 1.3-1.7 GB resident against 0.75 GB without). Its exceptions are raised
    here."""
    with _spawned_workers(1) as pool:
        return pool.submit(function, *args, **kwargs).result()


def _spawned_workers(count: int) -> ProcessPoolExecutor:
    """``count`` spawned worker processes, each used for one task only and ended with this process."""
    fresh = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}  # 3.10 reuses worker processes
    context = multiprocessing.get_context("spawn")
    watch = {"initializer": end_with_parent, "initargs": (os.getpid(),)}
    return ProcessPoolExecutor(count, mp_context=context, **watch, **fresh)


def _announce(outcome: RunOutcome, console: Console, counter: RunCounter) -> RunOutcome:
    status = counter.finished()
    if outcome.status == "done":
        console.print(
            f"[green]{outcome.label} seed {outcome.seed}: done[/] in {outcome.seconds:.0f} s — {status}"
        )
    elif outcome.status == "failed":
        console.print(f"[red]{outcome.label} seed {outcome.seed}: failed[/] — {outcome.error} — {status}")
    return outcome


def _run_processes(specs: list[RunSpec], lanes: list[str | None], console: Console) -> list[RunOutcome]:
    """Each run in a fresh spawned process (its own peak RSS and GPU memory), one per lane at a time.

    A lane is a device the lane's runs train on (None: the options' device); as soon as a run ends, the next
    one starts on its lane. Parallel runs split the CPU cores between them and write their output to
    ``train.log``.
    """
    if len(lanes) > 1:
        threads = max(1, (os.cpu_count() or 1) // len(lanes))
        specs = [dataclasses.replace(spec, threads=threads, log_file=True) for spec in specs]
    outcomes, counter, waiting = [], RunCounter(len(specs)), list(reversed(specs))
    with _spawned_workers(min(len(lanes), len(specs))) as pool:
        running = {}

        def start(lane: str | None) -> None:
            spec = waiting.pop()
            if lane is not None:
                spec = dataclasses.replace(spec, options={**spec.options, "device": lane})
            running[pool.submit(execute_run, spec)] = (spec, lane)

        for lane in lanes[: len(specs)]:
            start(lane)
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                spec, lane = running.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool as err:
                    outcome = RunOutcome(
                        spec.label, spec.seed, spec.run_dir, "failed", f"worker process died: {err}"
                    )
                outcomes.append(_announce(outcome, console, counter))
                if waiting:
                    start(lane)
    return outcomes


def _run_ray(specs: list[RunSpec], console: Console) -> list[RunOutcome]:
    """One Ray task per run (1 CPU, and 1 GPU on CUDA); the Ray instance this process is connected to, else
    the cluster in RAY_ADDRESS, else a local one started (and stopped) here.

    A task on a GPU trains on the GPU Ray assigned it (``cuda``, the only one it sees). The workers must see
    the same file system paths (data, weights, output folder) as this process.
    """
    try:
        import ray
    except ImportError as err:
        raise ConfigError("--backend ray needs Ray: pip install 'yolo-transfer[ray]'") from err
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=False)
    try:
        outcomes, counter = [], RunCounter(len(specs))
        refs = {}
        for spec in specs:
            gpus = 1 if str(spec.options.get("device", "cpu")).startswith("cuda") else 0
            options = {**spec.options, "device": "cuda"} if gpus else spec.options
            # max_calls=1: a fresh worker process per run, so peak RSS and GPU memory are the run's own
            task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0, max_calls=1)(execute_run)
            refs[task.remote(dataclasses.replace(spec, options=options, log_file=True))] = spec
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            spec = refs[ready[0]]
            try:
                outcome = ray.get(ready[0])
            except ray.exceptions.RayError as err:
                outcome = RunOutcome(spec.label, spec.seed, spec.run_dir, "failed", f"Ray task failed: {err}")
            outcomes.append(_announce(outcome, console, counter))
        return outcomes
    finally:
        if started_here:
            ray.shutdown()
