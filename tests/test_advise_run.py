"""``advise`` as a command with a run folder (runs/advise/exp, exp2, ..., advise.json) and bars with ETA."""

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

import yolo_transfer.advise as advise_package
from yolo_transfer.advise import advise
from yolo_transfer.advise.report import compute_table
from yolo_transfer.cli import main
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine.budget import parse_budget

DEMO = Path(__file__).resolve().parents[1] / "yolo_transfer" / "assets" / "demo_yolov5n_source.safetensors"
SMALL = ["--imgsz", "64", "--max-images", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_TRANSFER_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield make_domain(tmp_path_factory.mktemp("data"), "target", n_images=12, imgsz=64, seed=5)


def test_advise_writes_advise_json_into_exp_then_exp2(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(advise_package, "_time_strategies", lambda *args: None)  # untimed: quicker
    project = tmp_path / "advise"
    argv = ["advise", "--data", str(data), "--weights", str(DEMO), *SMALL, "--budget", "epochs=5"]
    assert main([*argv, "--project", str(project), "--json"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # stdout stays one JSON object; the folder lines go to stderr
    assert (
        f"run folder: {project / 'exp'}" in captured.err and f"results in {project / 'exp'}" in captured.err
    )
    assert json.loads((project / "exp" / "advise.json").read_text()) == printed
    assert main([*argv, "--project", str(project)]) == 0
    out = capsys.readouterr().out
    assert f"run folder: {project / 'exp2'}" in out and f"results in {project / 'exp2'}" in out
    saved = json.loads((project / "exp2" / "advise.json").read_text())
    assert saved["recommendation"]["strategy"] == printed["recommendation"]["strategy"]
    assert main([*argv, "--out", str(tmp_path / "exact"), "--json"]) == 0
    assert (tmp_path / "exact" / "advise.json").is_file()
    assert sorted(p.name for p in project.iterdir()) == ["exp", "exp2"]


def test_advise_refuses_an_output_folder_that_is_a_file_before_measuring(data, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    argv = ["advise", "--data", str(data), "--weights", str(DEMO), *SMALL, "--out", str(tmp_path / "file")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--out must be a folder, but it is a file" in err and "Traceback" not in err


def test_advise_shows_bars_for_images_measured_and_strategies_timed(data, monkeypatch):
    shown = []
    make_bars = advise_package.counting_bars
    monkeypatch.setattr(
        advise_package, "counting_bars", lambda console: shown.append(make_bars(console)) or shown[-1]
    )
    advise(data, DEMO, imgsz=64, max_images=8, console=Console(force_terminal=True, quiet=True))
    (progress,) = shown
    images, steps = progress.tasks
    assert (images.description, images.completed, images.total) == ("images measured", 8, 8)
    assert steps.description.startswith("strategies timed") and steps.completed == steps.total > 0
    columns = [type(column).__name__ for column in progress.columns]
    assert "TimeRemainingColumn" in columns and "MofNCompleteColumn" in columns


@pytest.fixture(scope="module")
def timed_advice(data) -> str:
    """advise.json's text for a 1-minute budget."""
    return json.dumps(advise(data, DEMO, imgsz=64, max_images=8, budget="time=1"))


def test_reapply_rules_recommends_from_saved_measurements_without_measuring_again(timed_advice, monkeypatch):
    saved = json.loads(timed_advice)
    monkeypatch.setattr(advise_package, "advise", None)  # nothing is measured again
    again = advise_package.reapply_rules(saved)
    assert again["recommendation"] == saved["recommendation"] and again["notes"] == saved["notes"]

    def with_fit(full: int, freeze: int) -> dict:
        fit = json.loads(json.dumps(saved))
        fit["compute"]["strategies"]["full"]["epochs_fit"] = full
        fit["compute"]["strategies"]["freeze"]["epochs_fit"] = freeze
        return advise_package.reapply_rules(fit)["recommendation"]

    bound, roomy = with_fit(full=6, freeze=10), with_fit(full=60, freeze=100)
    assert bound["strategy"] == "freeze"
    assert bound["reasons"]["strategy"]["rule"].startswith("time budget fits <= 10 epochs of full FT")
    assert not roomy["reasons"]["strategy"]["rule"].startswith("time budget fits")
    staged = saved["compute"]["strategies"]["staged"]
    assert staged["phases_fit"] in (1, 2) and len(staged["phase_epoch_s"]) == 2


def test_advise_times_the_training_steps_at_the_batch_it_recommends(timed_advice):
    saved = json.loads(timed_advice)  # 12 images: batch 2 keeps 4 optimizer steps per epoch
    assert saved["compute"]["batch"] == saved["recommendation"]["batch"] == 2


def test_a_strategy_whose_time_plan_leaves_phases_out_is_not_what_the_budget_fits(timed_advice):
    saved = json.loads(timed_advice)
    saved["compute"]["strategies"]["staged"] |= {"epochs_fit": 12, "phases_fit": 1}
    budget = parse_budget("time=1")
    assert "staged" not in advise_package._profile(saved, budget).epochs_fit
    assert "full" in advise_package._profile(saved, budget).epochs_fit
    console = Console(width=200, record=True)
    console.print(compute_table(saved))
    assert "12 (first 1 of 2 phases)" in console.export_text()
    saved["compute"]["strategies"]["staged"]["phases_fit"] = 2
    assert advise_package._profile(saved, budget).epochs_fit["staged"] == 12
    del saved["compute"]["strategies"]["staged"]["phases_fit"]  # saved before plans could leave phases out
    assert advise_package._profile(saved, budget).epochs_fit["staged"] == 12


def test_reapply_rules_reads_the_model_size_from_the_checkpoint_for_older_files(data):
    saved = advise(data, DEMO, imgsz=64, max_images=8, budget="epochs=30", compute=False)
    assert (saved["settings"]["model_size"], saved["settings"]["backbone_modules"]) == ("n", 10)
    read_later = {"model_size", "backbone_modules"}
    older = saved | {"settings": {k: v for k, v in saved["settings"].items() if k not in read_later}}
    again = advise_package.reapply_rules(older)
    assert again["recommendation"] == saved["recommendation"] and again["settings"] == saved["settings"]


def test_the_measured_share_of_large_boxes_decides_far_data_of_known_classes(data):
    """The rules read the large-box share advise measured: far data of known classes from 236 images gets
    full with 75% of its boxes large (license_plates' vehicles), staged with 51% (the same zoomed out)."""
    saved = advise(data, DEMO, imgsz=64, max_images=8, budget="epochs=30", compute=False)
    large = saved["scale"]["box_sizes"]["shares"]["large"]
    assert advise_package._profile(saved, parse_budget("epochs=30")).large_box_share == large
    far_known = json.loads(json.dumps(saved))
    far_known["scale"]["images"] = 236
    far_known["labels"]["fraction"] = 1.0
    far_known["shift"] |= {"early": 4.91, "overall": 1.54}

    def strategy(share: float) -> str:
        far_known["scale"]["box_sizes"]["shares"]["large"] = share
        return advise_package.reapply_rules(far_known)["recommendation"]["strategy"]

    assert (strategy(0.75), strategy(0.51)) == ("full", "staged")


def test_a_p6_checkpoint_is_measured_by_its_own_backbone(data, tmp_path):
    from yolo_transfer.models import build_model
    from yolo_transfer.models.checkpoint import save_model

    torch.manual_seed(0)
    weights = tmp_path / "yolov5n6.safetensors"
    save_model(build_model("yolov5n6", nc=3, names=["a", "b", "c"]), weights, {})
    saved = advise(data, weights, imgsz=64, max_images=8, budget="epochs=30", compute=False)
    assert (saved["settings"]["model_size"], saved["settings"]["backbone_modules"]) == ("n", 12)
    assert saved["shift"]["stages"] == {"early": [0, 4], "middle": [5, 11], "late": [12, 32]}
