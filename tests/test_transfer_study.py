"""The transfer study's bookkeeping: regret, agreement of the advice and fixed rules, the Markdown table."""

import json
from pathlib import Path

import pytest
from conftest import load_benchmark

from yolo_transfer.strategies import load_strategy

STUDY_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "transfer_study.py"
STUDY_RECIPES = sorted(STUDY_PATH.parent.glob("*/*.yaml"))  # candidates docs/advisor-study.md measured
DEMO = STUDY_PATH.parents[1] / "yolo_transfer" / "assets" / "demo_yolov5n_source.safetensors"


@pytest.fixture(scope="module")
def study():
    return load_benchmark("transfer_study")


@pytest.mark.parametrize("path", STUDY_RECIPES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_study_recipe_files_load(path: Path) -> None:
    """Every candidate the study's commands name is a valid strategy file, named as its file."""
    assert load_strategy(path, epochs=30).name == path.stem


def case(name: str, scores: dict, advised: str, shift: float, images: int = 200) -> dict:
    return {
        "case": name,
        "scores": scores,
        "advised": advised,
        "profile": {
            "images": images,
            "label_overlap": 0.0,
            "objectness": 0.5,
            "shift": {"early": shift, "middle": shift, "late": shift, "overall": shift},
        },
    }


CASES = [
    # far domain: full wins, freeze 3 points behind
    case("far e30", {"yolov5-default": 0.10, "full": 0.30, "freeze": 0.27, "staged": 0.295}, "full", 0.7),
    # near domain: freeze wins by 2 points
    case("near e30", {"yolov5-default": 0.40, "full": 0.48, "freeze": 0.50, "staged": 0.492}, "freeze", 0.1),
]


def test_regret_is_best_minus_choice_and_none_when_not_run(study):
    assert study.regret(CASES[0], "freeze") == pytest.approx(0.03)
    assert study.regret(CASES[0], "full") == 0.0
    assert study.regret(CASES[0], "lp-ft") is None


def test_agreement_counts_choices_within_one_point(study):
    summary = study.summarise(CASES)
    assert summary["advise"] == {"cases": 2, "agreement": 1.0, "mean_regret": 0.0, "worst_regret": 0.0}
    assert summary["always full"]["agreement"] == 0.5
    assert summary["always full"]["mean_regret"] == pytest.approx(0.01)
    assert summary["always full"]["worst_regret"] == pytest.approx(0.02)
    # staged is within 1 point in both cases (0.5 and 0.8 points behind)
    assert summary["always staged (fastai fine_tune)"]["agreement"] == 1.0
    assert summary["always yolov5-default"]["agreement"] == 0.0
    # the guide freezes for small, near data and trains everything far from COCO: right in both cases
    assert summary["ultralytics guide"]["agreement"] == 1.0


def test_a_chooser_whose_strategy_never_ran_counts_no_case(study):
    summary = study.summarise([case("x", {"full": 0.3}, "full", 0.1)])
    never_ran = {"cases": 0, "agreement": None, "mean_regret": None, "worst_regret": None}
    assert summary["always freeze (yolov5 --freeze 10)"] == never_ran


def test_markdown_marks_the_best_and_lists_every_chooser(study):
    text = study.markdown(CASES, study.summarise(CASES), ["yolov5-default", "full", "freeze", "staged"])
    rows = text.splitlines()
    assert rows[2].startswith("| far e30 | 0.100 | **0.300** | 0.270 | 0.295 | full | 0.000 |")
    assert "| near e30 | 0.400 | 0.480 | **0.500** | 0.492 | freeze | 0.000 |" in rows[3]
    for chooser in study.summarise(CASES):
        assert any(row.startswith(f"| {chooser} | 2 |") for row in rows), chooser
    assert "| always full | 2 | 50% | 0.010 | 0.020 |" in rows


def test_training_subset_keeps_n_random_train_images_and_the_whole_val_split(study, tmp_path):
    from yolo_transfer.data import load_dataset
    from yolo_transfer.data.synthetic import make_domain

    source = make_domain(tmp_path / "source", "target", n_images=30, imgsz=64)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "source").rglob("*"))
    subset = study.training_subset(str(source), 10, tmp_path / "study" / "subsets" / "source-n10")

    whole, part = load_dataset(source), load_dataset(subset)
    assert len(whole.train) == 24 and len(part.train) == 10
    whole_train = {s.image.name for s in whole.train}
    assert {s.image.name for s in part.train} < whole_train
    assert sorted(s.image.name for s in part.val) == sorted(s.image.name for s in whole.val)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "source").rglob("*")) == before
    assert not list((tmp_path / "study" / "subsets").glob("*.partial"))
    # made once: a second call (a resumed study) reuses the copy
    marker = Path(subset).stat().st_mtime_ns
    assert study.training_subset(str(source), 10, tmp_path / "study" / "subsets" / "source-n10") == subset
    assert Path(subset).stat().st_mtime_ns == marker


def test_another_draw_is_its_own_case_with_other_training_images(study, tmp_path):
    from yolo_transfer.data import load_dataset
    from yolo_transfer.data.synthetic import make_domain

    source = make_domain(tmp_path / "source", "target", n_images=30, imgsz=64)
    first = study.sized_case("source", str(source), 10, tmp_path, True)
    second = study.sized_case("source", str(source), 10, tmp_path, True, draw=1)
    assert first[0] == "source-n10" and second[0] == "source-n10-d1"
    assert Path(second[1]).parent == tmp_path / "subsets" / "source-n10-d1"
    names = [{s.image.name for s in load_dataset(case[1]).train} for case in (first, second)]
    assert len(names[0]) == len(names[1]) == 10 and names[0] != names[1]


def test_study_budgets_are_epochs_by_default_or_budget_strings(study):
    assert str(study.parse_study_budget("30")) == "epochs=30"
    assert str(study.parse_study_budget("time=1.5")) == "time=1.5"
    assert study.case_label("raccoon", study.parse_study_budget("30")) == "raccoon e30"
    assert study.case_label("raccoon", study.parse_study_budget("time=1")) == "raccoon t1"
    with pytest.raises(Exception, match="expected epochs=N"):
        study.parse_study_budget("minutes=3")


def test_a_time_case_shows_the_epochs_each_strategy_fitted(study, tmp_path):
    timed = case("near t1", {"full": 0.40, "freeze": 0.45}, "freeze", 0.1)
    timed |= {"budget": "time=1", "epochs": {"full": 5, "freeze": 9}}
    row = study.markdown([timed], study.summarise([timed]), ["full", "freeze"]).splitlines()[2]
    assert row.startswith("| near t1 | 0.400 (5 ep) | **0.450** (9 ep) | freeze |")
    for strategy, epochs in (("full", 5), ("freeze", 9)):
        run = tmp_path / "runs" / f"{strategy}-s0"
        run.mkdir(parents=True)
        (run / "plan.json").write_text(f'{{"epochs": {epochs}}}')
    assert study.planned_epochs(tmp_path, ["full", "freeze", "staged"], [0]) == {"full": 5, "freeze": 9}


def test_report_only_tabulates_finished_runs_over_seeds_with_todays_rules_and_skips_the_rest(study, tmp_path):
    """--report-only trains and measures nothing: scores are means over the seeds that finished, the advice is
    today's rules applied to the saved measurements, and cases without a finished run are left out."""
    from yolo_transfer.advise import advise
    from yolo_transfer.data.synthetic import make_domain

    data = make_domain(tmp_path / "data", "target", n_images=12, imgsz=64, seed=3)
    advice = advise(data, DEMO, imgsz=64, max_images=8, budget="epochs=30", compute=False)
    case_dir = tmp_path / "study" / "raccoon-e30"
    runs = (("full", 0, 0.50), ("full", 1, 0.40), ("freeze", 0, 0.42), ("staged-short", 0, 0.44))
    for strategy, seed, score in runs:  # a candidate YAML's runs are named by its stem, as compare names them
        run = case_dir / "runs" / f"{strategy}-s{seed}"
        run.mkdir(parents=True)
        summary = {"best": {"epoch": 29, "map50_95": score}, "epochs": 30}
        (run / "summary.json").write_text(json.dumps(summary))
    stale = advice | {"recommendation": advice["recommendation"] | {"strategy": "stale"}}  # older rules
    (case_dir / "advise.json").write_text(json.dumps(stale))

    argv = ["--shared", str(tmp_path / "absent"), "--out", str(tmp_path / "study"), "--budgets", "30"]
    argv += ["--datasets", "raccoon,bccd", "--train-images", "all,50", "--seeds", "0,1"]
    candidate = STUDY_PATH.parent / "candidates" / "staged-short.yaml"
    assert study.main([*argv, "--strategies", f"full,freeze,{candidate}", "--report-only"]) == 0

    (case,) = json.loads((tmp_path / "study" / "study.json").read_text())["cases"]
    assert case["case"] == "raccoon e30"
    assert case["scores"] == {
        "full": pytest.approx(0.45),
        "freeze": pytest.approx(0.42),
        "staged-short": pytest.approx(0.44),
    }
    header, _, row = (tmp_path / "study" / "study.md").read_text().splitlines()[:3]
    assert "| staged-short |" in header and "| 0.440 |" in row
    assert case["advised"] == advice["recommendation"]["strategy"]
    assert not (tmp_path / "study" / "subsets").exists()
