"""Training cost of each strategy's first phase: images/s and peak memory, side by side.

Each strategy is measured in a fresh subprocess, so the peak RSS is that strategy's own. A measurement builds
the model, applies the phase exactly as the trainer does (``apply_phase``: frozen modules, BatchNorm policy,
no-grad prefix; the optimizer over the trainable parameters) and
times ``--iters`` SGD steps on random images after ``--warmup`` untimed steps; img/s comes from the fastest
step (of all repeats), which other processes on the machine disturb least. Peak RSS is the process's maximum
resident memory, train RSS the part added by training (peak minus the RSS before the first step). Frozen
phases should be faster and lighter than ``full``: the ratio columns show by how much.

    .venv/bin/python benchmarks/strategy_cost.py                 # yolov5n, 320 px, batch 16, CPU
    .venv/bin/python benchmarks/strategy_cost.py --device cuda --imgsz 640
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from yolo_transfer.data.hyps import load_hyp
from yolo_transfer.engine.loss import ComputeLoss, scale_loss_gains
from yolo_transfer.engine.optim import build_optimizer
from yolo_transfer.engine.run_log import gpu_memory_mb, peak_rss_mb
from yolo_transfer.models import build_model
from yolo_transfer.strategies import list_strategies, load_strategy
from yolo_transfer.strategies.trainable import apply_phase, module_lr_scales


def current_rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), to separate training memory from imports."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def random_batch(batch: int, imgsz: int, nc: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random images and four random boxes per image as ``[image, cls, xc, yc, w, h]`` targets."""
    images = torch.rand(batch, 3, imgsz, imgsz, generator=generator)
    rows = batch * 4
    image_index = torch.arange(batch).repeat_interleave(4).float()
    classes = torch.randint(0, nc, (rows,), generator=generator).float()
    centres = torch.rand(rows, 2, generator=generator) * 0.6 + 0.2
    sizes = torch.rand(rows, 2, generator=generator) * 0.3 + 0.05
    return images, torch.cat((image_index[:, None], classes[:, None], centres, sizes), 1)


def measure(args: argparse.Namespace) -> dict:
    """Train ``args.measure``'s first phase for a few steps in this process and report its cost."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_model(args.cfg, nc=args.nc).to(device)
    phase = load_strategy(args.measure, epochs=10).phases[0]
    setup = apply_phase(model, phase)
    params, prefix = setup.trainable_params, setup.prefix
    scales = module_lr_scales(model, phase)
    optimizer = build_optimizer(model, "SGD", lr0=phase.lr0 or 0.01, module_lr_scales=scales)
    compute_loss = ComputeLoss(model, scale_loss_gains(load_hyp("low"), nl=3, nc=args.nc, imgsz=args.imgsz))
    images, targets = random_batch(args.batch, args.imgsz, args.nc, torch.Generator().manual_seed(0))
    images, targets = images.to(device), targets.to(device)
    base_rss = current_rss_mb()
    step_seconds = []
    for _ in range(args.warmup + args.iters):
        start = time.perf_counter()
        loss, _ = compute_loss(model(images, no_grad_prefix=prefix), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_seconds.append(time.perf_counter() - start)
    peak = peak_rss_mb()
    return {
        "strategy": args.measure,
        "phase": phase.name,
        "trainable_params": params,
        "no_grad_prefix": prefix,
        "img_per_s": args.batch / min(step_seconds[args.warmup :]),  # the fastest step: robust to a busy host
        "peak_rss_mb": peak,
        "train_rss_mb": peak - base_rss,
        "gpu_mem_mb": gpu_memory_mb(device),
    }


def run_in_subprocess(name: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--measure", name, *forwarded(args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measuring {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def forwarded(args: argparse.Namespace) -> list[str]:
    keys = ("cfg", "nc", "imgsz", "batch", "iters", "warmup", "device", "threads")
    return [item for key in keys for item in (f"--{key}", str(getattr(args, key)))]


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    full = next((r for r in results if r["strategy"] == "full"), None)
    if full is None:
        raise SystemExit("include 'full' in --strategies: the ratios are relative to it")
    memory_key = "gpu_mem_mb" if args.device.startswith("cuda") else "train_rss_mb"
    table = Table(
        title=f"First-phase training cost: {args.cfg} at {args.imgsz} px, batch {args.batch}, {args.device}, "
        f"{args.threads or torch.get_num_threads()} CPU threads (best of {args.repeats}, ratios vs full)"
    )
    for column in ("strategy", "first phase", "trainable", "no-grad prefix", "img/s", "peak RSS MB"):
        table.add_column(column, justify="left" if column in ("strategy", "first phase") else "right")
    table.add_column("GPU MB" if memory_key == "gpu_mem_mb" else "train RSS MB", justify="right")
    table.add_column("speed ×", justify="right")
    table.add_column("memory ×", justify="right")
    for r in results:
        table.add_row(
            r["strategy"],
            r["phase"],
            f"{r['trainable_params']:,}",
            str(r["no_grad_prefix"]),
            f"{r['img_per_s']:.1f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r[memory_key]:.0f}",
            f"{r['img_per_s'] / full['img_per_s']:.2f}",
            f"{r[memory_key] / full[memory_key]:.2f}",
        )
    Console(width=150).print(table)
    print("speed ×: img/s relative to full (higher is faster); memory ×: training memory relative to full")


def best_of(runs: list[dict]) -> dict:
    """Fastest run, with the smallest memory figures seen (repeats only add noise from other processes)."""
    best = dict(max(runs, key=lambda r: r["img_per_s"]))
    for key in ("peak_rss_mb", "train_rss_mb", "gpu_mem_mb"):
        best[key] = min(r[key] for r in runs)
    return best


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--strategies", default=",".join(list_strategies()), help="comma-separated names")
    parser.add_argument("--cfg", default="yolov5n")
    parser.add_argument("--nc", type=int, default=80)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per strategy, interleaved")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args)))
        return
    names = [name.strip() for name in args.strategies.split(",") if name.strip()]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            runs[name].append(run_in_subprocess(name, args))
    results = [best_of(runs[name]) for name in names]
    print_table(results, args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
