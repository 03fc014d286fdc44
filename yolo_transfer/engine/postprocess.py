"""From decoded model outputs to detections: confidence filter, NMS (torchvision), rescaling to the image."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_convert, clip_boxes_to_image

MAX_CANDIDATES = 30_000  # boxes kept (by confidence) before NMS, as the reference


def non_max_suppression(
    pred,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: list[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
) -> list[torch.Tensor]:
    """Per image, an (n, 6) tensor [x1, y1, x2, y2, conf, cls] sorted by confidence (spec §7 NMS).

    ``pred`` is the decoded eval output (bs, N, 5 + nc) with xywh boxes, or the model's (decoded, raw) tuple.
    conf = objectness x class probability; ``multi_label`` keeps every class above ``conf_thres`` per box.
    Unlike the reference there is no wall-clock limit, so the result does not depend on the machine's speed.
    """
    if isinstance(pred, (list, tuple)):
        pred = pred[0]
    multi_label = multi_label and pred.shape[2] > 6
    detections = []
    for candidates in pred:
        candidates = candidates[candidates[:, 4] > conf_thres]
        boxes = box_convert(candidates[:, :4], "cxcywh", "xyxy")
        scores = candidates[:, 5:] * candidates[:, 4:5]
        if multi_label:
            box_index, cls = (scores > conf_thres).nonzero(as_tuple=True)
            conf = scores[box_index, cls]
        else:
            conf, cls = scores.max(1)
            box_index = (conf > conf_thres).nonzero(as_tuple=True)[0]
            conf, cls = conf[box_index], cls[box_index]
        found = torch.cat((boxes[box_index], conf[:, None], cls[:, None].to(boxes.dtype)), 1)
        if classes is not None:
            found = found[
                torch.isin(found[:, 5], torch.tensor(classes, dtype=found.dtype, device=found.device))
            ]
        found = found[found[:, 4].argsort(descending=True, stable=True)[:MAX_CANDIDATES]]
        groups = torch.zeros_like(found[:, 5]) if agnostic else found[:, 5]
        keep = batched_nms(found[:, :4].float(), found[:, 4].float(), groups, iou_thres)[:max_det]
        detections.append(found[keep])
    return detections


def clip_boxes(boxes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """xyxy boxes clipped to an image of ``shape`` (h, w)."""
    return clip_boxes_to_image(boxes, (int(shape[0]), int(shape[1])))


def scale_boxes(img1_shape, boxes: torch.Tensor, img0_shape, ratio_pad=None) -> torch.Tensor:
    """xyxy boxes on the letterboxed ``img1_shape`` (h, w) -> pixels of the original ``img0_shape``, clipped.

    ``ratio_pad`` = ((ratio_h, ratio_w), (pad_w, pad_h)) from the loader; by default it is recomputed the way
    letterbox makes it (centred padding).
    """
    if ratio_pad is None:
        gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        pad = ((img1_shape[1] - img0_shape[1] * gain) / 2, (img1_shape[0] - img0_shape[0] * gain) / 2)
    else:
        gain, pad = ratio_pad[0][0], ratio_pad[1]
    offset = torch.tensor([pad[0], pad[1], pad[0], pad[1]], dtype=boxes.dtype, device=boxes.device)
    return clip_boxes((boxes - offset) / gain, img0_shape[:2])
