"""``yolo-transfer advise``: measure the data and its shift from the pretraining, recommend a strategy.

``advise()`` runs the measurements of ``measure.py`` (one pass over a sample of at most ``max_images``
images, plus a few timed training steps per strategy), condenses them into a ``rules.Profile`` and walks the
rule table of ``rules.py``; ``advise_command`` prints the result as a report or as one JSON object and
writes it to ``advise.json`` in its run folder (``runs/advise/exp``, ``exp2``, ...).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from yolo_transfer.advise.rules import NOTES, Profile, recommend, training_batch
from yolo_transfer.callable_module import ApiSubpackage
from yolo_transfer.engine.budget import Budget, epochs_for_images, parse_budget
from yolo_transfer.engine.train_config import check_train_imgsz
from yolo_transfer.engine.train_progress import counting_bars
from yolo_transfer.errors import ConfigError

if TYPE_CHECKING:  # for the annotation only: advise() imports the models when it runs
    from yolo_transfer.models import DetectionModel

__all__ = ["advise", "advise_command", "reapply_rules", "recommend_strategy"]

BATCH = 16  # images per forward pass when measuring
WIDTHS = {"n": 0.25, "s": 0.5, "m": 0.75, "l": 1.0, "x": 1.25}  # width_multiple of the yolov5 sizes
CHECKPOINT_SETTINGS = {"model_size", "backbone_modules"}  # the settings read from the checkpoint
ADVISE_JSON = "advise.json"


def advise(
    data: str | Path,
    weights: str | Path,
    *,
    budget: str | None = None,
    target_map: float | None = None,
    imgsz: int = 320,
    max_images: int = 500,
    device: str = "cpu",
    compute: bool = True,
    console: Console | None = None,
) -> dict:
    """Measure ``data`` against the pretrained ``weights`` and recommend how to fine-tune.

    ``budget`` is ``epochs=N``, ``time=MIN`` or ``images=K``. ``compute=False`` skips the timed training
    steps unless the budget is a time. With a ``console``, bars with ETA show the images measured and the
    strategies' training steps timed. Returns a JSON-ready dict: the measurements (``scale``, ``labels``,
    ``shift``, ``objectness``, ``compute``), the ``recommendation`` with a reason for every choice and the
    exact ``command``, and ``notes``.
    """
    from yolo_transfer.advise import measure
    from yolo_transfer.data import build_dataloader, load_dataset, load_hyp
    from yolo_transfer.models import load_model

    start = time.perf_counter()
    seconds = {}
    if max_images < 1:
        raise ConfigError(f"--max-images must be >= 1, got {max_images}")
    check_train_imgsz(imgsz)  # the recommended command trains at this size
    parsed = parse_budget(budget) if budget else None
    dataset = load_dataset(data)
    model, metadata = load_model(weights)
    anchors_px = (model.detect.anchors * model.stride.view(-1, 1, 1)).cpu().numpy()
    seconds["load"] = time.perf_counter() - start

    scale = measure.data_scale(dataset, anchors_px, imgsz)
    labels = measure.label_overlap(dataset.names, list(model.names))
    sample = measure.sample_images(dataset, max_images)
    loader = build_dataloader(sample, imgsz, BATCH, augment=False, hyp=load_hyp("none"))
    budget_s = parsed.max_seconds if parsed else None
    timed = compute or budget_s is not None
    with counting_bars(console) as bars:
        measured = bars.add_task("images measured", total=len(sample))
        steps = bars.add_task("strategies timed (training steps)", total=None, visible=timed)
        probe = measure.shift_and_objectness(model, loader, device, lambda n: bars.advance(measured, n))
        seconds["measure"] = time.perf_counter() - start - seconds["load"]
        timings = None
        if timed:

            def on_step(done: int, total: int) -> None:
                bars.update(steps, completed=done, total=total)

            batch = training_batch(scale["images"])
            timings = _time_strategies(model, dataset, imgsz, batch, device, budget_s, on_step)
    seconds["compute"] = time.perf_counter() - start - seconds["load"] - seconds["measure"]
    measured = {
        "data": str(data),
        "weights": str(weights),
        "settings": {
            "imgsz": imgsz,
            "max_images": max_images,
            "device": device,
            "budget": budget,
            "target_map": target_map,
            **_checkpoint_settings(model, metadata),
        },
        "scale": scale,
        "labels": labels,
        "shift": probe["shift"],
        "objectness": probe["objectness"],
        "compute": timings,
    }
    return _advice(measured) | {"seconds": seconds | {"total": time.perf_counter() - start}}


def reapply_rules(saved: dict) -> dict:
    """A saved ``advise.json`` with today's rule table applied to its measurements: nothing is read or timed
    again, so a changed rule can be checked against earlier measurements (the transfer study's reports)."""
    settings = saved["settings"]
    if not settings.keys() >= CHECKPOINT_SETTINGS:  # saved before they were: read them from the checkpoint
        from yolo_transfer.models import load_model

        settings = _checkpoint_settings(*load_model(saved["weights"])) | settings
    budget = settings["budget"]
    if budget is not None and parse_budget(budget).kind == "time" and saved["compute"] is None:
        raise ConfigError(f"{saved['data']}: the saved advice has no timings for its time budget {budget}")
    return saved | _advice(saved | {"settings": settings})


def _advice(measured: dict) -> dict:
    """The measurements with the rule table's recommendation (and its command) and the notes that apply."""
    settings = measured["settings"]
    budget = parse_budget(settings["budget"]) if settings["budget"] else None
    profile = _profile(measured, budget)
    rec = recommend(profile)
    data, weights = measured["data"], measured["weights"]
    command = rec.command(data, weights, imgsz=settings["imgsz"], device=settings["device"])
    return measured | {
        "recommendation": rec.to_dict() | {"command": command},
        "notes": [note.render(profile) for note in NOTES if note.predicate(profile)],
    }


def _time_strategies(
    model, dataset, imgsz: int, batch: int, device: str, budget_s: float | None, on_step
) -> dict:
    """Seconds per epoch of every built-in strategy (and the epochs and phases within ``budget_s``), measured
    here with the cost model ``compare`` uses for time budgets (engine/cost.py), at the ``batch`` the advice
    will recommend (a GPU step's seconds per image depend on it); ``on_step(done, total)``."""
    from yolo_transfer.data import load_hyp
    from yolo_transfer.engine.cost import NOMINAL_EPOCHS, measure_costs
    from yolo_transfer.strategies import list_strategies, load_strategy

    names = list_strategies()
    resolved = [load_strategy(name, epochs=NOMINAL_EPOCHS) for name in names]
    adapted = _adapted(model, dataset.names)
    costs = measure_costs(
        adapted, resolved, dataset, imgsz=imgsz, batch=batch, hyp=load_hyp("low"), device=device,
        on_step=on_step,
    )  # fmt: skip
    strategies = {}
    for name, strategy in zip(names, resolved, strict=True):
        entry = {
            "phase_epoch_s": costs.strategy_epoch_seconds(strategy, adapted),
            "epoch_s": costs.mean_epoch_seconds(name, adapted),
        }
        if budget_s is not None:
            entry["epochs_fit"], entry["phases_fit"] = costs.time_plan(name, adapted, budget_s)
        strategies[name] = entry
    return {"strategies": strategies, **costs.to_dict(), "budget_s": budget_s}


def _adapted(model, names: list[str]):
    """The pretrained model with a Detect head for ``names``, as training will use it."""
    from yolo_transfer.models.transfer import transfer_weights
    from yolo_transfer.models.yolo import build_model

    if list(model.names) == list(names):
        return model
    adapted = build_model(copy.deepcopy(model.yaml), names=list(names))
    transfer_weights(model.state_dict(), list(model.names), adapted)
    return adapted


def _profile(measured: dict, budget: Budget | None) -> Profile:
    """The flat summary of the measurements (``advise()``'s result without the advice) that the rule table
    reads."""
    scale, settings = measured["scale"], measured["settings"]
    budget_epochs = None
    if budget is not None and budget.kind == "epochs":
        budget_epochs = int(budget.value)
    elif budget is not None and budget.kind == "images":
        budget_epochs = epochs_for_images(budget, scale["images"])
    epochs_fit = None
    if budget is not None and budget.kind == "time":
        strategies = measured["compute"]["strategies"]
        fitting = {name: entry for name, entry in strategies.items() if _all_phases_fit(entry)}
        epochs_fit = {name: entry["epochs_fit"] for name, entry in fitting.items()}
    shift = measured["shift"]
    return Profile(
        images=scale["images"],
        val_images=scale["val_images"],
        nc=len(scale["instances_per_class"]),
        min_class_instances=scale["smallest_class"]["instances"],
        smallest_class=scale["smallest_class"]["name"],
        max_class_instances=max(scale["instances_per_class"].values()),
        background_fraction=scale["background_fraction"],
        label_overlap=measured["labels"]["fraction"],
        shift_early=shift["early"],
        shift_middle=shift["middle"],
        shift_late=shift["late"],
        shift_overall=shift["overall"],
        objectness=measured["objectness"]["mean_top_k"],
        large_box_share=scale["box_sizes"]["shares"]["large"],
        anchor_fit=scale["box_sizes"]["anchor_fit"],
        model_size=settings["model_size"],
        backbone_modules=settings["backbone_modules"],
        imgsz=settings["imgsz"],
        budget_epochs=budget_epochs,
        epochs_fit=epochs_fit,
        target_map=settings.get("target_map"),
    )


def _all_phases_fit(entry: dict) -> bool:
    """The time budget's plan of a strategy runs all its phases (one too short for its last phase's
    ``min_epochs`` runs those before it: that strategy is not what the budget fits)."""
    return entry.get("phases_fit", len(entry["phase_epoch_s"])) == len(entry["phase_epoch_s"])


def _checkpoint_settings(model: DetectionModel, metadata: dict) -> dict:
    """What the rules read from the checkpoint: its size, n|s|m|l|x (the size whose width multiple, n 0.25
    ... x 1.25, is closest to the checkpoint's), and the number of its backbone modules (P5 10, P6 12)."""
    from yolo_transfer.models import model_groups

    width = metadata["cfg"].get("width_multiple", 0.25)
    return {
        "model_size": min(WIDTHS, key=lambda size: abs(WIDTHS[size] - width)),
        "backbone_modules": len(model_groups(model)["backbone"]),
    }


def recommend_strategy(data: str | Path, weights: str | Path, **kwargs) -> str:
    """The built-in strategy ``advise`` recommends (``compare --strategies auto``); untimed by default."""
    kwargs.setdefault("compute", False)
    return advise(data, weights, **kwargs)["recommendation"]["strategy"]


def auto_strategy(data: str, weights: str | None, *, epochs: int, imgsz: int, device: str) -> str:
    """``train --strategy auto``: the strategy ``advise`` recommends for this data, checkpoint and epochs."""
    if not weights:
        raise ConfigError("--strategy auto needs --weights: advise measures the data against the checkpoint")
    name = recommend_strategy(data, weights, budget=f"epochs={epochs}", imgsz=imgsz, device=device)
    print(f"--strategy auto -> {name} (yolo-transfer advise)")
    return name


def advise_command(args) -> int:
    """``yolo-transfer advise``: a readable report, or one JSON object with ``--json``; both write
    ``advise.json`` into the run folder ``args.out``."""
    from yolo_transfer.engine import run_log
    from yolo_transfer.engine.outputs import ensure_writable_dir

    out = ensure_writable_dir(args.out)
    result = advise(
        args.data,
        args.weights,
        budget=args.budget,
        target_map=args.target_map,
        imgsz=args.imgsz,
        max_images=args.max_images,
        device=args.device,
        console=Console(stderr=args.json),
    )
    run_log.write_json(out / ADVISE_JSON, result)
    if args.json:
        print(json.dumps(result))
    else:
        from yolo_transfer.advise.report import print_report

        print_report(result)
    return 0


sys.modules[__name__].__class__ = ApiSubpackage  # ``yt.advise(...)`` calls api.advise
