"""The module that is traced for export: the fused detector's decoded output, optionally followed by NMS."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import batched_nms, box_convert

from yolo_transfer.models import DetectionModel


@dataclass(frozen=True)
class NmsSettings:
    """Thresholds baked into a graph exported with ``--nms``."""

    conf: float = 0.25
    iou: float = 0.45


class ExportGraph(nn.Module):
    """``images`` (batch, 3, H, W) RGB in [0, 1] -> decoded predictions (batch, N, 5 + nc) as the eval
    forward (xywh input pixels, objectness, class probabilities); with ``nms``: detections (K, 7)
    ``[image_index, x1, y1, x2, y2, conf, class]`` sorted by confidence, as ``non_max_suppression`` keeps
    them (best class per box, classes suppressed separately) but without a per-image ``max_det`` limit."""

    def __init__(self, model: DetectionModel, nms: NmsSettings | None = None) -> None:
        super().__init__()
        self.model, self.nms = model, nms

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        decoded = self.model(images)[0]
        return decoded if self.nms is None else suppress(decoded, self.nms)


def suppress(decoded: torch.Tensor, nms: NmsSettings) -> torch.Tensor:
    """Traceable NMS over the whole batch: image and class together form the NMS group of a box."""
    batch, anchors, outputs = decoded.shape
    scores, classes = (decoded[..., 5:] * decoded[..., 4:5]).max(2)
    image_index = torch.arange(batch, device=decoded.device).view(batch, 1).expand(batch, anchors)
    keep = scores > nms.conf
    boxes = box_convert(decoded[..., :4][keep], "cxcywh", "xyxy")
    scores, classes, image_index = scores[keep], classes[keep], image_index[keep]
    kept = batched_nms(boxes, scores, image_index * (outputs - 5) + classes, nms.iou)
    columns = (image_index[kept, None].to(boxes.dtype), boxes[kept], scores[kept, None])
    return torch.cat((*columns, classes[kept, None].to(boxes.dtype)), 1)
