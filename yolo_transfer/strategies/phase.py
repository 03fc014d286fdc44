"""A transfer strategy is a list of phases; each phase says what trains, how, and for how long.

Strategies are YAML files (the built-ins too)::

    name: staged
    description: backbone frozen until the validation plateau, then everything at a lower, re-warmed LR
    l2sp: 0.0
    phases:
      - {name: frozen-backbone, trainable: [neck, head], plateau: {patience: 3, max_epochs: 0.5}}
      - {name: all, trainable: [all], lr0: 0.001}

Phase lengths may be fractions of the run's epoch budget (a float < 1); ``resolve_phase_lengths`` turns them
into epochs. A phase with neither ``epochs`` nor ``plateau`` runs for the rest of the budget (the last phase).
The last phase's ``min_epochs`` is for time budgets: a schedule that fits in the time but leaves that phase
fewer epochs is planned without it (``leading_phases``), the phases before it taking the whole time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from yolo_transfer.errors import ConfigError
from yolo_transfer.strategies.selection import SelectionItem, parse_item

BN_MODES = ("frozen", "train", "recalibrate")
WARMUP_MODULES = ("all", "new")  # which modules a phase's warmup ramps: every one, or those it unfreezes
HEAD_INITS = ("transfer", "fresh")  # how the Detect output convs start for new classes (models/transfer.py)
PLATEAU_KEYS = ("patience", "max_epochs", "min_delta")


@dataclass
class Phase:
    """One stage of training; ``None`` fields fall back to the run's settings (hyp, CLI batch)."""

    name: str
    trainable: list[str | int] = field(default_factory=lambda: ["all"])  # see strategies/selection.py
    bn: str = "frozen"  # BatchNorm of non-trainable modules: frozen | train | recalibrate
    lr0: float | None = None
    lr_mult: dict[str, float] = field(default_factory=dict)  # selection item -> LR multiplier
    layer_decay: float | None = None  # LR *= layer_decay ** (depth from the head)
    warmup_epochs: float | None = None  # the LR re-warms at the start of every phase
    warmup_min_iterations: int | None = None  # floor on the warmup's iterations (the reference's 100)
    warmup_bias_lr: float | None = None  # bias LR at the start of the warmup (hyp's, 0.1 in the reference)
    warmup_modules: str = "all"  # "new": only modules the previous phase did not train re-warm
    epochs: int | float | None = None  # int epochs, or a float < 1 = fraction of the budget
    plateau: dict | None = None  # {"patience": P, "max_epochs": M, "min_delta": 0.0}
    min_epochs: int | None = None  # last phase, time budgets: planned only if it gets this many epochs
    batch: int | str | None = None  # int or "auto"
    hyp: str | None = None  # augmentation preset (none|low|med|high|FILE.yaml)

    def __post_init__(self) -> None:
        where = f"phase '{self.name}'"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"phase name {self.name!r} must be a non-empty string")
        if not isinstance(self.trainable, list) or not self.trainable:
            raise ConfigError(f"{where}: trainable must be a non-empty list of module selections")
        for item in self.trainable:
            _parse_item(where, item)
        if self.bn not in BN_MODES:
            raise ConfigError(f"{where}: bn must be one of {', '.join(BN_MODES)}, got {self.bn!r}")
        if self.lr0 is not None:
            _check_number(where, "lr0", self.lr0, low=0.0)
        if not isinstance(self.lr_mult, dict):
            raise ConfigError(f"{where}: lr_mult must map module selections to multipliers")
        for key, mult in self.lr_mult.items():
            if _parse_item(where, key).negated:
                raise ConfigError(f"{where}: lr_mult key {key!r} cannot be negated")
            _check_number(where, f"lr_mult[{key}]", mult, low=0.0)
        if self.layer_decay is not None:
            _check_number(where, "layer_decay", self.layer_decay, low=0.0, high=1.0)
        if self.warmup_epochs is not None:
            _check_number(where, "warmup_epochs", self.warmup_epochs, low=0.0, allow_low=True)
        floor = self.warmup_min_iterations
        if floor is not None and (isinstance(floor, bool) or not isinstance(floor, int) or floor < 0):
            raise ConfigError(f"{where}: warmup_min_iterations must be a whole number >= 0, got {floor!r}")
        if self.warmup_bias_lr is not None:
            _check_number(where, "warmup_bias_lr", self.warmup_bias_lr, low=0.0, allow_low=True)
        if self.warmup_modules not in WARMUP_MODULES:
            choices = " or ".join(WARMUP_MODULES)
            raise ConfigError(f"{where}: warmup_modules must be {choices}, not {self.warmup_modules!r}")
        if self.epochs is not None and self.plateau is not None:
            raise ConfigError(f"{where}: give either epochs or plateau, not both")
        if self.epochs is not None:
            _check_length(where, "epochs", self.epochs)
        if self.plateau is not None:
            self._check_plateau(where)
        if self.min_epochs is not None and (
            isinstance(self.min_epochs, bool) or not isinstance(self.min_epochs, int) or self.min_epochs < 1
        ):
            raise ConfigError(f"{where}: min_epochs must be a positive whole number, got {self.min_epochs!r}")
        if self.batch not in (None, "auto") and (
            isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1
        ):
            raise ConfigError(f"{where}: batch must be a positive integer or 'auto', got {self.batch!r}")
        if self.hyp is not None and not isinstance(self.hyp, str):
            raise ConfigError(f"{where}: hyp must be a preset name or a YAML path, got {self.hyp!r}")

    def _check_plateau(self, where: str) -> None:
        if not isinstance(self.plateau, dict) or "patience" not in self.plateau:
            raise ConfigError(f"{where}: plateau must be a mapping with a 'patience'")
        if unknown := sorted(set(self.plateau) - set(PLATEAU_KEYS)):
            raise ConfigError(f"{where}: unknown plateau key(s) {', '.join(unknown)}")
        patience = self.plateau["patience"]
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"{where}: plateau patience must be a positive integer, got {patience!r}")
        if self.plateau.get("max_epochs") is not None:
            _check_length(where, "plateau max_epochs", self.plateau["max_epochs"])
        _check_number(where, "plateau min_delta", self.plateau.get("min_delta", 0.0), low=0.0, allow_low=True)


@dataclass
class Strategy:
    """Phases run in order; ``l2sp`` > 0 adds the L2-SP pull towards the pretrained weights.

    ``head`` says how the Detect output convs start when the data has other classes than the checkpoint:
    ``transfer`` copies the box/objectness rows and same-name class rows, ``fresh`` re-initialises them all
    as the reference does.
    """

    name: str
    description: str
    phases: list[Phase]
    l2sp: float = 0.0
    head: str = "transfer"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"strategy name {self.name!r} must be a non-empty string")
        if not isinstance(self.description, str):
            raise ConfigError(f"strategy '{self.name}': description must be a string")
        if not self.phases:
            raise ConfigError(f"strategy '{self.name}' has no phases")
        names = [phase.name for phase in self.phases]
        if len(set(names)) != len(names):
            raise ConfigError(f"strategy '{self.name}': phase names must be unique, got {names}")
        for phase in self.phases[:-1]:
            if phase.epochs is None and phase.plateau is None:
                raise ConfigError(
                    f"strategy '{self.name}': phase '{phase.name}' needs epochs or plateau (only the last "
                    "phase may run for the rest of the budget)"
                )
            if phase.min_epochs is not None:
                raise ConfigError(
                    f"strategy '{self.name}': phase '{phase.name}' has min_epochs; only the last phase of "
                    "several may (a time budget too short for it is spent on the phases before it)"
                )
        if len(self.phases) == 1 and self.phases[0].min_epochs is not None:
            raise ConfigError(
                f"strategy '{self.name}': min_epochs needs phases before the last one to take its time"
            )
        _check_number(f"strategy '{self.name}'", "l2sp", self.l2sp, low=0.0, allow_low=True)
        if self.head not in HEAD_INITS:
            raise ConfigError(
                f"strategy '{self.name}': head must be one of {', '.join(HEAD_INITS)}, got {self.head!r}"
            )


def _parse_item(where: str, item: object) -> SelectionItem:
    try:
        return parse_item(item)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _check_number(
    where: str, key: str, value: object, *, low: float, high: float | None = None, allow_low: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if allow_low else value > low) and (high is None or value <= high)
    if not ok:
        bounds = f"{'>=' if allow_low else '>'} {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"{where}: {key} must be a number {bounds}, got {value!r}")


def _check_length(where: str, key: str, value) -> None:
    """A phase length: a positive int, a whole float, or a fraction of the budget in (0, 1)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (is_number and value > 0 and (value < 1 or float(value).is_integer())):
        raise ConfigError(
            f"{where}: {key} must be a positive whole number of epochs or a fraction of the budget "
            f"in (0, 1), got {value!r}"
        )


def strategy_from_dict(data: dict, source: str) -> Strategy:
    """Build and validate a Strategy from parsed YAML; errors name ``source`` and the reason."""
    try:
        if not isinstance(data, dict):
            raise ConfigError("a strategy must be a mapping with name, description and phases")
        _reject_unknown(data, {f.name for f in dataclasses.fields(Strategy)}, "strategy")
        phases = data.get("phases")
        if not isinstance(phases, list):
            raise ConfigError("'phases' must be a list of phase mappings")
        allowed = {f.name for f in dataclasses.fields(Phase)}
        built = []
        for index, phase in enumerate(phases):
            if not isinstance(phase, dict) or "name" not in phase:
                raise ConfigError(f"phase {index + 1} must be a mapping with a 'name'")
            _reject_unknown(phase, allowed, f"phase '{phase['name']}'")
            built.append(Phase(**phase))
        return Strategy(
            name=data.get("name", Path(source).stem),
            description=data.get("description", ""),
            phases=built,
            l2sp=data.get("l2sp", 0.0),
            head=data.get("head", "transfer"),
        )
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _reject_unknown(data: dict, allowed: set[str], where: str) -> None:
    if unknown := sorted(set(data) - allowed):
        known = ", ".join(sorted(allowed))
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} (allowed: {known})")


def strategy_to_dict(strategy: Strategy) -> dict:
    """The YAML form of a strategy: phase fields that equal their defaults are left out."""
    defaults = Phase(name="defaults")
    phases = []
    for phase in strategy.phases:
        phases.append(
            {
                f.name: getattr(phase, f.name)
                for f in dataclasses.fields(Phase)
                if f.name == "name" or getattr(phase, f.name) != getattr(defaults, f.name)
            }
        )
    header = {"name": strategy.name, "description": strategy.description}
    header |= {"l2sp": strategy.l2sp, "head": strategy.head}
    return {**header, "phases": phases}


def read_strategy(path: str | Path) -> Strategy:
    """Load a strategy YAML file; ConfigError (naming the file) when it is missing or invalid."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read strategy file ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return strategy_from_dict(data, str(path))


def write_strategy(strategy: Strategy, path: str | Path) -> None:
    """Write a strategy as YAML that ``read_strategy`` reads back to an equal Strategy."""
    text = yaml.safe_dump(strategy_to_dict(strategy), sort_keys=False, default_flow_style=None)
    Path(path).write_text(text, encoding="utf-8")


def resolve_phase_lengths(strategy: Strategy, epochs: int) -> Strategy:
    """Turn fractional phase lengths into epochs for a budget of ``epochs``.

    A fraction f becomes ``max(1, round(f * epochs))``. Phases are then capped so every later phase keeps at
    least one epoch of the budget; "the rest" (no epochs, no plateau) stays ``None`` for the trainer to fill.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"the epoch budget must be a positive integer, got {epochs!r}")
    count = len(strategy.phases)
    if epochs < count:
        raise ConfigError(
            f"strategy '{strategy.name}' has {count} phases and needs at least {count} epochs, got {epochs}"
        )
    resolved, used = [], 0
    for index, phase in enumerate(strategy.phases):
        cap = epochs - used - (count - index - 1)
        if phase.epochs is not None:
            length = min(_to_epochs(phase.epochs, epochs), cap)
            resolved.append(dataclasses.replace(phase, epochs=length))
            used += length
        elif phase.plateau is not None:
            max_epochs = phase.plateau.get("max_epochs")
            length = cap if max_epochs is None else min(_to_epochs(max_epochs, epochs), cap)
            resolved.append(dataclasses.replace(phase, plateau={**phase.plateau, "max_epochs": length}))
            used += length
        else:
            resolved.append(dataclasses.replace(phase))
    return dataclasses.replace(strategy, phases=resolved)


def last_phase_epochs(resolved: Strategy, epochs: int) -> int:
    """The epochs a schedule of ``epochs`` (``resolved`` for it) leaves its last phase, the phases before it
    counted at their longest (a plateau phase at its ``max_epochs``)."""
    earlier = sum(phase.epochs or phase.plateau["max_epochs"] for phase in resolved.phases[:-1])
    return epochs - earlier


def leading_phases(strategy: Strategy, count: int) -> Strategy:
    """``strategy`` with its first ``count`` phases only, the last of them running for the rest of the budget
    (no length, no plateau): the plan of a time budget too short for the phases left out."""
    if not 1 <= count <= len(strategy.phases):
        raise ConfigError(f"strategy '{strategy.name}' has {len(strategy.phases)} phases, not {count}")
    if count == len(strategy.phases):
        return strategy
    *kept, last = strategy.phases[:count]
    return dataclasses.replace(strategy, phases=[*kept, dataclasses.replace(last, epochs=None, plateau=None)])


def _to_epochs(length: int | float, budget: int) -> int:
    return max(1, round(length * budget)) if length < 1 else int(length)
