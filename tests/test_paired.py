"""Paired comparison: per-seed differences, the bootstrap over validation images and the verdict it allows."""

import numpy as np
import pytest

from yolo_transfer.compare.paired import BETTER, NOT_SEPARATED, paired_differences
from yolo_transfer.compare.results import HEADLINE, build_results, recommend, still_improving_note
from yolo_transfer.engine.image_stats import IMAGE_STATS_FILE, ImageStats, save_image_stats

N_IMAGES = 40


def image_arrays(hit_rate: float, seed: int) -> dict[str, np.ndarray]:
    """One label per image and one detection per image that matches it with probability ``hit_rate``."""
    rng = np.random.default_rng(seed)
    hits = rng.random(N_IMAGES) < hit_rate
    return {
        "tp": np.repeat(hits[:, None], 10, axis=1),
        "conf": rng.random(N_IMAGES).astype(np.float32),
        "pred_cls": np.zeros(N_IMAGES, np.int32),
        "detections_per_image": np.ones(N_IMAGES, np.int64),
        "label_cls": np.zeros(N_IMAGES, np.int32),
        "labels_per_image": np.ones(N_IMAGES, np.int64),
    }


def stats(tmp_path, name: str, arrays: dict) -> ImageStats:
    path = tmp_path / f"{name}.npz"
    save_image_stats(arrays, path)
    return ImageStats.load(path)


def test_image_stats_round_trip_and_resampling(tmp_path):
    arrays = image_arrays(0.5, seed=0)
    loaded = stats(tmp_path, "a", arrays)
    assert loaded.n_images == N_IMAGES and not list(tmp_path.glob(".*tmp*"))
    full = loaded.map50_95()
    assert full == pytest.approx(loaded.map50_95(np.arange(N_IMAGES)))
    hits = np.flatnonzero(arrays["tp"][:, 0])
    assert loaded.map50_95(hits) == pytest.approx(1.0, abs=0.02)  # only the images it got right
    assert IMAGE_STATS_FILE == "best_val_images.npz"


def test_a_strategy_worse_on_every_image_is_a_real_loss(tmp_path):
    runs = {
        "good": {
            0: stats(tmp_path, "g0", image_arrays(0.9, 0)),
            1: stats(tmp_path, "g1", image_arrays(0.9, 1)),
        },
        "bad": {
            0: stats(tmp_path, "b0", image_arrays(0.3, 0)),
            1: stats(tmp_path, "b1", image_arrays(0.3, 1)),
        },
    }
    result = paired_differences(runs, "good", resamples=100)["bad"]
    assert result["seeds"] == [0, 1] and result["lost_every_seed"]
    low, high = result["interval95"]
    assert 0 < low <= result["mean_difference"] <= high
    assert result["verdict"] == BETTER


def test_identical_strategies_are_not_separated(tmp_path):
    same = stats(tmp_path, "s", image_arrays(0.6, 3))
    result = paired_differences({"a": {0: same}, "b": {0: same}}, "a", resamples=100)["b"]
    assert result["mean_difference"] == 0.0 and result["interval95"] == [0.0, 0.0]
    assert result["verdict"] == NOT_SEPARATED and not result["lost_every_seed"]


def test_verdict_text_never_calls_a_clear_loser_equivalent(tmp_path):
    """The demo once recommended full, then named staged (lost in both seeds) the cheap equivalent."""
    image_stats = {
        "full": {s: stats(tmp_path, f"f{s}", image_arrays(0.9, s)) for s in (0, 1)},
        "staged": {s: stats(tmp_path, f"s{s}", image_arrays(0.4, s)) for s in (0, 1)},
    }
    runs = [
        run_entry(
            strategy, seed, image_stats[strategy][seed].map50_95(), wall=100 if strategy == "full" else 50
        )
        for strategy in ("full", "staged")
        for seed in (0, 1)
    ]
    results = build_results({"seeds": [0, 1]}, runs, ["full", "staged"], image_stats)
    reason = results["recommendation"]["reason"]
    assert results["recommendation"]["strategy"] == "full"
    assert results["paired"]["comparisons"]["staged"]["verdict"] == BETTER
    assert "a real loss" in reason and "lower in all 2 seeds" in reason
    assert "costs the least" not in reason and results["recommendation"]["not_separated"] == []


def run_entry(strategy: str, seed: int, map50_95: float, wall: float, improving: bool = False) -> dict:
    point = {"epoch": 10, "map50": map50_95, "map50_95": map50_95, "coco_map50": None, "coco_map50_95": None}
    return {
        "strategy": strategy, "seed": seed, "status": "done", "error": None, "dir": f"{strategy}-s{seed}",
        "best": point, "final": point, "epochs": 10, "wall_seconds": wall, "train_img_per_s": 10.0,
        "time_to_95pct_best_s": wall, "peak_rss_mb": 1000.0, "gpu_mem_mb": 0.0, "still_improving": improving,
        "phases": [{"name": "all", "trainable_params": 1, "epochs_run": 10, "end_reason": "epochs"}],
    }  # fmt: skip


def test_still_improving_runs_are_called_out():
    runs = [run_entry("full", 0, 0.5, 10, improving=True), run_entry("freeze", 0, 0.4, 5, improving=True)]
    assert "all runs were still improving" in still_improving_note(runs)
    runs[1]["still_improving"] = False
    assert still_improving_note(runs) == (
        "still improving at their last epoch (a longer budget may change their result): full s0."
    )
    runs[0]["still_improving"] = False
    assert still_improving_note(runs) is None


def comparison(per_seed: list[float], interval: tuple[float, float]) -> dict:
    return {
        "seeds": list(range(len(per_seed))), "difference_per_seed": per_seed,
        "mean_difference": sum(per_seed) / len(per_seed), "interval95": list(interval),
        "lost_every_seed": all(d > 0 for d in per_seed), "verdict": NOT_SEPARATED,
    }  # fmt: skip


def summary_table(*rows: tuple[str, float, float]) -> dict[str, dict]:
    """``compare``'s summary table for (strategy, mean best mAP50-95, mean wall seconds) rows."""
    return {
        name: {"best_map50_95": {"mean": mean}, "wall_seconds": {"mean": wall}} for name, mean, wall in rows
    }


def paired_with(winner: str, images: int, **comparisons: dict) -> dict:
    return {"winner": winner, "images": images, "comparisons": comparisons}


def recommend_paired(table: dict[str, dict], paired: dict) -> dict:
    """``compare``'s recommendation for a summary table whose best mAP50-95 has a winner, read paired."""
    return recommend(table, [{"metric": HEADLINE, "winner": paired["winner"]}], paired)


def test_a_cheaper_strategy_lower_in_every_seed_is_not_offered_as_the_alternative():
    """60 drone images of boats and cars, 100 epochs: freeze lost both seeds by 7-8 points, yet 23 val images
    could not separate it from staged; full split the seeds with staged."""
    table = summary_table(("staged", 0.508, 222), ("full", 0.506, 237), ("freeze", 0.432, 141))
    paired = paired_with(
        "staged", 23,
        full=comparison([-0.015, 0.019], (-0.051, 0.044)),
        freeze=comparison([0.069, 0.083], (-0.034, 0.154)),
    )  # fmt: skip
    recommendation = recommend_paired(table, paired)
    assert recommendation["strategy"] == "staged" and recommendation["not_separated"] == ["full", "freeze"]
    reason = recommendation["reason"]
    assert "freeze 0.076 lower (95% interval -0.034 to 0.154, lower in all 2 seeds)" in reason
    assert "costs the least" not in reason  # full is dearer than staged, and freeze lost in both seeds
    table["full"]["wall_seconds"]["mean"] = 200
    reason = recommend_paired(table, paired)["reason"]
    assert reason.endswith(
        "Of the strategies not separated from staged and not lower in every seed, full costs the least wall "
        "time (200 s against 222 s)."
    )
    one_seed = paired_with("staged", 23, full=comparison([0.004], (-0.03, 0.04)))
    assert recommend_paired(table, one_seed)["reason"].endswith(
        "Of the strategies not separated from staged, full costs the least wall time (200 s against 222 s)."
    )


def test_no_cheaper_choice_when_every_strategy_took_the_same_time():
    """A 3-minute budget on 100 dawn_fog images (draw 1): every run took its 178 s, so full, 0.3 lower and
    split across the seeds, is no cheaper than staged."""
    table = summary_table(("staged", 0.227, 178.3), ("full", 0.224, 177.8), ("freeze", 0.219, 179.1))
    paired = paired_with(
        "staged", 51,
        full=comparison([-0.002, 0.008], (-0.045, 0.038)),
        freeze=comparison([-0.001, 0.017], (-0.025, 0.052)),
    )  # fmt: skip
    reason = recommend_paired(table, paired)["reason"]
    assert "costs the least" not in reason and "full 0.003 lower" in reason
    table["full"]["wall_seconds"]["mean"] = 169.0  # 5% less: a real saving
    assert recommend_paired(table, paired)["reason"].endswith(
        "full costs the least wall time (169 s against 178 s)."
    )
