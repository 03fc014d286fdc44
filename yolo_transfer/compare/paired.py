"""Paired comparison of strategies: the same validation images, the same seeds, a bootstrap over images.

Within a seed every strategy starts from the same weights, sees the same data order and is validated on the
same images (the val split does not depend on the seed), so strategies are compared in pairs: per seed the
difference of their best-epoch mAP50-95, and over seeds its mean. The uncertainty that a finite validation set
adds is estimated by a paired bootstrap over images (Efron & Tibshirani 1993): draw the validation images with
replacement, recompute both strategies' mAP50-95 on that draw (one draw shared by every strategy and seed),
average the per-seed differences, and take the 2.5th and 97.5th percentiles over the draws as the 95%
interval.
Each run keeps the matched detections of its best epoch for this (engine/image_stats.py).
"""

from __future__ import annotations

import numpy as np

from yolo_transfer.engine.image_stats import ImageStats

RESAMPLES = 300
INTERVAL = (2.5, 97.5)

BETTER = "winner better"  # the whole interval lies above zero
NOT_SEPARATED = "not separated"  # the interval includes zero


def paired_differences(
    stats: dict[str, dict[int, ImageStats]], winner: str, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, dict]:
    """For every other strategy: ``winner - other`` in best mAP50-95, per seed and as a bootstrap interval.

    ``stats[strategy][seed]`` are the runs' image statistics. Strategies without a seed in common with the
    winner, or validated on another number of images, are left out.
    """
    base = stats.get(winner, {})
    sizes = {s.n_images for runs in stats.values() for s in runs.values()}
    if not base or len(sizes) != 1:
        return {}
    n_images = sizes.pop()
    draws = np.random.default_rng(seed).integers(0, n_images, size=(resamples, n_images))
    full: dict[tuple[str, int], float] = {}
    resampled: dict[tuple[str, int], np.ndarray] = {}

    def values(strategy: str, run_seed: int) -> tuple[float, np.ndarray]:
        key = (strategy, run_seed)
        if key not in full:
            run = stats[strategy][run_seed]
            full[key] = run.map50_95()
            resampled[key] = np.array([run.map50_95(draw) for draw in draws])
        return full[key], resampled[key]

    comparisons = {}
    for other, runs in stats.items():
        seeds = sorted(set(runs) & set(base))
        if other == winner or not seeds:
            continue
        per_seed, boot = [], np.zeros(resamples)
        for run_seed in seeds:
            (win_full, win_boot), (other_full, other_boot) = values(winner, run_seed), values(other, run_seed)
            per_seed.append(win_full - other_full)
            boot += (win_boot - other_boot) / len(seeds)
        low, high = (float(v) for v in np.percentile(boot, INTERVAL))
        comparisons[other] = {
            "seeds": seeds,
            "difference_per_seed": per_seed,
            "mean_difference": float(np.mean(per_seed)),
            "interval95": [low, high],
            "lost_every_seed": all(d > 0 for d in per_seed),
            "verdict": BETTER if low > 0 else NOT_SEPARATED,
        }
    return comparisons
