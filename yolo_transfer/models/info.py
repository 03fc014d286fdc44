"""``yolo-transfer info``: layer table, parameter counts, GFLOPs, class names and module groups of a model."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from yolo_transfer.models.checkpoint import load_model
from yolo_transfer.models.yolo import DetectionModel, build_model, model_groups
from yolo_transfer.option_checks import WEIGHT_SUFFIXES


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def gflops(model: DetectionModel, imgsz: int) -> float:
    """GFLOPs of one imgsz x imgsz forward pass; a multiply-add counts 2 FLOPs, as in YOLOv5's logs."""
    model = copy.deepcopy(model).float().cpu().eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, model.yaml.get("ch", 3), imgsz, imgsz))
    return counter.get_total_flops() / 1e9


def layer_table(model: DetectionModel) -> Table:
    table = Table(title="layers", title_justify="left")
    for column in ("#", "from", "n", "params", "module", "arguments"):
        table.add_column(column, justify="right" if column in ("#", "n", "params") else "left")
    for layer in model.model:
        table.add_row(
            str(layer.i), str(layer.f), str(layer.n), f"{count_params(layer):,}", layer.type, str(layer.args)
        )
    return table


def group_table(model: DetectionModel) -> Table:
    table = Table(title="module groups (for strategies)", title_justify="left")
    for column in ("group", "modules", "params"):
        table.add_column(column, justify="right" if column == "params" else "left")
    for name, indices in model_groups(model).items():
        span = f"{indices[0]}-{indices[-1]}" if len(indices) > 1 else str(indices[0])
        table.add_row(name, span, f"{sum(count_params(model.model[i]) for i in indices):,}")
    return table


def describe(model: DetectionModel, imgsz: int, title: str, console: Console) -> None:
    """Print the full description of ``model``."""
    fused = copy.deepcopy(model).fuse()
    console.print(layer_table(model))
    console.print(
        f"{title}: {len(model.model)} modules, {count_params(model):,} parameters "
        f"({count_params(fused):,} after Conv+BN fusion), {gflops(fused, imgsz):.1f} GFLOPs at {imgsz}px"
    )
    console.print(f"{model.nc} classes: {', '.join(model.names)}", markup=False)
    console.print(group_table(model))


def info_command(args) -> int:
    """``yolo-transfer info MODEL_OR_WEIGHTS [--nc N] [--imgsz 640]``."""
    console = Console(soft_wrap=True, highlight=False)
    if Path(args.model).suffix in WEIGHT_SUFFIXES:
        model, metadata = load_model(args.model, nc=args.nc)
        provenance = metadata.get("provenance") or {}
        if provenance:
            console.print("provenance: " + ", ".join(f"{k} {v}" for k, v in provenance.items()), markup=False)
    else:
        model = build_model(args.model, nc=args.nc)
    describe(model, args.imgsz, Path(args.model).name, console)
    return 0
