"""TrainConfig: the settings of one training run, from the CLI or from a run folder to resume."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from yolo_transfer.engine.device import select_device
from yolo_transfer.engine.run_state import STATE_JSON, state_exists
from yolo_transfer.engine.tensorboard_log import check_tensorboard
from yolo_transfer.errors import ConfigError
from yolo_transfer.option_checks import require_weights_file
from yolo_transfer.strategies import Strategy
from yolo_transfer.strategies.phase import strategy_from_dict

MIN_TRAIN_IMGSZ = 64  # twice the largest stride, as yolov5's train.py floors it


@dataclass
class TrainConfig:
    """Everything a run needs besides the strategy; stored in the resume state and summary.json."""

    data: str
    out: Path
    weights: str | None = None
    cfg: str = "yolov5n"
    epochs: int = 100
    imgsz: int = 640
    batch: int = 16
    hyp: str | dict = "low"
    optimizer: str = "SGD"
    lr0: float | None = None
    cos_lr: bool = False
    patience: int = 100
    device: str = "cpu"
    seed: int = 0
    workers: int | None = None  # None: chosen for the host's cores and the device (loading_plan.py)
    cache: bool | None = None  # decoded images in RAM; None: when they fit the memory budget
    val_every: int = 1  # validate every N epochs, and always when a phase or the run may end
    profile: bool = False  # time every step section exactly (synchronises CUDA after each; benchmarks)
    val_fraction: float = 0.2
    split_seed: int = 0  # seeds the val split made for data without one; independent of ``seed``
    close_mosaic: int = 0
    max_seconds: float | None = None
    max_images: int | None = None
    l2sp: float = 0.0
    tensorboard: bool = False  # also log to RUN/tensorboard (results.csv stays the source)
    noplots: bool = False  # no plot files at the end of the run (yolov5's --noplots)
    sync_bn: bool = False  # multi-GPU runs: BatchNorm of the training layers as SyncBatchNorm

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "out": str(self.out)}


def check_train_imgsz(imgsz: int) -> None:
    """A ConfigError unless ``imgsz`` is a size training can run at (train, compare and advise's command)."""
    if imgsz < MIN_TRAIN_IMGSZ or imgsz % 32:
        raise ConfigError(
            f"--imgsz must be a positive multiple of 32 (the largest stride) and at least {MIN_TRAIN_IMGSZ} "
            f"to train (a 1x1 grid at stride 32 leaves BatchNorm one value per channel), got {imgsz}"
        )


def check_config(config: TrainConfig, resume: bool) -> None:
    """One clear ConfigError for settings that cannot work, before anything heavy is loaded."""
    if config.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {config.epochs}")
    check_train_imgsz(config.imgsz)
    if config.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {config.batch}")
    if (config.workers is not None and config.workers < 0) or config.patience < 0:
        raise ConfigError("--workers and --patience must be >= 0")
    if config.val_every < 1:
        raise ConfigError(f"--val-every must be >= 1, got {config.val_every}")
    if config.lr0 is not None and config.lr0 <= 0:
        raise ConfigError(f"--lr0 must be > 0, got {config.lr0}")
    if config.weights is not None:
        require_weights_file(config.weights)
    if not resume and state_exists(Path(config.out) / "weights"):
        raise ConfigError(
            f"{config.out} already holds a run: continue it with --resume {config.out} or use another --out"
        )
    select_device(config.device)
    if config.tensorboard:
        check_tensorboard()


def config_from_args(args) -> TrainConfig:
    """The TrainConfig of ``yolo-transfer train`` arguments (flags are named like the fields)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**{**values, "out": Path(args.out), "cfg": args.cfg or "yolov5n"})


def load_run(run_dir: str | Path) -> tuple[TrainConfig, Strategy]:
    """The config and strategy of the run in ``run_dir``, read from its resume state."""
    state_file = Path(run_dir) / "weights" / STATE_JSON
    if not state_file.is_file():
        raise ConfigError(f"{run_dir}: not a run folder to resume (no weights/{STATE_JSON})")
    try:
        meta = json.loads(state_file.read_text())
        config = TrainConfig(**{**meta["config"], "out": Path(run_dir)})
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{state_file}: unreadable resume state ({err})") from None
    return config, strategy_from_dict(meta["strategy"], str(state_file))
