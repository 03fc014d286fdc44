"""Transfer strategies: the built-ins (YAML files in ``builtin/``), user YAML files and ``--freeze``."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from yolo_transfer.errors import ConfigError
from yolo_transfer.strategies.phase import (
    Phase,
    Strategy,
    leading_phases,
    read_strategy,
    resolve_phase_lengths,
)
from yolo_transfer.strategies.selection import selection_from_freeze

__all__ = ["Phase", "Strategy", "builtin_path", "list_strategies", "load_strategy", "strategies_command"]


def list_strategies() -> list[str]:
    """Names of the built-in strategies."""
    folder = resources.files("yolo_transfer.strategies").joinpath("builtin")
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def builtin_path(name: str) -> Path:
    """The YAML file of a built-in strategy."""
    return Path(str(resources.files("yolo_transfer.strategies").joinpath("builtin", f"{name}.yaml")))


def load_strategy(
    name_or_path: str | Path, *, epochs: int, freeze: str | None = None, phases: int | None = None
) -> Strategy:
    """A built-in strategy by name or a strategy YAML file, with phase lengths resolved for ``epochs``.

    ``freeze`` (yolov5's ``--freeze N|group|indices``) sets the frozen modules of the first phase: for the
    ``freeze`` strategy that is its only phase, for the others the phase that starts training. ``phases``
    keeps the first that many phases, as a time budget's plan may (``leading_phases``).
    """
    strategy = _read(name_or_path)
    if phases is not None:
        strategy = leading_phases(strategy, phases)
    if freeze is not None:
        first = dataclasses.replace(strategy.phases[0], trainable=selection_from_freeze(str(freeze)))
        strategy = dataclasses.replace(strategy, phases=[first, *strategy.phases[1:]])
    return resolve_phase_lengths(strategy, epochs)


def _read(name_or_path: str | Path) -> Strategy:
    names = list_strategies()
    if str(name_or_path) in names:
        return read_strategy(builtin_path(str(name_or_path)))
    path = Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        return read_strategy(path)
    raise ConfigError(f"unknown strategy '{name_or_path}': use one of {', '.join(names)} or a .yaml file")


def strategies_command(args) -> int:
    """``yolo-transfer strategies``: a table of the built-ins with their phases and one line each."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Built-in transfer strategies (--strategy NAME or FILE.yaml)")
    table.add_column("strategy", style="bold")
    table.add_column("phases")
    table.add_column("description")
    for name in list_strategies():
        strategy = read_strategy(builtin_path(name))
        table.add_row(name, " -> ".join(phase.name for phase in strategy.phases), strategy.description)
    Console().print(table)
    return 0
