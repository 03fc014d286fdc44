"""``yolo-transfer data check`` and ``data convert``: validate, print a summary, write report.json."""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from yolo_transfer.data.convert import write_yolo_dataset
from yolo_transfer.data.formats import (
    DatasetSpec,
    find_coco_jsons,
    make_val_split,
    read_coco,
    read_coco_splits,
    read_dataset,
    read_voc,
)
from yolo_transfer.data.validate import LoadedDataset, validate_dataset
from yolo_transfer.engine.outputs import ensure_writable_dir, write_atomic
from yolo_transfer.errors import DataError
from yolo_transfer.option_checks import require_dataset

COCO_AREA_LIMITS = (32**2, 96**2)  # small < 32^2 px <= medium < 96^2 px <= large, in original pixels


def check_command(args: argparse.Namespace) -> int:
    """Validate DATA, print the summary and write DIR/report.json; exit 2 when nothing usable is left."""
    ensure_writable_dir(args.out)
    data = validate_dataset(read_dataset(args.data, args.val_fraction))
    report_path = write_report(data, Path(args.out))
    print_summary(data)
    Console().print(f"report: {report_path}")
    require_usable(data)
    return 0


def convert_command(args: argparse.Namespace) -> int:
    """Read a VOC folder or COCO json, validate it and write a YOLO dataset with data.yaml into --out."""
    ensure_writable_dir(args.out)
    src = require_dataset(args.src)
    if args.format == "voc" and not src.is_dir():
        raise DataError(f"{src}: --format voc needs a folder holding Pascal VOC .xml annotations")
    if args.format == "coco" and not (src.is_dir() or src.suffix.lower() == ".json"):
        raise DataError(f"{src}: --format coco needs an instances .json file or a folder of them")
    spec: DatasetSpec = read_voc(src) if args.format == "voc" else _read_coco_source(src)
    if not spec.splits.get("val"):
        make_val_split(spec, args.val_fraction, seed=0)
    data = validate_dataset(spec)
    print_summary(data)
    require_usable(data)
    yaml_path = write_yolo_dataset(data, args.out)
    write_report(data, Path(args.out))
    Console().print(f"wrote {data.report.counts['images']} images and {yaml_path}")
    return 0


def _read_coco_source(src: Path) -> DatasetSpec:
    if not src.is_dir():
        return read_coco(src)
    jsons = find_coco_jsons(src)
    if not jsons:
        raise DataError(f"{src}: no COCO instances .json in the folder, its annotations/ or split folders")
    return read_coco_splits(src, jsons)


def require_usable(data: LoadedDataset) -> None:
    for split in ("train", "val"):
        if not getattr(data, split):
            raise DataError(
                f"{data.source}: no usable {split} images ({len(data.report.skipped)} files skipped)"
            )


def box_size_stats(data: LoadedDataset) -> dict:
    """COCO size classes in original pixels and quantiles of sqrt(w*h) relative to the image."""
    samples = data.train + data.val + data.test
    areas, relative = [], []
    for s in samples:
        if len(s.labels):
            areas.append(s.labels[:, 3] * s.width * s.labels[:, 4] * s.height)
            relative.append(np.sqrt(s.labels[:, 3] * s.labels[:, 4]))
    if not areas:
        return {"small": 0, "medium": 0, "large": 0, "relative_size_quantiles": {}}
    area, rel = np.concatenate(areas), np.concatenate(relative)
    small, large = COCO_AREA_LIMITS
    quantiles = {f"p{q}": round(float(np.percentile(rel, q)), 4) for q in (5, 50, 95)}
    return {
        "small": int((area < small).sum()),
        "medium": int(((area >= small) & (area < large)).sum()),
        "large": int((area >= large).sum()),
        "relative_size_quantiles": quantiles,
    }


def write_report(data: LoadedDataset, out: Path) -> Path:
    """DIR/report.json: source, names, counts, box sizes, notes and every skipped / repaired file."""
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "source": str(data.source),
        "names": data.names,
        **data.report.to_dict(),
        "box_sizes": box_size_stats(data),
    }
    path = out / "report.json"
    write_atomic(path, json.dumps(report, indent=2).encode())
    return path


def print_summary(data: LoadedDataset) -> None:
    console, counts, report = Console(), data.report.counts, data.report
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    splits = Table(title=f"{data.source}")
    for column in ("split", "images", "instances", "backgrounds"):
        splits.add_column(column, justify="left" if column == "split" else "right")
    for split, c in counts["splits"].items():
        if c["images"]:
            splits.add_row(split, str(c["images"]), str(c["instances"]), str(c["backgrounds"]))
    console.print(splits)

    classes = Table(title="instances per class")
    classes.add_column("class")
    classes.add_column("instances", justify="right")
    for name, n in counts["instances_per_class"].items():
        if n:
            classes.add_row(name, str(n))
    console.print(classes)
    absent = [name for name, n in counts["instances_per_class"].items() if not n]
    if absent:
        console.print(f"[yellow]{len(absent)} classes have no instances:[/] {', '.join(absent)}")

    sizes = box_size_stats(data)
    q = sizes["relative_size_quantiles"]
    console.print(
        f"box sizes (COCO areas): small {sizes['small']}, medium {sizes['medium']}, "
        f"large {sizes['large']}; sqrt(w*h)/image p5/p50/p95: "
        f"{q.get('p5', 0):.3f}/{q.get('p50', 0):.3f}/{q.get('p95', 0):.3f}"
    )
    for title, entries, style in (
        ("skipped", report.skipped, "red"),
        ("repaired", report.repaired, "yellow"),
    ):
        if entries:
            console.print(_reason_table(title, entries, style))


def _reason_table(title: str, entries: list[dict], style: str) -> Table:
    """Entries grouped by reason (numbers blanked out), with a count and one example file."""
    groups = Counter(_reason_kind(e["reason"]) for e in entries)
    examples: dict[str, str] = {}
    for e in entries:
        examples.setdefault(_reason_kind(e["reason"]), e["file"])
    table = Table(title=f"{title}: {len(entries)} files", title_style=style)
    table.add_column("reason")
    table.add_column("files", justify="right")
    table.add_column("example")
    for reason, n in groups.most_common():
        table.add_row(reason, str(n), Path(examples[reason]).name)
    return table


def _reason_kind(reason: str) -> str:
    return re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", reason)
