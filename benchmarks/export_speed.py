"""Inference speed of one model three ways: PyTorch eager vs TorchScript vs onnxruntime, on this CPU.

Exports the weights once per runtime with ``--dynamic`` (so one file serves every batch and image size),
then times the forward pass (network only: no letterbox, no NMS) for each batch size and image size, after
``--warmup`` untimed passes, and prints images per second and the ratio to eager. Usage::

    python benchmarks/export_speed.py [--weights ../shared/weights/yolov5n.pt] [--batches 1,8]
                                      [--sizes 320,640] [--iters 20] [--warmup 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from yolo_transfer.deploy import export
from yolo_transfer.deploy.runtime import load_inference_model
from yolo_transfer.models import load_model

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "yolov5n.pt"
SHIPPED_WEIGHTS = (
    Path(__file__).resolve().parents[1] / "yolo_transfer" / "assets" / "demo_yolov5n_source.safetensors"
)


def images_per_second(
    run: Callable[[torch.Tensor], object], images: torch.Tensor, iters: int, warmup: int
) -> float:
    with torch.no_grad():
        for _ in range(warmup):
            run(images)
        start = time.perf_counter()
        for _ in range(iters):
            run(images)
    return iters * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.exists() else SHIPPED_WEIGHTS
    parser.add_argument("--weights", default=str(default), help="official .pt or our .safetensors")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--sizes", default="320,640", help="comma-separated image sizes (multiples of 32)")
    parser.add_argument("--iters", type=int, default=20, help="timed forward passes per cell")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes before timing")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)

    eager, _ = load_model(args.weights)
    eager = eager.fuse()
    with tempfile.TemporaryDirectory() as tmp:
        runtimes: dict[str, Callable[[torch.Tensor], object]] = {"PyTorch eager": eager}
        for fmt in ("torchscript", "onnx"):
            path = Path(tmp) / f"model.{fmt}"
            export(args.weights, fmt, imgsz=max(sizes), dynamic=True, out=path)
            runtimes[fmt] = load_inference_model(path)[0]
        table = Table(
            title=f"inference img/s: {Path(args.weights).name}, forward pass only",
            caption=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"{torch.get_num_threads()} torch threads, {args.iters} timed passes per cell",
        )
        table.add_column("batch", justify="right")
        table.add_column("imgsz", justify="right")
        for name in runtimes:
            table.add_column(f"{name} img/s", justify="right")
        table.add_column("vs eager (TS / ORT)", justify="right")
        for size in sizes:
            for batch in batches:
                images = torch.rand(batch, 3, size, size)
                speeds = [
                    images_per_second(run, images, args.iters, args.warmup) for run in runtimes.values()
                ]
                ratios = " / ".join(f"{speed / speeds[0]:.2f}x" for speed in speeds[1:])
                table.add_row(str(batch), str(size), *(f"{speed:.1f}" for speed in speeds), ratios)
    Console().print(table)


if __name__ == "__main__":
    main()
