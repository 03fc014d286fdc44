"""The ``yolo-transfer`` command line: argument parsing and dispatch.

Each sub-command is a ``*_command(args) -> int`` function in the package that owns the feature; it is
imported only when that command runs, so ``yolo-transfer --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from yolo_transfer import __version__
from yolo_transfer.errors import YoloTransferError

STRATEGY_HELP = "full|freeze|staged|gradual|lp-ft|surgical-early|auto|FILE.yaml"


def _add_common_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--imgsz", type=int, default=640, help="image size (multiple of 32)")
    p.add_argument("--batch", type=int, default=16, help="batch size")
    p.add_argument("--hyp", default="low", help="hyperparameters: none|low|med|high|FILE.yaml")
    p.add_argument("--optimizer", choices=["SGD", "Adam", "AdamW"], default="SGD")
    p.add_argument(
        "--lr0", type=float, default=None, help="first phase's LR; later phases keep the strategy's ratios"
    )
    p.add_argument("--cos-lr", action="store_true", help="cosine LR schedule instead of linear")
    p.add_argument("--patience", type=int, default=100, help="early-stopping patience in epochs (0: off)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--cache", action="store_true", help="cache decoded images in RAM")
    p.add_argument("--val-fraction", type=float, default=0.2, help="val split made when the data has none")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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

    p = sub.add_parser("predict", help="detect objects in images and folders")
    p.add_argument("weights")
    p.add_argument("source", nargs="+", help="image files or folders")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.45)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/predict")
    p.set_defaults(handler="yolo_transfer.engine.predict:predict_command")

    data = sub.add_parser("data", help="check and convert datasets").add_subparsers(
        dest="data_command", required=True, metavar="ACTION"
    )
    p = data.add_parser("check", help="validate a dataset and write report.json")
    p.add_argument("data", help="a data.yaml, a Pascal VOC folder or a COCO instances json")
    p.add_argument("--out", default="runs/data-check")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.set_defaults(handler="yolo_transfer.data.commands:check_command")
    p = data.add_parser("convert", help="write a YOLO dataset (images, labels, data.yaml)")
    p.add_argument("src", help="VOC folder or COCO instances json")
    p.add_argument("--format", choices=["voc", "coco"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.set_defaults(handler="yolo_transfer.data.commands:convert_command")

    p = sub.add_parser("val", help="evaluate weights on a dataset (mAP, per-class table, plots)")
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--conf", type=float, default=0.001)
    p.add_argument("--iou", type=float, default=0.6)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/val")
    p.set_defaults(handler="yolo_transfer.engine.evaluate:val_command")

    p = sub.add_parser("train", help="fine-tune (or train from scratch) with a transfer strategy")
    p.add_argument("--data", help="data.yaml, VOC folder or COCO json")
    p.add_argument("--weights", default=None, help="pretrained weights; omitted: train from scratch")
    p.add_argument("--cfg", default=None, help="model config (yolov5n..x or yaml) when no weights are given")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--strategy", default="full", help=STRATEGY_HELP)
    p.add_argument("--freeze", default=None, help="N (first N modules), a group name, or indices '0,1,2'")
    p.add_argument("--l2sp", type=float, default=0.0, help="L2-SP strength (pull towards pretrained)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="resume an interrupted run")
    p.add_argument("--close-mosaic", type=int, default=0, help="turn mosaic off for the last N epochs")
    p.add_argument("--max-seconds", type=float, default=None, help="stop cleanly after this much wall time")
    p.add_argument("--max-images", type=int, default=None, help="stop cleanly after N training images")
    p.add_argument("--out", default="runs/train")
    _add_common_train_args(p)
    p.set_defaults(handler="yolo_transfer.engine.trainer:train_command")

    p = sub.add_parser("strategies", help="list the built-in transfer strategies")
    p.set_defaults(handler="yolo_transfer.strategies:strategies_command")

    p = sub.add_parser("compare", help="run strategies side by side at a matched budget and report")
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--strategies", default="full,freeze,staged", help="comma-separated; 'auto' = advised")
    p.add_argument("--budget", default="epochs=10", help="epochs=N | time=MIN | images=K")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--out", default="runs/compare")
    _add_common_train_args(p)
    p.set_defaults(handler="yolo_transfer.compare:compare_command")

    p = sub.add_parser("advise", help="measure the data and its shift; recommend a strategy with reasons")
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--budget", default=None, help="time=MIN | epochs=N")
    p.add_argument("--target-map", type=float, default=None, help="mAP50-95 the user needs")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--max-images", type=int, default=500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")
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
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(handler="yolo_transfer.compare.demo:demo_command")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = args.handler.split(":")
    try:
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args) or 0)
    except YoloTransferError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
