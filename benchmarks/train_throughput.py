"""Training throughput of the real training loop: train img/s and peak RSS for yolov5n at 320, batch 16.

Runs ``yolo_transfer.engine.trainer.train`` (strategy ``full``, mosaic augmentation, EMA, accumulation) on the
built-in synthetic target domain for one epoch of a fixed number of training images (img/s counts the
training loop only, not the validation at the end), and prints a table. Usage::

    python benchmarks/train_throughput.py [--images 320] [--weights ../shared/weights/yolov5n.pt] [--device X]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine.trainer import TrainConfig, train
from yolo_transfer.strategies import load_strategy

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "yolov5n.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320, help="training images to time")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS) if DEFAULT_WEIGHTS.exists() else None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("YOLO_TRANSFER_CACHE", str(Path(tmp) / "cache"))
        # one epoch whose 80 % train split holds the images to time, so validation runs once, at the end
        n_images = math.ceil(args.images / 0.8) + 1
        data = make_domain(Path(tmp) / "data", "target", n_images=n_images, imgsz=args.imgsz)
        config = TrainConfig(
            data=str(data), out=Path(tmp) / "run", weights=args.weights, epochs=1, imgsz=args.imgsz,
            batch=args.batch, device=args.device, workers=args.workers, max_images=args.images,
        )  # fmt: skip
        summary = train(config, load_strategy("full", epochs=config.epochs))

    start = "official yolov5n weights" if args.weights else "yolov5n from scratch"
    table = Table(
        title=f"train throughput: {start} @ {args.imgsz}, batch {args.batch}, {args.device}",
        caption=f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"{args.workers} loader workers",
    )
    for column in ("train images", "train img/s", "peak RSS (MB)", "GPU mem (MB)", "wall (s)"):
        table.add_column(column, justify="right")
    table.add_row(
        str(args.images), f"{summary['train_img_per_s']:.1f}", f"{summary['peak_rss_mb']:.0f}",
        f"{summary['gpu_mem_mb']:.0f}", f"{summary['wall_seconds']:.1f}",
    )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
