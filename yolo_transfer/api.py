"""The Python API, ``import yolo_transfer as yt``: the functions the commands run, with results as objects.

``yt.load(weights)`` gives a :class:`Model` (``.predict``, ``.val``, ``.train``, ``.export``); ``yt.compare``
and ``yt.advise`` run the comparison and the advisor. Options are the commands' flags with underscores
(``max_det``, ``val_fraction``, ...) and default as they do; user errors raise
:class:`~yolo_transfer.errors.YoloTransferError` subclasses instead of exiting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolo_transfer.deploy import ExportResult
from yolo_transfer.errors import ConfigError, DataError

__all__ = [
    "Advice", "Comparison", "Detection", "ImageDetections", "Model", "TrainRun", "advise", "compare",
    "export", "load",
]  # fmt: skip


@dataclass(frozen=True)
class Detection:
    """One detected object: class, confidence and box ``(x1, y1, x2, y2)`` in the image's pixels."""

    class_id: int
    name: str
    conf: float
    xyxy: tuple[float, float, float, float]


@dataclass(frozen=True)
class ImageDetections:
    """The detections of one image (``image``: its path, or ``array[i]`` for an array passed in)."""

    image: str
    width: int
    height: int
    detections: list[Detection]

    @property
    def boxes(self) -> np.ndarray:
        """(n, 4) float32 xyxy pixels."""
        return np.array([d.xyxy for d in self.detections], np.float32).reshape(-1, 4)

    @property
    def scores(self) -> np.ndarray:
        return np.array([d.conf for d in self.detections], np.float32)

    @property
    def class_ids(self) -> np.ndarray:
        return np.array([d.class_id for d in self.detections], np.int64)


@dataclass(frozen=True)
class TrainRun:
    """A finished training run: its folder and ``summary.json`` (best/final metrics, phases, cost)."""

    out: Path
    summary: dict

    @property
    def best_weights(self) -> Path:
        return self.out / "weights" / "best.safetensors"

    @property
    def last_weights(self) -> Path:
        return self.out / "weights" / "last.safetensors"

    @property
    def best(self) -> dict:
        """Metrics of the best epoch: epoch, precision, recall, map50, map50_95, coco."""
        return self.summary["best"]


@dataclass(frozen=True)
class Comparison:
    """A finished comparison: one table row per strategy, the recommended strategy and the report files."""

    out: Path
    table: list[dict]  # {"strategy", "runs_done", "runs_failed", METRIC: mean, METRIC_std: std, ...}
    winner: str | None  # the recommendation of the report (None when no run finished)
    reason: str | None
    results: dict  # the whole results.json document

    @property
    def report_html(self) -> Path:
        return self.out / "report.html"

    @property
    def report_md(self) -> Path:
        return self.out / "report.md"

    @property
    def results_json(self) -> Path:
        return self.out / "results.json"


@dataclass(frozen=True)
class Advice:
    """The advisor's recommendation: ``strategy``, every setting, a reason per setting, the train command."""

    strategy: str
    settings: dict  # strategy, freeze, batch, lr0, epochs, hyp, patience
    reasons: dict[str, str]  # setting -> why
    command: str  # the exact ``yolo-transfer train ...`` command
    result: dict  # everything advise measured (what ``advise --json`` prints)


class Model:
    """A detector loaded from ``.pt``, ``.safetensors``, ``.onnx`` or ``.torchscript`` weights."""

    def __init__(self, weights: str | Path, device: str = "auto") -> None:
        from yolo_transfer.deploy.runtime import load_inference_model
        from yolo_transfer.engine.device import select_device
        from yolo_transfer.engine.inference_size import inference_imgsz

        self.weights = Path(weights)
        self.device = select_device(device)
        network, self.metadata = load_inference_model(weights)
        self.network = network.fuse().to(self.device)
        self.names: list[str] = list(network.names)
        self.imgsz: int = inference_imgsz(None, self.metadata)[0]  # the size it was trained/exported at

    def __repr__(self) -> str:
        return f"Model({str(self.weights)!r}, {len(self.names)} classes, imgsz {self.imgsz}, {self.device})"

    def predict(
        self,
        images: str | Path | np.ndarray | list[str | Path | np.ndarray],
        *,
        imgsz: int | None = None,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
    ) -> list[ImageDetections]:
        """Detections per image, as ``yolo-transfer predict`` finds them. ``images``: files, folders (their
        images, sorted) or BGR uint8 arrays (as ``cv2.imread`` gives), alone or in a list."""
        import cv2

        from yolo_transfer.engine.predict import STRIDE, detect

        imgsz = imgsz or self.imgsz
        if imgsz < STRIDE or imgsz % STRIDE:
            raise ConfigError(f"imgsz must be a positive multiple of {STRIDE}, got {imgsz}")
        results = []
        for index, (label, image) in enumerate(_images(images)):
            if image is None:
                image = cv2.imread(label)
                if image is None:
                    raise DataError(f"{label}: not a readable image")
            found = detect(self.network, image, imgsz, conf, iou, max_det)
            detections = [
                Detection(int(c), self.names[int(c)], float(s), tuple(float(v) for v in box))
                for *box, s, c in found.tolist()
            ]
            height, width = image.shape[:2]
            results.append(ImageDetections(label or f"array[{index}]", width, height, detections))
        return results

    def val(self, data: str | Path, **options) -> dict:
        """``yolo-transfer val`` on ``data``: the metrics.json dict (P, R, mAP50, mAP50-95, coco, per_class).

        Options: imgsz, batch, conf, iou, max_det, split, workers, out (default runs/val/exp, exp2, ...)."""
        from yolo_transfer.engine.evaluate import val_command

        args = command_args(
            "val", ["--weights", str(self.weights), "--data", str(data)], options, self.device
        )
        val_command(args)
        return json.loads((Path(args.out) / "metrics.json").read_text())

    def train(self, data: str | Path, strategy: str = "full", epochs: int = 100, **options) -> TrainRun:
        """Fine-tune these weights on ``data`` with ``strategy`` (``yolo-transfer train``); the finished run.

        Options: every ``train`` flag (imgsz, batch, hyp, optimizer, lr0, freeze, l2sp, patience, seed,
        workers, out, ...)."""
        from yolo_transfer.engine.train_config import config_from_args
        from yolo_transfer.engine.trainer import train
        from yolo_transfer.strategies import load_strategy

        argv = ["--data", str(data), "--weights", str(self.weights), "--strategy", strategy]
        args = command_args("train", [*argv, "--epochs", str(epochs)], options, self.device)
        summary = train(
            config_from_args(args), load_strategy(args.strategy, epochs=epochs, freeze=args.freeze)
        )
        return TrainRun(Path(args.out), summary)

    def export(self, format: str = "onnx", **options) -> ExportResult:
        """Export these weights (``yolo-transfer export``): imgsz, batch, dynamic, half, nms, conf, iou,
        device, out, check_image. The result holds the file's path and its parity check."""
        return export(self.weights, format, **options)


def load(weights: str | Path, device: str = "auto") -> Model:
    """The detector in ``weights`` (.pt, .safetensors, .onnx, .torchscript) on ``device``."""
    return Model(weights, device)


def export(weights: str | Path, format: str = "onnx", **options) -> ExportResult:
    """``yolo-transfer export``: see :func:`yolo_transfer.deploy.export` for the options."""
    from yolo_transfer.deploy import export as export_weights

    return export_weights(weights, format, **_known(options, export_weights.__kwdefaults__, "export"))


def compare(
    data: str | Path,
    weights: str | Path,
    strategies: list[str] | tuple[str, ...] = ("full", "freeze", "staged"),
    budget: str = "epochs=10",
    seeds: list[int] | tuple[int, ...] = (0,),
    **options,
) -> Comparison:
    """``yolo-transfer compare``: every strategy x seed from ``weights`` at the same ``budget``
    (``epochs=N``, ``time=MIN``, ``images=K``). Options: jobs, backend, out and the training flags."""
    from yolo_transfer.compare import compare as run_comparison
    from yolo_transfer.compare import parse_budget, parse_seeds, train_options_from_args

    args = command_args("compare", ["--data", str(data), "--weights", str(weights)], options)
    results = run_comparison(
        str(data), str(weights), list(strategies), parse_budget(budget),
        parse_seeds(",".join(map(str, seeds))), Path(args.out),
        jobs=args.jobs, backend=args.backend, train_options=train_options_from_args(args),
    )  # fmt: skip
    recommendation = results.get("recommendation") or {}
    return Comparison(
        Path(args.out),
        comparison_table(results["aggregate"]),
        recommendation.get("strategy"),
        recommendation.get("reason"),
        results,
    )


def comparison_table(aggregate: dict[str, dict]) -> list[dict]:
    """results.json's aggregate as rows: ``METRIC`` = mean over seeds, ``METRIC_std`` = their std."""
    rows = []
    for strategy, row in aggregate.items():
        entry = {"strategy": strategy, "runs_done": row["n_done"], "runs_failed": row["n_failed"]}
        for key, stats in row.items():
            if isinstance(stats, dict) and "mean" in stats:
                entry[key], entry[f"{key}_std"] = stats["mean"], stats["std"]
        rows.append(entry)
    return rows


def advise(data: str | Path, weights: str | Path, **options) -> Advice:
    """``yolo-transfer advise``: measure ``data`` against ``weights``; options budget, target_map, imgsz,
    max_images, device, compute."""
    from yolo_transfer.advise import advise as measure_and_recommend

    result = measure_and_recommend(
        data, weights, **_known(options, measure_and_recommend.__kwdefaults__, "advise")
    )
    recommendation = result["recommendation"]
    reasons = {name: choice["reason"] for name, choice in recommendation["reasons"].items()}
    settings = {name: recommendation[name] for name in reasons}
    return Advice(recommendation["strategy"], settings, reasons, recommendation["command"], result)


def command_args(command: str, argv: list[str], options: dict, device=None):
    """The parsed arguments of ``yolo-transfer COMMAND ARGV`` with ``options`` set on them, the device and
    the run folder resolved as the CLI does; ConfigError for an option the command does not have."""
    from yolo_transfer.cli import build_parser
    from yolo_transfer.engine.device import select_device
    from yolo_transfer.engine.run_dirs import resolve_run_dir

    args = build_parser().parse_args([command, *argv])
    for key, value in options.items():
        if key in ("command", "handler") or not hasattr(args, key):
            known = sorted(k for k in vars(args) if k not in ("command", "handler"))
            raise ConfigError(f"{command}(): unknown option {key!r} (options: {', '.join(known)})")
        setattr(args, key, value)
    if "device" not in options and device is not None:
        args.device = str(device)
    args.device = str(select_device(args.device))
    args.out = str(resolve_run_dir(args.out, args.project, args.name, args.exist_ok))
    return args


def _known(options: dict, defaults: dict, command: str) -> dict:
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(
            f"{command}(): unknown option(s) {', '.join(unknown)} (options: {', '.join(defaults)})"
        )
    return options


def _images(images) -> list[tuple[str | None, np.ndarray | None]]:
    """(path or None, array or None) per image; folders expand to their images; DataError for a missing
    path."""
    from yolo_transfer.data.formats import IMAGE_SUFFIXES

    items = images if isinstance(images, list | tuple) else [images]
    expanded = []
    for item in items:
        if isinstance(item, np.ndarray):
            expanded.append((None, item))
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            expanded += [(str(p), None) for p in found]
        elif path.is_file():
            expanded.append((str(path), None))
        else:
            raise DataError(f"{path}: no such image file or folder")
    return expanded
