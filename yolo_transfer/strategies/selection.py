"""Module selections: the small grammar that says which of the model's modules a phase trains.

A selection is a list of items, each one of

* ``"all"``: every module;
* ``"backbone"``, ``"neck"``, ``"head"``: a group of ``yolo_transfer.models.model_groups(model)``;
* ``7`` or ``"7"``: one module index;
* ``"3-9"``: an inclusive range of module indices;
* ``"first:N"``: yolov5's ``--freeze N``, i.e. modules ``0..N-1`` are frozen and modules ``>= N`` train;
* ``"not:ITEM"``: remove ITEM's modules from the selection.

The positive items are united (``"all"`` when there are none), then the ``not:`` items are removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from yolo_transfer.errors import ConfigError

GROUP_NAMES = ("backbone", "neck", "head")
_RANGE = re.compile(r"^(\d+)-(\d+)$")
_FIRST = re.compile(r"^first:(\d+)$")


@dataclass(frozen=True)
class SelectionItem:
    """One parsed item: a group, or the index range ``start..stop-1`` (``stop=None``: to the last module)."""

    negated: bool
    group: str | None
    start: int = 0
    stop: int | None = None


def parse_item(item: str | int) -> SelectionItem:
    """Parse one selection item; raise ConfigError naming the item when it is not in the grammar."""
    if isinstance(item, bool) or not isinstance(item, (str, int)):
        raise ConfigError(f"module selection item {item!r} must be a string or a module index")
    if isinstance(item, int):
        return _index_item(item, negated=False)
    text = item.strip()
    negated = text.startswith("not:")
    if negated:
        text = text[len("not:") :].strip()
    if text in GROUP_NAMES:
        return SelectionItem(negated, text)
    if text == "all":
        return SelectionItem(negated, None)
    if text.isdigit():
        return _index_item(int(text), negated)
    if match := _RANGE.match(text):
        start, last = int(match[1]), int(match[2])
        if last < start:
            raise ConfigError(f"module range {item!r} ends before it starts")
        return SelectionItem(negated, None, start, last + 1)
    if match := _FIRST.match(text):
        return SelectionItem(negated, None, int(match[1]), None)
    raise ConfigError(
        f"module selection item {item!r} is not 'all', a group ({', '.join(GROUP_NAMES)}), an index, "
        "a range 'a-b', 'first:N' or 'not:ITEM'"
    )


def _index_item(index: int, negated: bool) -> SelectionItem:
    if index < 0:
        raise ConfigError(f"module index {index} is negative")
    return SelectionItem(negated, None, index, index + 1)


def item_modules(item: SelectionItem, n_modules: int, groups: dict[str, list[int]]) -> set[int]:
    """The module indices of one item for a model with ``n_modules`` modules and these groups."""
    if item.group is not None:
        if item.group not in groups:
            raise ConfigError(f"this model has no module group '{item.group}' (it has {', '.join(groups)})")
        return set(groups[item.group])
    stop = n_modules if item.stop is None else item.stop
    if stop > n_modules or item.start > n_modules:
        missing = max(stop - 1, item.start)
        raise ConfigError(f"module index {missing} does not exist (modules are 0-{n_modules - 1})")
    return set(range(item.start, stop))


def select_modules(spec: list[str | int], n_modules: int, groups: dict[str, list[int]]) -> list[int]:
    """Sorted module indices selected by ``spec``; ConfigError when the spec is invalid or selects nothing."""
    items = [parse_item(entry) for entry in spec]
    positives = [item for item in items if not item.negated] or [SelectionItem(False, None)]
    selected: set[int] = set()
    for item in positives:
        selected |= item_modules(item, n_modules, groups)
    for item in items:
        if item.negated:
            selected -= item_modules(item, n_modules, groups)
    if not selected:
        raise ConfigError(f"module selection {spec} leaves no module to train")
    return sorted(selected)


def selection_from_freeze(freeze: str) -> list[str | int]:
    """The trainable selection for a yolov5-style ``--freeze`` value.

    One number N freezes modules ``0..N-1`` (``--freeze 3`` = modules 0, 1, 2; ``0`` freezes nothing); several
    values (``"0,1,2"``, ``"3 4"``), ranges or group names freeze exactly those modules.
    """
    values = [value for value in re.split(r"[,\s]+", freeze.strip()) if value]
    if not values:
        raise ConfigError("--freeze is empty: give N, a group name or module indices such as '0,1,2'")
    if len(values) == 1 and values[0].isdigit():
        count = int(values[0])
        return ["all"] if count == 0 else [f"first:{count}"]
    for value in values:
        try:
            negated = parse_item(value).negated
        except ConfigError as err:
            raise ConfigError(f"--freeze: {err}") from None
        if negated:
            raise ConfigError(f"--freeze value {value!r}: name the modules to freeze without 'not:'")
    return ["all", *(f"not:{value}" for value in values)]
