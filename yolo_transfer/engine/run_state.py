"""Exact-resume state of a training run, stored without pickle, committed in one atomic step.

Tensors (model, EMA, optimizer buffers, pending gradients, torch RNG states) go into
``weights/last.state.<token>.safetensors``; everything else (progress counters, python/numpy RNG, optimizer
hyperparameters, config, strategy) into ``weights/last.state.json``, which names the token. The tensor file is
new by name and flushed first; replacing the JSON file is the commit, and the previous tensor file is deleted
only after it. A kill at any moment therefore leaves the previous complete state or the new one; what the
killed write left behind is removed by :func:`remove_leftovers` at the next start.
"""

from __future__ import annotations

import dataclasses
import json
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from yolo_transfer.engine import outputs
from yolo_transfer.engine.stopping import Plateau
from yolo_transfer.errors import ConfigError, OutputError

STATE_JSON = "last.state.json"
STATE_TENSORS = "last.state.safetensors"  # the tensor file of runs written before token-named files
STATE_PREFIX = "last.state."


def tensor_file_name(token: str) -> str:
    return f"{STATE_PREFIX}{token}.safetensors"


@dataclass
class RunProgress:
    """Where a run stands between two epochs: the JSON part of the resume state."""

    epoch: int = 0  # epochs finished in the whole run
    phase_index: int = 0  # the phase running now (== len(phases) when all are done)
    phase_epoch: int = 0  # epochs finished in the current phase
    phase_batch: int | None = None  # the current phase's batch size; None until the phase has started
    last_opt_step: int = -1  # phase iteration of the last optimizer step
    accumulate: int = 1  # batches per optimizer step now
    images_seen: int = 0
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    best_fitness: float | None = None
    best: dict | None = None  # summary record of the best epoch
    final: dict | None = None  # summary record of the latest epoch
    plateau: Plateau | None = None  # the current phase's plateau rule
    early_stop: Plateau | None = None  # --patience within the current phase
    end_reason: str | None = None  # why the run ended; None while it goes on
    phases: list[dict] = field(default_factory=list)  # one summary per started phase
    rows: list[dict] = field(default_factory=list)  # results.csv rows, plus each epoch's fitness

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunProgress:
        trackers = {key: Plateau(**data[key]) if data[key] else None for key in ("plateau", "early_stop")}
        return cls(**{**data, **trackers})


def state_exists(weights_dir: Path) -> bool:
    return (weights_dir / STATE_JSON).exists()


def write_state(weights_dir: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Commit a resume state: a new tensor file, then the JSON naming it replaces the old JSON (the commit),
    then the previous tensor file goes. A full disk raises OutputError and leaves the previous state."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    size = sum(value.nbytes for value in tensors.values())
    tensor_path = weights_dir / tensor_file_name(token)
    outputs.create_file(tensor_path, lambda path: save_file(tensors, path, {"token": token}), size)
    text = json.dumps({**meta, "token": token}, indent=1)
    try:
        outputs.write_atomic(weights_dir / STATE_JSON, text.encode())  # the commit
    except OutputError:
        outputs.remove_file(tensor_path)
        raise
    remove_leftovers(weights_dir)


def read_state(weights_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The (tensors, meta) pair written by :func:`write_state`; a clear error when absent or inconsistent."""
    committed = _committed_state(weights_dir)
    if committed is None:
        if not (weights_dir / STATE_JSON).exists():
            raise ConfigError(f"{weights_dir}: no resume state ({STATE_JSON}) to resume from")
        raise ConfigError(
            f"{weights_dir}: the tensors {STATE_JSON} names are missing or cut (state files mismatched)"
        )
    _, tensor_path, meta = committed
    return load_file(tensor_path), meta


def remove_leftovers(weights_dir: Path) -> list[Path]:
    """Delete what interrupted writes left in ``weights_dir`` (temporary files, tensor files of no committed
    state); a commit cut between the two renames of older versions is completed. Returns the deleted files."""
    committed = _committed_state(weights_dir)
    if committed is not None and committed[0].name != STATE_JSON:
        outputs.replace_file(committed[0], weights_dir / STATE_JSON)
    removed = outputs.remove_temporaries(weights_dir)
    if committed is None:  # no complete state to tell the rest from: leave the state files for inspection
        return removed
    tensor_path = committed[1]
    for path in weights_dir.glob(f"{STATE_PREFIX}*"):
        if path.name not in (STATE_JSON, tensor_path.name):
            outputs.remove_file(path)
            removed.append(path)
    return removed


def _committed_state(weights_dir: Path) -> tuple[Path, Path, dict] | None:
    """(JSON file, tensor file, meta) of the last complete state, or None.

    ``last.state.json.tmp`` with ``last.state.safetensors`` is what older versions left when killed between
    their two renames: it is a complete state too."""
    for json_path in (weights_dir / STATE_JSON, weights_dir / (STATE_JSON + ".tmp")):
        try:
            meta = json.loads(json_path.read_text())
        except (OSError, ValueError):
            continue
        token = meta.get("token") if isinstance(meta, dict) else None
        for tensor_path in (weights_dir / tensor_file_name(str(token)), weights_dir / STATE_TENSORS):
            if token is not None and _tensor_token(tensor_path) == token:
                return json_path, tensor_path, meta
    return None


def _tensor_token(path: Path) -> str | None:
    try:
        with safe_open(path, "pt") as handle:
            return (handle.metadata() or {}).get("token")
    except (OSError, SafetensorError):
        return None


def with_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{key}": value for key, value in tensors.items()}


def strip_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (``"<param index>.<key>"``) and JSON-able rest."""
    state_dict = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state": plain}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    """Inverse of :func:`optimizer_state` for an optimizer built over the same parameters."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entry in meta["state"].items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def capture_global_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """python, numpy and torch (CPU and CUDA) random states."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, meta


def restore_global_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda_keys = sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    cuda_states = [tensors[k] for k in cuda_keys]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)


def loader_state(loader: torch.utils.data.DataLoader) -> tuple[dict[str, torch.Tensor], dict]:
    """The shuffle generator of a training loader and its dataset's augmentation RNG (no-worker case)."""
    generator = _shuffle_generator(loader)
    tensors = {"generator": generator.get_state()} if generator is not None else {}
    rng = getattr(loader.dataset, "rng", None)
    return tensors, {"dataset_rng": rng.bit_generator.state if rng is not None else None}


def restore_loader_state(
    loader: torch.utils.data.DataLoader, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    if "generator" in tensors:
        _shuffle_generator(loader).set_state(tensors["generator"])
    if meta.get("dataset_rng") is not None:
        loader.dataset.rng.bit_generator.state = meta["dataset_rng"]


def _shuffle_generator(loader: torch.utils.data.DataLoader) -> torch.Generator | None:
    """The generator that orders and seeds the epochs: our loaders' `EpochBatches`' own, else (a DDP rank's
    loader) the DataLoader's."""
    return getattr(loader.batch_sampler, "generator", None) or loader.generator
