"""The YOLOv5 training loss (spec §6): anchor-ratio target assignment, CIoU box loss, IoU-target
objectness and BCE class loss, summed over the detection levels.

``ComputeLoss`` expects the loss gains already scaled to the model and image size by ``scale_loss_gains``
(spec §5.7), the way the reference stores them in ``model.hyp``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, complete_box_iou_loss

NEIGHBOUR_OFFSET = 0.5  # a target also trains the neighbour cells it lies within half a cell of
# (dx, dy) subtracted from a target centre: own cell, then left, up, right and down neighbours
CELL_OFFSETS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]]) * NEIGHBOUR_OFFSET


def scale_loss_gains(hyp: dict, nl: int, nc: int, imgsz: int) -> dict:
    """Copy of ``hyp`` with the box/cls/obj gains scaled by levels, classes and image size (spec §5.7)."""
    scaled = dict(hyp)
    level_factor = 3 / nl
    scaled["box"] = hyp["box"] * level_factor
    scaled["cls"] = hyp["cls"] * nc / 80 * level_factor
    scaled["obj"] = hyp["obj"] * (imgsz / 640) ** 2 * level_factor
    scaled.setdefault("label_smoothing", 0.0)
    return scaled


def level_balance(nl: int) -> list[float]:
    """Objectness weight per detection level, finest first."""
    return [4.0, 1.0, 0.4] if nl == 3 else [4.0, 1.0, 0.25, 0.06, 0.02][:nl]


class BCEWithFocus(nn.Module):
    """Mean binary cross-entropy on logits with ``pos_weight``, optionally focal (``gamma > 0``, alpha 0.25).

    torchvision's ``sigmoid_focal_loss`` has no ``pos_weight``, which the reference combines with focal loss.
    """

    def __init__(self, pos_weight: float, gamma: float = 0.0, alpha: float = 0.25, device=None):
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor([pos_weight], device=device))
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(
            logits, target, pos_weight=self.pos_weight, reduction="none"
        )
        if self.gamma > 0:
            prob = logits.sigmoid()
            p_true = target * prob + (1 - target) * (1 - prob)
            alpha_weight = target * self.alpha + (1 - target) * (1 - self.alpha)
            loss = loss * alpha_weight * (1.0 - p_true) ** self.gamma
        return loss.mean()


class ComputeLoss:
    """``ComputeLoss(model, hyp)(preds, targets) -> (total × batch size, detached [lbox, lobj, lcls])``.

    ``preds`` are the raw train-mode outputs, one ``(bs, na, ny, nx, nc + 5)`` tensor per level; ``targets``
    are ``(N, 6)`` rows ``[image_index, cls, xc, yc, w, h]`` normalised to the network input.
    ``hyp`` needs box, obj, cls (scaled gains), cls_pw, obj_pw, anchor_t, and optionally fl_gamma and
    label_smoothing.
    """

    def __init__(self, model: nn.Module, hyp: dict):
        detect = model.detect
        self.anchors = detect.anchors.detach()  # (nl, na, 2) in grid units
        device = self.anchors.device
        self.nl, self.na, self.nc = detect.nl, detect.na, detect.nc
        self.gains = {"box": hyp["box"], "obj": hyp["obj"], "cls": hyp["cls"]}
        self.anchor_t = hyp["anchor_t"]
        gamma = hyp.get("fl_gamma", 0.0)
        self.bce_cls = BCEWithFocus(hyp["cls_pw"], gamma, device=device)
        self.bce_obj = BCEWithFocus(hyp["obj_pw"], gamma, device=device)
        smoothing = hyp.get("label_smoothing", 0.0)
        self.cls_positive, self.cls_negative = 1.0 - 0.5 * smoothing, 0.5 * smoothing
        self.balance = level_balance(self.nl)

    def __call__(self, preds: list[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        device = preds[0].device
        targets = targets.to(device)
        lbox, lobj, lcls = (torch.zeros(1, device=device) for _ in range(3))
        for level, (pred, assigned) in enumerate(zip(preds, self.build_targets(preds, targets), strict=True)):
            image, anchor, cell_y, cell_x, target_box, target_cls = assigned
            target_obj = torch.zeros(pred.shape[:4], dtype=pred.dtype, device=device)
            if len(image):
                pxy, pwh, _, pcls = pred[image, anchor, cell_y, cell_x].split((2, 2, 1, self.nc), dim=1)
                pxy = pxy.sigmoid() * 2 - 0.5
                pwh = (pwh.sigmoid() * 2) ** 2 * self.anchors[level][anchor]
                box_loss = ciou_loss(torch.cat((pxy, pwh), 1), target_box)
                lbox += box_loss.mean()
                ciou = (1.0 - box_loss).detach().clamp(0)  # objectness target at the positive cells
                target_obj[image, anchor, cell_y, cell_x] = ciou.to(target_obj.dtype)
                if self.nc > 1:  # one class: objectness alone decides
                    cls_target = torch.full_like(pcls, self.cls_negative)
                    cls_target[torch.arange(len(image), device=device), target_cls] = self.cls_positive
                    lcls += self.bce_cls(pcls, cls_target)
            lobj += self.bce_obj(pred[..., 4], target_obj) * self.balance[level]

        lbox *= self.gains["box"]
        lobj *= self.gains["obj"]
        lcls *= self.gains["cls"]
        batch_size = preds[0].shape[0]
        return (lbox + lobj + lcls) * batch_size, torch.cat((lbox, lobj, lcls)).detach()

    def build_targets(self, preds: list[Tensor], targets: Tensor) -> list[tuple[Tensor, ...]]:
        """Assign each target to anchors whose w/h ratio is within ``anchor_t`` and to up to three cells.

        Returns per level ``(image, anchor, cell_y, cell_x, box, cls)``: ``box`` is xywh in grid units with
        xy relative to the assigned cell (in (-0.5, 1.5)).
        """
        device = targets.device
        num_targets = targets.shape[0]
        anchor_index = torch.arange(self.na, device=device, dtype=targets.dtype)
        # (na, nt, 7): every target once per anchor, the anchor index appended
        per_anchor = torch.cat(
            (targets.expand(self.na, -1, -1), anchor_index.view(-1, 1, 1).expand(-1, num_targets, 1)), 2
        )
        offsets_table = CELL_OFFSETS.to(device=device, dtype=targets.dtype)
        assigned = []
        for level, pred in enumerate(preds):
            grid_h, grid_w = pred.shape[2:4]
            to_grid = torch.tensor([1, 1, grid_w, grid_h, grid_w, grid_h, 1], device=device)
            t = per_anchor * to_grid.to(targets.dtype)
            anchors = self.anchors[level]

            ratio = t[..., 4:6] / anchors[:, None]
            shape_match = torch.max(ratio, 1 / ratio).max(2).values < self.anchor_t
            t = t[shape_match]

            centre = t[:, 2:4]
            centre_from_far_edge = torch.tensor([grid_w, grid_h], device=device, dtype=t.dtype) - centre
            near_low = ((centre % 1 < NEIGHBOUR_OFFSET) & (centre > 1)).T
            near_high = ((centre_from_far_edge % 1 < NEIGHBOUR_OFFSET) & (centre_from_far_edge > 1)).T
            own = torch.ones_like(near_low[0])
            use_cell = torch.stack((own, near_low[0], near_low[1], near_high[0], near_high[1]))
            t = t.expand(5, -1, -1)[use_cell]
            offsets = offsets_table[:, None].expand(-1, len(centre), -1)[use_cell]

            centre, wh = t[:, 2:4], t[:, 4:6]
            cell = (centre - offsets).long()
            cell[:, 0].clamp_(0, grid_w - 1)
            cell[:, 1].clamp_(0, grid_h - 1)
            image, cls, anchor = t[:, 0].long(), t[:, 1].long(), t[:, 6].long()
            box = torch.cat((centre - cell, wh), 1)
            assigned.append((image, anchor, cell[:, 1], cell[:, 0], box, cls))
        return assigned


def ciou_loss(pred_xywh: Tensor, target_xywh: Tensor) -> Tensor:
    """Per-box 1 − CIoU (eps 1e-7, α without gradient), as torchvision computes it on corner boxes."""
    return complete_box_iou_loss(
        box_convert(pred_xywh, "cxcywh", "xyxy"), box_convert(target_xywh, "cxcywh", "xyxy"), eps=1e-7
    )
