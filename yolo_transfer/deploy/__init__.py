"""``yolo-transfer export``: a checkpoint as an ONNX or TorchScript model, checked against PyTorch.

ONNX goes through the TorchScript-based ``torch.onnx.export`` (``dynamo=False``, opset :data:`OPSET`): it
needs no extra package beyond ``onnx``, exports torchvision's NMS, and takes seconds. The file is written
to a temporary name and moved into place only after its parity check passed (see ``parity.py``).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from yolo_transfer.deploy.graph import ExportGraph, NmsSettings
from yolo_transfer.deploy.metadata import TORCHSCRIPT_EXTRA_FILE, encode_metadata
from yolo_transfer.deploy.parity import ParityReport, check_parity, parity_inputs, read_check_image
from yolo_transfer.errors import ConfigError

__all__ = ["FORMATS", "OPSET", "ExportResult", "export", "export_command"]

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript"}
OPSET = 17
EXPORT_EXTRA = "pip install 'yolo-transfer[export]' (or pip install -e \".[export]\" in a clone)"
QUIET = (DeprecationWarning, FutureWarning, torch.jit.TracerWarning)  # deprecation notes of torch.jit/onnx


@dataclass(frozen=True)
class ExportResult:
    """The written file, its format, the ONNX opset (None for TorchScript), metadata and parity check."""

    path: Path
    format: str
    opset: int | None
    metadata: dict
    parity: ParityReport
    seconds: float


def export(
    weights: str | Path,
    format: str = "onnx",
    *,
    imgsz: int = 640,
    batch: int = 1,
    dynamic: bool = False,
    half: bool = False,
    nms: bool = False,
    conf: float = 0.25,
    iou: float = 0.45,
    device: str = "cpu",
    out: str | Path | None = None,
    check_image: str | Path | None = None,
) -> ExportResult:
    """Export ``weights`` (.pt or .safetensors) to ``out`` (default: next to them, suffix of the format).

    The graph takes (batch, 3, imgsz, imgsz) RGB in [0, 1] (any batch and size with ``dynamic``) and
    returns the decoded predictions (batch, N, 5 + nc), or with ``nms`` the detections above ``conf``
    after NMS at ``iou`` (K, 7) [image_index, x1, y1, x2, y2, conf, class]. ``half`` exports fp16.
    The parity check runs on ``check_image`` (default: a built-in synthetic scene).
    """
    from yolo_transfer.engine.device import select_device
    from yolo_transfer.models import load_model
    from yolo_transfer.models.checkpoint import file_sha256

    if format not in FORMATS:
        raise ConfigError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    if imgsz < 1 or batch < 1:
        raise ConfigError(f"--imgsz and --batch must be positive, got {imgsz} and {batch}")
    if not 0 <= conf < 1 or not 0 < iou <= 1:
        raise ConfigError(f"--conf {conf} / --iou {iou}: expected 0 <= conf < 1 and 0 < iou <= 1")
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if format == "onnx" and missing:
        raise ConfigError(f"ONNX export needs {' and '.join(missing)}: {EXPORT_EXTRA}")
    path = Path(out) if out is not None else Path(weights).with_suffix(FORMATS[format])
    if path.suffix != FORMATS[format]:
        raise ConfigError(f"{path}: a {format} file must end with {FORMATS[format]}")
    target = select_device(device)
    model, source = load_model(weights)
    stride = int(model.stride.max())
    if imgsz % stride:
        raise ConfigError(f"--imgsz {imgsz}: must be a multiple of the model's largest stride {stride}")
    dtype = torch.float16 if half else torch.float32
    check = read_check_image(check_image, imgsz)

    start = time.perf_counter()
    graph = ExportGraph(model.fuse().to(target, dtype), NmsSettings(conf, iou) if nms else None).eval()
    metadata = {
        "names": model.names, "nc": model.nc, "stride": model.stride.tolist(), "imgsz": imgsz, "batch": batch,
        "dynamic": dynamic, "half": half, "nms": {"conf": conf, "iou": iou} if nms else None,
        "source": str(weights), "sha256": file_sha256(Path(weights)), "provenance": source.get("provenance"),
        "opset": OPSET if format == "onnx" else None,
    }  # fmt: skip
    inputs = parity_inputs(check, imgsz, batch, dynamic, stride)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        example = inputs[0].to(target, dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", QUIET)
            if format == "onnx":
                write_onnx(graph, example, temporary, metadata, dynamic=dynamic, nms=nms)
                exported = onnx_runner(temporary, dtype)
            else:
                write_torchscript(graph, example, temporary, metadata)
                exported = torchscript_runner(temporary, target, dtype)
        parity = check_parity(
            lambda images: graph(images.to(target, dtype)), exported, inputs, dtype=dtype, nms=nms
        )
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return ExportResult(path, format, metadata["opset"], metadata, parity, time.perf_counter() - start)


def write_onnx(
    graph: ExportGraph, example: torch.Tensor, path: Path, metadata: dict, *, dynamic, nms
) -> None:
    """``torch.onnx.export`` (TorchScript-based) with the metadata in ``metadata_props``; checked by onnx."""
    import onnx

    axes = {"output": {0: "batch", 1: "anchors"}} if dynamic else {}
    if nms:
        axes["output"] = {0: "detections"}
    if dynamic:
        axes["images"] = {0: "batch", 2: "height", 3: "width"}
    # torch >= 2.9 defaults to the torch.export-based exporter; torch < 2.5 has no ``dynamo`` argument
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(
        graph, (example,), str(path), opset_version=OPSET, input_names=["images"], output_names=["output"],
        dynamic_axes=axes or None, do_constant_folding=True, **legacy,
    )  # fmt: skip
    proto = onnx.load(str(path))
    for key, value in encode_metadata(metadata).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def onnx_runner(path: Path, dtype: torch.dtype):
    """images -> output of the written ONNX file under onnxruntime (CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"images": images.to("cpu", dtype).numpy()})[0])

    return run


def write_torchscript(graph: ExportGraph, example: torch.Tensor, path: Path, metadata: dict) -> None:
    """A traced module (shapes stay dynamic in TorchScript) with the metadata as an extra file."""
    with torch.no_grad():
        traced = torch.jit.trace(graph, example, strict=False)
    extra = {TORCHSCRIPT_EXTRA_FILE: json.dumps(encode_metadata(metadata))}
    torch.jit.save(traced, str(path), _extra_files=extra)


def torchscript_runner(path: Path, device: torch.device, dtype: torch.dtype):
    """images -> output of the written TorchScript file on ``device``."""
    module = torch.jit.load(str(path), map_location=device)

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(images.to(device, dtype))

    return run


def export_command(args) -> int:
    """``yolo-transfer export WEIGHTS --format onnx|torchscript ...``: write, check and describe the file."""
    result = export(
        args.weights, args.format, imgsz=args.imgsz, batch=args.batch, dynamic=args.dynamic, half=args.half,
        nms=args.nms, conf=args.conf, iou=args.iou, device=args.device, out=args.out,
        check_image=args.check_image,
    )  # fmt: skip
    opset = f", ONNX opset {result.opset}" if result.opset else ""
    shape = "dynamic batch and size" if args.dynamic else f"{args.batch}x3x{args.imgsz}x{args.imgsz}"
    print(f"wrote {result.path} ({args.format}{opset}, {shape}, {'fp16' if args.half else 'fp32'}, "
          f"{result.path.stat().st_size / 1e6:.1f} MB, {result.seconds:.1f} s)")  # fmt: skip
    print(result.parity.describe())
    return 0
