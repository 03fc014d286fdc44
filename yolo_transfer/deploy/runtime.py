"""Exported models (``.onnx`` through onnxruntime, ``.torchscript``) behind the PyTorch model's inference
interface, so ``predict`` and ``val`` run them like any weights: :func:`load_inference_model`.

A model exported with ``--dynamic`` takes any batch and any image size that is a multiple of the stride; a
static one takes inputs up to its exported size, which are padded at the bottom/right (value 114, as the
letterbox) and split or filled to its batch size.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from yolo_transfer.deploy.metadata import TORCHSCRIPT_EXTRA_FILE, decode_metadata
from yolo_transfer.errors import CheckpointError, ConfigError

ONNX_SUFFIX, TORCHSCRIPT_SUFFIX = ".onnx", ".torchscript"
PAD_VALUE = 114 / 255


def load_inference_model(weights: str | Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, metadata) for ``.pt``/``.safetensors`` (``load_model``) or an exported file.

    An exported model has ``names``, ``nc``, ``stride`` and ``fuse()`` (a no-op) like ``DetectionModel``, and
    its ``forward(images)`` returns ``(decoded (batch, N, 5 + nc) float32, [])`` on the device of
    ``images``. Its metadata holds ``imgsz``, the exported image size.
    """
    path = Path(weights)
    if path.suffix not in (ONNX_SUFFIX, TORCHSCRIPT_SUFFIX):
        from yolo_transfer.models import load_model

        return load_model(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    model = OnnxModel(path) if path.suffix == ONNX_SUFFIX else TorchScriptModel(path)
    if model.metadata["nms"] is not None:
        raise CheckpointError(
            f"{path}: exported with --nms (thresholds baked in); predict and val need an export without --nms"
        )
    return model.eval(), dict(model.metadata)


class ExportedModel(nn.Module):
    """The shared part: metadata, fitting inputs to a static export, and the output convention."""

    def __init__(self, path: Path, metadata: dict) -> None:
        super().__init__()
        self.path, self.metadata = path, metadata
        self.names: list[str] = list(metadata["names"])
        self.nc: int = metadata["nc"]
        self.register_buffer(
            "stride", torch.tensor(metadata["stride"], dtype=torch.float32), persistent=False
        )

    def fuse(self) -> ExportedModel:
        """Nothing to fold: exported graphs are already fused."""
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list]:
        if self.metadata["dynamic"]:
            return self.run(images).float().to(images.device), []
        size, batch = self.metadata["imgsz"], self.metadata["batch"]
        count, _, height, width = images.shape
        if height > size or width > size:
            raise ConfigError(
                f"{self.path}: exported for {size}x{size} inputs, got {height}x{width}; export with "
                "--dynamic for other sizes (val's rectangular batches can be larger than --imgsz)"
            )
        padded = F.pad(images, (0, size - width, 0, size - height), value=PAD_VALUE)
        outputs = []
        for chunk in padded.split(batch):
            filled = F.pad(chunk, (0, 0, 0, 0, 0, 0, 0, batch - len(chunk)))
            outputs.append(self.run(filled)[: len(chunk)])
        return torch.cat(outputs).float().to(images.device), []

    def run(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class OnnxModel(ExportedModel):
    """A ``.onnx`` file run by onnxruntime on the CPU."""

    def __init__(self, path: Path) -> None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise ConfigError(
                f"{path}: running .onnx models needs onnxruntime: pip install 'yolo-transfer[export]'"
            )
        import onnxruntime

        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own untyped errors for unreadable files
            raise CheckpointError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0]})") from None
        super().__init__(path, decode_metadata(session.get_modelmeta().custom_metadata_map, path))
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.input_dtype = torch.float16 if "float16" in session.get_inputs()[0].type else torch.float32
        # evaluate() and detect() read the input device and dtype from the first parameter
        self.register_parameter("input_anchor", nn.Parameter(torch.zeros(0), requires_grad=False))

    def run(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", self.input_dtype).numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


class TorchScriptModel(ExportedModel):
    """A ``.torchscript`` file, run by the TorchScript interpreter on any device it is moved to."""

    def __init__(self, path: Path) -> None:
        extra = {TORCHSCRIPT_EXTRA_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still supported
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as err:
            raise CheckpointError(
                f"{path}: not a readable TorchScript model ({str(err).splitlines()[0]})"
            ) from None
        props = json.loads(extra[TORCHSCRIPT_EXTRA_FILE] or "{}")
        super().__init__(path, decode_metadata(props, path))
        self.module = module
        self.input_dtype = torch.float16 if self.metadata["half"] else torch.float32

    def run(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(images.to(self.input_dtype))
