"""The human-readable ``advise`` report (rich tables) of the dict that ``advise()`` returns."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from yolo_transfer.advise.rules import FIELDS, HIGH_SHIFT, LOW_SHIFT

BAR_WIDTH = 30


def _bar(value: float, full: float) -> str:
    filled = min(BAR_WIDTH, round(BAR_WIDTH * value / full)) if full > 0 else 0
    return "#" * filled + "." * (BAR_WIDTH - filled)


def _names(names: list[str], most: int = 8) -> str:
    shown = ", ".join(names[:most]) + (f" ... ({len(names)} in all)" if len(names) > most else "")
    return shown or "-"


def _shift_word(value: float) -> str:
    return "low" if value < LOW_SHIFT else "high" if value >= HIGH_SHIFT else "moderate"


def data_table(result: dict) -> Table:
    scale, sizes = result["scale"], result["scale"]["box_sizes"]
    table = Table(title="Data", show_header=False)
    table.add_row("train / val images", f"{scale['images']} / {scale['val_images']}")
    per_class = ", ".join(f"{name} {count}" for name, count in scale["instances_per_class"].items())
    table.add_row(
        "instances per class", per_class if len(per_class) < 200 else f"{scale['instances']} in all"
    )
    smallest = scale["smallest_class"]
    table.add_row("smallest class", f"{smallest['name']} ({smallest['instances']} instances)")
    table.add_row("background images", f"{scale['background_fraction']:.1%}")
    shares = " / ".join(f"{sizes['shares'][k]:.0%}" for k in ("small", "medium", "large"))
    coco = " / ".join(f"{sizes['coco_shares'][k]:.0%}" for k in ("small", "medium", "large"))
    table.add_row(
        "boxes small / medium / large", f"{shares}   (COCO {coco}; distance {sizes['distance_to_coco']:.2f})"
    )
    table.add_row("anchor fit (best possible recall)", f"{sizes['anchor_fit']:.1%}")
    labels = result["labels"]
    table.add_row("classes the checkpoint knows", f"{labels['fraction']:.0%}")
    table.add_row("  same name", _names(labels["exact"]))
    table.add_row("  synonym", _names([f"{a} = {b}" for a, b in labels["synonym"].items()]))
    table.add_row("  new", _names(labels["new"]))
    return table


def shift_table(result: dict) -> Table:
    shift = result["shift"]
    full = max(HIGH_SHIFT * 2, *(shift[k] for k in ("early", "middle", "late")))
    table = Table(title="Shift from the pretraining (symmetric KL of BatchNorm statistics)")
    for column in ("stage", "modules", "shift", "", "level"):
        table.add_column(column)
    for stage, (first, last) in shift["stages"].items():
        value = shift[stage]
        table.add_row(stage, f"{first}-{last}", f"{value:.3f}", _bar(value, full), _shift_word(value))
    table.add_row(
        "overall",
        "all",
        f"{shift['overall']:.3f}",
        _bar(shift["overall"], full),
        _shift_word(shift["overall"]),
    )
    objectness = result["objectness"]
    table.caption = (
        f"pretrained objectness on the images: mean top-{objectness['k']} {objectness['mean_top_k']:.3f} "
        f"over {objectness['images']} images"
    )
    return table


def compute_table(result: dict) -> Table | None:
    compute = result["compute"]
    if not compute:
        return None
    budget_s = compute["budget_s"]
    table = Table(title="Compute on this device (measured)")
    table.add_column("strategy")
    table.add_column("s / epoch", justify="right")
    if budget_s is not None:
        table.add_column(f"epochs in {budget_s / 60:g} min", justify="right")
    for name, entry in compute["strategies"].items():
        row = [name, f"{entry['epoch_s']:.1f}"]
        if budget_s is not None:
            phases = len(entry["phase_epoch_s"])
            fit = entry.get("phases_fit", phases)
            only = f" (first {fit} of {phases} phases)" if fit < phases else ""
            row.append(f"{entry['epochs_fit']}{only}")
        table.add_row(*row)
    return table


def recommendation_table(result: dict) -> Table:
    rec = result["recommendation"]
    table = Table(title="Recommendation", show_lines=True)
    for column in ("", "value", "why (measurement -> rule)", "source"):
        table.add_column(column, overflow="fold")
    for name in FIELDS:
        choice = rec["reasons"][name]
        value = "-" if choice["value"] is None else str(choice["value"])
        reason = f"{choice['reason']}\n[dim]rule: {choice['rule']}[/]"
        table.add_row(name, value, reason, "\n".join(choice["cites"]))
    table.caption = "what each source found, the study's numbers included: advise.json (reasons.*.source)"
    return table


def print_report(result: dict, console: Console | None = None) -> None:
    console = console or Console()
    settings = result["settings"]
    console.print(
        f"[bold]advise[/]: {result['data']} from {result['weights']} "
        f"(imgsz {settings['imgsz']}, {result['objectness']['images']} images measured, "
        f"{result['seconds']['total']:.0f} s)"
    )
    tables = [data_table(result), shift_table(result), compute_table(result), recommendation_table(result)]
    for table in tables:
        if table is not None:
            console.print(table)
    for note in result["notes"]:
        console.print(f"note: {note}")
    console.print("[bold]run it:[/]")
    console.print(result["recommendation"]["command"], soft_wrap=True, markup=False, highlight=False)
