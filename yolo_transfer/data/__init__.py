"""Datasets: YOLO/VOC/COCO readers, cached validation, augmentation, loaders, built-in synthetic domains."""

from yolo_transfer.data.dataset import YoloDataset, build_dataloader
from yolo_transfer.data.hyps import load_hyp
from yolo_transfer.data.letterbox import letterbox
from yolo_transfer.data.validate import LoadedDataset, Sample, ValidationReport, load_dataset

__all__ = [
    "LoadedDataset",
    "Sample",
    "ValidationReport",
    "YoloDataset",
    "build_dataloader",
    "letterbox",
    "load_dataset",
    "load_hyp",
]
