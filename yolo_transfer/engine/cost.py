"""One cost model for time budgets, advice and benchmarks: seconds per epoch of each phase on this device.

An epoch of a phase costs ``its training pass (steps and loading) + val images x validation + checkpoint
writes`` seconds. The training step is timed the way the trainer runs it: with the torch threads of its
loading plan (engine/loading_plan.py), in its memory format, the phase set up by ``apply_phase`` (frozen
modules, their BatchNorm policy, the no-grad prefix, run BN-folded), forward, loss, backward, clipping, an
optimizer step and the EMA update, on a real augmented batch of the data. Loading is timed in one process,
from the RAM cache when the trainer would cache: without workers the trainer waits for it after every step
(the times add up); with workers it runs beside the steps as torch's DataLoader schedules it
(:func:`loading_epoch_seconds`): each worker builds whole batches in turn, so an epoch of few batches also
waits for its first batch and for its last round (10 batches over 8 workers take two rounds of building a
batch, 1.6x the images' loading spread evenly over the workers: the model assumed the even spread before, and
a GPU epoch of 160 images took 1.6x its estimate); what starting a pass adds to every epoch (the workers are
kept from one epoch to the next, and resumed) is timed on passes of a loader with them. Validation is the
trainer's own (forward, loss, NMS, metrics) on a sample of the val images; the checkpoint writes are the
trainer's best, last and resume-state files. A training step's time is the fastest of five repeats after a
warm-up, the phases' steps interleaved: a disturbance only adds time, and the trainer shortens the last phase
of a schedule planned too long once its epochs show the pace (engine/budget.py), but a schedule planned too
short leaves its budget unused (a disturbed median once planned 4 full epochs where 9 fitted). Loading and
validation take the median of their repeats. A step that trains a subset of another's modules is capped at
that one's time (it does less work). ``compare --budget time=`` (engine/budget.py), ``advise`` and
benchmarks/strategy_cost.py all measure through :func:`measure_costs`.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from yolo_transfer.data import build_dataloader
from yolo_transfer.engine.budget import epochs_within, schedule_seconds
from yolo_transfer.engine.device import training_input, training_memory_format
from yolo_transfer.engine.ema import ModelEMA
from yolo_transfer.engine.evaluate import evaluate, validation_forward_batch
from yolo_transfer.engine.fused_frozen import fused_prefix
from yolo_transfer.engine.loading_plan import plan_loading, torch_threads
from yolo_transfer.engine.loss import ComputeLoss, scale_loss_gains
from yolo_transfer.engine.optim import GRAD_CLIP_NORM, build_optimizer
from yolo_transfer.engine.run_state import with_prefix, write_state
from yolo_transfer.models.checkpoint import save_model
from yolo_transfer.strategies import Phase, Strategy, load_strategy
from yolo_transfer.strategies.phase import last_phase_epochs
from yolo_transfer.strategies.trainable import apply_phase, resolve_modules

NOMINAL_EPOCHS = 100  # phase fractions are resolved against this many epochs to weigh their costs
LOADER_SAMPLE_IMAGES = 64  # loading is timed on at most this many training images
VAL_SAMPLE_IMAGES = 32  # validation is timed on at most this many val images
PLANNED_SHARE = 0.9  # a time budget's schedule is planned to fill this share of it


@dataclass
class CostModel:
    """Measured seconds per image on one device, and the epoch costs they imply for a dataset."""

    n_train: int
    n_val: int
    load_s: float  # the augmenting loader, per image, in one process
    val_s: float  # validation (forward, loss, NMS, metrics) per image
    step_s: dict[tuple[int, ...], float]  # a training step per image, by trainable module set
    batch: int  # training images per step, and per task of a loader worker
    checkpoint_s: float = 0.0  # an epoch's checkpoint writes: best and last weights, the resume state
    workers: int = 0  # loader workers: 0 loads between steps, more load beside them
    threads: int = 1  # the torch threads the steps were timed with (the trainer's)
    loader_start_s: float = 0.0  # what starting an epoch's pass of the kept workers adds to their loading

    def phase_epoch_seconds(self, trainable: Iterable[int]) -> float:
        training = loading_epoch_seconds(
            self.n_train, self.batch, self.step_s[tuple(trainable)], self.load_s, self.workers
        )
        return training + self.loader_start_s + self.n_val * self.val_s + self.checkpoint_s

    def strategy_epoch_seconds(self, strategy: Strategy, model: nn.Module) -> list[float]:
        """Seconds per epoch of every phase of ``strategy``."""
        return [self.phase_epoch_seconds(_trainable(model, phase)) for phase in strategy.phases]

    def time_plan(self, strategy: str, model: nn.Module, seconds: float) -> tuple[int, int]:
        """``(epochs, phases)``: the longest schedule of ``strategy`` (a name or YAML path) whose estimate
        fills ``PLANNED_SHARE`` of ``seconds`` (the rest is for what the estimate leaves out: start-up,
        per-epoch bookkeeping, noise; so the schedule ends, its LR run down, before the budget stops the run),
        and how many of its phases it runs: all, unless that schedule leaves the last phase fewer than its
        ``min_epochs``; then the phases before it take the whole time."""
        nominal = load_strategy(strategy, epochs=NOMINAL_EPOCHS)
        phase_s = self.strategy_epoch_seconds(nominal, model)
        phases = len(nominal.phases)
        while True:
            resolve = lambda epochs, n=phases: load_strategy(strategy, epochs=epochs, phases=n)  # noqa: E731
            epochs = epochs_within(resolve, phase_s[:phases], seconds * PLANNED_SHARE)
            least = nominal.phases[phases - 1].min_epochs
            if least is None or (epochs and last_phase_epochs(resolve(epochs), epochs) >= least):
                return epochs, phases
            phases -= 1

    def mean_epoch_seconds(self, strategy: str, model: nn.Module, phases: int | None = None) -> float:
        """Seconds per epoch of ``strategy`` (its first ``phases`` phases) averaged over a nominal schedule
        (phases by their share)."""
        resolved = load_strategy(strategy, epochs=NOMINAL_EPOCHS, phases=phases)
        phase_s = self.strategy_epoch_seconds(resolved, model)
        return schedule_seconds(resolved, phase_s, NOMINAL_EPOCHS) / NOMINAL_EPOCHS

    def to_dict(self) -> dict:
        return {
            "n_train": self.n_train, "n_val": self.n_val, "loader_s_per_image": self.load_s,
            "val_s_per_image": self.val_s, "checkpoint_s": self.checkpoint_s, "batch": self.batch,
            "workers": self.workers, "threads": self.threads, "loader_start_s": self.loader_start_s,
            "train_s_per_image": {",".join(map(str, k)): v for k, v in self.step_s.items()},
        }  # fmt: skip


def measure_costs(
    model: nn.Module,
    strategies: Iterable[Strategy],
    data,
    *,
    imgsz: int,
    batch: int,
    hyp: dict,
    device: torch.device | str,
    workers: int | None = None,
    cache: bool | None = None,
    repeats: int = 5,
    on_step: Callable[[int, int], None] | None = None,
) -> CostModel:
    """Time every distinct trainable set of ``strategies``' phases on ``data`` (a LoadedDataset), as the
    trainer with ``workers`` loader workers and the RAM image ``cache`` (None: its automatic choices) would
    run them.

    ``model`` is not changed: the steps run on a copy. ``on_step(done, total)`` follows the timed steps.
    """
    device = torch.device(device)
    plan = plan_loading(data.train + data.val, imgsz, device, workers, cache)
    with torch_threads(plan.threads):
        memory_format = training_memory_format(device)
        model = copy.deepcopy(model).to(device, memory_format=memory_format)
        loader = build_dataloader(  # in this process; a sample of the images, cached when the trainer caches
            data.train[:LOADER_SAMPLE_IMAGES], imgsz, batch, augment=True, hyp=hyp, shuffle=True,
            cache_ram=plan.cache,
        )  # fmt: skip
        load_s, (images, targets) = _loader_seconds(loader, repeats)
        images = training_input(images, device, memory_format)
        targets = targets.to(device)
        detect = model.detect
        compute_loss = ComputeLoss(model, scale_loss_gains(hyp, detect.nl, detect.nc, imgsz))
        phases = {
            tuple(_trainable(model, phase)): phase for strategy in strategies for phase in strategy.phases
        }
        ema = ModelEMA(model)
        steps = {
            trainable: _training_step(model, phase, images, targets, compute_loss, ema, memory_format)
            for trainable, phase in phases.items()
        }
        times: dict[tuple[int, ...], list[float]] = {trainable: [] for trainable in steps}
        total = (repeats + 1) * len(steps)
        for repeat in range(repeats + 1):  # the first round warms up
            for index, (trainable, step) in enumerate(steps.items()):
                seconds = step()
                if repeat:
                    times[trainable].append(seconds / len(images))
                if on_step is not None:
                    on_step(repeat * len(steps) + index + 1, total)
        step_s = _capped_by_supersets({trainable: min(values) for trainable, values in times.items()})
        val_loader = build_dataloader(
            data.val[:VAL_SAMPLE_IMAGES], imgsz, batch * 2, augment=False, hyp=hyp, rect=True, pad=0.5,
            workers=plan.workers, cache_ram=plan.cache,
        )  # fmt: skip
        val_s = _validation_seconds(
            model, val_loader, data.names, compute_loss, validation_forward_batch(batch)
        )
        checkpoint_s = _checkpoint_seconds(model)
        loader_start_s = 0.0
        if plan.workers:
            workers_loader = build_dataloader(
                data.train[:LOADER_SAMPLE_IMAGES], imgsz, batch, augment=True, hyp=hyp, shuffle=True,
                workers=plan.workers, cache_ram=plan.cache,
            )  # fmt: skip
            loader_start_s = _loader_start_seconds(workers_loader, load_s)
        return CostModel(
            len(data.train), len(data.val), load_s, val_s, step_s, batch, checkpoint_s,
            workers=plan.workers, threads=plan.threads, loader_start_s=loader_start_s,
        )  # fmt: skip


def loading_epoch_seconds(n_images: int, batch: int, step_s: float, load_s: float, workers: int) -> float:
    """Seconds of one pass over ``n_images`` in batches of ``batch`` (the last one partial), a step taking
    ``step_s`` and loading ``load_s`` per image. Without workers each batch is loaded, then stepped. With
    workers, as torch's DataLoader runs them: worker ``k % workers`` builds batch ``k`` after its previous
    one, every worker starting when the epoch's iterator does, and step ``k`` starts once batch ``k`` is
    built and step ``k - 1`` is done."""
    if not workers:
        return n_images * (load_s + step_s)
    sizes = [min(batch, n_images - start) for start in range(0, n_images, batch)]
    built = [0.0] * workers
    step_end = 0.0
    for index, size in enumerate(sizes):
        built[index % workers] += size * load_s
        step_end = max(built[index % workers], step_end) + size * step_s
    return step_end


def _trainable(model: nn.Module, phase: Phase) -> list[int]:
    return resolve_modules(phase.trainable, model)


def _capped_by_supersets(step_s: dict[tuple[int, ...], float]) -> dict[tuple[int, ...], float]:
    """Each step's time, at most that of any step that trains a superset of its modules: training fewer
    modules is never more work (the frozen ones get no weight gradients or updates, a frozen prefix runs
    without autograd), so a subset timed slower was disturbed while it was timed."""
    return {
        trainable: min(other for key, other in step_s.items() if set(trainable) <= set(key))
        for trainable in step_s
    }


def _median_seconds(step, repeats: int) -> float:
    step()  # warm-up: allocations, lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _training_step(
    model, phase: Phase, images, targets, compute_loss, ema: ModelEMA, memory_format: torch.memory_format
) -> Callable[[], float]:
    """A timed training step of ``phase`` as the trainer takes it (its BN-folded frozen prefix, clipping,
    optimizer step and EMA update); each call sets the phase up again."""
    setup = apply_phase(model, phase)
    stand_ins = fused_prefix(model, setup.prefix, phase.bn, memory_format)
    optimizer = build_optimizer(model, "SGD", lr0=0.0)

    def step() -> float:
        apply_phase(model, phase)
        start = time.perf_counter()
        loss, _ = compute_loss(model(images, no_grad_prefix=setup.prefix, stand_ins=stand_ins), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=GRAD_CLIP_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)
        if images.is_cuda:  # the step's kernels have finished, not just been queued
            torch.cuda.synchronize(images.device)
        return time.perf_counter() - start

    return step


def _validation_seconds(
    model: nn.Module, loader, names: list[str], compute_loss, forward_batch: int
) -> float:
    """Seconds per image of the trainer's validation (engine/evaluate.py), timed on the loader's images after
    a warm-up pass (which starts the loader's persistent workers, as the trainer's first validation does); its
    fixed costs (metrics) are spread over them, erring long."""

    def validate() -> None:
        evaluate(model, loader, names, compute_loss=compute_loss, forward_batch=forward_batch)

    return _median_seconds(validate, repeats=1) / max(len(loader.dataset), 1)


def _checkpoint_seconds(model: nn.Module) -> float:
    """Seconds of an epoch's writes as the trainer makes them: best and last weights, and a resume state
    holding the model, its EMA, the gradients and the optimizer's buffers."""
    state = model.state_dict()
    tensors = with_prefix("model.", state) | with_prefix("ema.", {k: v.clone() for k, v in state.items()})
    for kind in ("grad", "momentum"):  # the gradients and, as large, SGD's momentum buffers
        tensors |= {f"{kind}.{name}": torch.zeros_like(p) for name, p in model.named_parameters()}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        for name in ("best", "last"):
            save_model(model, Path(folder) / f"{name}.safetensors", {})
        write_state(Path(folder), tensors, {})
        return time.perf_counter() - start


def _loader_seconds(loader, repeats: int) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    """Seconds per image of the augmenting loader, and its first batch (images, targets)."""
    batches = iter(loader)
    first = next(batches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        times.append((time.perf_counter() - start) / len(batch[0]))
    if not times:  # a one-batch dataset: time the first batch again
        start = time.perf_counter()
        next(iter(loader))
        times.append((time.perf_counter() - start) / len(first[0]))
    return statistics.median(times), (first[0], first[1])


def _loader_start_seconds(loader, load_s: float) -> float:
    """Seconds a pass of ``loader`` (with workers) takes beyond :func:`loading_epoch_seconds` of its images
    loaded at ``load_s`` each with no steps: resuming the workers kept from the pass before, which every epoch
    pays (median of two passes after a warm-up one, which starts them as the trainer's first epoch does)."""

    def drain() -> None:
        for _ in loader:
            pass

    batch = loader.batch_sampler.batch_size
    modelled = loading_epoch_seconds(len(loader.dataset), batch, 0.0, load_s, loader.num_workers)
    return max(0.0, _median_seconds(drain, repeats=2) - modelled)


def epochs_for_time(
    strategies: list[str],
    seconds: float,
    *,
    weights: str,
    data: str,
    imgsz: int,
    batch: int,
    hyp: str | dict,
    device: str,
    workers: int | None,
    cache: bool | None,
    val_fraction: float,
    split_seed: int,
) -> dict[str, tuple[int, dict]]:
    """Epochs of each of ``strategies`` that fill ``seconds`` on this machine, and the measurements behind
    them (with the phases the plan runs: ``CostModel.time_plan``), from one measurement of all their phases
    (their steps interleaved, as ``advise`` times them)."""
    from yolo_transfer.data import load_dataset, load_hyp
    from yolo_transfer.models import load_model

    dataset = load_dataset(data, val_fraction=val_fraction, seed=split_seed)
    model, _ = load_model(weights, nc=len(dataset.names), names=dataset.names)
    costs = measure_costs(
        model,
        [load_strategy(strategy, epochs=NOMINAL_EPOCHS) for strategy in strategies],
        dataset,
        imgsz=imgsz,
        batch=batch,
        hyp=load_hyp(hyp),
        device=device,
        workers=workers,
        cache=cache,
    )
    plans = {}
    for strategy in strategies:
        epochs, phases = costs.time_plan(strategy, model, seconds)
        epochs = max(1, epochs)
        estimate = costs.mean_epoch_seconds(strategy, model, phases)
        probe = {**costs.to_dict(), "epoch_seconds_estimate": estimate, "epochs": epochs, "phases": phases}
        plans[strategy] = (epochs, probe)
    return plans
