"""The ``yolo-transfer`` command line: argument parsing and dispatch.

Each sub-command is a ``*_command(args) -> int`` function in the package that owns the feature; it is
imported only when that command runs, so ``yolo-transfer --help`` stays fast. Before it, ``main`` refuses bad
input in this order: option ranges, the output folder, missing input files (none of these imports torch, which
takes a minute from a cold disk), then the ``--hyp`` file, the memory estimate and the device.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from yolo_transfer import __version__
from yolo_transfer.errors import YoloTransferError
from yolo_transfer.option_checks import (
    WEIGHT_SUFFIXES,
    check_options,
    check_settings,
    require_any_source,
    require_dataset,
    require_weights_file,
)

STRATEGY_HELP = (
    "full|freeze|staged|head-only|gradual|lp-ft|surgical-early|yolov5-default|FILE.yaml, or auto: the "
    "strategy yolo-transfer advise recommends for this data and checkpoint"
)
IMGSZ_FROM_WEIGHTS_HELP = "image size; default: the size the weights were trained at (official .pt: 640)"
DEVICE_HELP = "auto (first CUDA GPU, else Apple MPS, else CPU), cpu, mps, cuda, cuda:N, or a GPU index N"
# commands whose output folder is PROJECT/NAME (exp, exp2, ...) or --out
RUN_DIR_COMMANDS = ("train", "val", "predict", "compare", "advise")
OUT_FOLDER_COMMANDS = (*RUN_DIR_COMMANDS, "data check", "data convert")
# the files each command reads, as (argument, kind) in the order the command reads them
INPUT_FILES = {
    "info": (("model", "weights"),),
    "convert": (("weights", "weights"),),
    "export": (("weights", "weights"),),
    "predict": (("source", "sources"), ("weights", "weights")),
    "val": (("weights", "weights"), ("data", "dataset")),
    "train": (("weights", "weights"), ("data", "dataset")),
    "compare": (("weights", "weights"), ("data", "dataset")),
    "advise": (("data", "dataset"), ("weights", "weights")),
    "data check": (("data", "dataset"),),
    "data convert": (("src", "dataset"),),
}


def _add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def _add_run_dir_args(p: argparse.ArgumentParser, command: str) -> None:
    """yolov5's run naming: PROJECT/NAME, incremented (exp, exp2, ...) unless --exist-ok; --out is exact."""
    p.add_argument("--project", default=f"runs/{command}", help="parent folder of the run folders")
    p.add_argument("--name", default="exp", help="run folder name; exp, exp2, ... when it already exists")
    p.add_argument("--exist-ok", action="store_true", help="reuse PROJECT/NAME instead of incrementing")
    p.add_argument("--out", default=None, help="exact output folder (instead of --project/--name)")


def _add_common_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--imgsz", type=int, default=640, help="image size (a multiple of 32, at least 64)")
    p.add_argument("--batch", type=int, default=16, help="batch size")
    p.add_argument("--hyp", default="low", help="hyperparameters: none|low|med|high|FILE.yaml")
    p.add_argument("--optimizer", choices=["SGD", "Adam", "AdamW"], default="SGD", help="optimizer")
    p.add_argument(
        "--lr0", type=float, default=None, help="first phase's LR; later phases keep the strategy's ratios"
    )
    p.add_argument("--cos-lr", action="store_true", help="cosine LR schedule instead of linear")
    p.add_argument(
        "--patience", type=int, default=100,
        help="early-stopping patience in epochs (0: off), within every phase: a phase that stops improving "
        "ends, and the run ends when its last phase does",
    )  # fmt: skip
    _add_device_arg(p)
    p.add_argument(
        "--workers", type=int, default=None,
        help="DataLoader worker processes; default: chosen for the cores and the device (printed at start)",
    )  # fmt: skip
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache", action="store_true", default=None,
        help="cache the decoded images in RAM; default: when they fit a quarter of the available memory",
    )  # fmt: skip
    cache.add_argument(
        "--no-cache", dest="cache", action="store_false", default=None, help="never cache decoded images"
    )
    p.add_argument("--val-fraction", type=float, default=0.2, help="val split made when the data has none")
    p.add_argument(
        "--split-seed", type=int, default=0,
        help="seed of that val split; independent of the training seeds: every run sees the same val images",
    )  # fmt: skip
    p.add_argument(
        "--tensorboard", action="store_true",
        help="also log scalars per epoch and the run's images to RUN/tensorboard (pip install -e "
        "'.[tensorboard]'); results.csv stays the source of the numbers",
    )  # fmt: skip
    p.add_argument(
        "--noplots", action="store_true",
        help="write no plot files at the end of a run (results.png, labels.jpg, batches, curves); "
        "results.csv, summary.json and the weights as always",
    )  # fmt: skip


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` ends every option's help with its default (options without a default say nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.required:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose sub-command parsers (same class) all use :class:`HelpFormatter`."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="yolo-transfer",
        description="Fine-tune pretrained YOLOv5 detectors: compare strategies, get advice, train, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"yolo-transfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="layer table, parameters, GFLOPs, classes and groups of a model")
    p.add_argument("model", help="yolov5n|s|m|l|x, a model yaml, or weights (.pt / .safetensors)")
    p.add_argument("--nc", type=int, default=None, help="number of classes when building from a config")
    p.add_argument("--imgsz", type=int, default=640, help="image size for the GFLOPs count")
    p.set_defaults(handler="yolo_transfer.models.info:info_command")

    p = sub.add_parser("convert", help="convert an official YOLOv5 .pt file into a .safetensors file")
    p.add_argument("weights", help="official YOLOv5 .pt checkpoint")
    p.add_argument("output", help="output .safetensors file")
    p.set_defaults(handler="yolo_transfer.models.checkpoint:convert_command")

    p = sub.add_parser("export", help="export weights to ONNX or TorchScript, checked against PyTorch")
    p.add_argument("weights", help="official .pt or our .safetensors weights")
    p.add_argument("--format", default="onnx", help="onnx | torchscript")
    p.add_argument("--imgsz", type=int, default=640, help="input size (multiple of the stride)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the exported input")
    p.add_argument("--dynamic", action="store_true", help="any batch size and image size")
    p.add_argument("--half", action="store_true", help="fp16 weights and input")
    p.add_argument("--nms", action="store_true", help="add NMS to the graph: (K, 7) detections output")
    p.add_argument("--conf", type=float, default=0.25, help="with --nms: confidence threshold")
    p.add_argument("--iou", type=float, default=0.45, help="with --nms: NMS IoU threshold")
    p.add_argument("--device", default="cpu", help="device the model is traced on: cpu, cuda, cuda:N")
    p.add_argument("--check-image", default=None, help="image for the parity check (default: synthetic)")
    p.add_argument("--out", default=None, help="output file (default: WEIGHTS with .onnx / .torchscript)")
    p.set_defaults(handler="yolo_transfer.deploy:export_command")

    p = sub.add_parser("predict", help="detect objects in images and folders")
    p.add_argument("weights", help="official .pt or our .safetensors weights")
    p.add_argument("source", nargs="+", help="image files or folders")
    p.add_argument("--imgsz", type=int, default=None, help=IMGSZ_FROM_WEIGHTS_HELP)
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per image")
    _add_device_arg(p)
    _add_run_dir_args(p, "predict")
    p.set_defaults(handler="yolo_transfer.engine.predict:predict_command")

    data = sub.add_parser("data", help="check and convert datasets").add_subparsers(
        dest="data_command", required=True, metavar="ACTION"
    )
    p = data.add_parser("check", help="validate a dataset and write report.json")
    p.add_argument("data", help="a data.yaml, a Pascal VOC folder or a COCO instances json")
    p.add_argument("--out", default="runs/data-check", help="folder for report.json")
    p.add_argument("--val-fraction", type=float, default=0.2, help="val split made when the data has none")
    p.set_defaults(handler="yolo_transfer.data.commands:check_command")
    p = data.add_parser("convert", help="write a YOLO dataset (images, labels, data.yaml)")
    p.add_argument("src", help="VOC folder or COCO instances json")
    p.add_argument("--format", choices=["voc", "coco"], required=True, help="format of SRC")
    p.add_argument("--out", required=True, help="folder of the written YOLO dataset")
    p.add_argument("--val-fraction", type=float, default=0.2, help="val split made when the data has none")
    p.set_defaults(handler="yolo_transfer.data.commands:convert_command")

    p = sub.add_parser("val", help="evaluate weights on a dataset (mAP, per-class table, plots)")
    p.add_argument("--weights", required=True, help="official .pt or our .safetensors weights")
    p.add_argument("--data", required=True, help="data.yaml, VOC folder or COCO json")
    p.add_argument("--imgsz", type=int, default=None, help=IMGSZ_FROM_WEIGHTS_HELP)
    p.add_argument("--batch", type=int, default=32, help="batch size")
    p.add_argument("--conf", type=float, default=0.001, help="confidence threshold")
    p.add_argument("--iou", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per image")
    p.add_argument("--split", default="val", choices=["train", "val", "test"], help="split to evaluate")
    _add_device_arg(p)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    _add_run_dir_args(p, "val")
    p.set_defaults(handler="yolo_transfer.engine.evaluate:val_command")

    p = sub.add_parser("train", help="fine-tune (or train from scratch) with a transfer strategy")
    p.add_argument("--data", help="data.yaml, VOC folder or COCO json")
    p.add_argument("--weights", default=None, help="pretrained weights; omitted: train from scratch")
    p.add_argument("--cfg", default=None, help="model config (yolov5n..x or yaml) when no weights are given")
    p.add_argument("--epochs", type=int, default=100, help="epoch budget of the whole run (all phases)")
    p.add_argument("--strategy", default="full", help=STRATEGY_HELP)
    p.add_argument("--freeze", default=None, help="N (first N modules), a group name, or indices '0,1,2'")
    p.add_argument("--l2sp", type=float, default=0.0, help="L2-SP strength (pull towards pretrained)")
    p.add_argument(
        "--resume", default=None, metavar="RUN_DIR",
        help="resume an interrupted run (with --lr0: at that LR, e.g. after the loss diverged)",
    )  # fmt: skip
    p.add_argument("--close-mosaic", type=int, default=0, help="turn mosaic off for the last N epochs")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="wall-time budget: a last phase whose epochs would overrun it is shortened to the epochs "
        "that fit (its LR schedule rebuilt); the run stops cleanly when the time is up",
    )
    p.add_argument("--max-images", type=int, default=None, help="stop cleanly after N training images")
    p.add_argument("--seed", type=int, default=0, help="seed of weights init, augmentation and data order")
    p.add_argument(
        "--val-every", type=int, default=1,
        help="validate every N epochs, and always when a phase or the run may end; best.safetensors, "
        "plateaus and --patience count only validated epochs",
    )  # fmt: skip
    p.add_argument(
        "--devices", default=None,
        help="GPU indices such as 0,1,2,3: one DDP training process per GPU, as torchrun; --batch is the "
        "global batch (cpu,cpu: processes on the CPU)",
    )  # fmt: skip
    p.add_argument(
        "--sync-bn", action="store_true", help="with several GPUs: SyncBatchNorm in training layers"
    )
    _add_run_dir_args(p, "train")
    _add_common_train_args(p)
    p.set_defaults(handler="yolo_transfer.engine.trainer:train_command")

    p = sub.add_parser("strategies", help="list the built-in transfer strategies")
    p.set_defaults(handler="yolo_transfer.strategies:strategies_command")

    p = sub.add_parser("compare", help="run strategies side by side at a matched budget and report")
    p.add_argument("--data", required=True, help="data.yaml, VOC folder or COCO json")
    p.add_argument("--weights", required=True, help="pretrained weights every strategy starts from")
    p.add_argument("--strategies", default="full,freeze,staged", help="comma-separated; 'auto' = advised")
    p.add_argument("--budget", default="epochs=10", help="epochs=N | time=MIN | images=K")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; every strategy runs once per seed")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    p.add_argument(
        "--devices",
        default=None,
        help="GPU indices such as 0,1,2,3: one run on each GPU at a time, in parallel",
    )
    p.add_argument("--backend", choices=["local", "ray"], default="local", help="where runs execute")
    _add_run_dir_args(p, "compare")
    _add_common_train_args(p)
    p.set_defaults(handler="yolo_transfer.compare:compare_command")

    p = sub.add_parser("advise", help="measure the data and its shift; recommend a strategy with reasons")
    p.add_argument("--data", required=True, help="data.yaml, VOC folder or COCO json")
    p.add_argument("--weights", required=True, help="pretrained weights to fine-tune")
    p.add_argument("--budget", default=None, help="time=MIN | epochs=N")
    p.add_argument("--target-map", type=float, default=None, help="mAP50-95 the user needs")
    p.add_argument("--imgsz", type=int, default=320, help="image size of the measuring pass")
    p.add_argument("--max-images", type=int, default=500, help="images measured at most")
    _add_device_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (advise.json is written too)")
    _add_run_dir_args(p, "advise")
    p.set_defaults(handler="yolo_transfer.advise:advise_command")

    p = sub.add_parser("demo", help="the end-to-end demo on built-in synthetic data (make demo)")
    p.add_argument("--data", default=None, help="run on real data instead of the synthetic target domain")
    p.add_argument(
        "--weights",
        default=None,
        help="start from these weights instead of the demo checkpoint; with --rebuild-weights: the official "
        "COCO yolov5n.pt the source-domain pretraining starts from",
    )
    p.add_argument("--rebuild-weights", action="store_true", help="re-make the demo checkpoint (its recipe)")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.set_defaults(handler="yolo_transfer.compare.demo:demo_command")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = args.handler.split(":")
    try:
        check_options(args)
        run_dir = _resolve_run_dir(args)
        _check_files(args)
        check_settings(args)
        if getattr(args, "tensorboard", False):
            from yolo_transfer.engine.tensorboard_log import check_tensorboard

            check_tensorboard()
        _select_device(args)
        if run_dir is not None:
            print(f"run folder: {run_dir}", file=_log_stream(args))
        _resolve_auto_strategy(args)
        handler = getattr(importlib.import_module(module_name), func_name)
        code = int(handler(args) or 0)
        if run_dir is not None:
            print(f"results in {run_dir}", file=_log_stream(args))
        return code
    except YoloTransferError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file operation no command turned into an error of its own
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _check_files(args: argparse.Namespace) -> None:
    """Refuse an unusable output folder, then a missing input file, before torch is imported (a minute from
    a cold disk): the checks the commands make first, in their order and with their messages."""
    command = " ".join(filter(None, (args.command, getattr(args, "data_command", None))))
    if getattr(args, "resume", None):  # the run folder holds the rest
        return
    if command in OUT_FOLDER_COMMANDS:
        from yolo_transfer.engine.outputs import ensure_writable_dir

        ensure_writable_dir(args.out)
    for argument, kind in INPUT_FILES.get(command, ()):
        value = getattr(args, argument)
        if kind == "weights" and value is not None and Path(value).suffix in WEIGHT_SUFFIXES:
            require_weights_file(value)
        elif kind == "dataset" and value is not None:
            require_dataset(value)
        elif kind == "sources":
            require_any_source(value)


def _resolve_auto_strategy(args: argparse.Namespace) -> None:
    """``train --strategy auto`` trains what ``advise`` recommends (resolved here: the trainer knows none)."""
    if args.command == "train" and args.strategy == "auto" and not args.resume:
        from yolo_transfer.advise import auto_strategy

        args.strategy = auto_strategy(
            args.data, args.weights, epochs=args.epochs, imgsz=args.imgsz, device=str(args.device)
        )


def _log_stream(args: argparse.Namespace):
    """Where the device and run-folder lines go: stderr for ``advise --json``, whose stdout is one JSON."""
    return sys.stderr if getattr(args, "json", False) else sys.stdout


def _select_device(args: argparse.Namespace) -> None:
    """Resolve ``--device`` (``auto`` -> e.g. ``cuda:0``) into ``args``; print it (not for ``--resume``)."""
    if getattr(args, "device", None) is None or getattr(args, "resume", None):
        return
    from yolo_transfer.engine.device import describe_device, select_device

    device = select_device(args.device)
    several = "," in args.device
    args.device = str(device)
    print(
        f"device: {describe_device(device)}" + (" (one device per run)" if several else ""),
        file=_log_stream(args),
    )


def _resolve_run_dir(args: argparse.Namespace) -> Path | None:
    """The run folder of commands that have one, also into ``args.out`` (not for ``train --resume``, which
    names its own)."""
    if args.command not in RUN_DIR_COMMANDS or getattr(args, "resume", None):
        return None
    from yolo_transfer.engine.run_dirs import resolve_run_dir

    run_dir = resolve_run_dir(args.out, args.project, args.name, args.exist_ok)
    args.out = str(run_dir)
    return run_dir


if __name__ == "__main__":
    sys.exit(main())
