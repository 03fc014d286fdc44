"""The comparison's PNG plots: validation mAP against epoch and wall time, loss curves, cost bars.

Every plot colours a strategy the same way and draws it as the mean over its seeds with a min-max band (the
legend names the seeds); a diamond marks the first epoch of every new phase (where staged unfreezing
switches). results.csv epochs are 1-based. Uses matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

import csv
from pathlib import Path

from matplotlib.figure import Figure

from yolo_transfer.engine.outputs import write_figure

PALETTE = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777"]


def strategy_colors(strategies: list[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(strategies)}


def read_history(results_csv: Path) -> list[dict]:
    """results.csv rows as dicts of floats (``phase`` stays a string); empty when the file is missing."""
    if not results_csv.is_file():
        return []
    with results_csv.open(newline="") as handle:
        rows = [{key.strip(): value.strip() for key, value in row.items()} for row in csv.DictReader(handle)]
    return [
        {key: value if key == "phase" else float(value or "nan") for key, value in row.items()}
        for row in rows
    ]


def write_plots(runs: list[dict], table: dict[str, dict], out_dir: Path, plots_dir: Path) -> dict[str, Path]:
    """Write all plots of the runs that finished; returns {plot name: PNG path}."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    colors = strategy_colors(list(table))
    histories = [
        (run, read_history(out_dir / run["dir"] / "results.csv")) for run in runs if run["status"] == "done"
    ]
    histories = [(run, rows) for run, rows in histories if rows]
    paths = {
        "map_vs_epoch": plots_dir / "map_vs_epoch.png",
        "map_vs_time": plots_dir / "map_vs_time.png",
        "loss": plots_dir / "loss.png",
        "cost": plots_dir / "cost.png",
    }
    _curve_plot(histories, colors, "epoch", paths["map_vs_epoch"], "epoch")
    _curve_plot(histories, colors, "wall_s", paths["map_vs_time"], "wall time (s)")
    _loss_plot(histories, colors, paths["loss"])
    _cost_plot(table, colors, paths["cost"])
    return paths


def _figure(ncols: int = 1, width: float = 7.5, height: float = 4.0) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0].tolist()
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.25, linewidth=0.8)
        ax.tick_params(labelsize=9)
    return fig, axes


def _plot_runs(ax, histories, colors, x_key: str, y_of) -> None:
    """Per strategy: the mean over its seeds at each epoch with a min-max band; the legend names the seeds.

    On the time axis a point sits at the seeds' mean wall time of that epoch. A diamond marks the first epoch
    of every new phase (of the strategy's first run).
    """
    by_strategy: dict[str, list[tuple[dict, list[dict]]]] = {}
    for run, rows in histories:
        by_strategy.setdefault(run["strategy"], []).append((run, rows))
    for strategy, runs in by_strategy.items():
        length = max(len(rows) for _, rows in runs)
        xs, means, lows, highs = [], [], [], []
        for index in range(length):  # seeds that stopped early drop out of the later epochs
            present = [rows[index] for _, rows in runs if index < len(rows)]
            values = [y_of(row) for row in present]
            xs.append(sum(row[x_key] for row in present) / len(present))
            means.append(sum(values) / len(values))
            lows.append(min(values))
            highs.append(max(values))
        seeds = ", ".join(str(run["seed"]) for run, _ in runs)
        label = f"{strategy} (seed{'s' if len(runs) > 1 else ''} {seeds})"
        color = colors[strategy]
        ax.plot(xs, means, color=color, linewidth=1.8, label=label, marker="o", markersize=3)
        if len(runs) > 1:
            ax.fill_between(xs, lows, highs, color=color, alpha=0.18, linewidth=0)
        first = runs[0][1]
        switches = [i for i in range(1, len(first)) if first[i]["phase"] != first[i - 1]["phase"]]
        ax.plot(
            [xs[i] for i in switches],
            [means[i] for i in switches],
            linestyle="none",
            marker="D",
            markersize=7,
            markerfacecolor="white",
            markeredgecolor=color,
            markeredgewidth=1.8,
        )


def _curve_plot(histories, colors, x_key: str, path: Path, xlabel: str) -> None:
    fig, (ax,) = _figure()
    _plot_runs(ax, histories, colors, x_key, lambda row: row["metrics/mAP_0.5:0.95"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation mAP50-95")
    ax.set_title(
        "Validation mAP50-95: mean of seeds, band min-max (◇ = phase switch)", fontsize=11, loc="left"
    )
    if histories:
        ax.legend(frameon=False, fontsize=9)
    write_figure(fig, path)


def _loss_plot(histories, colors, path: Path) -> None:
    fig, axes = _figure(ncols=2, width=10.0)
    for ax, split in zip(axes, ("train", "val"), strict=True):
        _plot_runs(
            ax,
            histories,
            colors,
            "epoch",
            lambda row, s=split: sum(row[f"{s}/{part}_loss"] for part in ("box", "obj", "cls")),
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{split} loss (box + obj + cls)")
        ax.set_title(f"{split.capitalize()} loss", fontsize=11, loc="left")
    if histories:
        axes[0].legend(frameon=False, fontsize=9)
    write_figure(fig, path)


def _cost_plot(table: dict[str, dict], colors, path: Path) -> None:
    measured = [s for s, row in table.items() if row["n_done"]]
    panels = [
        ("wall_seconds", "wall seconds"),
        ("train_img_per_s", "train images / s"),
        ("peak_rss_mb", "peak RSS (MB)"),
    ]
    if any((table[s]["gpu_mem_mb"]["mean"] or 0) > 0 for s in measured):
        panels.append(("gpu_mem_mb", "peak GPU memory (MB)"))
    fig, axes = _figure(ncols=len(panels) + 1, width=3.2 * (len(panels) + 1), height=3.6)
    for ax, (key, title) in zip(axes, panels, strict=False):
        means = [table[s][key]["mean"] or 0.0 for s in measured]
        errors = [table[s][key]["std"] or 0.0 for s in measured]
        ax.bar(measured, means, yerr=errors, color=[colors[s] for s in measured], capsize=4, width=0.6)
        ax.set_title(title, fontsize=10, loc="left")
        ax.tick_params(axis="x", rotation=20)
    ax = axes[-1]
    for index, strategy in enumerate(measured):
        phases = table[strategy]["phases"]
        width = 0.7 / max(len(phases), 1)
        for p, phase in enumerate(phases):
            x = index - 0.35 + width * (p + 0.5)
            ax.bar(
                x,
                (phase["trainable_params"] or 0) / 1e6,
                width=width * 0.9,
                color=colors[strategy],
                alpha=1.0 - 0.45 * p / max(len(phases) - 1, 1),
                edgecolor="white",
            )
            ax.text(
                x,
                (phase["trainable_params"] or 0) / 1e6,
                phase["name"],
                rotation=90,
                fontsize=7,
                ha="center",
                va="bottom",
            )
    ax.set_xticks(range(len(measured)), measured, rotation=20)
    ax.set_title("trainable params per phase (M)", fontsize=10, loc="left")
    ax.margins(y=0.35)
    write_figure(fig, path)
