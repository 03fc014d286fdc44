"""compare: strategies x seeds at one budget, results.json, the report files, skip/resume, failures, Ray."""

from __future__ import annotations

import base64
import json
import shutil
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open

from yolo_transfer.cli import main
from yolo_transfer.compare import compare
from yolo_transfer.compare.demo import DEMO_WEIGHTS, shipped_weights
from yolo_transfer.compare.html_report import _phases_left_out_notice
from yolo_transfer.compare.report import render_markdown
from yolo_transfer.compare.results import EXCEEDS, SINGLE_SEED, WITHIN_NOISE, build_results
from yolo_transfer.compare.runner import device_lanes
from yolo_transfer.data.synthetic import SOURCE_CLASSES, make_domain
from yolo_transfer.engine.budget import epochs_for_images, parse_budget
from yolo_transfer.errors import ConfigError
from yolo_transfer.models import build_model, load_model, save_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUMBER = (int, float)


class Maybe:
    """Schema node: ``None`` or a value matching ``schema``."""

    def __init__(self, schema):
        self.schema = schema


POINT = {"epoch": int, "map50": NUMBER, "map50_95": NUMBER, "coco_map50": NUMBER, "coco_map50_95": NUMBER}
PHASE = {
    "name": str,
    "trainable_params": int,
    "epochs_run": int,
    "planned_epochs": Maybe(int),
    "end_reason": Maybe(str),
}
RUN = {
    "strategy": str,
    "seed": int,
    "status": str,
    "error": Maybe(str),
    "dir": str,
    "best": Maybe(POINT),
    "final": Maybe(POINT),
    "epochs": Maybe(int),
    "wall_seconds": Maybe(NUMBER),
    "train_img_per_s": Maybe(NUMBER),
    "time_to_95pct_best_s": Maybe(NUMBER),
    "peak_rss_mb": Maybe(NUMBER),
    "gpu_mem_mb": Maybe(NUMBER),
    "still_improving": Maybe(bool),
    "phases": [PHASE],
    "phases_left_out": Maybe(str),
}
STAT = {"mean": Maybe(NUMBER), "std": Maybe(NUMBER), "n": int}
METRIC_KEYS = [
    "best_map50_95", "best_map50", "final_map50_95", "best_coco_map50_95", "best_coco_map50", "wall_seconds",
    "train_img_per_s", "time_to_95pct_best_s", "peak_rss_mb", "gpu_mem_mb",
]  # fmt: skip
AGGREGATE = {
    "n_done": int,
    "n_failed": int,
    "phases": [{"name": str, "trainable_params": int}],
    **dict.fromkeys(METRIC_KEYS, STAT),
}
SCHEMA = {
    "schema_version": int,
    "setting": {
        "data": str,
        "weights": str,
        "strategies": {"*": str},
        "seeds": [int],
        "imgsz": int,
        "batch": int,
        "device": str,
        "val_fraction": NUMBER,
        "split_seed": int,
        "budget": {"kind": str, "value": NUMBER, "description": str},
    },  # fmt: skip
    "runs": [RUN],
    "aggregate": {"*": AGGREGATE},
    "winners": [
        {
            "metric": str,
            "label": str,
            "winner": str,
            "runner_up": str,
            "margin": NUMBER,
            "spread": Maybe(NUMBER),
            "verdict": str,
        }
    ],  # fmt: skip
    "paired": Maybe(
        {
            "metric": str,
            "winner": str,
            "images": int,
            "resamples": int,
            "comparisons": {
                "*": {
                    "seeds": [int],
                    "difference_per_seed": [NUMBER],
                    "mean_difference": NUMBER,
                    "interval95": [NUMBER],
                    "lost_every_seed": bool,
                    "verdict": str,
                }
            },
        }
    ),  # fmt: skip
    "still_improving": Maybe(str),
    "phases_left_out": Maybe(str),
    "recommendation": Maybe({"strategy": str, "reason": str}),
}


def validate(value, schema, where: str = "$") -> None:
    """Assert that ``value`` matches ``schema`` (dicts of required keys, one-item lists, types, Maybe)."""
    if isinstance(schema, Maybe):
        if value is not None:
            validate(value, schema.schema, where)
    elif isinstance(schema, dict):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        if "*" in schema:
            for key, item in value.items():
                validate(item, schema["*"], f"{where}.{key}")
            return
        missing = set(schema) - set(value)
        assert not missing, f"{where}: missing keys {sorted(missing)}"
        for key, sub in schema.items():
            validate(value[key], sub, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(value, list), f"{where}: expected a list, got {value!r}"
        for i, item in enumerate(value):
            validate(item, schema[0], f"{where}[{i}]")
    else:
        ok = isinstance(value, schema) and (schema is bool or not isinstance(value, bool))
        assert ok, f"{where}: expected {schema}, got {value!r}"


class References(HTMLParser):
    """Collects every src and href of a page."""

    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> dict:
    """A tiny target domain and yolov5n weights that know the source classes (the transfer path runs)."""
    root = tmp_path_factory.mktemp("compare")
    data = make_domain(root / "target", "target", n_images=30, imgsz=128, seed=3)
    weights = root / "source.safetensors"
    save_model(build_model("yolov5n", nc=len(SOURCE_CLASSES), names=SOURCE_CLASSES), weights, {})
    return {"root": root, "data": str(data), "weights": str(weights)}


def run_compare(setting: dict, out: Path, strategies: str, *extra: str) -> int:
    return main(
        ["compare", "--data", setting["data"], "--weights", setting["weights"], "--strategies", strategies,
         "--budget", "epochs=1", "--imgsz", "128", "--batch", "8", "--workers", "0", "--noplots", "--out",
         str(out), *extra]
    )  # fmt: skip


@pytest.fixture(scope="module")
def compared(setting) -> Path:
    """full and freeze for one epoch, in two spawned worker processes."""
    out = setting["root"] / "out"
    assert run_compare(setting, out, "full,freeze", "--jobs", "2") == 0
    return out


def test_results_json_matches_the_schema(compared):
    results = json.loads((compared / "results.json").read_text())
    validate(results, SCHEMA)
    runs = {run["strategy"]: run for run in results["runs"]}
    assert sorted(runs) == ["freeze", "full"]
    assert all(run["status"] == "done" and run["epochs"] == 1 and run["seed"] == 0 for run in runs.values())
    assert all((compared / run["dir"] / "summary.json").is_file() for run in runs.values())
    full_params, freeze_params = (runs[s]["phases"][0]["trainable_params"] for s in ("full", "freeze"))
    assert freeze_params < full_params  # the frozen backbone is not trained
    assert results["aggregate"]["full"]["best_map50_95"]["std"] is None  # one seed
    assert {w["verdict"] for w in results["winners"]} == {SINGLE_SEED}  # wall time always separates them
    assert results["recommendation"]["strategy"] in runs


def test_report_files_parse_and_every_reference_exists(compared):
    plots = [f"plots/{name}.png" for name in ("map_vs_epoch", "map_vs_time", "loss", "cost")]
    for name in ("report.md", "report.html", "predictions.png", *plots):
        assert (compared / name).is_file(), name
    assert cv2.imread(str(compared / "predictions.png")) is not None
    parser = References()
    parser.feed((compared / "report.html").read_text())
    parser.close()
    images = [ref for ref in parser.refs if ref.startswith("data:")]
    files = [ref for ref in parser.refs if not ref.startswith("data:")]
    assert len(images) == 5  # four plots and the prediction grid, embedded
    for ref in images:
        assert ref.startswith("data:image/png;base64,")
        assert base64.b64decode(ref.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    assert {"results.json", "report.md"} <= set(files)
    for ref in files:
        assert "://" not in ref and (compared / ref).is_file(), ref
    markdown = (compared / "report.md").read_text()
    assert "| full |" in markdown and "| freeze |" in markdown


def test_rerun_skips_finished_runs_and_resumes_unfinished(setting, compared, capsys):
    summaries = {run: (compared / "runs" / run / "summary.json") for run in ("full-s0", "freeze-s0")}
    before = {run: path.stat().st_mtime_ns for run, path in summaries.items()}
    summaries["full-s0"].unlink()  # full looks interrupted: resume state but no summary
    capsys.readouterr()
    assert run_compare(setting, compared, "full,freeze") == 0
    output = capsys.readouterr().out
    assert "freeze seed 0: finished earlier, skipped" in output
    assert "full seed 0: finished earlier" not in output
    assert summaries["freeze-s0"].stat().st_mtime_ns == before["freeze-s0"]
    assert json.loads(summaries["full-s0"].read_text())["epochs"] == 1  # resumed, not trained again
    assert len((compared / "runs" / "full-s0" / "results.csv").read_text().splitlines()) == 2


def test_a_failing_run_is_reported_and_the_others_go_on(setting, compared, capsys):
    broken = setting["root"] / "broken.yaml"
    broken.write_text("name: broken\ndescription: its phase's augmentation file is missing\n"
                      "phases:\n  - name: all\n    hyp: no-such-hyp.yaml\n")  # fmt: skip
    out = setting["root"] / "with-failure"
    shutil.copytree(compared / "runs" / "freeze-s0", out / "runs" / "freeze-s0")
    shutil.copy(compared / "compare.json", out / "compare.json")
    assert run_compare(setting, out, f"freeze,{broken}") == 1
    results = json.loads((out / "results.json").read_text())
    validate(results, SCHEMA)
    runs = {run["strategy"]: run for run in results["runs"]}
    assert runs["freeze"]["status"] == "done"
    assert runs["broken"]["status"] == "failed" and "no-such-hyp.yaml" in runs["broken"]["error"]
    assert runs["broken"]["best"] is None
    assert (out / "runs" / "broken-s0" / "error.txt").is_file()
    assert results["recommendation"]["strategy"] == "freeze"
    assert "no-such-hyp.yaml" in (out / "report.html").read_text()
    assert "broken seed 0 failed" in capsys.readouterr().out


def test_another_setting_in_the_same_folder_is_refused(setting, compared):
    options = {"imgsz": 160, "batch": 8, "hyp": "low", "optimizer": "SGD", "lr0": None, "cos_lr": False,
               "patience": 100, "device": "cpu", "workers": 0, "cache": False,
               "val_fraction": 0.2, "split_seed": 0}  # fmt: skip
    with pytest.raises(ConfigError, match="compare.json.*imgsz"):
        compare(setting["data"], setting["weights"], ["full"], parse_budget("epochs=1"), [0], compared,
                train_options=options)  # fmt: skip


def structure(value):
    """The shape of a JSON document: its keys (recursively) and list lengths, not its values."""
    if isinstance(value, dict):
        return {key: structure(item) for key, item in value.items()}
    if isinstance(value, list):
        return [structure(item) for item in value]
    return None


def test_ray_backend_runs_each_run_as_a_task(setting, compared):
    import ray  # installed by make test (the dev extra): this test never skips

    # a lean local instance; compare uses the instance this process is connected to
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20,
             configure_logging=False)  # fmt: skip
    try:
        out = setting["root"] / "ray"
        assert run_compare(setting, out, "full,freeze", "--backend", "ray") == 0
        assert run_compare(setting, out, "full,freeze", "--backend", "ray") == 0  # finished runs: skipped
    finally:
        ray.shutdown()
    results = json.loads((out / "results.json").read_text())
    validate(results, SCHEMA)
    local = json.loads((compared / "results.json").read_text())
    # winners holds the metrics that separate strategies (a tie is left out): values decide its length
    winners, local_winners = results.pop("winners"), local.pop("winners")
    assert {tuple(w) for w in winners} == {tuple(w) for w in local_winners}
    assert structure(results) == structure(local)
    assert [run["status"] for run in results["runs"]] == ["done", "done"]
    assert "epoch 1/1" in (out / "runs" / "freeze-s0" / "train.log").read_text()  # the task's own output


def test_compare_devices_need_those_gpus(setting, tmp_path, capsys):
    assert device_lanes("cpu,cpu") == ["cpu", "cpu"]
    if not torch.cuda.is_available():
        assert run_compare(setting, tmp_path / "gpus", "full", "--devices", "0,1") == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_budget_parsing():
    assert parse_budget("epochs=12").kind == "epochs" and parse_budget("epochs=12").max_seconds is None
    assert parse_budget("time=1.5").max_seconds == 90.0
    assert parse_budget(" images = 1000 ").max_images == 1000
    assert epochs_for_images(parse_budget("images=1000"), n_train=300) == 4
    for bad in ("epochs=0", "epochs=2.5", "minutes=3", "time=", "images=-4"):
        with pytest.raises(ConfigError, match="--budget"):
            parse_budget(bad)


def _run(strategy: str, seed: int, best: float, wall: float) -> dict:
    point = {
        "epoch": 3,
        "map50": best + 0.2,
        "map50_95": best,
        "coco_map50": best + 0.2,
        "coco_map50_95": best,
    }
    return {"strategy": strategy, "seed": seed, "status": "done", "error": None, "dir": f"runs/{strategy}",
            "best": point, "final": point, "epochs": 4, "wall_seconds": wall, "train_img_per_s": 100.0 / wall,
            "time_to_95pct_best_s": wall / 2, "peak_rss_mb": 900.0, "gpu_mem_mb": 0.0,
            "still_improving": False, "phases_left_out": None,
            "phases": [{"name": "all", "trainable_params": 1000, "epochs_run": 4, "planned_epochs": None,
                        "end_reason": "epochs"}]}  # fmt: skip


def test_winner_margin_against_the_seed_spread():
    setting = {"seeds": [0, 1]}
    # full 0.50 ± 0.01 vs freeze 0.40 ± 0.01: the margin (0.10) exceeds the spread (0.02)
    runs = [_run("full", 0, 0.49, 60), _run("full", 1, 0.51, 62), _run("freeze", 0, 0.39, 30),
            _run("freeze", 1, 0.41, 31)]  # fmt: skip
    results = build_results(setting, runs, ["full", "freeze"])
    validate(results, {k: v for k, v in SCHEMA.items() if k != "setting"})
    headline = next(w for w in results["winners"] if w["metric"] == "best_map50_95")
    assert (headline["winner"], headline["verdict"]) == ("full", EXCEEDS)
    assert headline["margin"] == pytest.approx(0.10) and headline["spread"] == pytest.approx(
        2 * np.std([0.49, 0.51], ddof=1)
    )
    assert results["recommendation"]["strategy"] == "full"
    # staged 0.505 ± 0.035 wins but overlaps full (0.50 ± 0.014): within noise; the cheaper full is named
    runs += [_run("staged", 0, 0.48, 70), _run("staged", 1, 0.53, 71)]
    results = build_results(setting, runs, ["full", "freeze", "staged"])
    headline = next(w for w in results["winners"] if w["metric"] == "best_map50_95")
    assert (headline["winner"], headline["runner_up"], headline["verdict"]) == (
        "staged",
        "full",
        WITHIN_NOISE,
    )
    reason = results["recommendation"]["reason"]
    assert (
        results["recommendation"]["strategy"] == "staged"
        and "full is within the seed-to-seed spread" in reason
    )
    assert "the cheapest of them is full" in reason
    wall = next(w for w in results["winners"] if w["metric"] == "wall_seconds")
    assert (wall["winner"], wall["verdict"]) == ("freeze", EXCEEDS)
    # the same under a time budget, every run 60 s: no strategy is cheaper than staged
    same_time = [{**run, "wall_seconds": 60} for run in runs]
    reason = build_results(setting, same_time, ["full", "freeze", "staged"])["recommendation"]["reason"]
    assert "full is within the seed-to-seed spread" in reason and "cheapest" not in reason


def test_a_time_plan_that_leaves_a_phase_out_is_said_in_the_report():
    why = "'frozen-backbone' only: 'all' would get fewer than its min_epochs 10"
    runs = [_run("full", 0, 0.5, 60), _run("staged", 0, 0.55, 60), _run("staged", 1, 0.56, 60)]
    for run in runs[1:]:
        run["phases_left_out"] = why
    setting = {"data": "d", "weights": "w", "seeds": [0, 1], "imgsz": 128, "batch": 8, "hyp": "low",
               "device": "cpu", "budget": {"description": "1 minutes"}}  # fmt: skip
    results = build_results(setting, runs, ["full", "staged"])
    note = f"under this time budget staged trains {why}."
    assert results["phases_left_out"] == note
    assert f"**Note:** {note}" in render_markdown(results, {}, None)
    assert escape(note) in _phases_left_out_notice(results)
    assert build_results({"seeds": [0]}, runs[:1], ["full"])["phases_left_out"] is None


def test_single_seed_spread_is_unknown():
    results = build_results(
        {"seeds": [0]}, [_run("full", 0, 0.5, 60), _run("freeze", 0, 0.4, 30)], ["full", "freeze"]
    )
    assert {w["verdict"] for w in results["winners"]} == {SINGLE_SEED}
    assert "Single seed" in results["recommendation"]["reason"]


def test_shipped_demo_checkpoint_is_small_and_loads():
    path = shipped_weights()
    assert path.name == DEMO_WEIGHTS and path.stat().st_size < 5 * 2**20
    with safe_open(str(path), framework="pt") as handle:
        assert handle.get_tensor(next(iter(handle.keys()))).dtype.is_floating_point
    model, metadata = load_model(path)
    assert list(model.names) == SOURCE_CLASSES and model.nc == len(SOURCE_CLASSES)
    assert metadata["provenance"]["recipe"] == "yolo-transfer demo --rebuild-weights"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--imgsz", "100"], "--imgsz must be a positive multiple of 32"),
        (["--batch", "0"], "--batch must be >= 1"),
        (["--strategies", "full,missing.yaml"], "missing.yaml"),
        (["--strategies", "full,nonsense"], "unknown strategy 'nonsense'"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(setting, tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    args = ["compare", "--data", setting["data"], "--weights", setting["weights"], "--budget", "epochs=1",
            "--workers", "0", "--out", str(out)]  # fmt: skip
    if "--strategies" not in extra:
        args += ["--strategies", "full"]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
