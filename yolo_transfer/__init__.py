"""yolo-transfer: find, run and explain the best way to fine-tune a pretrained YOLOv5 detector."""

__version__ = "0.1.0"
