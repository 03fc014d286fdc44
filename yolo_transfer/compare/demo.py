"""``yolo-transfer demo`` (``make demo``): the whole product on built-in data in a few minutes of CPU.

1. Generate the synthetic ``target`` domain (``data/synthetic.py``) into ``OUT/data/target``.
2. Start from a yolov5n pretrained on the synthetic ``source`` domain: the fp16 checkpoint shipped in
   ``yolo_transfer/assets/`` or, with ``--rebuild-weights --weights yolov5n.pt``, one made now from the
   official COCO yolov5n by :func:`pretrain_on_source` (the recipe that produced the shipped file).
3. ``compare`` full, freeze and staged on the target domain at one epoch budget and write the report.

``--data`` and ``--weights`` run the same comparison on real data and weights.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rich.console import Console

from yolo_transfer.compare import compare
from yolo_transfer.engine.budget import Budget
from yolo_transfer.errors import ConfigError

DEMO_WEIGHTS = "demo_yolov5n_source.safetensors"
STRATEGIES = ["full", "freeze", "staged"]
SHIFT = 0.5
TARGET = {"n_images": 240, "imgsz": 128, "seed": 1}
SOURCE = {"n_images": 400, "imgsz": 128, "seed": 0}
PRETRAIN = {"epochs": 25, "imgsz": 128, "batch": 16, "optimizer": "AdamW", "lr0": 0.001, "hyp": "none"}
# two runs at a time, one core and one torch thread each: as fast as one run on two threads when the machine
# is idle, and far faster when other processes compete for the cores (OpenMP threads then wait on each other)
DEMO_RUN = {"epochs": 12, "batch": 8, "seeds": [0, 1], "jobs": 2}
SYNTHETIC_RUN = {"imgsz": TARGET["imgsz"], "hyp": "none"}  # no augmentation needed in a dozen epochs
REAL_DATA_RUN = {"imgsz": 320, "hyp": "low"}


def shipped_weights() -> Path:
    """The demo checkpoint inside the installed package."""
    return Path(str(resources.files("yolo_transfer").joinpath("assets", DEMO_WEIGHTS)))


def pretrain_on_source(init_weights: Path, out: Path, console: Console) -> Path:
    """The shipped checkpoint's recipe: ``init_weights`` (official COCO yolov5n.pt) trained on the source.

    Every module trains for ``PRETRAIN["epochs"]`` epochs on the ``SOURCE["n_images"]`` synthetic source
    images (80 % train) at image size 128: AdamW at lr0 0.001 (a short run: few optimizer steps, so Adam, as
    ultralytics' ``optimizer=auto`` picks for short runs; no bias warmup LR, which suits Adam), no
    augmentation (``hyp none``: the features become specific to the source look, which is what the demo's
    shift then tests), seed 0. The best (EMA) weights are written in half precision (3.7 MB).
    """
    from yolo_transfer.data import load_hyp
    from yolo_transfer.data.synthetic import make_domain
    from yolo_transfer.engine.trainer import TrainConfig, train
    from yolo_transfer.models import load_model, save_model
    from yolo_transfer.strategies import load_strategy

    source = make_domain(out / "data" / "source", "source", shift=SHIFT, **SOURCE)
    run_dir = out / "source-pretrain"
    hyp = load_hyp(PRETRAIN["hyp"], warmup_bias_lr=0.0)
    config = TrainConfig(
        data=str(source), out=run_dir, weights=str(init_weights), seed=0, workers=0, cache=True,
        **{**PRETRAIN, "hyp": hyp},
    )  # fmt: skip
    console.print(f"pretraining {init_weights} on {SOURCE['n_images']} source-domain images -> {run_dir}")
    summary = train(config, load_strategy("full", epochs=PRETRAIN["epochs"]), resume=False)
    model, metadata = load_model(run_dir / "weights" / "best.safetensors")
    recipe = {
        "recipe": "yolo-transfer demo --rebuild-weights",
        "init": Path(init_weights).name,
        "shift": SHIFT,
    }
    weights = out / DEMO_WEIGHTS
    save_model(model.half(), weights, {**metadata, "provenance": {**recipe, **PRETRAIN, **SOURCE}})
    console.print(
        f"source-domain mAP50-95 {summary['best']['map50_95']:.3f} after {summary['epochs']} epochs "
        f"({summary['wall_seconds'] / 60:.1f} min); weights: {weights} "
        f"(to ship them: cp {weights} {shipped_weights()})"
    )
    return weights


def demo_command(args) -> int:
    """Make the data, get the source-pretrained weights, compare full/freeze/staged, print the report path."""
    from yolo_transfer.data.synthetic import make_domain

    console = Console()
    out = Path(args.out)
    if args.data:
        data, run = args.data, REAL_DATA_RUN
    else:
        data, run = str(make_domain(out / "data" / "target", "target", shift=SHIFT, **TARGET)), SYNTHETIC_RUN
        console.print(f"synthetic target domain (shift {SHIFT}): {data}")
    if args.rebuild_weights:
        if not args.weights:
            raise ConfigError(
                "--rebuild-weights needs --weights yolov5n.pt: the COCO checkpoint it starts from"
            )
        weights = pretrain_on_source(Path(args.weights), out, console)
    elif args.weights:
        weights = Path(args.weights)
    else:
        weights = shipped_weights()
        if not weights.is_file():
            raise ConfigError(
                f"{weights}: demo checkpoint missing; make it with yolo-transfer demo --rebuild-weights "
                "--weights yolov5n.pt"
            )
    options = {
        **run, "batch": DEMO_RUN["batch"], "optimizer": "SGD", "lr0": None, "cos_lr": False, "patience": 100,
        "device": "cpu", "workers": 0, "cache": True, "val_fraction": 0.2, "split_seed": 0,
    }  # fmt: skip
    results = compare(
        str(data), str(weights), STRATEGIES, Budget("epochs", DEMO_RUN["epochs"]), DEMO_RUN["seeds"],
        out / "compare", jobs=DEMO_RUN["jobs"], train_options=options, console=console,
    )  # fmt: skip
    return 0 if all(run["status"] == "done" for run in results["runs"]) else 1
