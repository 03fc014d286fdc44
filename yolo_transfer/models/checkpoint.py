"""Weights files: official ``.pt`` (read safely) and our ``.safetensors`` (tensors + JSON metadata header).

Our format stores the state_dict under the reference's names; the header holds one JSON-encoded string per
metadata key: ``cfg`` (model yaml dict), ``nc``, ``names``, and whatever the writer adds (``imgsz``,
``provenance`` {source, sha256}, ``strategy``, ``phases``, ``epochs``, ``metrics``, ...).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from yolo_transfer.engine.outputs import write_atomic
from yolo_transfer.errors import CheckpointError, ConfigError
from yolo_transfer.models.official import read_official_checkpoint
from yolo_transfer.models.parse import BUILTIN_CONFIGS, load_config
from yolo_transfer.models.transfer import transfer_weights
from yolo_transfer.models.yolo import DetectionModel, build_model
from yolo_transfer.option_checks import require_weights_file

FORMAT = "yolo-transfer"
OFFICIAL_SUFFIXES = (".pt", ".pth")
METADATA_KINDS = {  # optional metadata fields that code reads, and the JSON kinds they must have
    "nc": int, "imgsz": (int, list), "provenance": dict, "official": dict, "strategy": dict, "phases": list,
    "epochs": int, "metrics": (dict, type(None)), "transfer": dict,
}  # fmt: skip


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_official(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """State dict and metadata of an official YOLOv5 checkpoint."""
    ckpt = read_official_checkpoint(path)
    metadata = {
        "cfg": ckpt.config,
        "nc": len(ckpt.names),
        "names": ckpt.names,
        "provenance": {"source": str(path), "sha256": file_sha256(path)},
        "official": ckpt.info,
    }
    if ckpt.info.get("imgsz"):
        metadata["imgsz"] = ckpt.info["imgsz"]
    return ckpt.state_dict, metadata


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """State dict and decoded metadata of a file written by :func:`save_model`."""
    try:
        with safe_open(str(path), framework="pt") as file:
            header = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({err})") from err
    if header.get("format") != FORMAT or "cfg" not in header:
        raise CheckpointError(f"{path}: not a yolo-transfer checkpoint (its header has no model config)")
    try:
        metadata = {key: json.loads(value) for key, value in header.items() if key != "format"}
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: corrupt metadata in the header ({err})") from err
    check_metadata(path, metadata)
    return tensors, metadata


def check_metadata(path: Path, metadata: dict) -> None:
    """CheckpointError naming the first metadata field of the wrong kind; a built-in ``cfg`` name becomes its
    config mapping."""
    names, cfg = metadata.get("names"), metadata.get("cfg")
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise CheckpointError(
            f"{path}: metadata field 'names' must be a non-empty list of class names, got {_shown(names)}"
        )
    if isinstance(cfg, str) and cfg in BUILTIN_CONFIGS:
        metadata["cfg"] = load_config(cfg)
    elif not isinstance(cfg, dict):
        raise CheckpointError(
            f"{path}: metadata field 'cfg' must be a model config mapping or a built-in model name "
            f"({', '.join(BUILTIN_CONFIGS)}), got {_shown(cfg)}"
        )
    for key, kinds in METADATA_KINDS.items():
        value = metadata.get(key)
        if key in metadata and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise CheckpointError(f"{path}: metadata field '{key}' has the wrong type, got {_shown(value)}")
    if "nc" in metadata and metadata["nc"] != len(names):
        raise CheckpointError(
            f"{path}: metadata field 'nc' is {metadata['nc']} but 'names' lists {len(names)}"
        )


def _shown(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None."""
    return next(
        (name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()), None
    )


def load_model(
    weights: str | Path, nc: int | None = None, names: list[str] | None = None, head: str = "transfer"
) -> tuple[DetectionModel, dict]:
    """An fp32 model in eval mode from an official ``.pt`` or our ``.safetensors``, and its metadata.

    When ``nc``/``names`` differ from the checkpoint's classes, the weights are transferred into a fresh model
    for those classes (see :func:`transfer_weights`, ``head`` says how the Detect output convs start) and
    "transferred K/N tensors ..." is printed.
    """
    path = require_weights_file(weights)
    if path.suffix in OFFICIAL_SUFFIXES:
        state, metadata = read_official(path)
    elif path.suffix == ".safetensors":
        state, metadata = read_safetensors(path)
    else:
        raise CheckpointError(f"{path}: unknown weights format (expected .pt or .safetensors)")
    state = {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    if (bad := first_non_finite(state)) is not None:
        raise CheckpointError(f"{path}: tensor '{bad}' holds NaN or inf values; these weights are unusable")
    source_names = list(metadata["names"])
    target_names = resolve_names(source_names, nc, names)
    try:
        if target_names == source_names:
            model = build_model(metadata["cfg"], names=source_names)
            model.load_state_dict(state)
        else:
            model = build_model(metadata["cfg"], names=target_names)
            report = transfer_weights(state, source_names, model, head)
            print(f"{path.name}: {report.summary()}")
            metadata["transfer"] = {
                "from_names": source_names,
                "transferred": report.transferred,
                "total": report.total,
                "copied_classes": report.copied_classes,
                "copied_box_objectness": report.copied_box_objectness,
                "fresh": report.skipped,
            }
    except (RuntimeError, ConfigError) as err:
        raise CheckpointError(
            f"{path}: the weights do not fit the model config ({str(err).splitlines()[0]})"
        ) from err
    metadata.update(nc=model.nc, names=model.names)
    return model.eval(), metadata


def resolve_names(source_names: list[str], nc: int | None, names: list[str] | dict | None) -> list[str]:
    """The class names the loaded model should have: ``names``, else the checkpoint's if ``nc`` agrees."""
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if names is not None:
        if nc is not None and nc != len(names):
            raise ConfigError(f"{len(names)} class names given for nc={nc}")
        return [str(n) for n in names]
    if nc is None or nc == len(source_names):
        return source_names
    return [str(i) for i in range(nc)]


def save_model(model: DetectionModel, path: str | Path, metadata: dict) -> None:
    """Write ``model`` (unfused) and ``metadata`` to one ``.safetensors`` file, atomically (a full disk raises
    OutputError and leaves an existing file as it was)."""
    if any(name.endswith(".conv.bias") for name in model.state_dict()):
        raise CheckpointError(f"{path}: cannot save a fused model (save before calling fuse())")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = {**metadata, "cfg": model.yaml, "nc": model.nc, "names": list(model.names)}
    header = {"format": FORMAT, **{key: json.dumps(value, default=to_json) for key, value in values.items()}}
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    write_atomic(path, save(tensors, metadata=header))


def to_json(value):
    """JSON fallback for metadata values: numpy/torch values become numbers or lists, others strings."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def convert_command(args) -> int:
    """``yolo-transfer convert WEIGHTS.pt OUT.safetensors``."""
    output = Path(args.output)
    if Path(args.weights).suffix not in OFFICIAL_SUFFIXES:
        raise ConfigError(f"{args.weights}: convert reads official YOLOv5 .pt files")
    if output.suffix != ".safetensors":
        raise ConfigError(f"{output}: the output file must end with .safetensors")
    model, metadata = load_model(args.weights)
    if metadata["official"]["dtype"] == "float16":  # released weights are fp16: keep them so, losslessly
        model = model.half()
    save_model(model, output, metadata)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {output}: {params:,} parameters ({metadata['official']['dtype']}), {model.nc} classes, "
        f"from {args.weights} (sha256 {metadata['provenance']['sha256'][:12]}...)"
    )
    return 0
