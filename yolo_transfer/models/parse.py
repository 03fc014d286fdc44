"""Model yaml files (the reference format, spec §1.1) and their translation into layers (spec §1.2)."""

from __future__ import annotations

import ast
import copy
import math
import re
from importlib import resources
from pathlib import Path

import yaml
from torch import nn

from yolo_transfer.errors import ConfigError
from yolo_transfer.models.common import C3, SPPF, Bottleneck, Concat, Conv

BUILTIN_CONFIGS = (
    *("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x"),  # P5: strides 8-32
    *("yolov5n6", "yolov5s6", "yolov5m6", "yolov5l6", "yolov5x6"),  # P6: strides 8-64
)
REQUIRED_KEYS = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head")
CONV_LIKE = {"Conv": Conv, "Bottleneck": Bottleneck, "C3": C3, "SPPF": SPPF}
ACTIVATIONS = ("SiLU", "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Mish", "GELU", "Sigmoid", "Identity")


def load_config(cfg: str | Path | dict) -> dict:
    """A model config as a fresh dict: a built-in name (``yolov5s``), a yaml file, or a dict (copied)."""
    if isinstance(cfg, dict):
        config = copy.deepcopy(cfg)
        source = "the model config"
    elif str(cfg) in BUILTIN_CONFIGS:
        text = resources.files("yolo_transfer.models").joinpath(f"configs/{cfg}.yaml").read_text()
        config, source = yaml.safe_load(text), str(cfg)
    else:
        path = Path(cfg)
        if not path.is_file():
            raise ConfigError(
                f"{cfg}: no such model config (built-in: {', '.join(BUILTIN_CONFIGS)}, or a .yaml file)"
            )
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{cfg}: not valid YAML ({err.__class__.__name__})") from err
        source = str(path)
    missing = [k for k in REQUIRED_KEYS if k not in config] if isinstance(config, dict) else REQUIRED_KEYS
    if missing:
        raise ConfigError(f"{source}: not a model config, missing the keys {', '.join(missing)}")
    return config


def make_divisible(x: float, divisor: int) -> int:
    """The smallest multiple of ``divisor`` that is >= x (the reference's channel rounding)."""
    return math.ceil(x / divisor) * divisor


def make_activation(spec: str) -> nn.Module:
    """An activation module from the yaml ``activation`` string, e.g. ``nn.LeakyReLU(0.1)``."""
    match = re.fullmatch(r"\s*(?:nn\.)?(\w+)\((.*)\)\s*", spec)
    if not match or match[1] not in ACTIVATIONS:
        raise ConfigError(
            f"model config: unsupported activation {spec!r} (use one of nn.{', nn.'.join(ACTIVATIONS)})"
        )
    try:
        args = ast.literal_eval(f"({match[2]},)") if match[2].strip() else ()
    except (ValueError, SyntaxError) as err:
        raise ConfigError(f"model config: cannot read the arguments of activation {spec!r}") from err
    return getattr(nn, match[1])(*args)


def parse_model(
    config: dict, detect_cls: type[nn.Module], in_channels: int = 3
) -> tuple[nn.Sequential, list[int]]:
    """Build the layers of ``config`` and the sorted indices of the layers whose outputs are reused later.

    Each layer gets the reference's plain attributes ``i`` (index), ``f`` (from), ``type``, ``np`` (params),
    plus ``n`` (repeats after depth scaling) and ``args`` (constructor arguments) for the layer table.
    """
    channels, layers, save = [in_channels], [], set()
    for i, entry in enumerate(config["backbone"] + config["head"]):
        try:
            layer, out_channels = build_layer(entry, channels, config, detect_cls)
        except (IndexError, KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"model config: layer {i} {entry} is invalid ({err})") from err
        layer.i = i
        layer.np = sum(p.numel() for p in layer.parameters())
        save.update(x % i for x in ([layer.f] if isinstance(layer.f, int) else layer.f) if x != -1)
        layers.append(layer)
        channels = [out_channels] if i == 0 else [*channels, out_channels]
    if "activation" in config:
        for module in nn.Sequential(*layers).modules():
            if isinstance(module, Conv) and isinstance(module.act, nn.SiLU):
                module.act = make_activation(config["activation"])
    return nn.Sequential(*layers), sorted(save)


def build_layer(
    entry: list, channels: list[int], config: dict, detect_cls: type[nn.Module]
) -> tuple[nn.Module, int]:
    """One ``[from, number, module, args]`` entry -> (layer, output channels), given earlier channels."""
    source, number, name, args = entry
    named_args = {"nc": config["nc"], "anchors": config["anchors"], "None": None}
    args = [named_args.get(a, a) if isinstance(a, str) else a for a in args]
    number = repeats = max(round(number * config["depth_multiple"]), 1) if number > 1 else number
    if name in CONV_LIKE:
        cls = CONV_LIKE[name]
        out_channels = make_divisible(args[0] * config["width_multiple"], 8)
        args = [channels[source], out_channels, *args[1:]]
        if cls is C3:  # C3 repeats its bottlenecks itself
            args.insert(2, number)
            number = 1
    elif name == "Concat":
        cls, out_channels = Concat, sum(channels[x] for x in source)
    elif name == "nn.Upsample":
        cls, out_channels = nn.Upsample, channels[source]
    elif name == "Detect":
        cls, out_channels = detect_cls, 0
        args.append([channels[x] for x in source])
    else:
        raise ValueError(
            f"unsupported module {name!r} "
            f"(supported: {', '.join([*CONV_LIKE, 'Concat', 'nn.Upsample', 'Detect'])})"
        )
    layer = nn.Sequential(*(cls(*args) for _ in range(number))) if number > 1 else cls(*args)
    layer.f, layer.type, layer.n, layer.args = source, name, repeats, args
    return layer, out_channels
