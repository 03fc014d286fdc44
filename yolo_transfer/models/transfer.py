"""Transfer checkpoint weights into a model with other classes (spec §2.3, plus same-name class rows)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from yolo_transfer.models.yolo import DetectionModel


@dataclass
class TransferReport:
    transferred: int
    total: int
    skipped: list[str]  # target entries that keep their fresh initialisation
    copied_classes: list[str]  # target classes whose head rows come from the checkpoint's class of that name

    def summary(self) -> str:
        text = f"transferred {self.transferred}/{self.total} tensors"
        if self.skipped:
            text += f"; not transferred (freshly initialised): {', '.join(self.skipped)}"
        if self.copied_classes:
            text += f"; class rows copied for: {', '.join(self.copied_classes)}"
        return text


def transfer_weights(
    state: dict[str, torch.Tensor], source_names: list[str], target: DetectionModel
) -> TransferReport:
    """Load ``state`` into ``target`` where names and shapes agree, except the Detect output convs.

    The output convs keep their fresh initialisation (with the reference's bias prior), then for every target
    class whose name equals a checkpoint class name (case-insensitive) that class's rows are copied, for each
    anchor: channel ``a * no + 5 + c`` of every level's weight and bias.
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
    compatible = all(
        weight is not None
        and bias is not None
        and weight.shape == (detect.na * source_no, *conv.weight.shape[1:])
        for conv, weight, bias in heads
    )
    pairs = same_name_classes(source_names, target.names) if compatible else []
    with torch.no_grad():
        for conv, weight, bias in heads if pairs else ():
            for anchor in range(detect.na):
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
    )


def same_name_classes(source_names: list[str], target_names: list[str]) -> list[tuple[int, int]]:
    """(target index, source index) for target classes named like a source class, ignoring case."""
    source_index = {name.lower(): i for i, name in reversed(list(enumerate(source_names)))}
    return [
        (c, source_index[name.lower()]) for c, name in enumerate(target_names) if name.lower() in source_index
    ]
