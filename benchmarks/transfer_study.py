"""The transfer study: strategies against the yolov5 baseline on real datasets, and how good the advice is.

For every case (a dataset x a budget) it runs ``yolo-transfer compare`` with the strategies (the
built-ins and ``yolov5-default``, the reference's own ``train.py`` defaults) into ``OUT/<dataset>-e<epochs>/``
(``-t<minutes>`` for a time budget, where each strategy trains the epochs that fit), then ``yolo-transfer
advise`` on the same data with the same budget (``advise.json`` there, made anew each time; ``--report-only``
applies today's rules to the measurements saved there and trains nothing). The table: each
strategy's best mAP50-95 (mean over seeds), the best strategy, the advised one, the regret (best − advised)
and the shift measurements; then, for the advisor and for the fixed rules peers document (always full
fine-tuning, always the yolov5 defaults, the ultralytics fine-tuning guide's table), how often the choice is
within 1 point of the best, the mean and the worst regret. Everything is resumable: a re-run skips finished
runs and resumes unfinished ones. ``docs/advisor-study.md`` holds its results.

    .venv/bin/python benchmarks/transfer_study.py --shared ../shared --out runs/study     # hours on a CPU
    .venv/bin/python benchmarks/transfer_study.py --shared ../shared --datasets dawn_fog --budgets 30
    .venv/bin/python benchmarks/transfer_study.py --shared ../shared --budgets time=1   # compute-bound cases
    .venv/bin/python benchmarks/transfer_study.py --quick --out runs/study-quick          # minutes
    # every case that ran, in one table (seeds and data sizes as far as they ran)
    .venv/bin/python benchmarks/transfer_study.py --shared ../shared --budgets 30,100,time=1 \
        --train-images all,50 --seeds 0,1 --strategies yolov5-default,full,freeze,staged --report-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from yolo_transfer.advise import advise, reapply_rules
from yolo_transfer.advise.rules import HIGH_SHIFT, LARGE_DATA_IMAGES
from yolo_transfer.compare import compare, strategy_labels
from yolo_transfer.compare.demo import shipped_weights
from yolo_transfer.compare.results import aggregate, read_run
from yolo_transfer.data import load_dataset
from yolo_transfer.data.convert import write_yolo_dataset
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine.budget import Budget, parse_budget

DATASETS = {  # name -> data path under --shared
    "raccoon": "data/raccoon",
    "bccd": "data/bccd/BCCD",
    "aerial_maritime": "data/aerial_maritime/data.yaml",
    "dawn_fog": "data/dawn_fog/data.yaml",
    "license_plates": "data/license_plates/data.yaml",
}
STRATEGIES = ["yolov5-default", "full", "freeze", "staged", "head-only", "lp-ft", "gradual", "surgical-early"]
AGREEMENT_POINTS = 0.01  # advised within 1 mAP50-95 point of the best


def ultralytics_guide(profile: dict) -> str:
    """The ultralytics fine-tuning guide's table: far from COCO (our measured shift >= HIGH_SHIFT) or large
    data -> no freezing (our ``full``); small and similar -> freeze the backbone (``freeze``)."""
    far = profile["shift"]["overall"] >= HIGH_SHIFT
    large = profile["images"] >= LARGE_DATA_IMAGES
    return "full" if far or large else "freeze"


FIXED_RULES = {
    "always full": lambda profile: "full",
    "always freeze (yolov5 --freeze 10)": lambda profile: "freeze",
    "always staged (fastai fine_tune)": lambda profile: "staged",
    "always yolov5-default": lambda profile: "yolov5-default",
    "ultralytics guide": ultralytics_guide,
}


def parse_study_budget(text: str) -> Budget:
    """A bare number is an epoch budget (``30``); otherwise a ``--budget`` string (``time=1``)."""
    return parse_budget(f"epochs={text}" if text.isdigit() else text)


def case_label(name: str, budget: Budget) -> str:
    """``raccoon e30``, ``raccoon t1`` (minutes) or ``raccoon i5000`` (training images)."""
    return f"{name} {budget.kind[0]}{budget.value:g}"


def run_case(name: str, data: str, weights: str, budget: Budget, args, console: Console) -> dict | None:
    """One dataset x budget: the comparison, the advice, and the numbers the table needs (``--report-only``:
    None when the case has no finished run)."""
    label = case_label(name, budget)
    out = Path(args.out) / label.replace(" ", "-")
    options = {
        "imgsz": args.imgsz, "batch": args.batch, "hyp": "low", "optimizer": "SGD", "lr0": None,
        "cos_lr": False, "patience": 100, "device": args.device, "workers": args.workers, "cache": True,
        "val_fraction": 0.2, "split_seed": 0,
    }  # fmt: skip
    saved_advice = out / "advise.json"
    if args.report_only:  # the table of the runs that finished, nothing trained or measured
        runs = [
            read_run(strategy, seed, out / "runs" / f"{strategy}-s{seed}", out, "missing", None)
            for strategy in args.labels
            for seed in args.seeds
            if (out / "runs" / f"{strategy}-s{seed}" / "summary.json").is_file()
        ]
        if not runs:
            return None
        aggregate_table = aggregate(runs, args.labels)
    else:
        results = compare(
            data, weights, args.strategies, budget, args.seeds, out,
            jobs=args.jobs, train_options=options, console=console,
        )  # fmt: skip
        aggregate_table = results["aggregate"]
    if args.report_only and saved_advice.is_file():  # today's rules on the saved measurements
        advice = reapply_rules(json.loads(saved_advice.read_text()))
    else:  # without a time budget the measurements skip the timed steps
        advice = advise(
            data, weights, imgsz=args.imgsz, budget=str(budget), device=args.device, compute=False
        )
    saved_advice.write_text(json.dumps(advice, indent=2))
    scores = {
        strategy: row["best_map50_95"]["mean"]
        for strategy, row in aggregate_table.items()
        if row["best_map50_95"]["mean"] is not None
    }
    return {
        "case": label,
        "budget": str(budget),
        "scores": scores,
        "epochs": planned_epochs(out, args.labels, args.seeds),
        "advised": advice["recommendation"]["strategy"],
        "profile": {
            "images": advice["scale"]["images"],
            "label_overlap": advice["labels"]["fraction"],
            "objectness": advice["objectness"]["mean_top_k"],
            "shift": {key: advice["shift"][key] for key in ("early", "middle", "late", "overall")},
        },
    }


def planned_epochs(out: Path, strategies: list[str], seeds: list[int]) -> dict[str, int]:
    """Each strategy's schedule length as ``compare`` planned it (seed ``seeds[0]``; the same for every seed
    under an epoch budget, measured per run under a time budget)."""
    plans = {s: out / "runs" / f"{s}-s{seeds[0]}" / "plan.json" for s in strategies}
    return {s: json.loads(path.read_text())["epochs"] for s, path in plans.items() if path.is_file()}


def regret(case: dict, choice: str) -> float | None:
    """Best score minus the chosen strategy's (None when the choice was not run)."""
    scores = case["scores"]
    return None if choice not in scores else max(scores.values()) - scores[choice]


def summarise(cases: list[dict]) -> dict:
    """Agreement, mean and worst regret of the advisor and of each fixed rule over the cases."""
    choosers = {"advise": lambda case: case["advised"]}
    choosers |= {name: (lambda case, rule=rule: rule(case["profile"])) for name, rule in FIXED_RULES.items()}
    summary = {}
    for name, choose in choosers.items():
        regrets = [r for r in (regret(case, choose(case)) for case in cases) if r is not None]
        summary[name] = {
            "cases": len(regrets),
            "agreement": sum(r <= AGREEMENT_POINTS for r in regrets) / len(regrets) if regrets else None,
            "mean_regret": statistics.fmean(regrets) if regrets else None,
            "worst_regret": max(regrets) if regrets else None,
        }
    return summary


def print_tables(cases: list[dict], summary: dict, strategies: list[str], console: Console) -> None:
    table = Table(title="Best mAP50-95 per case (mean over seeds); * = best, a = advised")
    for column in ["case", *strategies, "advised", "regret", "shift (early/mid/late)"]:
        table.add_column(column, justify="left" if column in ("case", "advised") else "right")
    for case in cases:
        scores, best = case["scores"], max(case["scores"], key=case["scores"].get)
        cells = []
        for strategy in strategies:
            value = scores.get(strategy)
            mark = ("*" if strategy == best else "") + ("a" if strategy == case["advised"] else "")
            cells.append("-" if value is None else f"{value:.3f}{mark}")
        shift = case["profile"]["shift"]
        advised_regret = regret(case, case["advised"])
        table.add_row(
            case["case"], *cells, case["advised"], "-" if advised_regret is None else f"{advised_regret:.3f}",
            f"{shift['early']:.2f}/{shift['middle']:.2f}/{shift['late']:.2f}",
        )  # fmt: skip
    console.print(table)
    rules = Table(
        title=f"Choosers: within {AGREEMENT_POINTS * 100:.0f} pt of the best, mean and worst regret"
    )
    for column in CHOOSER_COLUMNS:
        rules.add_column(column)
    for row in chooser_rows(summary):
        rules.add_row(*row)
    console.print(rules)


CHOOSER_COLUMNS = ("chooser", "cases", "within 1 pt of the best", "mean regret", "worst regret")


def chooser_rows(summary: dict) -> list[list[str]]:
    """The chooser table's cells, one row per chooser."""

    def number(value: float | None, style: str) -> str:
        return "-" if value is None else format(value, style)

    return [
        [name, str(row["cases"]), number(row["agreement"], ".0%"), number(row["mean_regret"], ".3f"),
         number(row["worst_regret"], ".3f")]
        for name, row in summary.items()
    ]  # fmt: skip


def markdown(cases: list[dict], summary: dict, strategies: list[str]) -> str:
    """The two tables as Markdown (docs/advisor-study.md quotes them)."""
    head = ["case", *strategies, "advised", "regret", "label overlap", "shift early/mid/late (overall)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in cases:
        scores = case["scores"]
        best = max(scores, key=scores.get) if scores else None
        cells = []
        for strategy in strategies:
            value = scores.get(strategy)
            text = "-" if value is None else f"{value:.3f}"
            text = f"**{text}**" if strategy == best else text
            if value is not None and case.get("budget", "").startswith("time"):  # epochs that fitted
                text += f" ({case['epochs'][strategy]} ep)"
            cells.append(text)
        shift, advised = case["profile"]["shift"], case["advised"]
        advised_regret = regret(case, advised)
        lines.append(
            f"| {case['case']} | "
            + " | ".join(cells)
            + f" | {advised} | "
            + ("-" if advised_regret is None else f"{advised_regret:.3f}")
            + f" | {case['profile']['label_overlap']:.0%} | {shift['early']:.2f}/{shift['middle']:.2f}/"
            f"{shift['late']:.2f} ({shift['overall']:.2f}) |"
        )
    lines += ["", "| " + " | ".join(CHOOSER_COLUMNS) + " |", "|" + "---|" * len(CHOOSER_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in chooser_rows(summary)]
    return "\n".join(lines) + "\n"


def training_subset(data: str, images: int, out: Path, draw: int = 0) -> str:
    """A YOLO copy of ``data`` keeping ``images`` training images drawn at random (seed ``draw``) and the
    whole val split (split seed 0, as in the full case), so a data-size case is scored on the same validation
    images."""
    yaml_path = out / "data.yaml"
    if not yaml_path.is_file():
        loaded = load_dataset(data, val_fraction=0.2, seed=0)
        keep = sorted(np.random.default_rng(draw).permutation(len(loaded.train))[:images])
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        write_yolo_dataset(dataclasses.replace(loaded, train=[loaded.train[i] for i in keep]), partial)
        partial.rename(out)  # write_yolo_dataset records the absolute root: rewrite it for the final folder
        yaml_path.write_text(yaml_path.read_text().replace(str(partial.resolve()), str(out.resolve())))
    return str(yaml_path)


def sized_case(name: str, data: str, images: int, out: Path, make: bool, draw: int = 0) -> tuple[str, str]:
    """The data-size case ``<name>-n<images>`` (``-d<draw>`` added for another draw than the first) and its
    training subset (made unless ``make`` is False)."""
    label = f"{name}-n{images}" + (f"-d{draw}" if draw else "")
    folder = out / "subsets" / label
    return label, training_subset(data, images, folder, draw) if make else str(folder / "data.yaml")


def quick_cases(out: Path) -> list[tuple[str, str]]:
    """Synthetic target domains with a small and a large shift (for a CI-sized run)."""
    cases = []
    for shift in (0.2, 0.8):
        name = f"synthetic-shift{shift}"
        cases.append((name, str(make_domain(out / name, "target", n_images=60, imgsz=128, shift=shift))))
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", default="../shared", help="folder with weights/ and data/")
    parser.add_argument("--weights", default=None, help="default: SHARED/weights/yolov5n.pt")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated names")
    parser.add_argument(
        "--budgets",
        default=None,
        help="comma-separated budgets: epochs (30) or --budget strings (time=1, minutes) "
        "(default: 30,100; --quick: 8)",
    )
    parser.add_argument(
        "--train-images", default="all",
        help="comma-separated data sizes: 'all' (the whole train split) or N training images drawn at "
        "random (seed --draw), scored on the same val split",
    )  # fmt: skip
    parser.add_argument(
        "--draw", type=int, default=0,
        help="the seed of the random draw of --train-images N (cases other than 0 are labelled -d<draw>)",
    )  # fmt: skip
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument(
        "--quick", action="store_true",
        help="CI-sized: synthetic targets (shift 0.2, 0.8), the shipped demo checkpoint, 128 px",
    )  # fmt: skip
    parser.add_argument("--out", default="runs/study")
    parser.add_argument(
        "--report-only", action="store_true", help="tabulate the runs that finished; train nothing"
    )
    args = parser.parse_args(argv)
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.labels = list(strategy_labels(args.strategies))  # a candidate YAML: its runs and column by its stem
    args.seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shared = Path(args.shared)
    weights = args.weights or str(shared / "weights" / "yolov5n.pt")
    budgets = [parse_study_budget(b) for b in (args.budgets or ("8" if args.quick else "30,100")).split(",")]
    if args.quick:
        args.imgsz, datasets = 128, quick_cases(out)
        weights = args.weights or str(shipped_weights())
    else:
        datasets = [(name, str(shared / DATASETS[name])) for name in args.datasets.split(",")]
    make = not args.report_only
    datasets = [
        (name, data) if size == "all" else sized_case(name, data, int(size), out, make, args.draw)
        for size in args.train_images.split(",")
        for name, data in datasets
    ]
    console = Console()
    cases = [
        run_case(name, data, weights, budget, args, console) for budget in budgets for name, data in datasets
    ]
    cases = [case for case in cases if case is not None]
    summary = summarise(cases)
    (out / "study.json").write_text(json.dumps({"cases": cases, "summary": summary}, indent=2))
    (out / "study.md").write_text(markdown(cases, summary, args.labels))
    print_tables(cases, summary, args.labels, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
