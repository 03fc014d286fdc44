"""``yolo-transfer compare``: strategies side by side at a matched budget, and a report that explains them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

from yolo_transfer.callable_module import ApiSubpackage
from yolo_transfer.compare.report import write_report
from yolo_transfer.compare.results import read_run
from yolo_transfer.compare.runner import RunSpec, device_lanes, in_fresh_process, run_all
from yolo_transfer.engine.budget import Budget, parse_budget
from yolo_transfer.engine.outputs import ensure_writable_dir, write_atomic
from yolo_transfer.errors import ConfigError
from yolo_transfer.option_checks import require_weights_file

__all__ = ["compare", "compare_command", "parse_budget", "parse_seeds"]

# Settings that change what a run computes: a folder holding runs made with others cannot be reused.
FINGERPRINT_KEYS = (
    "data", "weights", "budget", "imgsz", "batch", "hyp", "optimizer", "lr0", "cos_lr", "patience",
    "val_fraction", "split_seed",
)  # fmt: skip


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers such as 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: expected distinct comma-separated integers such as 0,1,2")
    return seeds


def strategy_labels(strategies: list[str]) -> dict[str, str]:
    """{label in folders and reports: name or path for load_strategy}; a YAML file is labelled by its stem."""
    from yolo_transfer.strategies import list_strategies

    builtin = set(list_strategies())
    labels: dict[str, str] = {}
    for entry in strategies:
        label = entry if entry in builtin else Path(entry).stem
        if label in labels and labels[label] != entry:
            raise ConfigError(f"--strategies: '{labels[label]}' and '{entry}' would share the name '{label}'")
        labels[label] = entry
    return labels


def resolve_auto(
    strategies: list[str], data: str, weights: str, budget: Budget, imgsz: int, device: str
) -> list[str]:
    """Replace ``auto`` by the strategy ``advise`` recommends for this data, weights and budget (measured
    in a process of its own, which frees the model and its buffers before the runs start)."""
    if "auto" not in strategies:
        return strategies
    from yolo_transfer.advise import recommend_strategy

    advised = in_fresh_process(
        recommend_strategy,
        data,
        weights,
        budget=f"{budget.kind}={budget.value:g}",
        imgsz=imgsz,
        device=device,
    )
    Console().print(f"auto -> {advised} (yolo-transfer advise)")
    resolved = [advised if entry == "auto" else entry for entry in strategies]
    return list(dict.fromkeys(resolved))


def check_run_options(labels: dict[str, str], data: str, weights: str, train_options: dict) -> None:
    """What a run would refuse (options, strategy files), refused once before any folder is written."""
    from yolo_transfer.engine.cost import NOMINAL_EPOCHS
    from yolo_transfer.engine.train_config import TrainConfig, check_config
    from yolo_transfer.strategies import load_strategy

    check_config(TrainConfig(data=data, out=Path(), weights=weights, **train_options), resume=True)
    for entry in labels.values():
        load_strategy(entry, epochs=NOMINAL_EPOCHS)


def check_out_dir(out: Path, setting: dict) -> None:
    """Refuse an output folder whose earlier runs were made with other settings (they would be skipped)."""
    path = out / "compare.json"
    fingerprint = {key: setting[key] for key in FINGERPRINT_KEYS}
    if path.is_file():
        earlier = json.loads(path.read_text())
        changed = [key for key in FINGERPRINT_KEYS if earlier.get(key) != fingerprint[key]]
        if changed:
            raise ConfigError(
                f"{path}: this folder holds runs made with another {', '.join(changed)}; use another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(fingerprint, indent=2).encode())


def compare(
    data: str,
    weights: str,
    strategies: list[str],
    budget: Budget,
    seeds: list[int],
    out: Path,
    *,
    jobs: int = 1,
    backend: str = "local",
    devices: str | None = None,
    train_options: dict,
    console: Console | None = None,
) -> dict:
    """Run ``strategies`` x ``seeds`` from ``weights`` on ``data`` at ``budget``; the report goes to ``out``.

    ``train_options`` are the TrainConfig fields every run shares (imgsz, batch, hyp, optimizer, lr0, cos_lr,
    patience, device, workers, cache, val_fraction). ``devices`` (e.g. ``0,1,2,3``): one run on each GPU at a
    time instead of ``jobs`` runs on ``device``. Returns the results.json document.
    """
    from yolo_transfer.data import load_dataset

    console = console or Console()
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    lanes = device_lanes(devices) if devices else None
    ensure_writable_dir(out)
    require_weights_file(weights)
    dataset = load_dataset(data, val_fraction=train_options["val_fraction"], seed=train_options["split_seed"])
    strategies = resolve_auto(
        strategies, data, weights, budget, train_options["imgsz"], train_options["device"]
    )
    labels = strategy_labels(strategies)
    check_run_options(labels, data, weights, train_options)
    out = Path(out)
    setting = {
        "data": str(Path(data).resolve()),
        "weights": str(Path(weights).resolve()),
        "strategies": labels,
        "budget": {"kind": budget.kind, "value": budget.value, "description": budget.describe()},
        "seeds": seeds,
        **train_options,
    }
    check_out_dir(out, setting)
    specs = [
        RunSpec(entry, label, seed, out / "runs" / f"{label}-s{seed}", setting["data"], setting["weights"],
                budget, len(dataset.train), dict(train_options))
        for seed in seeds  # seed-major: parallel slots and load changes hit every strategy alike
        for label, entry in labels.items()
    ]  # fmt: skip
    console.print(
        f"comparing {', '.join(labels)} x seeds {', '.join(map(str, seeds))} at {budget.describe()} each "
        f"({len(dataset.train)} train / {len(dataset.val)} val images) -> {out}"
    )
    outcomes = run_all(specs, jobs=jobs, backend=backend, console=console, devices=lanes)
    runs = [read_run(o.label, o.seed, o.run_dir, out, o.status, o.error) for o in outcomes]
    results = write_report(out, setting, runs, list(labels), console)
    console.print(f"report: [bold]{out / 'report.html'}[/] (also report.md, results.json)")
    return results


def train_options_from_args(args) -> dict:
    return {
        key: getattr(args, key)
        for key in ("imgsz", "batch", "hyp", "optimizer", "lr0", "cos_lr", "patience", "device", "workers",
                    "cache", "val_fraction", "split_seed", "tensorboard", "noplots")
    }  # fmt: skip


def compare_command(args) -> int:
    """``yolo-transfer compare``; exit code 1 when a run failed (the report still covers the others)."""
    strategies = [entry.strip() for entry in args.strategies.split(",") if entry.strip()]
    if not strategies:
        raise ConfigError("--strategies: give at least one strategy, e.g. full,freeze,staged")
    results = compare(
        args.data, args.weights, strategies, parse_budget(args.budget), parse_seeds(args.seeds),
        Path(args.out), jobs=args.jobs, backend=args.backend, devices=args.devices,
        train_options=train_options_from_args(args),
    )  # fmt: skip
    return 0 if all(run["status"] == "done" for run in results["runs"]) else 1


sys.modules[__name__].__class__ = ApiSubpackage  # ``yt.compare(...)`` calls api.compare
