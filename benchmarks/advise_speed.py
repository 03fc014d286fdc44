"""How long ``advise`` takes: one measuring pass over up to 500 images (goal: <= 2 minutes on a 2-core CPU for
yolov5n at imgsz 320), then the timed training steps of every built-in strategy.

    python benchmarks/advise_speed.py                                  # 500 synthetic images at 320
    python benchmarks/advise_speed.py --data ../shared/data/bccd --weights ../shared/weights/yolov5n.pt
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from yolo_transfer.advise import advise
from yolo_transfer.compare.demo import shipped_weights
from yolo_transfer.data.synthetic import make_domain

GOAL_SECONDS = 120.0
OFFICIAL = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "yolov5n.pt"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="default: a 500-image synthetic target domain")
    p.add_argument("--weights", default=None, help="default: ../shared/weights/yolov5n.pt, else the demo's")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--max-images", type=int, default=500)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    weights = args.weights or str(OFFICIAL if OFFICIAL.is_file() else shipped_weights())
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or str(
            make_domain(Path(tmp) / "target", "target", n_images=args.max_images, imgsz=640)
        )
        cpu_start = time.process_time()
        result = advise(data, weights, imgsz=args.imgsz, max_images=args.max_images, device=args.device)
        cpu_seconds = time.process_time() - cpu_start
    seconds = result["seconds"]
    table = Table(title=f"advise on {result['objectness']['images']} images at imgsz {args.imgsz}")
    for column in ("step", "seconds", "goal"):
        table.add_column(column)
    table.add_row("load data + weights", f"{seconds['load']:.1f}", "")
    verdict = "ok" if seconds["measure"] <= GOAL_SECONDS else "MISSED"
    table.add_row(
        "measuring pass (scale, BN shift, objectness)",
        f"{seconds['measure']:.1f}",
        f"<= {GOAL_SECONDS:.0f} s: {verdict}",
    )
    strategies = len(result["compute"]["strategies"])
    table.add_row(f"timed training steps ({strategies} strategies)", f"{seconds['compute']:.1f}", "")
    table.add_row("total", f"{seconds['total']:.1f}", "")
    table.add_row("total CPU time of this process (all threads)", f"{cpu_seconds:.1f}", "")
    table.caption = (
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f} (other processes slow the wall-clock figures down)"
    )
    Console().print(table)


if __name__ == "__main__":
    main()
