"""Transfer checkpoint weights into a model with other classes (spec §2.3, plus the reusable head rows).

The reference (yolov5 ``intersect_dicts``) leaves the Detect output convs of a model with another class count
freshly initialised: box regression and objectness start from scratch, so the pretrained detector forgets how
to find objects until the head has re-learned it. Those rows do not depend on the classes, so with
``head="transfer"`` (our default) they are copied from the checkpoint whenever the anchors are the same, and
each class that names a checkpoint class (exactly, in the plural or by a common synonym such as VOC's
``aeroplane``) gets that class's rows. A single class is the exception: with one class the loss trains no
class output (as the reference's), so a copied class row would keep scoring with COCO's features while the
features move, and its drift reorders the detections (license_plates' vehicles as ``car``: val mAP50-95 0.089
after 10 epochs of full fine-tuning, 0.546 for the same weights with the row made constant). Its row is made
constant instead (zero weights, the prior's bias), so a detection's score is its objectness, which is trained.
``head="fresh"`` is the reference behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from yolo_transfer.models.class_names import match_class_names
from yolo_transfer.models.yolo import DetectionModel


@dataclass
class TransferReport:
    transferred: int
    total: int
    skipped: list[str]  # target entries that keep their fresh initialisation
    copied_classes: list[str]  # target classes whose head rows come from the checkpoint's class of that name
    copied_box_objectness: bool = False  # box and objectness rows of every anchor come from the checkpoint
    constant_class: str | None = None  # the one class, named by the checkpoint, whose row is made constant

    def summary(self) -> str:
        text = f"transferred {self.transferred}/{self.total} tensors"
        if self.skipped:
            text += f"; not transferred (freshly initialised): {', '.join(self.skipped)}"
        if self.copied_box_objectness:
            text += "; box and objectness rows copied"
        if self.copied_classes:
            text += f"; class rows copied for: {', '.join(self.copied_classes)}"
        if self.constant_class:
            text += f"; one class ({self.constant_class}): its score is the objectness (a constant class row)"
        return text


def transfer_weights(
    state: dict[str, torch.Tensor], source_names: list[str], target: DetectionModel, head: str = "transfer"
) -> TransferReport:
    """Load ``state`` into ``target`` where names and shapes agree, except the Detect output convs.

    The output convs keep their fresh initialisation (with the reference's bias prior). With
    ``head="transfer"`` and the checkpoint's anchors, for each anchor ``a`` of every level the box and
    objectness channels ``a * no + 0..4`` are copied, and for every target class whose name equals a
    checkpoint class name (case-insensitive) its channel ``a * no + 5 + c``, unless it is the only class:
    then that channel gets zero weights and keeps the prior's bias; ``head="fresh"`` copies none.
    """
    target_state = target.state_dict()
    detect_index = len(target.model) - 1
    head_convs = {
        f"model.{detect_index}.m.{level}.{kind}"
        for level in range(target.detect.nl)
        for kind in ("weight", "bias")
    }
    matched = {
        name: tensor
        for name, tensor in state.items()
        if name in target_state and name not in head_convs and tensor.shape == target_state[name].shape
    }
    target.load_state_dict(matched, strict=False)

    detect, source_no = target.detect, len(source_names) + 5
    heads = [
        (
            conv,
            state.get(f"model.{detect_index}.m.{level}.weight"),
            state.get(f"model.{detect_index}.m.{level}.bias"),
        )
        for level, conv in enumerate(detect.m)
    ]
    anchors = state.get(f"model.{detect_index}.anchors")
    compatible = head == "transfer" and all(
        weight is not None
        and bias is not None
        and weight.shape == (detect.na * source_no, *conv.weight.shape[1:])
        for conv, weight, bias in heads
    )
    same_anchors = anchors is not None and torch.equal(anchors.float(), detect.anchors.float())
    copy_box = compatible and same_anchors
    pairs = same_name_classes(source_names, target.names) if compatible else []
    constant_class = detect.nc == 1 and bool(pairs)  # a row no loss trains: made constant, not copied
    if constant_class:
        pairs = []
    with torch.no_grad():
        for conv, weight, bias in heads if compatible else ():
            for anchor in range(detect.na):
                if copy_box:
                    rows, source_rows = (
                        slice(anchor * detect.no, anchor * detect.no + 5),
                        slice(anchor * source_no, anchor * source_no + 5),
                    )
                    conv.weight[rows] = weight[source_rows]
                    conv.bias[rows] = bias[source_rows]
                if constant_class:
                    conv.weight[anchor * detect.no + 5] = 0.0
                for target_class, source_class in pairs:
                    row, source_row = (
                        anchor * detect.no + 5 + target_class,
                        anchor * source_no + 5 + source_class,
                    )
                    conv.weight[row] = weight[source_row]
                    conv.bias[row] = bias[source_row]
    return TransferReport(
        transferred=len(matched),
        total=len(target_state),
        skipped=[name for name in target_state if name not in matched],
        copied_classes=[target.names[c] for c, _ in pairs],
        copied_box_objectness=copy_box,
        constant_class=target.names[0] if constant_class else None,
    )


def same_name_classes(source_names: list[str], target_names: list[str]) -> list[tuple[int, int]]:
    """(target index, source index) for target classes that name a source class (models/class_names.py)."""
    matches = match_class_names(target_names, source_names)
    return [(c, source_names.index(matches[name])) for c, name in enumerate(target_names) if name in matches]
