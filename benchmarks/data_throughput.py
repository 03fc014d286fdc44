"""Training-loader throughput: images/s with mosaic augmentation for 0, 1 and 2 DataLoader workers.

The loader is the one training uses: ``build_dataloader(augment=True)``, the chosen hyp preset, mosaic on.
Each row times ``--batches`` batches after the first one, whose time (worker start-up, first decodes) is shown
apart. Data: the built-in synthetic source domain (generated once into ``--out``) or ``--data``.

    .venv/bin/python benchmarks/data_throughput.py                     # 500 synthetic images, 320 px
    .venv/bin/python benchmarks/data_throughput.py --data path/to/data.yaml --workers 0,2,4 --cache
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from yolo_transfer.data import build_dataloader, load_dataset, load_hyp
from yolo_transfer.data.synthetic import make_domain


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="dataset to read (default: the synthetic source domain)")
    p.add_argument("--out", default="runs/bench-data", help="where the synthetic domain is written")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=20, help="timed batches per setting")
    p.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    p.add_argument("--hyp", default="low", help="augmentation preset (mosaic is forced on)")
    p.add_argument("--cache", action="store_true", help="RAM image cache")
    return p.parse_args()


def measure(samples, args: argparse.Namespace, workers: int) -> tuple[float, float]:
    """(seconds to the first batch, images/s over the next `args.batches` batches)."""
    hyp = load_hyp(args.hyp, mosaic=1.0)
    loader = build_dataloader(samples, args.imgsz, args.batch, augment=True, hyp=hyp, shuffle=True,
                              workers=workers, seed=0, cache_ram=args.cache)  # fmt: skip
    start = time.perf_counter()
    n_images, first_batch_s, timed_start = 0, 0.0, 0.0
    while n_images < args.batches * args.batch:
        for images, *_ in loader:
            if not first_batch_s:
                first_batch_s = time.perf_counter() - start
                timed_start = time.perf_counter()
                continue
            n_images += len(images)
            if n_images >= args.batches * args.batch:
                break
    return first_batch_s, n_images / (time.perf_counter() - timed_start)


def main() -> None:
    args = parse_args()
    source = args.data or make_domain(Path(args.out) / "source", "source", n_images=500, imgsz=args.imgsz)
    samples = load_dataset(source).train
    title = f"training loader, mosaic, {args.imgsz} px, batch {args.batch}, {len(samples)} images"
    table = Table(title=title)
    for column in ("workers", "first batch s", "images/s"):
        table.add_column(column, justify="right")
    for workers in (int(w) for w in args.workers.split(",")):
        first_s, rate = measure(samples, args, workers)
        table.add_row(str(workers), f"{first_s:.2f}", f"{rate:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
