"""The training bars: the whole run (epochs done / total, ETA from the measured epoch time) above the epoch;
and the plain counting bars of ``advise`` and ``predict``.

The epoch bar's ETA is rich's estimate from the batches done so far; the run bar's is fixed at the start of
each epoch from the run's mean epoch time (train + validation), see :func:`run_eta_seconds`.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from yolo_transfer.engine.run_eta import format_duration, run_eta_seconds


class ElapsedColumn(TimeElapsedColumn):
    """rich's elapsed time, or the task's own ``elapsed`` field (the run's wall time) when it has one."""

    def render(self, task: Task) -> Text:
        elapsed = task.fields.get("elapsed")
        return Text(elapsed, style="progress.elapsed") if elapsed else super().render(task)


class EtaColumn(TimeRemainingColumn):
    """rich's remaining time, or the task's own ``eta`` field (the run's ETA) when it has one."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        return Text(f"ETA {eta}", style="progress.remaining") if eta else Text("ETA ") + super().render(task)


def training_progress(
    console: Console, epochs_done: int, epochs_total: int, wall_seconds: float, max_seconds: float | None
) -> Progress:
    """A transient Progress holding the run task; add the epoch's task with a ``loss`` field to it."""
    progress = Progress(
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), ElapsedColumn(),
        EtaColumn(), TextColumn("{task.fields[loss]}", markup=False), console=console, transient=True,
    )  # fmt: skip
    eta = run_eta_seconds(wall_seconds, epochs_done, epochs_total, max_seconds)
    progress.add_task(
        "run (epochs)", total=epochs_total, completed=epochs_done,
        elapsed=format_duration(wall_seconds), eta=format_duration(eta), loss="",
    )  # fmt: skip
    return progress


def counting_bars(console: Console | None, disable: bool = False) -> Progress:
    """Transient bars of counted work: description, bar, done/total, elapsed, ETA (none without a console)."""
    return Progress(
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True,
        disable=disable or console is None,
    )  # fmt: skip
