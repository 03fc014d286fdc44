"""The training loop every strategy uses: it runs the strategy's phases in order and knows none by name.

Each phase freezes the modules it does not train, gets a fresh optimizer over the trainable parameters (so
newly unfrozen ones start with fresh state) and a re-warmed LR schedule of its own length; the EMA, the best
checkpoint and the clock carry over. Within a phase the loop is the reference's (spec §3.3, §5): nominal batch
64 by gradient accumulation, warmup, per-epoch LR lambda, EMA, gradient clipping at 10, AMP on CUDA, and the
EMA validated every epoch. After every epoch the run writes best/last weights, results.csv and an exact
resume state (run_state.py); ``train --resume RUN_DIR`` continues as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from yolo_transfer.data import LoadedDataset, build_dataloader, load_dataset, load_hyp
from yolo_transfer.engine import run_log
from yolo_transfer.engine.autobatch import auto_batch_size
from yolo_transfer.engine.budget import time_fitted_length
from yolo_transfer.engine.device import (
    device_info,
    seed_everything,
    select_device,
    training_input,
    training_memory_format,
)
from yolo_transfer.engine.distributed import (
    Distributed,
    check_world,
    launch,
    launched,
    parse_devices,
    session,
)
from yolo_transfer.engine.ema import ModelEMA
from yolo_transfer.engine.evaluate import evaluate, validation_forward_batch
from yolo_transfer.engine.fused_frozen import fused_prefix
from yolo_transfer.engine.host_memory import release_free_heap
from yolo_transfer.engine.image_stats import IMAGE_STATS_FILE, save_image_stats
from yolo_transfer.engine.loading_plan import plan_loading, torch_threads
from yolo_transfer.engine.loss import ComputeLoss, scale_loss_gains
from yolo_transfer.engine.lr0_note import lr0_precedence_note
from yolo_transfer.engine.metrics import fitness
from yolo_transfer.engine.optim import (
    GRAD_CLIP_NORM,
    GROUP_KINDS,
    accumulate_steps,
    build_optimizer,
    foreach_for,
    lr_lambda,
    scaled_weight_decay,
    scheduled_lr,
    set_schedule,
    warmup_accumulate,
    warmup_iterations,
)
from yolo_transfer.engine.outputs import ensure_writable_dir, remove_temporaries, run_lock
from yolo_transfer.engine.phases import ActivePhase, module_ranges, phase_hyp, phase_length
from yolo_transfer.engine.run_plots import write_run_plots
from yolo_transfer.engine.run_state import (
    RunProgress,
    capture_global_rng,
    load_optimizer_state,
    loader_state,
    optimizer_state,
    read_state,
    remove_leftovers,
    restore_global_rng,
    restore_loader_state,
    strip_prefix,
    with_prefix,
    write_state,
)
from yolo_transfer.engine.step_timer import StepTimer
from yolo_transfer.engine.stopping import Plateau
from yolo_transfer.engine.tensorboard_log import TensorBoardLog
from yolo_transfer.engine.train_config import TrainConfig, check_config, config_from_args, load_run
from yolo_transfer.engine.train_progress import training_progress
from yolo_transfer.errors import ConfigError, OutputError, TrainingError
from yolo_transfer.models import build_model, load_model, save_model
from yolo_transfer.models.checkpoint import first_non_finite
from yolo_transfer.strategies import Phase, Strategy, load_strategy
from yolo_transfer.strategies.phase import strategy_to_dict
from yolo_transfer.strategies.trainable import (
    L2SP,
    apply_phase,
    module_lr_scales,
    recalibrate_bn,
    resolve_modules,
    set_bn_mode,
)

__all__ = ["TrainConfig", "Trainer", "train", "train_command"]
BAR_REFRESH = 5  # batches between progress-bar updates (each reads the loss back from the device)


class Trainer:
    """Trains ``model`` on ``data`` through ``strategy.phases``; ``fit()`` returns the summary.json dict."""

    def __init__(
        self,
        model,
        data: LoadedDataset,
        strategy: Strategy,
        config: TrainConfig,
        out_dir: Path,
        fresh: Iterable[str] = (),
        dist: Distributed | None = None,
    ):
        """``fresh``: parameter names that did not come from the pretrained weights (for L2-SP); ``dist``:
        this process's place in a multi-process run (distributed.py), default one process."""
        self.data, self.strategy, self.config, self.out = data, strategy, config, Path(out_dir)
        self.weights_dir = self.out / "weights"
        self.dist = dist or Distributed(select_device(config.device))
        self.device = self.dist.device
        samples, world = data.train + data.val, self.dist.world_size
        self.loading = plan_loading(samples, config.imgsz, self.device, config.workers, config.cache, world)
        if self.device.type == "cuda":  # fixed training shapes: time the conv kernels once, keep the fastest
            torch.backends.cudnn.benchmark = True
        self.memory_format = training_memory_format(self.device)
        self.model = model.float().to(self.device, memory_format=self.memory_format)
        self.timer = StepTimer(self.device, sync=config.profile)
        self.hyp = load_hyp(config.hyp, lr0=config.lr0)
        detect = self.model.detect
        loss_hyp = scale_loss_gains(self.hyp, detect.nl, detect.nc, config.imgsz)
        self.compute_loss = ComputeLoss(self.model, loss_hyp)
        self.ema = ModelEMA(self.model)
        strength = config.l2sp or strategy.l2sp
        self.l2sp = L2SP(self.model, strength, fresh) if strength > 0 else None
        self.amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.val_loader = build_dataloader(
            data.val, config.imgsz, config.batch * 2, augment=False, hyp=self.hyp, rect=True, pad=0.5,
            workers=self.loading.workers, seed=config.seed, cache_ram=self.loading.cache,
        )  # fmt: skip
        self.progress = RunProgress()
        self.active: ActivePhase | None = None
        self.console = Console(soft_wrap=True, markup=False, highlight=False)
        self.clock_start = 0.0
        self.tensorboard = TensorBoardLog(self.out) if config.tensorboard and self.dist.is_main else None

    def fit(self, resume: bool = False) -> dict:
        """Run the strategy's phases to the end (or continue them from the saved state) -> the summary;
        the loading plan's torch threads hold while it runs, and the caller's count is restored after."""
        with torch_threads(self.loading.threads):
            return self._fit(resume)

    def _fit(self, resume: bool) -> dict:
        saved = self._restore() if resume else None
        self.console.print(self.data.report.summary_line())
        self.console.print(self.loading.line())
        self.clock_start = time.monotonic() - self.progress.wall_seconds
        while self.progress.end_reason is None:
            if self.active is None or self.active.index != self.progress.phase_index:
                self.active = self._start_phase(saved)
                saved = None
            self._run_epoch(self.active)
        summary = {**self._summary(), "device": device_info(self.device), "world_size": self.dist.world_size}
        if not self.dist.is_main:
            return summary
        run_log.write_json(self.out / "summary.json", summary)
        best = summary["best"]
        self.console.print(
            f"done ({self.progress.end_reason}): best mAP50-95 {best['map50_95']:.4f} at epoch "
            f"{best['epoch']}, weights in {self.weights_dir}"
        )
        plots = [] if self.config.noplots else self._write_plots()
        if self.tensorboard is not None:
            self.tensorboard.finish(plots, self.progress.epoch)
        return summary

    def _write_plots(self) -> list[Path]:
        """The finished run's plots (run_plots.py), named on the terminal."""
        plots = write_run_plots(
            self.out, self.progress.rows, self.data, self.val_loader, self.device,
            hyp=phase_hyp(self.hyp, self.strategy.phases[0]), imgsz=self.config.imgsz,
            batch=self.progress.phases[0]["batch"], seed=self.config.seed,
            forward_batch=validation_forward_batch(self.config.batch),  # as validation: no new memory peak
        )  # fmt: skip
        self.console.print(f"plots in {self.out}: {', '.join(path.name for path in plots)}")
        return plots

    # ---- phases -------------------------------------------------------------------------------------------

    def _start_phase(self, saved: tuple[dict, dict] | None) -> ActivePhase:
        """Set up the current phase: fresh, or in the middle from the resume state ``saved``."""
        progress = self.progress
        fresh = progress.phase_batch is None
        if saved is not None and fresh:  # the state was saved just before this phase began
            restore_global_rng(strip_prefix("rng.", saved[0]), saved[1]["rng"])
        index, config = progress.phase_index, self.config
        phase = self.strategy.phases[index]
        setup = apply_phase(self.model, phase)
        self.dist.wrap(self.model, setup.trainable, sync_bn=config.sync_bn)
        trainable, trainable_params, prefix = setup.trainable, setup.trainable_params, setup.prefix
        batch = progress.phase_batch or self._phase_batch(phase, prefix)
        hyp = phase_hyp(self.hyp, phase)
        loader = build_dataloader(
            self.data.train, config.imgsz, batch, augment=True, hyp=hyp, shuffle=True,
            workers=self.loading.workers, seed=config.seed + index, cache_ram=self.loading.cache,
        )  # fmt: skip
        loader = self.dist.shard(loader, batch, seed=config.seed + index)
        lr0 = self._phase_lr0(phase)
        weight_decay = scaled_weight_decay(self.hyp["weight_decay"], batch)
        scales = module_lr_scales(self.model, phase)
        momentum = self.hyp["momentum"]
        params = dict(self.model.named_parameters())
        anchored = {params[name] for name in self.l2sp.anchor} if self.l2sp else set()
        steady = self._steady_modules(index, trainable)
        optimizer = build_optimizer(
            self.model, config.optimizer, lr0, momentum, weight_decay, scales, anchored, steady
        )
        length = phase_length(phase, config.epochs, progress.epoch - progress.phase_epoch)
        active = ActivePhase(
            index, phase, trainable, prefix, batch, loader, optimizer, lr0, hyp, length,
            lf=lr_lambda(length, hyp["lrf"], config.cos_lr),
            warmup=warmup_iterations(hyp["warmup_epochs"], len(loader), phase.warmup_min_iterations),
            steady=steady,
        )  # fmt: skip
        if fresh:
            self._begin_phase(active, trainable_params)
        elif saved is not None:
            self._resume_phase(active, saved)
        # after AdaBN and the resume: the frozen BN statistics are final now
        active.stand_ins = fused_prefix(self.model, prefix, phase.bn, self.memory_format)
        return active

    def _steady_modules(self, index: int, trainable: list[int]) -> frozenset[int]:
        """Modules that skip the phase's warmup: with ``warmup_modules: new``, the previous phase's."""
        if self.strategy.phases[index].warmup_modules != "new" or index == 0:
            return frozenset()
        previous = resolve_modules(self.strategy.phases[index - 1].trainable, self.model)
        return frozenset(trainable).intersection(previous)

    def _begin_phase(self, active: ActivePhase, trainable_params: int) -> None:
        phase, progress = active.phase, self.progress
        if phase.bn == "recalibrate":
            self._recalibrate(active)
        self.model.zero_grad(set_to_none=True)
        progress.phase_batch, progress.last_opt_step = active.batch, -1
        progress.accumulate = accumulate_steps(active.batch)
        plateau = phase.plateau
        progress.plateau = Plateau(plateau["patience"], plateau.get("min_delta", 0.0)) if plateau else None
        progress.early_stop = Plateau(self.config.patience)  # --patience applies within every phase
        progress.phases.append(
            {"name": phase.name, "trainable_params": trainable_params, "lr0": active.lr0,
             "batch": active.batch, "epochs_run": 0, "end_reason": None}
        )  # fmt: skip
        frozen = len(self.model.model) - len(active.trainable)
        self.console.print(
            f"phase {active.index + 1}/{len(self.strategy.phases)} '{phase.name}': modules "
            f"{module_ranges(active.trainable)} train ({trainable_params:,} parameters)"
            + (f", {frozen} frozen with BN {phase.bn}" if frozen else "")
            + f"; lr0 {active.lr0:g}, batch {active.batch}, up to {active.length} epochs, "
            f"{active.warmup} warmup iterations"
            + (f", modules {module_ranges(sorted(active.steady))} go on unwarmed" if active.steady else "")
        )

    def _resume_phase(self, active: ActivePhase, saved: tuple[dict, dict]) -> None:
        tensors, meta = saved
        load_optimizer_state(active.optimizer, strip_prefix("optim.", tensors), meta["optimizer"])
        params = dict(self.model.named_parameters())
        for name, grad in strip_prefix("grad.", tensors).items():  # gradients accumulated towards a step
            params[name].grad = grad.to(self.device)
        restore_loader_state(active.loader, strip_prefix("loader.", tensors), meta["loader"])
        restore_global_rng(strip_prefix("rng.", tensors), meta["rng"])

    def _recalibrate(self, active: ActivePhase) -> None:
        """AdaBN of the frozen modules on un-augmented training images; the EMA takes the new statistics."""
        frozen = [i for i in range(len(self.model.model)) if i not in set(active.trainable)]
        plain = build_dataloader(
            self.data.train, self.config.imgsz, active.batch, augment=False, hyp=self.hyp,
            workers=self.loading.workers,
        )  # fmt: skip
        recalibrate_bn(self.model, plain, frozen, self.device)
        ema_state = self.ema.ema.state_dict()
        prefixes = tuple(f"model.{i}." for i in frozen)
        for name, value in self.model.state_dict().items():
            if name.startswith(prefixes) and "running_" in name:
                ema_state[name].copy_(value)

    def _phase_lr0(self, phase: Phase) -> float:
        """The phase's lr0: ``--lr0`` sets the first phase's, later phases keep their ratio to it."""
        first = self.strategy.phases[0].lr0 or self.hyp["lr0"]
        own = phase.lr0 or self.hyp["lr0"]
        return own if self.config.lr0 is None else self.config.lr0 * own / first

    def _phase_batch(self, phase: Phase, prefix: int) -> int:
        if phase.batch == "auto":
            per_device = self.dist.from_main(
                lambda: auto_batch_size(
                    self.model, self.config.imgsz, self.device, prefix, len(self.data.train)
                )
            )
            return per_device * self.dist.world_size
        return phase.batch or self.config.batch

    # ---- one epoch ----------------------------------------------------------------------------------------

    def _run_epoch(self, active: ActivePhase) -> None:
        """Train, validate the EMA (see :meth:`_validates`), log, decide how the phase and run go on, save.

        An epoch without validation gets NaN metrics in results.csv; it is never the best, and plateaus and
        early stopping count only validated epochs."""
        self.timer.new_epoch()
        train_loss, lrs, images, seconds, budget_stop = self._train_epoch(active)
        metrics, image_stats, fit = run_log.unvalidated_metrics(), None, None
        if self._validates(active, budget_stop):
            with self.timer.section("validation"):
                metrics = self.dist.from_main(  # rank 0 validates; every rank decides from its metrics
                    lambda: evaluate(
                        self.ema.ema, self.val_loader, self.data.names, device=self.device,
                        compute_loss=self.compute_loss, image_stats=True,
                        forward_batch=validation_forward_batch(self.config.batch),
                    )
                )  # fmt: skip
                release_free_heap()  # what training and validation freed, before the next epoch trains
            image_stats = metrics.pop("image_stats")
            fit = float(fitness(metrics))
        progress = self.progress
        progress.epoch += 1
        progress.phase_epoch += 1
        progress.train_seconds += seconds
        progress.wall_seconds = time.monotonic() - self.clock_start
        is_best = fit is not None and (progress.best_fitness is None or fit >= progress.best_fitness)  # ties
        if fit is not None:
            progress.final = run_log.metrics_record(progress.epoch, metrics)
        if is_best:
            progress.best_fitness, progress.best = fit, progress.final
        img_per_s, row_fit = images / max(seconds, 1e-9), float("nan") if fit is None else fit
        row = self._results_row(active, train_loss, metrics, lrs, img_per_s, row_fit)
        progress.rows.append(row)
        if self.tensorboard is not None:
            self.tensorboard.log_epoch(row, run_log.RESULTS_COLUMNS)
        self.console.print(run_log.epoch_line(row, self.config.epochs, self.timer.data_share(seconds)))
        self._end_of_epoch(active, fit, budget_stop)
        if is_best and self.dist.is_main:  # for paired bootstraps between runs
            save_image_stats(image_stats, self.out / IMAGE_STATS_FILE)
        self._save(is_best)

    def _validates(self, active: ActivePhase, budget_stop: str | None) -> bool:
        """Validate every ``val_every`` epochs, and always when the phase or the run may end after this."""
        epoch, config = self.progress.epoch + 1, self.config
        last = epoch >= config.epochs or self.progress.phase_epoch + 1 >= active.length
        return last or epoch % config.val_every == 0 or bool(budget_stop or self._budget_reason())

    def _train_epoch(self, active: ActivePhase) -> tuple[torch.Tensor, list[float], int, float, str | None]:
        """One epoch; returns mean loss items, LR per group kind, images, seconds and a budget stop reason."""
        model, progress, phase = self.model, self.progress, active.phase
        model.train()
        set_bn_mode(model, active.trainable, phase.bn)
        close_mosaic = self.config.close_mosaic or int(self.hyp.get("close_mosaic", 0))
        if close_mosaic and progress.epoch >= self.config.epochs - close_mosaic:
            active.loader.dataset.mosaic = False
        lf = active.lf(progress.phase_epoch)
        self.dist.set_epoch(active.loader, progress.epoch)
        nb = len(active.loader)
        mean_loss, images_done, stop, iteration = torch.zeros(3, device=self.device), 0, None, 0
        start = time.monotonic()
        with _progress_bar(self.console, progress, self.config) as bar:
            description = f"epoch {progress.epoch + 1}/{self.config.epochs} [{phase.name}]"
            task = bar.add_task(description, total=nb, loss="")
            waited_from = time.perf_counter()
            for i, (images, targets, _, _) in enumerate(active.loader):
                self.timer.add("data", time.perf_counter() - waited_from)
                iteration = i + nb * progress.phase_epoch
                images, targets = self._within_image_budget(images, targets)
                if not active.steady:  # a phase that carries modules on at speed keeps the nominal batch
                    progress.accumulate = warmup_accumulate(
                        iteration, active.warmup, active.batch, progress.accumulate
                    )
                set_schedule(active.optimizer, lf, active.lr0, iteration, active.warmup, active.hyp)
                items = self._train_step(active, images, targets, iteration)
                mean_loss = (mean_loss * i + items) / (i + 1)
                images_done += images.shape[0] * self.dist.world_size  # every rank's share is as large
                progress.images_seen += images.shape[0] * self.dist.world_size
                if i % BAR_REFRESH == 0 or i == nb - 1:
                    seconds = time.monotonic() - start
                    bar.update(task, loss=self._bar_text(mean_loss, images_done, seconds))
                bar.advance(task)
                if i < nb - 1 and (stop := self._budget_reason()):  # after the last batch nothing is cut
                    break
                waited_from = time.perf_counter()
        warmup_bias_lr = active.hyp["warmup_bias_lr"]
        target = active.lr0 * lf
        lrs = [scheduled_lr(k, target, iteration, active.warmup, warmup_bias_lr) for k in GROUP_KINDS]
        return mean_loss.cpu(), lrs, images_done, time.monotonic() - start, stop

    def _bar_text(self, mean_loss: torch.Tensor, images: int, seconds: float) -> str:
        """The epoch bar's loss, speed and share of the time spent waiting for data."""
        box, obj, cls = mean_loss.tolist()
        speed, data = images / max(seconds, 1e-9), self.timer.data_share(seconds)
        return f"box {box:.4f}  obj {obj:.4f}  cls {cls:.4f}  {speed:.1f} img/s  data wait {data:.0%}"

    def _train_step(self, active: ActivePhase, images, targets, iteration: int) -> torch.Tensor:
        """Forward, loss, backward; an optimizer step (clip, EMA) once ``accumulate`` batches are in."""
        timer = self.timer
        with timer.section("forward"), torch.autocast(self.device.type, enabled=self.amp):
            inputs = training_input(images, self.device, self.memory_format)
            preds = self.dist.net(inputs, no_grad_prefix=active.prefix, stand_ins=active.stand_ins)
            del inputs  # a frozen first layer keeps no reference: loss and backward run without it
        with timer.section("loss"), torch.autocast(self.device.type, enabled=self.amp):
            loss, items = self.compute_loss(preds, targets.to(self.device, non_blocking=True))
            if self.l2sp is not None:  # scaled like the loss, which is a mean times the batch size
                loss = loss + self.l2sp.penalty(self.model) * images.shape[0]
        if not torch.isfinite(loss):  # the step's one host-device sync
            raise TrainingError(
                f"loss became {loss.item()} at epoch {self.progress.epoch + 1}, iteration {iteration} of "
                f"phase '{active.phase.name}' (lr0 {active.lr0:g}); training stopped and "
                f"{self._kept(self.progress.epoch)} - lower lr0 or check the labels"
            )
        with timer.section("backward"):  # DDP averages: times world size is the global batch's gradient
            self.scaler.scale(loss * self.dist.world_size).backward()
        if iteration - self.progress.last_opt_step >= self.progress.accumulate:
            with timer.section("optimizer"):
                self.scaler.unscale_(active.optimizer)
                params, foreach = self.model.parameters(), foreach_for(self.device)
                torch.nn.utils.clip_grad_norm_(params, max_norm=GRAD_CLIP_NORM, foreach=foreach)
                self.scaler.step(active.optimizer)
                self.scaler.update()
                active.optimizer.zero_grad()
            with timer.section("ema"):
                self.ema.update(self.model)
            self.progress.last_opt_step = iteration
        return items.detach()

    def _within_image_budget(self, images: torch.Tensor, targets: torch.Tensor):
        """Cut the batch so the run trains on exactly ``max_images`` images."""
        if self.config.max_images is None:
            return images, targets
        keep = -(-(self.config.max_images - self.progress.images_seen) // self.dist.world_size)  # per rank
        if keep >= images.shape[0]:
            return images, targets
        return images[:keep], targets[targets[:, 0] < keep]

    def _budget_reason(self) -> str | None:
        config = self.config
        if config.max_seconds is not None and self.dist.any(
            time.monotonic() - self.clock_start >= config.max_seconds
        ):
            return "max_seconds"
        if config.max_images is not None and self.progress.images_seen >= config.max_images:
            return "max_images"
        return None

    def _end_of_epoch(self, active: ActivePhase, fit: float | None, cut: str | None) -> None:
        """Decide whether the phase and the run end (``fit`` None: not validated); update the phase record.

        ``cut`` is the budget that stopped this epoch before its last batch. A budget found spent after the
        schedule's last epoch cut nothing: that run is ``completed``."""
        progress = self.progress
        if cut is None:
            self._fit_time_budget(active)
        phase_end = None
        validated, plateau = fit is not None, progress.plateau
        if progress.phase_epoch >= active.length:
            phase_end = "max_epochs" if plateau is not None else "epochs"
        elif validated and plateau is not None and plateau.update(progress.phase_epoch - 1, fit):
            phase_end = "plateau"
        if validated and progress.early_stop.update(progress.phase_epoch - 1, fit) and phase_end is None:
            phase_end = "early_stop"  # ends this phase; the run only when it is the last one
        last_phase = progress.phase_index + 1 >= len(self.strategy.phases)
        schedule_done = (phase_end is not None and last_phase) or progress.epoch >= self.config.epochs
        budget_stop = cut or (None if schedule_done else self._budget_reason())
        phase_record = cut or phase_end or budget_stop  # a cut phase did not run to its end
        progress.phases[-1].update(epochs_run=progress.phase_epoch, end_reason=phase_record)
        if phase_end:
            name, epochs = active.phase.name, progress.phase_epoch
            self.console.print(f"phase '{name}' ended after {epochs} epochs ({phase_end})")
            progress.phase_index += 1
            progress.phase_epoch, progress.phase_batch, progress.plateau = 0, None, None
        if budget_stop:
            progress.end_reason = budget_stop
        elif phase_end == "early_stop" and last_phase:
            progress.end_reason = "early_stop"
        elif schedule_done:
            progress.end_reason = "completed"

    def _fit_time_budget(self, active: ActivePhase) -> None:
        """Re-plan the last phase's length from its measured pace when it runs slower than the time budget's
        plan (a busier or slower machine than the one measured), so its LR still decays to the end instead of
        the budget cutting it (ultralytics' ``time=`` re-plans likewise), and rebuild its LR schedule for that
        length. Never beyond the plan: a run that keeps pace keeps it, whatever the machine's speed."""
        config, progress = self.config, self.progress
        if config.max_seconds is None or active.index + 1 < len(self.strategy.phases):
            return
        start, record = progress.epoch - progress.phase_epoch, progress.phases[-1]
        walls = [0.0, *(row["wall_s"] for row in progress.rows)][start:]
        epoch_seconds = [end - begin for begin, end in itertools.pairwise(walls)]
        planned = record.get("planned_epochs", active.length)
        left = config.max_seconds - progress.wall_seconds
        fitted = self.dist.from_main(lambda: time_fitted_length(planned, epoch_seconds, left))
        if fitted is None or fitted[0] == active.length:
            return
        length, pace = fitted
        self.console.print(
            f"time budget: at {pace:.1f} s an epoch, phase '{active.phase.name}' runs {length} of its "
            f"{planned} planned epochs, its LR decaying within the budget"
        )
        record["planned_epochs"] = planned
        self.config = dataclasses.replace(config, epochs=start + length)  # resumes with this schedule
        active.length = length
        active.lf = lr_lambda(length, active.hyp["lrf"], config.cos_lr)

    def _results_row(self, active, train_loss, metrics, lrs, img_per_s: float, fit: float) -> dict:
        progress = self.progress
        val_loss = metrics.get("loss") or [float("nan")] * 3
        values = [
            progress.epoch, active.phase.name, *train_loss.tolist(), metrics["precision"],
            metrics["recall"], metrics["map50"], metrics["map50_95"], *val_loss, *lrs, progress.wall_seconds,
            img_per_s, run_log.peak_rss_mb(), run_log.gpu_memory_mb(self.device),
            progress.phases[-1]["trainable_params"],
        ]  # fmt: skip
        return {**dict(zip(run_log.RESULTS_COLUMNS, values, strict=True)), "fitness": fit}

    # ---- checkpoints and resume ---------------------------------------------------------------------------

    def _save(self, is_best: bool) -> None:
        """best/last EMA weights with metadata, results.csv, then the resume state; each atomically.

        Weights that became NaN/inf are not saved: the run stops, its files stay at the last finite epoch."""
        config = self.config
        bad = first_non_finite(self.ema.ema.state_dict()) or first_non_finite(self.model.state_dict())
        if bad is not None:
            raise TrainingError(
                f"weights became NaN/inf in epoch {self.progress.epoch} ({bad}); training stopped and "
                f"{self._kept(self.progress.epoch - 1)} - lower lr0 or check the labels"
            )
        if not self.dist.is_main:  # rank 0 writes the files; the others wait until they are complete
            self.dist.barrier()
            return
        metadata = {
            "strategy": strategy_to_dict(self.strategy),
            "phases": self.progress.phases,
            "epochs": self.progress.epoch,
            "imgsz": config.imgsz,
            "metrics": self.progress.final,
            "provenance": {"weights": config.weights, "cfg": config.cfg, "data": str(config.data)},
        }
        try:
            if is_best:
                save_model(self.ema.ema, self.weights_dir / "best.safetensors", metadata)
            save_model(self.ema.ema, self.weights_dir / "last.safetensors", metadata)
            run_log.write_results_csv(self.out / "results.csv", self.progress.rows)
            self._write_state()
        except OutputError as err:
            kept = self._kept(self.progress.epoch - 1)
            raise OutputError(f"{err}; {kept} (yolo-transfer train --resume {self.out})") from None
        self.dist.barrier()

    def _kept(self, epochs: int) -> str:
        """What a run that stops now leaves to resume from: the state after ``epochs`` epochs."""
        if epochs == 0:
            return f"{self.out} holds no checkpoint yet"
        return f"{self.weights_dir} keeps the last good checkpoint (epoch {epochs}) and its resume state"

    def _write_state(self) -> None:
        rng_tensors, rng_meta = capture_global_rng()
        tensors = {
            **with_prefix("model.", self.model.state_dict()),
            **with_prefix("ema.", self.ema.ema.state_dict()),
            **with_prefix("rng.", rng_tensors),
            **{f"grad.{n}": p.grad for n, p in self.model.named_parameters() if p.grad is not None},
        }
        meta = {
            "config": self.config.to_dict(),
            "strategy": strategy_to_dict(self.strategy),
            "progress": self.progress.to_dict(),
            "ema_updates": self.ema.updates,
            "scaler": self.scaler.state_dict(),
            "rng": rng_meta,
        }
        if self.progress.phase_batch is not None:  # mid-phase: the optimizer and the data order go on
            optim_tensors, meta["optimizer"] = optimizer_state(self.active.optimizer)
            loader_tensors, meta["loader"] = loader_state(self.active.loader)
            tensors |= with_prefix("optim.", optim_tensors) | with_prefix("loader.", loader_tensors)
        write_state(self.weights_dir, tensors, meta)

    def _restore(self) -> tuple[dict, dict]:
        tensors, meta = read_state(self.weights_dir)
        self.model.load_state_dict(strip_prefix("model.", tensors))
        self.ema.ema.load_state_dict(strip_prefix("ema.", tensors))
        self.ema.updates = meta["ema_updates"]
        self.scaler.load_state_dict(meta["scaler"])
        self.progress = RunProgress.from_dict(meta["progress"])
        self.console.print(f"resuming {self.out} after epoch {self.progress.epoch}")
        return tensors, meta

    def _summary(self) -> dict:
        progress = self.progress
        return {
            "best": progress.best,
            "final": progress.final,
            "epochs": progress.epoch,
            "wall_seconds": progress.wall_seconds,
            "train_img_per_s": progress.images_seen / max(progress.train_seconds, 1e-9),
            "time_to_95pct_best_s": run_log.time_to_fraction_of_best(progress.rows),
            "peak_rss_mb": max(row["peak_rss_mb"] for row in progress.rows),
            "gpu_mem_mb": max(row["gpu_mem_mb"] for row in progress.rows),
            "phases": progress.phases,
            "strategy": self.strategy.name,
            "config": self.config.to_dict(),
            "end_reason": progress.end_reason,
            "still_improving": progress.best["epoch"] == progress.final["epoch"],
            "time_breakdown_s": dict(self.timer.total),  # this process's share when the run was resumed
            "loading": dataclasses.asdict(self.loading),
        }


def _progress_bar(console: Console, run: RunProgress, config: TrainConfig) -> Progress:
    """The whole run's bar (epochs done, ETA from the measured epoch time); the epoch adds its own task."""
    return training_progress(console, run.epoch, config.epochs, run.wall_seconds, config.max_seconds)


def initial_model(config: TrainConfig, names: list[str], head: str = "transfer"):
    """The pretrained model adapted to ``names`` (``head``: how new Detect rows start) and the names of its
    parameters that were not transferred; without weights, a fresh model from ``config.cfg``."""
    if config.weights:
        model, metadata = load_model(config.weights, nc=len(names), names=names, head=head)
        return model, set(metadata.get("transfer", {}).get("fresh", []))
    model = build_model(config.cfg, nc=len(names), names=names)
    return model, {name for name, _ in model.named_parameters()}


def train(config: TrainConfig, strategy: Strategy, resume: bool = False) -> dict:
    """Train with ``strategy`` (or continue the run in ``config.out``); returns the summary.json dict.

    ``config.out`` must be writable and free: the run holds its lock file, and removes what a killed earlier
    process left half-written there, before any work. Under torchrun every rank calls this (distributed.py):
    rank 0 holds the lock, cleans up and loads the data first; the others print nothing."""
    with session(config.device, config.batch, config.sync_bn) as dist, dist.quiet():
        ensure_writable_dir(config.out)
        check_config(config, resume)
        with run_lock(config.out) if dist.is_main else contextlib.nullcontext():
            return _train_rank(config, strategy, resume, dist)


def _train_rank(config: TrainConfig, strategy: Strategy, resume: bool, dist: Distributed) -> dict:
    with dist.main_first():
        if dist.is_main:
            remove_temporaries(Path(config.out))
            remove_leftovers(Path(config.out) / "weights")
            if note := lr0_precedence_note(config.hyp, strategy, config.lr0):
                print(note)
        seed_everything(config.seed)
        data = load_dataset(config.data, val_fraction=config.val_fraction, seed=config.split_seed)
        model, fresh = initial_model(config, data.names, strategy.head)
    stride = int(model.stride.max())
    if config.imgsz % stride:
        raise ConfigError(
            f"--imgsz must be a multiple of {stride} (this model's largest stride), got {config.imgsz}"
        )
    return Trainer(model, data, strategy, config, Path(config.out), fresh, dist).fit(resume=resume)


def train_command(args) -> int:
    """``yolo-transfer train``: a new run from the arguments, or ``--resume RUN_DIR``; ``--devices`` starts
    one such process per device (as torchrun), after refusing once what every one of them would refuse."""
    resume = bool(args.resume)
    if resume:
        config, strategy = load_run(args.resume)
        if args.devices:  # the launched ranks train on the launch's kind of device
            config = dataclasses.replace(config, device=args.device)
        if args.lr0 is not None:  # e.g. a diverged run continues from its last finite epoch at a lower LR
            config = dataclasses.replace(config, lr0=args.lr0)
    elif not args.data:
        raise ConfigError("train needs --data (a data.yaml, VOC folder or COCO json), or --resume RUN_DIR")
    else:
        strategy = load_strategy(args.strategy, epochs=args.epochs, freeze=args.freeze)
        config = config_from_args(args)
    if args.devices and not launched():
        kind, count, _ = parse_devices(args.devices)
        check_world(kind, count, config.batch, config.sync_bn)
        check_config(dataclasses.replace(config, device=kind), resume)
        return launch(train_command, args)
    train(config, strategy, resume)
    return 0
