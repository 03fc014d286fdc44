"""The numbers of a comparison: one entry per run, mean ± std per strategy, the winner of every metric.

Each run is read from its ``summary.json`` (trainer contract in docs/ARCHITECTURE.md). A winner's margin
*exceeds the seed spread* when the two strategies' mean ± std intervals do not overlap
(``|mean_a - mean_b| > std_a + std_b``); otherwise it is *within noise*. With one seed per strategy the
spread is unknown and the verdict says so. The recommendation rests on the paired comparison of
compare/paired.py (per-seed differences to the winner and a bootstrap interval over validation images) when
the runs kept their image statistics, and says which runs were still improving at their last epoch.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from yolo_transfer.compare.paired import BETTER, RESAMPLES, paired_differences
from yolo_transfer.engine.image_stats import ImageStats

SCHEMA_VERSION = 1
SINGLE_SEED = "single seed: spread unknown"
WITHIN_NOISE = "within noise"
EXCEEDS = "exceeds seed spread"


@dataclass(frozen=True)
class Metric:
    """One column of the comparison: where it sits in a run entry and which direction is better."""

    key: str
    label: str
    path: tuple[str, ...]
    higher_is_better: bool
    fmt: str = ".3f"

    def value(self, run: dict) -> float | None:
        node = run
        for part in self.path:
            node = node.get(part) if isinstance(node, dict) else None
        return None if node is None else float(node)


METRICS = [
    Metric("best_map50_95", "best mAP50-95", ("best", "map50_95"), True),
    Metric("best_map50", "best mAP50", ("best", "map50"), True),
    Metric("final_map50_95", "final mAP50-95", ("final", "map50_95"), True),
    Metric("best_coco_map50_95", "best COCO AP", ("best", "coco_map50_95"), True),
    Metric("best_coco_map50", "best COCO AP50", ("best", "coco_map50"), True),
    Metric("wall_seconds", "wall s", ("wall_seconds",), False, ".0f"),
    Metric("train_img_per_s", "train img/s", ("train_img_per_s",), True, ".1f"),
    Metric("time_to_95pct_best_s", "s to 95% best", ("time_to_95pct_best_s",), False, ".0f"),
    Metric("peak_rss_mb", "peak RSS MB", ("peak_rss_mb",), False, ".0f"),
    Metric("gpu_mem_mb", "GPU MB", ("gpu_mem_mb",), False, ".0f"),
]
METRIC_BY_KEY = {metric.key: metric for metric in METRICS}
HEADLINE = "best_map50_95"
# a cheaper choice takes at most this share of the winner's wall time (a time budget gives all the same)
CHEAPER = 0.95
PHASE_KEYS = ("name", "trainable_params", "epochs_run", "planned_epochs", "end_reason")  # of every phase


def read_run(strategy: str, seed: int, run_dir: Path, out_dir: Path, status: str, error: str | None) -> dict:
    """One run's entry of results.json (metrics are null for a run that has no summary.json)."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    plan_path = run_dir / "plan.json"
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    entry = {
        "strategy": strategy,
        "seed": seed,
        "status": "done" if summary else status,
        "error": None if summary else error,
        "dir": run_dir.relative_to(out_dir).as_posix(),
        "best": _point(summary.get("best")),
        "final": _point(summary.get("final")),
        "epochs": summary.get("epochs"),
        "wall_seconds": summary.get("wall_seconds"),
        "train_img_per_s": summary.get("train_img_per_s"),
        "time_to_95pct_best_s": summary.get("time_to_95pct_best_s"),
        "peak_rss_mb": summary.get("peak_rss_mb"),
        "gpu_mem_mb": summary.get("gpu_mem_mb"),
        "still_improving": summary.get("still_improving"),
        "phases": [{key: phase.get(key) for key in PHASE_KEYS} for phase in summary.get("phases", [])],
        "phases_left_out": plan.get("left_out"),  # why a time plan runs fewer phases than the strategy has
    }
    if entry["status"] == "done" and entry["best"] is None:
        entry.update(status="failed", error=f"{summary_path}: no 'best' metrics")
    return entry


def _point(metrics: dict | None) -> dict | None:
    """Reference-style and COCO-style mAP of one epoch (best or final)."""
    if not metrics:
        return None
    coco = metrics.get("coco") or {}
    return {
        "epoch": metrics.get("epoch"),
        "map50": metrics.get("map50"),
        "map50_95": metrics.get("map50_95"),
        "coco_map50": coco.get("AP50"),
        "coco_map50_95": coco.get("AP"),
    }


def aggregate(runs: list[dict], strategies: list[str]) -> dict[str, dict]:
    """Per strategy: counts of done/failed runs and mean, std (None below two seeds) and n of every metric."""
    table = {}
    for strategy in strategies:
        done = [run for run in runs if run["strategy"] == strategy and run["status"] == "done"]
        row: dict = {
            "n_done": len(done),
            "n_failed": sum(run["strategy"] == strategy and run["status"] != "done" for run in runs),
        }
        for metric in METRICS:
            values = [v for v in (metric.value(run) for run in done) if v is not None]
            row[metric.key] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
            }
        row["phases"] = (
            [{"name": p["name"], "trainable_params": p["trainable_params"]} for p in done[0]["phases"]]
            if done
            else []
        )
        table[strategy] = row
    return table


def decide_winners(table: dict[str, dict]) -> list[dict]:
    """For each metric that separates at least two strategies: winner, runner-up, margin and verdict."""
    winners = []
    for metric in METRICS:
        ranked = [(s, row[metric.key]) for s, row in table.items() if row[metric.key]["mean"] is not None]
        if len(ranked) < 2 or len({stats["mean"] for _, stats in ranked}) == 1:
            continue  # nothing to rank, or a tie (e.g. no GPU memory anywhere)
        ranked.sort(key=lambda item: item[1]["mean"], reverse=metric.higher_is_better)
        (best, best_stats), (second, second_stats) = ranked[0], ranked[1]
        margin = abs(best_stats["mean"] - second_stats["mean"])
        spread = _spread(best_stats, second_stats)
        winners.append(
            {
                "metric": metric.key,
                "label": metric.label,
                "winner": best,
                "runner_up": second,
                "margin": margin,
                "spread": spread,
                "verdict": _verdict(margin, spread),
            }
        )
    return winners


def _spread(a: dict, b: dict) -> float | None:
    return None if a["std"] is None or b["std"] is None else a["std"] + b["std"]


def _verdict(margin: float, spread: float | None) -> str:
    if spread is None:
        return SINGLE_SEED
    return EXCEEDS if margin > spread else WITHIN_NOISE


def recommend(table: dict[str, dict], winners: list[dict], paired: dict | None = None) -> dict | None:
    """The strategy to use: best mean mAP50-95 (the cheapest on a tie), with a reason that says how sure.

    With a paired comparison the reason follows its numbers: a strategy counts as a tie only when its
    interval around the difference to the winner includes zero, never when it lost by more than that.
    """
    measured = [s for s, row in table.items() if row[HEADLINE]["mean"] is not None]
    if not measured:
        return None
    if len(measured) == 1:
        return {"strategy": measured[0], "reason": f"{measured[0]} is the only strategy that finished."}
    headline = next((w for w in winners if w["metric"] == HEADLINE), None)
    if headline is None:  # every strategy reached the same value
        cheapest = _cheapest(table, measured)
        reason = (
            f"all strategies reach the same best mAP50-95 ({table[cheapest][HEADLINE]['mean']:.3f}); "
            f"{cheapest} costs the least wall time ({table[cheapest]['wall_seconds']['mean']:.0f} s)."
        )
        return {"strategy": cheapest, "reason": reason}
    if paired and paired["comparisons"]:
        return _recommend_paired(table, paired)
    top, runner_up = headline["winner"], headline["runner_up"]
    top_stats = table[top][HEADLINE]
    mean = top_stats["mean"]
    if headline["verdict"] == SINGLE_SEED:
        reason = (
            f"{top} reached the highest best mAP50-95 ({mean:.3f}; {runner_up} "
            f"{table[runner_up][HEADLINE]['mean']:.3f}). Single seed: run more seeds (--seeds 0,1,2) to know "
            "whether the margin is real."
        )
        return {"strategy": top, "reason": reason}
    spread_of = {s: table[s][HEADLINE]["std"] or 0.0 for s in measured}
    tied = [s for s in measured if mean - table[s][HEADLINE]["mean"] <= spread_of[top] + spread_of[s]]
    if len(tied) == 1:
        reason = (
            f"{top} has the highest best mAP50-95 ({mean:.3f} ± {top_stats['std']:.3f}), "
            f"{headline['margin']:.3f} ahead of {runner_up}: more than the seed-to-seed spread."
        )
        return {"strategy": top, "reason": reason}
    others = [s for s in tied if s != top]
    cheapest = _cheapest(table, tied)
    reason = (
        f"{top} has the highest best mAP50-95 ({mean:.3f} ± {top_stats['std']:.3f}), but {', '.join(others)} "
        f"{'is' if len(others) == 1 else 'are'} within the seed-to-seed spread of it, so these seeds do not "
        "settle the ranking (run more seeds or a longer budget)"
    )
    if _cheaper(table, cheapest, top):
        wall = table[cheapest]["wall_seconds"]["mean"]
        reason += f"; the cheapest of them is {cheapest} ({wall:.0f} s wall time)"
    return {"strategy": top, "reason": reason + "."}


def _recommend_paired(table: dict[str, dict], paired: dict) -> dict:
    """The winner and, per other strategy, its paired difference and interval, in words."""
    top, comparisons = paired["winner"], paired["comparisons"]
    parts = []
    for other, c in sorted(comparisons.items(), key=lambda item: item[1]["mean_difference"]):
        low, high = c["interval95"]
        seeds = len(c["seeds"])
        lost = f", lower in all {seeds} seeds" if _lost_every_seed(c) else ""
        verdict = "a real loss" if c["verdict"] == BETTER else "not separated by these images and seeds"
        interval = f"95% interval {low:.3f} to {high:.3f}{lost}"
        parts.append(f"{other} {c['mean_difference']:.3f} lower ({interval}): {verdict}")
    tied = [top, *(s for s, c in comparisons.items() if c["verdict"] != BETTER)]
    # a cheaper alternative is one the images cannot separate from the winner and that did not lose every seed
    close = [top, *(s for s in tied[1:] if not _lost_every_seed(comparisons[s]))]
    reason = (
        f"{top} has the highest best mAP50-95 ({table[top][HEADLINE]['mean']:.3f}). Paired with it per seed, "
        f"with a bootstrap over the {paired['images']} validation images: " + "; ".join(parts) + "."
    )
    cheapest = _cheapest(table, close)
    if _cheaper(table, cheapest, top):
        several = any(len(c["seeds"]) > 1 for c in comparisons.values())
        qualifier = " and not lower in every seed" if several else ""
        reason += (
            f" Of the strategies not separated from {top}{qualifier}, {cheapest} costs the least wall time "
            f"({table[cheapest]['wall_seconds']['mean']:.0f} s against "
            f"{table[top]['wall_seconds']['mean']:.0f} s)."
        )
    return {"strategy": top, "reason": reason, "not_separated": tied[1:]}


def _lost_every_seed(comparison: dict) -> bool:
    """Lower than the winner in each of two or more seeds (one seed says nothing beyond its interval)."""
    return comparison["lost_every_seed"] and len(comparison["seeds"]) > 1


def still_improving_note(runs: list[dict]) -> str | None:
    """A warning when runs had their best epoch at their last one (the budget cut them short)."""
    done = [run for run in runs if run["status"] == "done"]
    improving = [run for run in done if run.get("still_improving")]
    if not improving:
        return None
    if len(improving) == len(done):
        return "all runs were still improving at their last epoch: a longer budget may change the ranking."
    names = ", ".join(f"{run['strategy']} s{run['seed']}" for run in improving)
    return f"still improving at their last epoch (a longer budget may change their result): {names}."


def phases_left_out_note(runs: list[dict]) -> str | None:
    """Which strategies' time plans leave phases out, and why (the same for every seed of one measurement)."""
    reasons = {run["strategy"]: run["phases_left_out"] for run in runs if run.get("phases_left_out")}
    if not reasons:
        return None
    trains = "; ".join(f"{name} trains {why}" for name, why in reasons.items())
    return f"under this time budget {trains}."


def _cheapest(table: dict[str, dict], strategies: list[str]) -> str:
    return min(strategies, key=lambda s: table[s]["wall_seconds"]["mean"] or float("inf"))


def _cheaper(table: dict[str, dict], candidate: str, top: str) -> bool:
    """``candidate`` saves a real share of ``top``'s wall time (at most CHEAPER of it)."""
    wall = {s: table[s]["wall_seconds"]["mean"] or float("inf") for s in (candidate, top)}
    return candidate != top and wall[candidate] <= CHEAPER * wall[top]


def paired_comparison(table: dict[str, dict], image_stats: dict[str, dict[int, ImageStats]]) -> dict | None:
    """The paired comparison of every strategy with the best one (best mean mAP50-95), or None."""
    measured = [s for s, row in table.items() if row[HEADLINE]["mean"] is not None and s in image_stats]
    if len(measured) < 2:
        return None
    winner = max(measured, key=lambda s: table[s][HEADLINE]["mean"])
    comparisons = paired_differences({s: image_stats[s] for s in measured}, winner)
    if not comparisons:
        return None
    images = next(iter(image_stats[winner].values())).n_images
    return {
        "metric": HEADLINE, "winner": winner, "images": images, "resamples": RESAMPLES,
        "comparisons": comparisons,
    }  # fmt: skip


def build_results(
    setting: dict,
    runs: list[dict],
    strategies: list[str],
    image_stats: dict[str, dict[int, ImageStats]] | None = None,
) -> dict:
    """The whole results.json document; ``image_stats[strategy][seed]`` enables the paired comparison."""
    table = aggregate(runs, strategies)
    winners = decide_winners(table)
    paired = paired_comparison(table, image_stats or {})
    return {
        "schema_version": SCHEMA_VERSION,
        "setting": setting,
        "runs": runs,
        "aggregate": table,
        "winners": winners,
        "paired": paired,
        "still_improving": still_improving_note(runs),
        "phases_left_out": phases_left_out_note(runs),
        "recommendation": recommend(table, winners, paired),
    }
