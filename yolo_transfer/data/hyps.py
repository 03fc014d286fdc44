"""Hyperparameter presets none | low | med | high (the reference's hyp.scratch-*) -> a full dict."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from yolo_transfer.errors import ConfigError

HYP_DIR = Path(__file__).with_name("hyps")
PRESETS = ("none", "low", "med", "high")


def load_hyp(name_or_path: str | Path | dict | None = "low", **overrides: float | None) -> dict:
    """A full hyperparameter dict from a preset name, a yaml file or a (partial) dict, then `overrides`.

    Keys missing from a user file or dict come from 'low'; unknown keys raise ConfigError (they are
    typos). Overrides whose value is None are ignored, so optional CLI flags can be passed straight in.
    """
    base = _read_yaml(HYP_DIR / "low.yaml")
    if name_or_path is None:
        user: dict = {}
    elif isinstance(name_or_path, dict):
        user = dict(name_or_path)
    elif str(name_or_path) in PRESETS:
        user = _read_yaml(HYP_DIR / f"{name_or_path}.yaml")
    elif Path(name_or_path).is_file():
        user = _read_yaml(Path(name_or_path))
    else:
        raise ConfigError(
            f"hyp '{name_or_path}': not a preset ({'|'.join(PRESETS)}) or an existing yaml file"
        )
    user |= {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(user) - set(base))
    if unknown:
        raise ConfigError(f"hyp '{name_or_path}': unknown key(s) {', '.join(unknown)}")
    hyp = base | user
    for key, value in hyp.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"hyp '{name_or_path}': {key} must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0 or (key == "lr0" and value == 0):
            bound = "> 0" if key == "lr0" else ">= 0"
            raise ConfigError(f"hyp '{name_or_path}': {key} must be a finite number {bound}, got {value!r}")
    return hyp


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read hyperparameters ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: hyperparameters must be a mapping of key: number")
    return data
