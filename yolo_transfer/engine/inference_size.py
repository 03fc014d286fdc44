"""The image size ``val`` and ``predict`` use: the one the weights were trained at, unless the user says.

A model scores best at the size it was trained at. Our checkpoints record it (``imgsz`` in the metadata, or
``provenance.imgsz`` for the demo checkpoint); official ``.pt`` files record it in ``opt.imgsz`` when it was
kept, and the released COCO weights were trained at 640.
"""

from __future__ import annotations

OFFICIAL_IMGSZ = 640


def recorded_imgsz(metadata: dict) -> int | None:
    """The training image size in checkpoint ``metadata``; None when the checkpoint does not say."""
    candidates = (
        metadata.get("imgsz"),
        (metadata.get("provenance") or {}).get("imgsz"),
        (metadata.get("official") or {}).get("imgsz"),
    )
    for value in candidates:
        if isinstance(value, list | tuple) and value:
            value = max(value)  # yolov5's opt.imgsz may be [train, val] or [h, w]
        if isinstance(value, int) and value > 0:
            return value
    return None


def inference_imgsz(requested: int | None, metadata: dict) -> tuple[int, str | None]:
    """(image size to use, a warning or None): ``requested`` when given, else the recorded size (else 640).

    The warning says when ``requested`` differs from the size the weights were trained at.
    """
    recorded = recorded_imgsz(metadata)
    trained = recorded or OFFICIAL_IMGSZ
    if requested is None:
        return trained, None
    if requested == trained:
        return requested, None
    size = f"the {trained} px these weights were trained at" if recorded else f"the default {trained} px"
    return requested, (
        f"warning: --imgsz {requested} differs from {size}; accuracy is usually lower there "
        f"(omit --imgsz to use {trained})"
    )
