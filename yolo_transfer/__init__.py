"""yolo-transfer: find, run and explain the best way to fine-tune a pretrained YOLOv5 detector.

The Python API (``yolo_transfer.api``) is importable from here: ``import yolo_transfer as yt;
yt.load("best.safetensors").predict("bus.jpg")``. It is loaded on first use, so the command line stays fast.
"""

__version__ = "0.1.0"

__all__ = [
    "Advice", "Comparison", "Detection", "ImageDetections", "Model", "TrainRun", "advise", "compare",
    "export", "load",
]  # fmt: skip


def __getattr__(name: str):
    if name in __all__:
        from yolo_transfer import api

        return getattr(api, name)
    raise AttributeError(f"module 'yolo_transfer' has no attribute {name!r}")
