"""benchmarks/train_throughput.py's report: a fraction of a limit the machine disturbed is marked."""

from __future__ import annotations

import argparse

import pytest
from conftest import load_benchmark
from rich.console import Console

from yolo_transfer.engine.step_timer import SECTIONS


@pytest.fixture(scope="module")
def throughput():
    return load_benchmark("train_throughput")


def test_row_limit_is_the_mean_and_flags_a_limit_that_moved(throughput):
    assert throughput.row_limit(70.0, 72.0) == (71.0, True)
    assert throughput.row_limit(36.0, 30.0) == (33.0, True)  # 20% apart: drift
    assert throughput.row_limit(71.7, 16.3) == pytest.approx((44.0, False))  # run 28, staged
    assert throughput.row_limit(16.3, 71.7)[1] is False


def _results(limits: dict[str, tuple[float, float]]) -> dict[str, dict]:
    results = {}
    for job, (before, after) in limits.items():
        results[f"before:{job}"], results[f"after:{job}"] = {"img_per_s": before}, {"img_per_s": after}
        results[job] = {
            "img_per_s": 59.5, "later_img_per_s": None, "breakdown": dict.fromkeys(SECTIONS, 0.5),
            "peak_rss_mb": 1200.0, "imports_rss_mb": 720.0,
            "loading": {"workers": 0, "threads": 2, "cache": True},
        }  # fmt: skip
    return results


def _rendered(throughput, results: dict[str, dict]) -> str:
    args = argparse.Namespace(
        device="cpu", weights="yolov5n.pt", data="dawn_fog/data.yaml", imgsz=320, batch=16, epochs=3
    )
    console = Console(record=True, width=400)
    console.print(throughput.report(args, results, 120.0))
    return console.export_text()


def test_report_marks_a_disturbed_row_and_says_why(throughput):
    steady = {"train:full": (36.4, 35.6), "train:freeze": (66.6, 71.7), "train:staged": (71.7, 70.0)}
    text = _rendered(throughput, _results(steady))
    assert "disturbed" not in text and "*" not in text

    text = _rendered(throughput, _results(steady | {"train:staged": (71.7, 16.3)}))
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│ ")}
    assert "135% *" in rows["staged, phase 1"]
    assert "*" not in rows["full"] and "*" not in rows["freeze"]
    assert "* its two limit runs differ by more than 25%: the machine was disturbed, run again." in text
