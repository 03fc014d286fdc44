"""The YOLOv5 model family: building from configs, fusing, reading official and own checkpoints."""

from yolo_transfer.models.checkpoint import load_model, save_model
from yolo_transfer.models.yolo import Detect, DetectionModel, build_model, model_groups

__all__ = ["Detect", "DetectionModel", "build_model", "load_model", "model_groups", "save_model"]
