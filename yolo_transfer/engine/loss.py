"""The YOLOv5 training loss (spec §6): anchor-ratio target assignment, CIoU box loss, IoU-target
objectness and BCE class loss, summed over the detection levels.

``ComputeLoss`` expects the loss gains already scaled to the model and image size by ``scale_loss_gains``
(spec §5.7), the way the reference stores them in ``model.hyp``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
        self.cell_offsets = CELL_OFFSETS.to(device)
        self._grids: dict[tuple, tuple[Tensor, Tensor]] = {}  # see _grid_constants

    def __call__(self, preds: list[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        device = preds[0].device
        targets = targets.to(device)
        lbox, lobj, lcls = (torch.zeros(1, device=device) for _ in range(3))
        for level, (pred, assigned) in enumerate(zip(preds, self.build_targets(preds, targets), strict=True)):
            image, anchor, cell_y, cell_x, target_box, target_cls = assigned
            _, na, ny, nx, no = pred.shape
            target_obj = torch.zeros(pred.shape[:4], dtype=pred.dtype, device=device)
            if len(image):
                cells = ((image * na + anchor) * ny + cell_y) * nx + cell_x  # into (bs * na * ny * nx)
                # index_select: its backward adds into one gradient tensor, without the sort that
                # advanced indexing's backward runs on CUDA
                picked = pred.reshape(-1, no).index_select(0, cells)
                pxy, pwh, _, pcls = picked.split((2, 2, 1, self.nc), dim=1)
                pxy = pxy.sigmoid() * 2 - 0.5
                pwh = (pwh.sigmoid() * 2) ** 2 * self.anchors[level][anchor]
                box_loss = ciou_loss(torch.cat((pxy, pwh), 1), target_box)
                lbox += box_loss.mean()
                ciou = (1.0 - box_loss).detach().clamp(0)  # objectness target at the positive cells
                # targets sharing a cell all write the last one's value, as a serial write would: differing
                # duplicates in one indexed write race between threads (runs differed from the 6th digit on)
                order = torch.arange(len(cells), device=device)
                last = torch.full_like(target_obj, -1, dtype=torch.long).view(-1)
                last.scatter_reduce_(0, cells, order, "amax")  # max: the same whatever the order; no sync
                target_obj.view(-1)[cells] = ciou[last[cells]].to(target_obj.dtype)
                if self.nc > 1:  # one class: objectness alone decides
                    cls_target = torch.full_like(pcls, self.cls_negative)
                    cls_target.scatter_(1, target_cls.unsqueeze(1), self.cls_positive)
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
        xy relative to the assigned cell (in (-0.5, 1.5)). Rows are ordered by cell offset (own cell, then
        the left, up, right and down neighbours), anchor and target. All levels are assigned at once, so
        the host waits for the device twice (the kept rows, their count per level), not twice per level.
        """
        device, dtype = targets.device, targets.dtype
        gains, grid_sizes = self._grid_constants(preds, dtype, device)
        num_targets = targets.shape[0]
        anchor_index = torch.arange(self.na, device=device, dtype=dtype)
        # (na, nt, 7): every target once per anchor, the anchor index appended; (nl, na, nt, 7) in grid units
        per_anchor = torch.cat(
            (targets.expand(self.na, -1, -1), anchor_index.view(-1, 1, 1).expand(-1, num_targets, 1)), 2
        )
        t = per_anchor * gains[:, None, None]

        ratio = t[..., 4:6] / self.anchors[:, :, None]
        shape_match = torch.max(ratio, 1 / ratio).max(3).values < self.anchor_t  # (nl, na, nt)

        centre = t[..., 2:4]
        centre_from_far_edge = grid_sizes[:, None, None] - centre
        near_low = (centre % 1 < NEIGHBOUR_OFFSET) & (centre > 1)
        near_high = (centre_from_far_edge % 1 < NEIGHBOUR_OFFSET) & (centre_from_far_edge > 1)
        use_cell = torch.stack(
            (shape_match, near_low[..., 0], near_low[..., 1], near_high[..., 0], near_high[..., 1]), 1
        )  # (nl, 5, na, nt): a neighbour only for an anchor that matches
        use_cell[:, 1:] &= shape_match[:, None]
        level, offset, anchor, target = use_cell.nonzero().unbind(1)  # ordered by level first
        counts = torch.bincount(level, minlength=self.nl).tolist()

        rows = t[level, anchor, target]
        centre, wh = rows[:, 2:4], rows[:, 4:6]
        cell = (centre - self.cell_offsets[offset]).long()
        cell = torch.minimum(cell.clamp_(min=0), grid_sizes.long()[level] - 1)
        image, cls = rows[:, 0].long(), rows[:, 1].long()
        box = torch.cat((centre - cell, wh), 1)
        per_level = (image.split(counts), anchor.split(counts), cell[:, 1].split(counts))
        per_level += (cell[:, 0].split(counts), box.split(counts), cls.split(counts))
        return list(zip(*per_level, strict=True))

    def _grid_constants(self, preds: list[Tensor], dtype: torch.dtype, device: torch.device):
        """Per level: the row gains from normalised to grid units, ``(nl, 7)``, and ``(grid_w, grid_h)``,
        ``(nl, 2)``; made on the host once per set of grid shapes, not copied to the device every step."""
        key = (tuple(tuple(pred.shape[2:4]) for pred in preds), dtype, device)
        if key not in self._grids:
            sizes = torch.tensor([[w, h] for h, w in key[0]], dtype=dtype)
            gains = torch.ones(len(preds), 7, dtype=dtype)
            gains[:, 2:6] = sizes.repeat(1, 2)
            self._grids[key] = gains.to(device), sizes.to(device)
        return self._grids[key]


def ciou_loss(pred_xywh: Tensor, target_xywh: Tensor, eps: float = 1e-7) -> Tensor:
    """Per-box 1 − CIoU (α without gradient): torchvision's ``complete_box_iou_loss`` on the corner boxes,
    term for term, but with the intersection's sides clamped at zero as the reference computes them, where
    torchvision selects the overlapping boxes by boolean masks: a host-device sync for each of five masks
    forward and as many backward, on a GPU for every level of every training step. x and y go through each
    operation together, as ``(N, 2)`` pairs: fewer kernels, each term computed as before."""
    low, high, size = _corners(pred_xywh)
    low_gt, high_gt, size_gt = _corners(target_xywh)
    overlap = (torch.min(high, high_gt) - torch.max(low, low_gt)).clamp(0)
    intersection = overlap[:, 0] * overlap[:, 1]
    union = size[:, 0] * size[:, 1] + size_gt[:, 0] * size_gt[:, 1] - intersection
    iou = intersection / (union + eps)
    enclosing = (torch.max(high, high_gt) - torch.min(low, low_gt)) ** 2
    centres = ((high + low) / 2 - (low_gt + high_gt) / 2) ** 2
    diou_loss = 1 - iou + (centres[:, 0] + centres[:, 1]) / (enclosing[:, 0] + enclosing[:, 1] + eps)
    v = (4 / (torch.pi**2)) * torch.pow(
        torch.atan(size_gt[:, 0] / size_gt[:, 1]) - torch.atan(size[:, 0] / size[:, 1]), 2
    )
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou_loss + alpha * v


def _corners(xywh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Top-left and bottom-right corners ``(N, 2)`` of centre-size boxes as torchvision's ``box_convert``
    computes them, and the sizes between them; half precision upcast first (as torchvision's box losses do:
    the products overflow)."""
    if xywh.dtype not in (torch.float32, torch.float64):
        xywh = xywh.float()
    centre, size = xywh[:, :2], xywh[:, 2:4]
    low, high = centre - 0.5 * size, centre + 0.5 * size
    return low, high, high - low
