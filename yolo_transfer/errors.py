"""Error types whose message is shown to the user as one line (no traceback)."""


class YoloTransferError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits with code 2."""


class CheckpointError(YoloTransferError):
    """A weights file cannot be read, is unsafe, or does not fit the model."""


class DataError(YoloTransferError):
    """A dataset, image or label file is unusable."""


class LabelError(DataError):
    """One label line or label file cannot be parsed."""


class ConfigError(YoloTransferError):
    """A model config, strategy, hyperparameter file or CLI argument is invalid."""


class TrainingError(YoloTransferError):
    """Training cannot go on (e.g. the loss became NaN/inf)."""


class ExportError(YoloTransferError):
    """An exported model cannot be written, or disagrees with the PyTorch model it came from."""


class OutputError(YoloTransferError):
    """An output folder or file cannot be written: not a folder, not writable, disk full, or in use."""
