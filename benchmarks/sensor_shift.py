"""A YOLO copy of a dataset as a simulated camera of another kind would see it.

The study uses it for data of classes the checkpoint knows, taken with another sensor (issue 10's held-out
task), which ``../shared`` does not hold. Three sensors:

- ``thermal`` (default): inverted luminance (bright where the visible image is dark, as warm bodies are in
  long-wave infrared), at half the resolution, with sensor noise, as three equal channels;
- ``mono``: a monochrome camera, luminance at full resolution with light sensor noise, as three equal
  channels; ``--colour`` keeps a share of the original colours (a camera with weak colour);
- ``night``: a colour camera in low light: an eighth of the light, each channel's photons counted (Poisson
  shot noise) with read noise, raised again by the camera's gain to a darker image than by day, so the noise
  differs between channels (colour noise).

Each is a model of a sensor change, not a real camera, and the study reports it as simulated. Labels are
kept (the pixels are EXIF-corrected, so the boxes stay right); the noise is seeded per image, so a copy is
reproducible. ::

    python benchmarks/sensor_shift.py runs/study/subsets/dawn_fog-n100/data.yaml \\
        --out runs/study/subsets/dawn_fog-thermal-n100
    python benchmarks/sensor_shift.py runs/study/subsets/dawn_fog-n50/data.yaml --sensor mono \\
        --out runs/study/subsets/dawn_fog-mono-n50
    python benchmarks/sensor_shift.py runs/study/subsets/dawn_fog-n50/data.yaml --sensor mono --colour 0.2 \\
        --out runs/study/subsets/dawn_fog-mono20-n50
    python benchmarks/sensor_shift.py ../shared/data/dawn_fog/data.yaml --sensor night \\
        --out runs/study/subsets/dawn_fog-night
"""

from __future__ import annotations

import argparse
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np

from yolo_transfer.data import load_dataset
from yolo_transfer.data.convert import move_yolo_dataset, write_yolo_dataset

NOISE_SIGMA = 6.0  # grey levels
RESOLUTION = 0.5  # of each side
MONO_NOISE_SIGMA = 3.0  # grey levels
NIGHT_LIGHT = 1 / 8  # of the daylight that reaches the sensor
NIGHT_BRIGHTNESS = 0.6  # the gain restores this share of the daylight image's levels
NIGHT_ELECTRONS = 4.0  # photo-electrons per grey level in daylight
NIGHT_READ_NOISE = 2.0  # electrons


def thermal_like(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` (BGR uint8) as inverted, half-resolution, noisy luminance in three equal channels."""
    inverted = 255 - cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    height, width = inverted.shape
    small = (max(1, round(width * RESOLUTION)), max(1, round(height * RESOLUTION)))
    blurred = cv2.resize(cv2.resize(inverted, small, interpolation=cv2.INTER_AREA), (width, height))
    noisy = blurred.astype(np.float32) + rng.normal(0.0, NOISE_SIGMA, blurred.shape).astype(np.float32)
    return cv2.cvtColor(np.clip(noisy, 0, 255).round().astype(np.uint8), cv2.COLOR_GRAY2BGR)


def monochrome(image: np.ndarray, rng: np.random.Generator, colour: float = 0.0) -> np.ndarray:
    """``image`` (BGR uint8) as full-resolution luminance with light noise; ``colour`` (0-1) is the share of
    the original colours kept (0: three equal channels)."""
    luminance = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    noise = rng.normal(0.0, MONO_NOISE_SIGMA, luminance.shape).astype(np.float32)
    mixed = colour * image.astype(np.float32) + (1.0 - colour) * luminance[..., None]
    return np.clip(mixed + noise[..., None], 0, 255).round().astype(np.uint8)


def low_light(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` (BGR uint8) as a colour camera sees it at night: ``NIGHT_LIGHT`` of the light, each channel's
    electrons drawn from a Poisson law with Gaussian read noise, scaled back to ``NIGHT_BRIGHTNESS`` of the
    daylight levels (mid-grey: about 10 grey levels of noise, independent per channel)."""
    electrons = rng.poisson(image.astype(np.float64) * (NIGHT_ELECTRONS * NIGHT_LIGHT))
    electrons = electrons + rng.normal(0.0, NIGHT_READ_NOISE, image.shape)
    gain = NIGHT_BRIGHTNESS / (NIGHT_ELECTRONS * NIGHT_LIGHT)
    return np.clip(electrons * gain, 0, 255).round().astype(np.uint8)


def sensor_copy(data: str | Path, out: str | Path, sensor: str = "thermal", colour: float = 0.0) -> Path:
    """Write ``data`` (any dataset yolo-transfer reads) to ``out`` with every image seen by ``sensor``
    ("thermal", "mono", keeping ``colour`` of the colours, or "night"); return its data.yaml. An existing copy
    is reused."""
    out = Path(out)
    yaml_path = out / "data.yaml"
    if yaml_path.is_file():
        return yaml_path
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_yolo_dataset(load_dataset(data, val_fraction=0.2, seed=0), partial)
    for path in sorted((partial / "images").rglob("*")):
        if path.is_file():
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            rng = np.random.default_rng(zlib.crc32(path.relative_to(partial).as_posix().encode()))
            target = path.with_suffix(".png")  # lossless: JPEG would smooth the noise away
            if sensor == "thermal":
                pixels = thermal_like(image, rng)
            elif sensor == "night":
                pixels = low_light(image, rng)
            else:
                pixels = monochrome(image, rng, colour)
            cv2.imwrite(str(target), pixels)
            if target != path:
                path.unlink()
    return move_yolo_dataset(partial, out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="data.yaml (or any dataset yolo-transfer reads)")
    parser.add_argument("--out", required=True, help="output folder (reused if it holds a finished copy)")
    parser.add_argument(
        "--sensor", choices=("thermal", "mono", "night"), default="thermal", help="simulated sensor"
    )
    parser.add_argument(
        "--colour", type=float, default=0.0, help="mono: share of the original colours kept (0 to 1)"
    )
    args = parser.parse_args()
    if not 0.0 <= args.colour <= 1.0:
        parser.error(f"--colour {args.colour}: must be between 0 and 1")
    print(f"wrote {sensor_copy(args.data, args.out, args.sensor, args.colour)}")


if __name__ == "__main__":
    main()
