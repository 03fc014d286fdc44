"""A YOLO copy of a dataset that keeps only some of its classes, and only the images that hold one of them.

The study uses it to make data whose every class the checkpoint knows out of a set that mixes known and new
classes (aerial_maritime's boats and cars, seen from a drone). Boxes of the other classes are dropped, images
left with none are left out, and class ids are renumbered in the order given. ``OLD=NEW`` keeps class OLD
under the name NEW (license_plates' ``vehicle`` as COCO's ``car``). ::

    python benchmarks/class_subset.py ../shared/data/aerial_maritime/data.yaml --classes boat,car \\
        --out runs/study/subsets/aerial_maritime-boat-car
    python benchmarks/class_subset.py ../shared/data/license_plates/data.yaml --classes vehicle=car \\
        --out runs/study/subsets/license_plates-car
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from yolo_transfer.data import LoadedDataset, Sample, load_dataset
from yolo_transfer.data.convert import write_yolo_dataset


def keep_classes(
    data: LoadedDataset, classes: list[str], rename: dict[str, str] | None = None
) -> LoadedDataset:
    """``data`` with only ``classes`` (renumbered in that order, named as ``rename`` says where it names them)
    and the samples that hold at least one."""
    missing = [name for name in classes if name not in data.names]
    if missing:
        raise ValueError(f"{data.source}: no class {', '.join(missing)} (it has {', '.join(data.names)})")
    new_id = {data.names.index(name): index for index, name in enumerate(classes)}

    def subset(samples: list[Sample]) -> list[Sample]:
        kept = []
        for sample in samples:
            rows = sample.labels[np.isin(sample.labels[:, 0], list(new_id))].copy()
            if len(rows):
                rows[:, 0] = [new_id[int(c)] for c in rows[:, 0]]
                kept.append(dataclasses.replace(sample, labels=rows))
        return kept

    names = [(rename or {}).get(name, name) for name in classes]
    return dataclasses.replace(
        data, names=names, train=subset(data.train), val=subset(data.val), test=subset(data.test)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="data.yaml (or any dataset yolo-transfer reads)")
    parser.add_argument(
        "--classes", required=True, help="comma-separated class names to keep, in order (OLD=NEW renames)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    try:
        entries = [entry.split("=", 1) for entry in args.classes.split(",")]
        rename = {entry[0]: entry[1] for entry in entries if len(entry) == 2}
        data = keep_classes(load_dataset(args.data), [entry[0] for entry in entries], rename)
    except ValueError as error:
        parser.error(str(error))  # exit status 2
    yaml_path = write_yolo_dataset(data, args.out)
    counts = {split: len(getattr(data, split)) for split in ("train", "val", "test")}
    print(f"wrote {yaml_path}: {counts}")


if __name__ == "__main__":
    main()
