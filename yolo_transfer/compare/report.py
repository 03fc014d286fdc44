"""Write a comparison's report into its folder: results.json, plots, prediction grid, report.md, report.html.

The terminal gets the same table (rich). Everything is rebuilt from the runs' summary.json and results.csv
files, so a re-run of ``compare`` (which skips finished runs) regenerates an identical report.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from yolo_transfer.compare.gallery import pick_samples, write_prediction_grid
from yolo_transfer.compare.html_report import render_html
from yolo_transfer.compare.plots import strategy_colors, write_plots
from yolo_transfer.compare.results import METRIC_BY_KEY, build_results
from yolo_transfer.engine.image_stats import IMAGE_STATS_FILE, ImageStats
from yolo_transfer.engine.outputs import write_atomic
from yolo_transfer.errors import YoloTransferError

TABLE_COLUMNS = [
    "best_map50_95",
    "best_map50",
    "final_map50_95",
    "best_coco_map50_95",
    "wall_seconds",
    "train_img_per_s",
    "time_to_95pct_best_s",
    "peak_rss_mb",
]


def format_stat(stats: dict, fmt: str) -> str:
    """``mean ± std`` (``mean`` alone for one seed, ``-`` when unmeasured)."""
    if stats["mean"] is None:
        return "-"
    text = format(stats["mean"], fmt)
    return text if stats["std"] is None else f"{text} ± {format(stats['std'], fmt)}"


def format_phases(phases: list[dict]) -> str:
    """Trainable parameters per phase, e.g. ``frozen-backbone 1.1M → all 1.8M``."""
    return " → ".join(f"{p['name']} {(p['trainable_params'] or 0) / 1e6:.2f}M" for p in phases) or "-"


def table_columns(results: dict) -> list[str]:
    """The metric columns shown; GPU memory only when some run used a GPU."""
    gpu = any((row["gpu_mem_mb"]["mean"] or 0) > 0 for row in results["aggregate"].values())
    return TABLE_COLUMNS + (["gpu_mem_mb"] if gpu else [])


def table_rows(results: dict) -> tuple[list[str], list[list[str]], set[tuple[int, int]]]:
    """Header, formatted rows (one per strategy) and the (row, column) cells that win their metric."""
    columns = table_columns(results)
    header = [
        "strategy",
        "runs",
        "epochs",
        *(METRIC_BY_KEY[key].label for key in columns),
        "trainable params",
    ]
    winners = {w["metric"]: w["winner"] for w in results["winners"]}
    rows, highlight = [], set()
    for r, (strategy, row) in enumerate(results["aggregate"].items()):
        runs = row["n_done"] + row["n_failed"]
        own = [run for run in results["runs"] if run["strategy"] == strategy]
        epochs = sorted({run["epochs"] for run in own if run["epochs"]})
        improving = sum(bool(run.get("still_improving")) for run in own)
        epochs_cell = ",".join(str(e) for e in epochs) or "-"
        cells = [
            strategy,
            f"{row['n_done']}/{runs}" + (f" ({row['n_failed']} failed)" if row["n_failed"] else ""),
            epochs_cell + (f" ({improving} still improving)" if improving else ""),
        ]
        for c, key in enumerate(columns):
            cells.append(format_stat(row[key], METRIC_BY_KEY[key].fmt))
            if winners.get(key) == strategy:
                highlight.add((r, 3 + c))
        cells.append(format_phases(row["phases"]))
        rows.append(cells)
    return header, rows, highlight


def print_table(results: dict, console: Console) -> None:
    """The table with one row per strategy; turned (one row per metric) when the terminal is too narrow."""
    header, rows, highlight = table_rows(results)
    seeds = len(results["setting"]["seeds"])
    title = f"Strategy comparison — mean ± std over {seeds} seed(s); green = best"
    styled = [
        [f"[bold green]{cell}[/]" if (r, c) in highlight else cell for c, cell in enumerate(cells)]
        for r, cells in enumerate(rows)
    ]
    table = Table(title=title, title_justify="left")
    for name in header:
        table.add_column(
            name, justify="left" if name in ("strategy", "trainable params") else "right", no_wrap=True
        )
    for cells in styled:
        table.add_row(*cells)
    if console.measure(table, options=console.options.update_width(10_000)).maximum > console.width:
        table = Table(title=title, title_justify="left")
        table.add_column("", style="bold")
        for cells in styled:
            table.add_column(cells[0], justify="right")
        for c, name in enumerate(header[1:], start=1):
            table.add_row(name, *(cells[c] for cells in styled))
    console.print(table)
    recommendation = results["recommendation"]
    if recommendation:
        console.print(f"[bold]Recommendation: {recommendation['strategy']}[/] — {recommendation['reason']}")
    for note in (results.get("still_improving"), results.get("phases_left_out")):
        if note:
            console.print(f"[bold yellow]Note:[/] {note}")
    for run in results["runs"]:
        if run["status"] != "done":
            console.print(f"[red]{run['strategy']} seed {run['seed']} failed:[/] {run['error']}")


def write_report(
    out_dir: Path, setting: dict, runs: list[dict], strategies: list[str], console: Console
) -> dict:
    """Write every report file into ``out_dir``, print the table and return the results document."""
    results = build_results(setting, runs, strategies, load_image_stats(out_dir, runs))
    write_atomic(out_dir / "results.json", json.dumps(results, indent=2).encode())
    plots = write_plots(runs, results["aggregate"], out_dir, out_dir / "plots")
    grid, grid_note = _prediction_grid(results, out_dir)
    figures = {name: path.relative_to(out_dir).as_posix() for name, path in plots.items()}
    if grid is not None:
        figures["predictions"] = grid.relative_to(out_dir).as_posix()
    write_atomic(out_dir / "report.md", render_markdown(results, figures, grid_note).encode())
    html = render_html(results, out_dir, figures, grid_note, table_rows(results))
    write_atomic(out_dir / "report.html", html.encode())
    print_table(results, console)
    return results


def load_image_stats(out_dir: Path, runs: list[dict]) -> dict[str, dict[int, ImageStats]]:
    """The best-epoch image statistics of every finished run that kept them: ``{strategy: {seed: stats}}``."""
    stats: dict[str, dict[int, ImageStats]] = {}
    for run in runs:
        path = out_dir / run["dir"] / IMAGE_STATS_FILE
        if run["status"] == "done" and path.is_file():
            stats.setdefault(run["strategy"], {})[run["seed"]] = ImageStats.load(path)
    return stats


def _prediction_grid(results: dict, out_dir: Path) -> tuple[Path | None, str | None]:
    """Draw each strategy's best run on the same validation images; a note instead when it cannot be drawn."""
    setting = results["setting"]
    best_runs = {}
    for run in results["runs"]:
        if run["status"] == "done":
            current = best_runs.get(run["strategy"])
            if current is None or run["best"]["map50_95"] > current["best"]["map50_95"]:
                best_runs[run["strategy"]] = run
    weights = {s: out_dir / run["dir"] / "weights" / "best.safetensors" for s, run in best_runs.items()}
    weights = {s: path for s, path in weights.items() if path.is_file()}
    if not weights:
        return None, "no finished run has best weights to draw predictions from"
    from yolo_transfer.data import load_dataset

    try:
        spec = load_dataset(setting["data"], val_fraction=setting["val_fraction"], seed=setting["split_seed"])
        samples = pick_samples(spec.val)
        path = write_prediction_grid(
            weights,
            samples,
            spec.names,
            strategy_colors(list(results["aggregate"])),
            out_dir / "predictions.png",
            imgsz=setting["imgsz"],
            device=setting["device"],
        )
    except (YoloTransferError, OSError, RuntimeError) as err:
        return None, f"prediction grid not drawn: {err}"
    return path, None


def render_markdown(results: dict, figures: dict[str, str], grid_note: str | None) -> str:
    """report.md: recommendation, setting, the table, winners, plots, predictions, runs."""
    setting, recommendation = results["setting"], results["recommendation"]
    header, rows, _ = table_rows(results)
    lines = ["# Strategy comparison", ""]
    if recommendation:
        lines += [f"**Recommendation: {recommendation['strategy']}** — {recommendation['reason']}", ""]
    for note in (results.get("still_improving"), results.get("phases_left_out")):
        if note:
            lines += [f"**Note:** {note}", ""]
    seeds = ", ".join(map(str, setting["seeds"]))
    lines += [
        f"- data: `{setting['data']}`",
        f"- weights: `{setting['weights']}`",
        f"- budget: {setting['budget']['description']} per run; seeds: {seeds}",
        f"- image size {setting['imgsz']}, batch {setting['batch']}, hyp {setting['hyp']}, "
        f"device {setting['device']}",
        "",
        f"## Results (mean ± std over {len(setting['seeds'])} seed(s))",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(cells) + " |" for cells in rows),
        "",
        "## Winner per metric",
        "",
        "| metric | winner | runner-up | margin | seed spread | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for w in results["winners"]:
        fmt = METRIC_BY_KEY[w["metric"]].fmt
        spread = "-" if w["spread"] is None else format(w["spread"], fmt)
        cells = [w["label"], w["winner"], w["runner_up"], format(w["margin"], fmt), spread, w["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    if paired := results.get("paired"):
        lines += [
            "",
            f"## Paired with the winner ({paired['winner']}), bootstrap over {paired['images']} val images",
            "",
            "| strategy | seeds | winner − strategy per seed | mean | 95% interval | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for other, c in paired["comparisons"].items():
            per_seed = ", ".join(f"{d:+.3f}" for d in c["difference_per_seed"])
            low, high = c["interval95"]
            seeds = ",".join(map(str, c["seeds"]))
            lines.append(
                f"| {other} | {seeds} | {per_seed} | {c['mean_difference']:+.3f} | "
                f"[{low:+.3f}, {high:+.3f}] | {c['verdict']} |"
            )
    lines += ["", "## Plots", ""]
    titles = {
        "map_vs_epoch": "mAP50-95 vs epoch",
        "map_vs_time": "mAP50-95 vs wall time",
        "loss": "loss",
        "cost": "cost",
    }
    lines += [f"![{titles[name]}]({path})" for name, path in figures.items() if name in titles]
    lines += ["", "## Predictions (best weights of each strategy)", ""]
    lines.append(
        f"![predictions]({figures['predictions']})" if "predictions" in figures else f"_{grid_note}_"
    )
    lines += [
        "",
        "## Runs",
        "",
        "| run | status | epochs | best mAP50-95 | folder | error |",
        "|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        best = "-" if run["best"] is None else f"{run['best']['map50_95']:.3f}"
        lines.append(
            f"| {run['strategy']} s{run['seed']} | {run['status']} | {run['epochs'] or '-'} | {best} | "
            f"`{run['dir']}` | {run['error'] or ''} |"
        )
    return "\n".join(lines) + "\n"
