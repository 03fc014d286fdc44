"""YoloDataset (training with mosaic/augmentation, or letterboxed rect batches for validation) and its loader.

Items are ``(image uint8 CHW RGB tensor, labels (n, 6) [0, cls, xc, yc, w, h], path, shapes)``, the image a
view of HWC memory; `collate` stacks them channels_last and writes the image index into column 0. Randomness
comes from the dataset's numpy Generator, seeded from the `seed` (no workers) or, in each loader worker, from
the epoch's seed that the batches carry (`EpochBatches`), so runs repeat exactly and the workers need not be
started again every epoch.
"""

from __future__ import annotations

import math
import multiprocessing
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from yolo_transfer.data.augment import (
    augment_hsv,
    mixup,
    mosaic4,
    random_flips,
    random_perspective,
    xywhn_to_xyxy,
    xyxy_to_xywhn,
)
from yolo_transfer.data.letterbox import letterbox
from yolo_transfer.data.validate import Sample
from yolo_transfer.errors import ConfigError, DataError


class EpochItem(NamedTuple):
    """A training item with what its epoch sets in the main process, which loader workers kept from epoch
    to epoch would not see there: the seed the epoch's workers start their augmentation streams from (worker
    ``k`` from ``seed + k``) and whether mosaic is on (``--close-mosaic`` turns it off in the last epochs)."""

    index: int
    seed: int
    mosaic: bool


class YoloDataset(Dataset):
    """Samples -> network-ready images and labels; `mosaic` may be switched off between epochs."""

    def __init__(
        self,
        samples: list[Sample],
        imgsz: int,
        *,
        augment: bool,
        hyp: dict,
        rect: bool = False,
        batch_size: int = 16,
        pad: float = 0.0,
        stride: int = 32,
        seed: int = 0,
        cache_ram: bool = False,
    ):
        self.imgsz, self.augment, self.hyp, self.rect = imgsz, augment, hyp, rect
        self.samples = sorted(samples, key=lambda s: s.height / s.width) if rect else list(samples)
        self.mosaic = augment and not rect and hyp.get("mosaic", 0) > 0
        self.batch_shapes = rect_batch_shapes(self.samples, imgsz, batch_size, stride, pad) if rect else None
        self.rng = np.random.default_rng(seed)
        self.epoch_seed: int | None = None  # in a loader worker: the epoch seed its stream started from
        self.cached: list[np.ndarray] | None = None
        if cache_ram:
            with ThreadPoolExecutor(max_workers=4) as pool:
                self.cached = list(pool.map(self._read_resized, range(len(self.samples))))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int | EpochItem):
        if isinstance(index, EpochItem):
            self._enter_epoch(index)
            index = index.index
        hyp, sample = self.hyp, self.samples[index]
        shapes = None
        if self.mosaic and self.rng.random() < hyp["mosaic"]:
            image, labels = self.load_mosaic(index)
            if self.rng.random() < hyp.get("mixup", 0.0):
                image, labels = mixup(
                    image, labels, *self.load_mosaic(int(self.rng.integers(len(self)))), self.rng
                )
        else:
            image = self.load_image(index)
            h, w = image.shape[:2]
            shape = self.batch_shapes[index] if self.rect else (self.imgsz, self.imgsz)
            image, ratio, pad = letterbox(image, shape, auto=False, scaleup=self.augment)
            shapes = (
                (sample.height, sample.width),
                ((h / sample.height * ratio[1], w / sample.width * ratio[0]), pad),
            )
            labels = xywhn_to_xyxy(sample.labels, ratio[0] * w, ratio[1] * h, pad[0], pad[1])
            if self.augment:
                image, labels = random_perspective(image, labels, self.rng, **_warp_args(hyp))
        labels = xyxy_to_xywhn(labels, image.shape[1], image.shape[0])
        if self.augment:
            image = augment_hsv(image, self.rng, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"])
            image, labels = random_flips(image, labels, self.rng, hyp["flipud"], hyp["fliplr"])
        targets = torch.zeros((len(labels), 6), dtype=torch.float32)
        targets[:, 1:] = torch.from_numpy(labels)
        rgb = torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        return rgb.permute(2, 0, 1), targets, str(sample.image), shapes

    def _enter_epoch(self, item: EpochItem) -> None:
        """Take the epoch's settings; a loader worker's first item of an epoch starts its stream anew, as a
        worker started for the epoch would (without workers the dataset's one stream goes on)."""
        self.mosaic = item.mosaic
        worker = get_worker_info()
        if worker is not None and item.seed != self.epoch_seed:
            self.rng, self.epoch_seed = np.random.default_rng(item.seed + worker.id), item.seed

    def load_image(self, index: int) -> np.ndarray:
        """BGR image with its long side resized to imgsz (from the RAM cache when there is one)."""
        return self.cached[index] if self.cached is not None else self._read_resized(index)

    def load_mosaic(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """This image and 3 random others in a 2x2 mosaic, warped down to imgsz x imgsz."""
        indices = [index, *self.rng.integers(0, len(self), 3).tolist()]
        self.rng.shuffle(indices)
        tiles = []
        for i in indices:
            image = self.load_image(i)
            tiles.append((image, xywhn_to_xyxy(self.samples[i].labels, image.shape[1], image.shape[0])))
        canvas, labels = mosaic4(tiles, self.imgsz, self.rng)
        return random_perspective(canvas, labels, self.rng, **_warp_args(self.hyp), border=-self.imgsz // 2)

    def _read_resized(self, index: int) -> np.ndarray:
        path = self.samples[index].image
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"{path}: image can no longer be read (changed since validation?)")
        h0, w0 = image.shape[:2]
        ratio = self.imgsz / max(h0, w0)
        if ratio == 1:
            return image
        interp = cv2.INTER_LINEAR if (self.augment or ratio > 1) else cv2.INTER_AREA
        # truncated like the reference loader: rounding up shifts rect val mAP away from the reference
        size = (max(int(w0 * ratio), 1), max(int(h0 * ratio), 1))
        return cv2.resize(image, size, interpolation=interp)


def rect_batch_shapes(samples: list[Sample], imgsz: int, batch_size: int, stride: int, pad: float):
    """(h, w) letterbox shape per sample, batch by batch (aspect-sorted): fits the batch's extreme aspect."""
    aspect = np.array([s.height / s.width for s in samples])
    shapes = []
    for start in range(0, len(samples), batch_size):
        batch = aspect[start : start + batch_size]
        low, high = batch.min(), batch.max()
        ratio_hw = (high, 1.0) if high < 1 else (1.0, 1 / low) if low > 1 else (1.0, 1.0)
        shape = tuple(int(v) for v in np.ceil(np.array(ratio_hw) * imgsz / stride + pad) * stride)
        shapes += [shape] * len(batch)
    return shapes


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[str], list]:
    """Stack images into an NCHW batch laid out channels_last (the layout the trainer feeds the model, so no
    copy is made on the way); concatenate targets with the image index written into column 0."""
    images, targets, paths, shapes = zip(*batch, strict=True)
    for i, t in enumerate(targets):
        t[:, 0] = i
    stacked = torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
    return stacked, torch.cat(targets, 0), list(paths), list(shapes)


def build_dataloader(
    samples: list[Sample],
    imgsz: int,
    batch_size: int,
    *,
    augment: bool,
    hyp: dict,
    rect: bool = False,
    pad: float = 0.0,
    shuffle: bool = False,
    workers: int = 0,
    seed: int = 0,
    cache_ram: bool = False,
) -> DataLoader:
    """A DataLoader over validated samples; deterministic for a given seed and number of workers.

    Its workers are kept from one pass to the next, which saves starting them for every pass (on a GPU host a
    pass of 160 images with 8 workers took 0.21-0.24 s started anew, 0.10-0.11 s kept). The batches carry each
    epoch's seed (`EpochBatches`), so they are those of workers started anew every pass.
    """
    if rect and shuffle:
        raise ConfigError("rect batches need a fixed order: use shuffle=False with rect=True")
    if not samples:
        raise DataError("no samples to load")
    dataset = YoloDataset(
        samples,
        imgsz,
        augment=augment,
        hyp=hyp,
        rect=rect,
        batch_size=batch_size,
        pad=pad,
        seed=seed,
        cache_ram=cache_ram,
    )
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_sampler=EpochBatches(dataset, min(batch_size, len(dataset)), generator, shuffle),
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_seed_worker,
        generator=torch.Generator(),  # the DataLoader's own seed draw, which the batches' seeds replace
        pin_memory=torch.cuda.is_available(),
        multiprocessing_context=_worker_context(workers),
        persistent_workers=workers > 0,
    )


class EpochBatches(Sampler[list[EpochItem]]):
    """A loader's batches of `EpochItem`s, in order or shuffled, drawn from ``generator`` as torch's
    DataLoader draws from its generator when its workers start every epoch: the epoch's worker seed, then a
    shuffling RandomSampler's permutation and its (empty) tail permutation. So runs repeat those of such a
    loader exactly (same batches, same generator state at every epoch's end) while the workers are kept."""

    def __init__(self, dataset: YoloDataset, batch_size: int, generator: torch.Generator, shuffle: bool):
        self.dataset, self.batch_size, self.generator, self.shuffle = dataset, batch_size, generator, shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[list[EpochItem]]:
        n = len(self.dataset)
        seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator).item())
        order = torch.randperm(n, generator=self.generator).tolist() if self.shuffle else range(n)
        mosaic = self.dataset.mosaic  # read when the epoch starts, after the trainer may have turned it off
        for start in range(0, n, self.batch_size):
            yield [EpochItem(index, seed, mosaic) for index in order[start : start + self.batch_size]]
        if self.shuffle:
            torch.randperm(n, generator=self.generator)


def _worker_context(workers: int) -> multiprocessing.context.BaseContext | None:
    """Fork the loader workers on Linux, its default, even in a process that was itself spawned (``compare``
    runs each training in one): a spawn-started process would start its workers by spawning too, re-importing
    torch for every worker of every epoch (about 1.5 s each on a 2-core CPU). Elsewhere: the default."""
    return multiprocessing.get_context("fork") if workers and sys.platform == "linux" else None


def _seed_worker(worker_id: int) -> None:
    """Give each worker's dataset copy its own Generator, seeded from the loader's generator (our loaders'
    `EpochItem`s reseed it at each epoch's first item; a DDP rank's loader keeps this one); no cv2 threads."""
    info = get_worker_info()
    info.dataset.rng = np.random.default_rng(info.seed)
    cv2.setNumThreads(0)


def _warp_args(hyp: dict) -> dict:
    return {k: hyp[k] for k in ("degrees", "translate", "scale", "shear", "perspective")}
