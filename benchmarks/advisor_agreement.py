"""How often does ``advise`` pick a strategy within 1 mAP50-95 point of the best one ``compare`` finds?

For every (shift, training images) cell of a grid of built-in synthetic target domains
(``yolo_transfer.data.synthetic.make_domain``), starting from the yolov5n pretrained on the synthetic source
domain (the demo checkpoint), the script

1. asks ``advise`` for a strategy at the same epoch budget,
2. runs ``compare`` on the candidate strategies plus the advised one (same seeds, same budget),
3. records the gap between the advised strategy's best mAP50-95 and the best strategy's.

It prints one table row per cell and the agreement rate, next to the rate of always picking each candidate
(the fixed policies an advisor has to beat). Runs already finished in ``--out`` are reused.

    python benchmarks/advisor_agreement.py        # 6 cells x 4-5 runs: ~10 min on an idle 2-core CPU
    python benchmarks/advisor_agreement.py --shifts 0,0.5,1 --sizes 50,200,800 --epochs 30 --seeds 0,1

Gaps under about 1 point are within seed noise; use several ``--seeds`` before reading much into them.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from yolo_transfer.advise import advise
from yolo_transfer.compare import compare
from yolo_transfer.compare.demo import pretrain_on_source, shipped_weights
from yolo_transfer.data.synthetic import VAL_FRACTION, make_domain
from yolo_transfer.engine.budget import parse_budget

TOLERANCE = 0.01  # 1 mAP50-95 point
TRAIN_OPTIONS = {
    "hyp": "low",
    "optimizer": "SGD",
    "lr0": None,
    "cos_lr": False,
    "patience": 0,
    "device": "cpu",
    "workers": 0,
    "cache": True,
    "val_fraction": VAL_FRACTION,
    "split_seed": 0,
}
COLUMNS = ("shift", "train imgs", "BN shift", "advised", "best", "mAP advised", "mAP best", "gap pts")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shifts", default="0.1,0.5,0.9", help="target-domain shifts in [0, 1]")
    p.add_argument("--sizes", default="40,160", help="training images per target domain")
    p.add_argument("--strategies", default="full,freeze,staged,lp-ft", help="candidates besides advice")
    p.add_argument("--epochs", type=int, default=15, help="epoch budget of every run")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", default="0")
    p.add_argument("--weights", default=None, help="default: the demo's source-domain checkpoint")
    p.add_argument("--out", default="runs/advisor-agreement")
    return p.parse_args()


def source_weights(args: argparse.Namespace, out: Path, console: Console) -> Path:
    """--weights, else the shipped demo checkpoint, else one pretrained now (cached in ``out``)."""
    if args.weights:
        return Path(args.weights)
    for path in (shipped_weights(), out / "pretrain" / "demo_yolov5n_source.safetensors"):
        if path.is_file():
            return path
    return pretrain_on_source(out / "pretrain", console)


def run_cell(shift: float, size: int, weights: Path, args: argparse.Namespace, console: Console) -> dict:
    """Advice and comparison for one synthetic target domain."""
    out = Path(args.out) / f"shift{shift:g}-n{size}"
    n_images = math.ceil(size / (1 - VAL_FRACTION))
    data = str(make_domain(out / "data", "target", n_images=n_images, imgsz=args.imgsz, shift=shift, seed=1))
    budget = f"epochs={args.epochs}"
    advice = advise(data, str(weights), budget=budget, imgsz=args.imgsz, compute=False)
    advised = advice["recommendation"]["strategy"]
    candidates = list(dict.fromkeys([*args.strategies.split(","), advised]))
    options = dict(TRAIN_OPTIONS, imgsz=args.imgsz, batch=args.batch)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = compare(
        data,
        str(weights),
        candidates,
        parse_budget(budget),
        seeds,
        out / "compare",
        train_options=options,
        console=console,
    )
    scores = {
        name: row["best_map50_95"]["mean"]
        for name, row in results["aggregate"].items()
        if row["best_map50_95"]["mean"] is not None
    }
    best = max(scores, key=scores.get)
    return {
        "shift": shift,
        "size": size,
        "advised": advised,
        "why": advice["recommendation"]["reasons"]["strategy"]["rule"],
        "shift_overall": advice["shift"]["overall"],
        "scores": scores,
        "best": best,
    }


def print_summary(cells: list[dict], candidates: list[str], console: Console) -> None:
    table = Table(title=f"advice vs the best strategy (within {TOLERANCE * 100:g} mAP50-95 point = agree)")
    for column in COLUMNS:
        table.add_column(column)
    for cell in cells:
        scores, advised, best = cell["scores"], cell["advised"], cell["best"]
        gap = (scores[best] - scores.get(advised, 0.0)) * 100
        table.add_row(
            f"{cell['shift']:g}",
            str(cell["size"]),
            f"{cell['shift_overall']:.2f}",
            advised,
            best,
            f"{scores.get(advised, float('nan')):.3f}",
            f"{scores[best]:.3f}",
            f"[{'green' if gap <= TOLERANCE * 100 else 'red'}]{gap:.1f}[/]",
        )
    console.print(table)
    for cell in cells:
        console.print(
            f"shift {cell['shift']:g}, {cell['size']} images: {cell['advised']} because {cell['why']}"
        )
    console.print(f"advisor agrees in {_agreement(cells, lambda c: c['advised'])}")
    for name in candidates:
        console.print(f"always '{name}' agrees in {_agreement(cells, lambda c, name=name: name)}")


def _agreement(cells: list[dict], pick) -> str:
    hits = sum(
        pick(c) in c["scores"] and c["scores"][c["best"]] - c["scores"][pick(c)] <= TOLERANCE for c in cells
    )
    return f"{hits}/{len(cells)} cells ({hits / max(len(cells), 1):.0%})"


def main() -> None:
    args = parse_args()
    console = Console()
    out = Path(args.out)
    weights = source_weights(args, out, console)
    cells = [
        run_cell(float(shift), int(size), weights, args, console)
        for shift in args.shifts.split(",")
        for size in args.sizes.split(",")
    ]
    print_summary(cells, args.strategies.split(","), console)


if __name__ == "__main__":
    main()
