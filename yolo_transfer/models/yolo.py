"""The YOLOv5 detection model: the Detect head (spec §1.4) and DetectionModel, built from a model config."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from yolo_transfer.errors import ConfigError
from yolo_transfer.models.common import Conv
from yolo_transfer.models.parse import load_config, parse_model

PROBE_SIZE = 256  # input side of the dummy forward that measures the strides
LETTERBOX_GREY = 114 / 255  # the letterbox padding colour, as a model input value


class Detect(nn.Module):
    """One 1x1 conv per level predicting, for each of ``na`` anchors, [x, y, w, h, objectness, classes...]."""

    def __init__(self, nc: int = 80, anchors: list[list[float]] = (), ch: list[int] = ()) -> None:
        super().__init__()
        self.nc, self.no = nc, nc + 5
        self.nl, self.na = len(anchors), len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in ch)
        self.register_buffer("stride", torch.ones(self.nl), persistent=False)

    def forward(self, xs: list[torch.Tensor]):
        """Training: raw per-level tensors (bs, na, ny, nx, no). Eval: (decoded (bs, N, no), raw list)."""
        raw = []
        for conv, x in zip(self.m, xs, strict=True):
            bs, _, ny, nx = x.shape
            raw.append(conv(x).view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return raw
        return torch.cat([self.decode(level, p) for level, p in enumerate(raw)], 1), raw

    def decode(self, level: int, p: torch.Tensor) -> torch.Tensor:
        """Raw outputs of one level -> (bs, na*ny*nx, no): xywh in input pixels and sigmoid scores."""
        bs, na, ny, nx, no = p.shape
        stride = self.stride[level]
        ys, xs = torch.meshgrid(
            torch.arange(ny, device=p.device), torch.arange(nx, device=p.device), indexing="ij"
        )
        grid = (torch.stack((xs, ys), 2) - 0.5).to(p.dtype)  # (ny, nx, 2), cell corners offset by half a cell
        anchor_pixels = (self.anchors[level] * stride).view(1, na, 1, 1, 2)
        xy, wh, scores = p.sigmoid().split((2, 2, no - 4), 4)
        xy = (xy * 2 + grid) * stride
        wh = (wh * 2) ** 2 * anchor_pixels
        return torch.cat((xy, wh, scores), 4).view(bs, na * ny * nx, no)

    def initialize_biases(self) -> None:
        """The reference's prior: about 8 objects per 640x640 image, class probability 0.6 / nc."""
        for conv, stride in zip(self.m, self.stride.tolist(), strict=True):
            bias = conv.bias.detach().view(self.na, self.no)
            bias[:, 4] += math.log(8 / (640 / stride) ** 2)
            bias[:, 5:] += math.log(0.6 / (self.nc - 0.99999))


class DetectionModel(nn.Module):
    """YOLOv5 as ``model.{i}`` layers (reference names); ``save``: the layers whose outputs are reused."""

    def __init__(self, config: dict, names: list[str]) -> None:
        super().__init__()
        self.yaml = config
        self.nc, self.names = config["nc"], list(names)
        self.model, self.save = parse_model(config, Detect, config.setdefault("ch", 3))
        if not isinstance(self.detect, Detect):
            raise ConfigError("model config: the last layer must be Detect")
        detect = self.detect
        self.max_stride = 1  # until the probe has measured the strides
        detect.stride.copy_(self._probe_strides())
        self.max_stride = int(detect.stride.max())
        self.register_buffer("stride", detect.stride.clone(), persistent=False)
        self._check_anchor_order()
        detect.anchors /= detect.stride.view(-1, 1, 1)  # stored in grid units, like the reference
        detect.initialize_biases()

    @property
    def detect(self) -> Detect:
        return self.model[-1]

    def forward(self, x: torch.Tensor, no_grad_prefix: int = 0, stand_ins: nn.ModuleList | None = None):
        """Run the layers in order; those with index < ``no_grad_prefix`` build no autograd graph.

        ``stand_ins`` replace the first ``len(stand_ins)`` layers, e.g. BN-folded copies of a frozen prefix
        (engine/fused_frozen.py); the layers themselves stay as they are. Input sides must be multiples of the
        largest stride (64 for P6 models): see :meth:`_fit_to_stride`.
        """
        x = self._fit_to_stride(x)
        outputs: list[torch.Tensor | None] = []
        grad_enabled = torch.is_grad_enabled()
        for layer in self.model:
            if layer.f != -1:
                x = (
                    outputs[layer.f]
                    if isinstance(layer.f, int)
                    else [x if j == -1 else outputs[j] for j in layer.f]
                )
            run = stand_ins[layer.i] if stand_ins is not None and layer.i < len(stand_ins) else layer
            with torch.set_grad_enabled(grad_enabled and layer.i >= no_grad_prefix):
                x = run(x)
            outputs.append(x if layer.i in self.save else None)
        return x

    def _fit_to_stride(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` padded at the bottom and right to a multiple of the largest stride, in eval mode.

        Letterboxed images and rect validation batches are padded to multiples of 32; a P6 model needs 64.
        The extra letterbox-grey rows and columns keep every decoded box's pixel coordinates as they are.
        Inputs that already fit (every input of a P5 model from our loaders) pass unchanged. Training inputs
        must fit: the loss places targets on the grids of the unpadded image.
        """
        grid = self.max_stride
        height, width = x.shape[-2:]
        pad_height, pad_width = -height % grid, -width % grid
        if not (pad_height or pad_width):
            return x
        if self.training:
            raise ConfigError(
                f"a {height}x{width} training image does not fit the model's largest stride {grid}: "
                f"use an image size that is a multiple of {grid}"
            )
        return F.pad(x, (0, pad_width, 0, pad_height), value=LETTERBOX_GREY)

    def fuse(self) -> DetectionModel:
        """Fold every BatchNorm into its conv (in place) and switch to eval mode: for inference only."""
        self.eval()
        for module in self.modules():
            if isinstance(module, Conv):
                module.fuse()
        return self

    def _probe_strides(self) -> torch.Tensor:
        """Strides from a dummy forward; BatchNorm runs in eval mode so its statistics stay untouched."""
        self.eval()
        self.detect.train()  # raw per-level outputs
        with torch.no_grad():
            outputs = self(torch.zeros(1, self.yaml["ch"], PROBE_SIZE, PROBE_SIZE))
        self.train()
        return torch.tensor([PROBE_SIZE / out.shape[2] for out in outputs])

    def _check_anchor_order(self) -> None:
        """Reverse the anchor levels if their mean areas do not grow with the stride (as the reference)."""
        area = self.detect.anchors.prod(-1).mean(-1)
        if (area[-1] - area[0]).sign() != (self.stride[-1] - self.stride[0]).sign():
            self.detect.anchors.copy_(self.detect.anchors.flip(0))


def build_model(
    cfg: str | Path | dict = "yolov5n", nc: int | None = None, names: list[str] | None = None
) -> DetectionModel:
    """A freshly initialised model from a config name, yaml file or dict, for ``nc`` classes ``names``."""
    config = load_config(cfg)
    names = list(names.values()) if isinstance(names, dict) else names
    nc = nc if nc is not None else len(names) if names else config["nc"]
    if names is not None and len(names) != nc:
        raise ConfigError(f"{len(names)} class names given for nc={nc}")
    if nc < 1:
        raise ConfigError(f"nc must be >= 1, got {nc}")
    config["nc"] = nc
    return DetectionModel(config, names if names else [str(i) for i in range(nc)])


def model_groups(model: DetectionModel) -> dict[str, list[int]]:
    """Module indices of the groups: backbone (the yaml's backbone), neck (the rest) and head (Detect).

    Read from the config, so they fit every architecture: P5 0-9 / 10-23 / 24, P6 0-11 / 12-32 / 33.
    """
    n_backbone, n_layers = len(model.yaml["backbone"]), len(model.model)
    return {
        "backbone": list(range(n_backbone)),
        "neck": list(range(n_backbone, n_layers - 1)),
        "head": [n_layers - 1],
    }
