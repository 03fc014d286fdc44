"""Optional TensorBoard logging of a training run (``train --tensorboard``) into ``RUN/tensorboard/``.

Every epoch's results.csv row becomes scalars (tags are the column names, step the 1-based epoch: losses,
P, R, mAP50, mAP50-95, the LR of each parameter group, img/s, ...); when the run ends, its plots and batch
mosaics (results.png, train_batch*.jpg, val_batch0_labels/pred.jpg, PR/F1/confusion) become images.
results.csv stays the source of the numbers. Needs the ``tensorboard`` extra: ``pip install -e
".[tensorboard]"``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

import cv2

from yolo_transfer.errors import ConfigError

TENSORBOARD_DIR = "tensorboard"
NOT_SCALARS = ("epoch", "phase")


def check_tensorboard() -> None:
    """ConfigError naming the extra to install when the ``tensorboard`` package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            '--tensorboard needs the tensorboard package: pip install -e ".[tensorboard]" '
            "(or pip install tensorboard)"
        )


class TensorBoardLog:
    """A SummaryWriter on ``run_dir/tensorboard``: one call per epoch, one for the finished run's images."""

    def __init__(self, run_dir: Path):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))

    def log_epoch(self, row: dict, columns: Iterable[str]) -> None:
        """The ``columns`` of results.csv ``row`` as scalars at step ``row["epoch"]``; flushed at once."""
        for column in columns:
            if column not in NOT_SCALARS:
                self.writer.add_scalar(column, float(row[column]), global_step=int(row["epoch"]))
        self.writer.flush()

    def finish(self, paths: Iterable[Path], epoch: int) -> None:
        """Log the image files ``paths`` (plots, mosaics), tagged by file name, at step ``epoch``; close."""
        for path in paths:
            image = cv2.imread(str(path))
            if image is not None:
                self.writer.add_image(path.stem, image[:, :, ::-1].copy(), epoch, dataformats="HWC")
        self.writer.close()
