"""Metadata stored inside exported models: ONNX ``metadata_props`` and a TorchScript extra file.

Every value is one JSON string under its key, so both formats carry the same dictionary: ``names``, ``nc``,
``stride``, ``imgsz``, ``batch``, ``dynamic``, ``half``, ``nms`` (the baked-in thresholds, or null),
``source`` and ``sha256`` (the weights file the export was made from) and ``provenance`` (that file's own
origin, e.g. the official ``.pt``).
"""

from __future__ import annotations

import json
from pathlib import Path

from yolo_transfer.errors import CheckpointError

FORMAT = "yolo-transfer-export"
TORCHSCRIPT_EXTRA_FILE = "yolo_transfer.json"
REQUIRED_KEYS = ("names", "nc", "stride", "imgsz", "batch", "dynamic", "half", "nms")


def encode_metadata(values: dict) -> dict[str, str]:
    """``{key: JSON string}`` with the format marker, for ONNX ``metadata_props``."""
    return {"format": json.dumps(FORMAT), **{key: json.dumps(value) for key, value in values.items()}}


def decode_metadata(props: dict[str, str], path: Path) -> dict:
    """The metadata of an exported model; CheckpointError when ``path`` was not exported by yolo-transfer."""
    try:
        values = {key: json.loads(value) for key, value in props.items()}
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: corrupt yolo-transfer metadata ({err})") from None
    missing = [key for key in REQUIRED_KEYS if key not in values]
    if values.get("format") != FORMAT or missing:
        raise CheckpointError(
            f"{path}: not exported by yolo-transfer export (no class names / image size in its metadata)"
        )
    return values
