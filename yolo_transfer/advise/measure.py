"""What the advisor measures: data scale, label overlap, the BatchNorm shift profile, objectness and compute.

All measurements come from the dataset's labels and one eval-mode pass of the pretrained detector over a
sample of the images; the compute figures come from a few timed training steps per strategy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from yolo_transfer.data.validate import LoadedDataset, Sample
from yolo_transfer.models import DetectionModel, model_groups
from yolo_transfer.models.class_names import match_class_names, normalise_name

# COCO's object sizes (cocodataset.org/#detection-eval, "Detection Evaluation", section 2): "approximately 41%
# of objects are small (area < 32^2), 34% are medium (32^2 < area < 96^2), and 24% are large (area > 96^2)",
# area in pixels of COCO images, whose long side is 640. (COCO counts mask area; we count box area, so the
# target's shares lean slightly larger than a like-for-like comparison would.)
COCO_SIZE_SHARES = {"small": 0.41, "medium": 0.34, "large": 0.24}
COCO_SIZE_LIMITS = (32**2, 96**2)
COCO_LONG_SIDE = 640
ANCHOR_T = 4.0  # yolov5 hyp anchor_t: a label fits an anchor when both side ratios are within 4x (spec 5.8)

EARLY_MODULES = 5  # the stem and the stride-8 stages (0-4) open every YOLOv5 backbone, P5 and P6 alike
TOP_K_OBJECTNESS = 10

# --- data scale and label overlap -----------------------------------------------------------------------


def label_overlap(target: list[str], checkpoint: list[str]) -> dict:
    """Which target classes the checkpoint already names, exactly or by a common synonym."""
    matches = match_class_names(target, checkpoint)
    exact = [
        name for name in target if name in matches and normalise_name(name) == normalise_name(matches[name])
    ]
    synonym = {name: matches[name] for name in target if name in matches and name not in exact}
    new = [name for name in target if name not in matches]
    fraction = (len(exact) + len(synonym)) / max(len(target), 1)
    return {"exact": exact, "synonym": synonym, "new": new, "fraction": fraction}


def data_scale(data: LoadedDataset, anchors_px: np.ndarray, imgsz: int) -> dict:
    """Images, instances per class, backgrounds, and box sizes against COCO's and the checkpoint's anchors."""
    train = data.train
    classes = np.concatenate([s.labels[:, 0] for s in train]).astype(int) if train else np.zeros(0, int)
    counts = np.bincount(classes, minlength=data.nc)
    smallest = int(np.argmin(counts))
    shares = _coco_size_shares(train)
    return {
        "images": len(train),
        "val_images": len(data.val),
        "instances": int(counts.sum()),
        "instances_per_class": dict(zip(data.names, counts.tolist(), strict=True)),
        "smallest_class": {"name": data.names[smallest], "instances": int(counts[smallest])},
        "background_fraction": sum(len(s.labels) == 0 for s in train) / max(len(train), 1),
        "box_sizes": {
            "shares": shares,
            "coco_shares": COCO_SIZE_SHARES,
            # total variation distance between the two size distributions: 0 = same mix, 1 = disjoint
            "distance_to_coco": 0.5 * sum(abs(shares[k] - COCO_SIZE_SHARES[k]) for k in shares),
            "anchor_fit": anchor_fit(train, anchors_px, imgsz),
        },
    }


def _box_wh(samples: list[Sample], long_side: float) -> np.ndarray:
    """(n, 2) label widths and heights in pixels once each image's long side is ``long_side``."""
    sizes = [
        s.labels[:, 3:5] * np.array([s.width, s.height]) * (long_side / max(s.width, s.height))
        for s in samples
        if len(s.labels)
    ]
    return np.concatenate(sizes) if sizes else np.zeros((0, 2))


def _coco_size_shares(samples: list[Sample]) -> dict[str, float]:
    area = _box_wh(samples, COCO_LONG_SIDE).prod(1)
    n = max(len(area), 1)
    small, medium = COCO_SIZE_LIMITS
    return {
        "small": float((area < small).sum() / n),
        "medium": float(((area >= small) & (area < medium)).sum() / n),
        "large": float((area >= medium).sum() / n),
    }


def anchor_fit(samples: list[Sample], anchors_px: np.ndarray, imgsz: int) -> float:
    """YOLOv5's best possible recall (spec 5.8): the share of labels some anchor fits within ``ANCHOR_T``."""
    wh = _box_wh(samples, imgsz)
    if not len(wh):
        return 0.0
    ratio = wh[:, None, :] / anchors_px.reshape(-1, 2)[None]
    best = np.minimum(ratio, 1 / ratio).min(2).max(1)
    return float((best > 1 / ANCHOR_T).mean())


# --- domain shift (BatchNorm statistics) and objectness --------------------------------------------------


def symmetric_kl(mean_a: Tensor, var_a: Tensor, mean_b: Tensor, var_b: Tensor) -> Tensor:
    """KL(a||b) + KL(b||a) between 1-D Gaussians, per channel (the log terms cancel)."""
    diff2 = (mean_a - mean_b) ** 2
    return (var_a + diff2) / (2 * var_b) + (var_b + diff2) / (2 * var_a) - 1


class BatchNormInputs:
    """Per-channel mean and variance of every BatchNorm layer's input, accumulated by forward pre-hooks.

    Each batch's per-channel sums are merged into running totals with Chan et al.'s parallel formula, in
    float64, so the result equals the statistics of all the images at once.
    """

    def __init__(self, model: nn.Module):
        self.layers = {
            f"{index}.{name}" if name else str(index): layer
            for index, module in enumerate(model.model)
            for name, layer in module.named_modules()
            if isinstance(layer, nn.modules.batchnorm._BatchNorm)
        }
        self.totals: dict[str, tuple[int, Tensor, Tensor]] = {}  # name -> (count, mean, M2)

    @contextmanager
    def recording(self) -> Iterator[BatchNormInputs]:
        handles = [layer.register_forward_pre_hook(self._hook(name)) for name, layer in self.layers.items()]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str):
        def record(_layer: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            x = inputs[0].detach()
            count = x.numel() // x.shape[1]
            mean = x.sum((0, 2, 3)).double().cpu() / count  # plain sums: ~5x faster than torch.var_mean
            squares = ((x * x).sum((0, 2, 3)).double().cpu() - count * mean**2).clamp_min(0)
            if name in self.totals:
                seen, seen_mean, seen_squares = self.totals[name]
                total = seen + count
                delta = mean - seen_mean
                mean = seen_mean + delta * count / total
                squares = seen_squares + squares + delta**2 * seen * count / total
                count = total
            self.totals[name] = (count, mean, squares)

        return record

    def shift(self) -> dict[str, float]:
        """Per layer: the mean over channels of the symmetric KL between running and measured statistics."""
        out = {}
        for name, (count, mean, squares) in self.totals.items():
            layer = self.layers[name]
            run_mean, run_var = layer.running_mean.double().cpu(), layer.running_var.double().cpu()
            kl = symmetric_kl(run_mean, run_var + layer.eps, mean, squares / count + layer.eps)
            out[name] = float(kl.mean())
        return out


def shift_stages(model: DetectionModel) -> dict[str, range]:
    """Module ranges of the shift profile: early (stem and stride-8 stages), middle (the rest of the backbone,
    SPPF included) and late (the neck): P5 0-4 / 5-9 / 10-23, P6 0-4 / 5-11 / 12-32."""
    groups = model_groups(model)
    return {
        "early": range(EARLY_MODULES),
        "middle": range(EARLY_MODULES, len(groups["backbone"])),
        "late": range(groups["neck"][0], groups["neck"][-1] + 1),
    }


def summarise_shift(per_layer: dict[str, float], stages: dict[str, range]) -> dict:
    """Per-module means of the layer shifts, their means over ``stages`` (with each stage's first and last
    module) and the overall mean."""
    by_module: dict[int, list[float]] = {}
    for name, value in per_layer.items():
        by_module.setdefault(int(name.split(".")[0]), []).append(value)
    per_module = {index: float(np.mean(values)) for index, values in sorted(by_module.items())}
    means = {
        stage: float(np.mean([v for i, v in per_module.items() if i in modules]))
        for stage, modules in stages.items()
        if any(i in modules for i in per_module)
    }
    return {
        **means,
        "stages": {stage: [modules.start, modules.stop - 1] for stage, modules in stages.items()},
        "overall": float(np.mean(list(per_module.values()))),
        "per_module": {str(i): v for i, v in per_module.items()},
        "per_layer": per_layer,
    }


@torch.no_grad()
def shift_and_objectness(
    model: DetectionModel, loader, device: str | torch.device, on_batch: Callable[[int], None] | None = None
) -> dict:
    """One eval-mode pass: the BN shift profile and the detector's objectness on the images
    (``on_batch(n)`` after each batch of ``n`` images).

    Objectness is the mean over images of the mean of the top-k objectness scores: near 1 where the detector
    sees object-like things it knows, low where nothing looks like the pretraining's objects. The model is
    moved to ``device`` in channels-last memory format; ``forward_s_per_image`` includes the hooks.
    """
    model.eval().to(device, memory_format=torch.channels_last)  # ~25% faster convolutions on a CPU
    inputs = BatchNormInputs(model)
    top_k, images, seconds = [], 0, 0.0
    with inputs.recording():
        for batch in loader:
            x = batch[0].to(device, memory_format=torch.channels_last).float() / 255
            start = time.perf_counter()
            decoded = model(x)[0]
            seconds += time.perf_counter() - start
            k = min(TOP_K_OBJECTNESS, decoded.shape[1])
            top_k.append(decoded[..., 4].topk(k, dim=1).values.mean(1).cpu())
            images += len(x)
            if on_batch is not None:
                on_batch(len(x))
    scores = torch.cat(top_k)
    return {
        "shift": summarise_shift(inputs.shift(), shift_stages(model)),
        "objectness": {"mean_top_k": float(scores.mean()), "k": TOP_K_OBJECTNESS, "images": images},
        "forward_s_per_image": seconds / max(images, 1),
    }


def sample_images(data: LoadedDataset, max_images: int, seed: int = 0) -> list[Sample]:
    """Up to ``max_images`` of the train and val images, a seeded random choice when there are more."""
    pool = data.train + data.val
    if len(pool) <= max_images:
        return pool
    order = np.random.default_rng(seed).permutation(len(pool))[:max_images]
    return [pool[i] for i in sorted(order.tolist())]
