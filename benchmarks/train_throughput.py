"""Training throughput against what the machine can compute, with where each epoch's time goes.

In one run, each in its own process (so peak RSS is each one's own): the compute limit, a bare forward and
backward of the model on random tensors (channels_last, same batch and size, no data, no optimizer) with
everything trainable and with modules 0-9 frozen (the frozen prefix without autograd); then the real trainer
(``yolo_transfer.engine.trainer.train``, mosaic, EMA, accumulation, validation) for ``full``, ``freeze`` and
the first phase of ``staged``, each as a fraction of its limit (the mean of the limit measured just before and
just after that trainer: this VM's speed drifts by several percent within a minute; a fraction whose two limit
runs differ by more than 25% is marked ``*``, as the machine was disturbed), with its per-epoch time
breakdown (data wait, forward, loss and targets, backward, optimizer step, EMA, validation), peak RSS and how
much of it the imports alone hold (torch's CUDA build and torchvision are most of it on a small model).
Reference settings: official yolov5n weights, the real dawn_fog set, 320 px, batch 16, loader workers and the
RAM cache as the trainer chooses them. Usage::

    python benchmarks/train_throughput.py [--data DATA] [--weights W] [--imgsz 320] [--batch 16]
        [--epochs 1] [--device cpu] [--iters 8] [--workers N] [--images N] [--compile]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from yolo_transfer.data import load_dataset
from yolo_transfer.engine.device import select_device
from yolo_transfer.engine.loading_plan import available_cores
from yolo_transfer.engine.run_log import peak_rss_mb
from yolo_transfer.engine.step_timer import SECTIONS
from yolo_transfer.engine.trainer import TrainConfig, train
from yolo_transfer.models import load_model
from yolo_transfer.strategies import load_strategy
from yolo_transfer.strategies.trainable import apply_phase

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEFAULT_DATA = SHARED / "data" / "dawn_fog" / "data.yaml"
DEFAULT_WEIGHTS = SHARED / "weights" / "yolov5n.pt"
# (row, limit job, trainer job); staged's first phase trains what freeze trains
ROWS = [("full", "limit:full", "train:full"), ("freeze", "limit:freeze", "train:freeze"),
        ("staged, phase 1", "limit:freeze", "train:staged")]  # fmt: skip
WARMUP_ITERS = 2
# a row's two limit runs differing by more than this factor: the machine was disturbed during one of them
UNSTEADY_LIMIT = 1.25
UNSTEADY_NOTE = (
    f" * its two limit runs differ by more than {UNSTEADY_LIMIT - 1:.0%}: the machine was disturbed, "
    "run again."
)


def compute_limit(args: argparse.Namespace, strategy: str) -> dict:
    """img/s of a bare forward+backward of the phase's model on random tensors, and this process's RSS."""
    device = select_device(args.device)
    model, _ = load_model(args.weights, nc=len(load_dataset(args.data).names))
    setup = apply_phase(model, load_strategy(strategy, epochs=1).phases[0])
    model = model.to(device, memory_format=torch.channels_last)
    images = torch.rand(args.batch, 3, args.imgsz, args.imgsz, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    amp = device.type == "cuda"

    def img_per_s(net: torch.nn.Module) -> float:
        def step() -> None:
            with torch.autocast(device.type, enabled=amp):
                loss = sum(out.float().mean() for out in net(images, no_grad_prefix=setup.prefix))
            loss.backward()

        for _ in range(WARMUP_ITERS):  # a compiled net compiles here
            step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.iters):
            step()
        _sync(device)
        return args.batch * args.iters / (time.perf_counter() - start)

    result = {"img_per_s": img_per_s(model), "peak_rss_mb": peak_rss_mb()}
    if args.compile:  # the same step through torch.compile, after the eager one
        result["compiled_img_per_s"] = img_per_s(torch.compile(model))
    return result


def trainer_speed(args: argparse.Namespace, strategy: str) -> dict:
    """img/s, per-epoch time breakdown and peak RSS of the real trainer (for staged: its first phase only);
    the peak is the whole process's, the plots written after the last epoch included."""
    chosen = load_strategy(strategy, epochs=max(args.epochs, 2))  # staged's two phases need two epochs
    if strategy == "staged":  # its first phase for the run's epochs (the trainer stops at --epochs)
        chosen = dataclasses.replace(chosen, phases=chosen.phases[:1])
    imports_rss = peak_rss_mb()  # torch, torchvision, OpenCV, ... loaded, nothing trained yet
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            data=str(args.data), out=Path(tmp) / "run", weights=str(args.weights), epochs=args.epochs,
            imgsz=args.imgsz, batch=args.batch, device=args.device, workers=args.workers, profile=True,
            max_images=args.images,
        )  # fmt: skip
        summary = train(config, chosen)
        with open(config.out / "results.csv", newline="") as results:
            speeds = [float(row["img_per_s"]) for row in csv.DictReader(results)]
    per_epoch = {key: value / summary["epochs"] for key, value in summary["time_breakdown_s"].items()}
    return {
        "img_per_s": summary["train_img_per_s"], "peak_rss_mb": peak_rss_mb(),  # the final plots too
        "imports_rss_mb": imports_rss, "breakdown": per_epoch, "loading": summary["loading"],
        "later_img_per_s": statistics.median(speeds[1:]) if len(speeds) > 1 else None,
    }  # fmt: skip


def run_job(args: argparse.Namespace, job: str) -> dict:
    """Run ``job`` (e.g. ``train:freeze``) in a fresh process of this script; its result."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--job", job, "--result", str(result), *_passed_on(args)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{job} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        measured = json.loads(result.read_text())
    later = measured.get("later_img_per_s")
    later_text = f", epochs 2+ {later:.1f}" if later else ""
    print(f"{job}: {measured['img_per_s']:.1f} img/s{later_text}", flush=True)
    return measured


def _passed_on(args: argparse.Namespace) -> list[str]:
    options = ["--data", str(args.data), "--weights", str(args.weights), "--imgsz", str(args.imgsz)]
    options += ["--batch", str(args.batch), "--epochs", str(args.epochs), "--device", args.device]
    options += ["--iters", str(args.iters)] + (["--compile"] if args.compile else [])
    options += [] if args.workers is None else ["--workers", str(args.workers)]
    return options + ([] if args.images is None else ["--images", str(args.images)])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def row_limit(before: float, after: float) -> tuple[float, bool]:
    """A row's limit, the mean of its runs just before and just after the trainer, and whether the two agree
    within UNSTEADY_LIMIT (if one slowed down, the machine was disturbed: the fraction means nothing)."""
    return (before + after) / 2, max(before, after) <= UNSTEADY_LIMIT * min(before, after)


def report(args: argparse.Namespace, results: dict[str, dict], seconds: float) -> Table:
    device = select_device(args.device)
    limit_runs = {  # each trainer's limit runs just before and just after it, img/s
        train_job: tuple(results[f"{when}:{train_job}"]["img_per_s"] for when in ("before", "after"))
        for _, _, train_job in ROWS
    }
    unsteady = not all(row_limit(*runs)[1] for runs in limit_runs.values())
    table = Table(
        title=f"train throughput: yolov5n ({Path(args.weights).name}) on {Path(args.data).parent.name}, "
        f"{args.imgsz} px, batch {args.batch}, {args.epochs} epoch(s), {device}",
        caption=_caption(results, seconds) + (UNSTEADY_NOTE if unsteady else ""),
    )
    table.add_column("strategy", no_wrap=True)
    for column in ("limit img/s (before/after)", "trainer img/s", "of limit", "epochs 2+ img/s"):
        table.add_column(column, justify="right")
    for section in SECTIONS:
        table.add_column(f"{section} s/ep", justify="right")
    table.add_column("peak RSS MB", justify="right")
    table.add_column("of it imports MB", justify="right")
    for name, _, train_job in ROWS:
        before, after = limit_runs[train_job]
        (limit, steady), trained = row_limit(before, after), results[train_job]
        speed, breakdown = trained["img_per_s"], trained["breakdown"]
        later = trained["later_img_per_s"]
        table.add_row(
            name, f"{limit:.1f} ({before:.1f}/{after:.1f})", f"{speed:.1f}",
            f"{speed / limit:.0%}" + ("" if steady else " *"),
            "-" if later is None else f"{later:.1f} ({later / limit:.0%})",
            *(f"{breakdown[section]:.1f}" for section in SECTIONS), f"{trained['peak_rss_mb']:.0f}",
            f"{trained['imports_rss_mb']:.0f}",
        )  # fmt: skip
    return table


def _caption(results: dict[str, dict], seconds: float) -> str:
    loading = results["train:full"]["loading"]
    freeze, full = results["train:freeze"], results["train:full"]
    rss = freeze["peak_rss_mb"] / full["peak_rss_mb"]
    run_rss = (freeze["peak_rss_mb"] - freeze["imports_rss_mb"]) / (
        full["peak_rss_mb"] - full["imports_rss_mb"]
    )
    return (
        f"{platform.machine()}, {available_cores()} cores, torch {torch.__version__}; trainer: "
        f"{loading['workers']} loader workers, {loading['threads']} torch threads, RAM cache "
        f"{'on' if loading['cache'] else 'off'}. Limit: bare fwd+bwd, random tensors, channels_last, no "
        f"optimizer (frozen: modules 0-9 without autograd), the mean of a run just before and one just after "
        f"the trainer's. Epochs 2+: the median of the later epochs' training passes (the first holds the "
        f"start-up, cuDNN's autotuning on a GPU). Peak RSS freeze/full {rss:.2f}; above what the "
        f"imports alone hold (the libraries' code and data): {run_rss:.2f}.{_compiled(results)} "
        f"{seconds:.0f} s."
    )


def _compiled(results: dict[str, dict]) -> str:
    """The torch.compile'd limits next to the eager ones (``--compile``), else nothing."""
    if "compiled_img_per_s" not in results["before:train:full"]:
        return ""
    pairs = [(name, results[f"before:train:{name}"]) for name in ("full", "freeze")]
    text = ", ".join(
        f"{name} {r['compiled_img_per_s']:.1f} (eager {r['img_per_s']:.1f})" for name, r in pairs
    )
    return f" torch.compile'd limit img/s: {text}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data.yaml (default: dawn_fog)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1, help="trainer epochs per strategy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iters", type=int, default=8, help="timed iterations of the compute limit")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: the trainer's)")
    parser.add_argument("--images", type=int, default=None, help="stop each trainer run after N images")
    parser.add_argument(
        "--compile", action="store_true",
        help="also time the limit's step through torch.compile (compile excluded): does it lift the limit?",
    )  # fmt: skip
    parser.add_argument("--job", default=None, help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("YOLO_TRANSFER_CACHE", str(Path(tempfile.gettempdir()) / "yolo-transfer-bench"))

    if args.job:
        kind, strategy = args.job.split(":")
        measure = compute_limit if kind == "limit" else trainer_speed
        args.result.write_text(json.dumps(measure(args, strategy)))
        return
    start = time.monotonic()
    results: dict[str, dict] = {}  # "train:full"; its limit measured "before:train:full", "after:train:full"
    latest: dict[str, dict] = {}  # each limit's last measurement: the next trainer's "before"
    for _, limit_job, train_job in ROWS:  # each trainer between two measurements of its limit
        results[f"before:{train_job}"] = latest.get(limit_job) or run_job(args, limit_job)
        results[train_job] = run_job(args, train_job)
        results[f"after:{train_job}"] = latest[limit_job] = run_job(args, limit_job)
    Console(width=200).print(report(args, results, time.monotonic() - start))  # 14 columns: keep them whole


if __name__ == "__main__":
    main()
