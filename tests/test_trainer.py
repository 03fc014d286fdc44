"""The training loop on small synthetic data: learning, phases, exact resume after SIGKILL, NaN guard."""

import copy
import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from yolo_transfer.cli import main
from yolo_transfer.data import load_dataset, load_hyp
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine.optim import lr_lambda
from yolo_transfer.engine.run_log import RESULTS_COLUMNS
from yolo_transfer.engine.run_state import STATE_JSON, read_state, write_state
from yolo_transfer.engine.stopping import Plateau
from yolo_transfer.engine.train_config import load_run
from yolo_transfer.engine.trainer import TrainConfig, Trainer, train
from yolo_transfer.errors import ConfigError, TrainingError
from yolo_transfer.models import build_model, load_model
from yolo_transfer.strategies import Phase, Strategy, load_strategy
from yolo_transfer.strategies.phase import write_strategy

SUMMARY_KEYS = {
    "best", "final", "epochs", "wall_seconds", "train_img_per_s", "time_to_95pct_best_s", "peak_rss_mb",
    "gpu_mem_mb", "phases", "strategy", "config",
}  # fmt: skip
TIMING_COLUMNS = {"wall_s", "img_per_s", "peak_rss_mb", "gpu_mem_mb"}
SMALL = {"imgsz": 160, "batch": 8, "workers": 0, "device": "cpu", "noplots": True}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory, cache_dir) -> Path:
    """40 synthetic images at 160 px: 32 train, 8 val."""
    return make_domain(tmp_path_factory.mktemp("shapes"), "target", n_images=40, imgsz=160, seed=1)


def read_rows(run: Path) -> list[dict]:
    with open(run / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_three_epochs_from_official_weights_learn(tmp_path_factory, cache_dir, tmp_path, official_weights):
    # 480 train images at 128 px, no augmentation and AdamW: enough optimizer steps (under the nominal batch
    # of 64) for the fresh Detect head to find the new classes in three epochs
    shapes = make_domain(tmp_path_factory.mktemp("shapes600"), "target", n_images=600, imgsz=128, seed=2)
    config = TrainConfig(
        data=str(shapes), out=tmp_path / "run", weights=str(official_weights), epochs=3, imgsz=128, batch=8,
        workers=0, hyp="none", optimizer="AdamW", lr0=0.001, noplots=True,
    )  # fmt: skip
    summary = train(config, load_strategy("full", epochs=3))

    rows = read_rows(config.out)
    assert list(rows[0]) == RESULTS_COLUMNS and [int(r["epoch"]) for r in rows] == [1, 2, 3]
    loss = [sum(float(r[f"train/{k}_loss"]) for k in ("box", "obj", "cls")) for r in rows]
    map50_95 = [float(r["metrics/mAP_0.5:0.95"]) for r in rows]
    assert loss[2] < loss[1] < loss[0], loss
    assert map50_95[2] > map50_95[0], map50_95
    assert set(summary) >= SUMMARY_KEYS and summary["end_reason"] == "completed" and summary["epochs"] == 3
    assert summary["final"]["map50_95"] == pytest.approx(map50_95[-1])
    assert summary["best"]["map50_95"] == pytest.approx(max(map50_95))
    names = load_dataset(shapes).names
    all_params = sum(p.numel() for p in build_model("yolov5n", nc=len(names)).parameters())
    assert summary["phases"] == [
        {"name": "all", "trainable_params": all_params, "lr0": 0.001, "batch": 8, "epochs_run": 3,
         "end_reason": "epochs"}
    ]  # fmt: skip
    assert json.loads((config.out / "summary.json").read_text())["final"] == summary["final"]
    model, metadata = load_model(config.out / "weights" / "best.safetensors")
    assert model.names == names and metadata["epochs"] == summary["best"]["epoch"]
    assert metadata["phases"][0]["name"] == "all"
    assert metadata["provenance"]["weights"] == str(official_weights)


def test_phases_freeze_switch_on_plateau_and_log(shapes, tmp_path):
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=len(load_dataset(shapes).names))
    start = copy.deepcopy(model.state_dict())
    plateau = {"patience": 1, "max_epochs": 3, "min_delta": 0.5}
    strategy = Strategy("two-phase", "test plan", [
        Phase("neck-head", trainable=["neck", "head"], plateau=plateau),
        Phase("head", trainable=["head"], batch="auto", hyp="none", warmup_epochs=0.0),
    ])  # fmt: skip
    config = TrainConfig(data=str(shapes), out=tmp_path / "run", epochs=3, **SMALL)
    summary = Trainer(model, load_dataset(shapes), strategy, config, config.out).fit()

    phases = summary["phases"]
    assert [(p["name"], p["epochs_run"], p["end_reason"]) for p in phases] == [
        (
            "neck-head",
            2,
            "plateau",
        ),  # fitness never rose by min_delta 0.5 -> patience 1 ends it after 2 epochs
        ("head", 1, "epochs"),
    ]
    assert phases[0]["trainable_params"] > phases[1]["trainable_params"] > 0
    assert 1 <= phases[1]["batch"] <= 32 and phases[1]["batch"] & (phases[1]["batch"] - 1) == 0
    assert [r["phase"] for r in read_rows(config.out)] == ["neck-head", "neck-head", "head"]
    shipped = load_file(config.out / "weights" / "last.safetensors")
    for name, tensor in start.items():
        if name.startswith(tuple(f"model.{i}." for i in range(10))):  # backbone: frozen, BN in eval mode
            assert torch.equal(model.state_dict()[name], tensor), name
            assert torch.equal(shipped[name].to(tensor.dtype), tensor), name
    assert not torch.equal(model.state_dict()["model.17.cv1.conv.weight"], start["model.17.cv1.conv.weight"])


def _cli(out: Path, data: Path, strategy: Path) -> list[str]:
    return [
        sys.executable, "-m", "yolo_transfer.cli", "train", "--data", str(data), "--cfg", "yolov5n",
        "--epochs", "4", "--strategy", str(strategy), "--imgsz", "160", "--batch", "8", "--workers", "0",
        "--device", "cpu", "--noplots", "--out", str(out),
    ]  # fmt: skip


def _kill_after_epoch(command: list[str], state: Path, epoch: int) -> None:
    """Start ``command`` and SIGKILL it as soon as its resume state says ``epoch`` epochs are done."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if state.exists() and json.loads(state.read_text())["progress"]["epoch"] >= epoch:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert json.loads(state.read_text())["progress"]["epoch"] == epoch  # killed inside the next epoch


def test_kill_and_resume_equals_uninterrupted_run(shapes, tmp_path, capsys):
    strategy_file = tmp_path / "plan.yaml"
    write_strategy(Strategy("plan", "frozen backbone, then all", [
        Phase("neck-head", trainable=["neck", "head"], epochs=2),
        Phase("all", trainable=["all"], lr0=0.005, warmup_epochs=1.0),
    ]), strategy_file)  # fmt: skip
    killed, state = tmp_path / "killed", tmp_path / "killed" / "weights" / "last.state.json"
    _kill_after_epoch(_cli(killed, shapes, strategy_file), state, epoch=1)  # killed mid-phase 1
    _kill_after_epoch([*_cli(killed, shapes, strategy_file)[:4], "--resume", str(killed)], state, epoch=2)
    assert main(["train", "--resume", str(killed)]) == 0  # the rest, in this process
    assert "resuming" in capsys.readouterr().out

    config = TrainConfig(data=str(shapes), out=tmp_path / "straight", cfg="yolov5n", epochs=4, **SMALL)
    train(config, load_strategy(strategy_file, epochs=4))

    straight_rows, killed_rows = read_rows(config.out), read_rows(killed)
    assert len(killed_rows) == 4
    for a, b in zip(straight_rows, killed_rows, strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING_COLUMNS} == {
            k: v for k, v in b.items() if k not in TIMING_COLUMNS
        }
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(config.out / "weights" / name), load_file(killed / "weights" / name)
        assert all(torch.equal(a[key], b[key]) for key in a), name
    summaries = [json.loads((run / "summary.json").read_text()) for run in (config.out, killed)]
    assert summaries[0]["final"] == summaries[1]["final"] and summaries[0]["best"] == summaries[1]["best"]


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(shapes, tmp_path):
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=len(load_dataset(shapes).names))
    calls = {"train": 0}

    def poison_after_first_epoch(module, inputs, outputs):
        if module.training:
            calls["train"] += 1
            if calls["train"] > 4:  # 32 train images / batch 8 = 4 batches in epoch 1
                return [out * float("nan") for out in outputs]
        return None

    model.model[24].register_forward_hook(poison_after_first_epoch)
    config = TrainConfig(data=str(shapes), out=tmp_path / "run", epochs=3, **SMALL)
    strategy = load_strategy("full", epochs=3)
    trainer = Trainer(model, load_dataset(shapes), strategy, config, config.out)
    with pytest.raises(
        TrainingError, match=r"loss became nan at epoch 2, iteration 4 .*last good checkpoint"
    ):
        trainer.fit()
    weights = config.out / "weights"
    last, metadata = load_model(weights / "last.safetensors")
    assert metadata["epochs"] == 1
    assert all(torch.isfinite(p).all() for p in last.state_dict().values() if p.is_floating_point())
    assert json.loads((weights / "last.state.json").read_text())["progress"]["epoch"] == 1
    assert not [path for path in weights.iterdir() if path.name.endswith(".tmp")]
    # the run continues from its last finite epoch at a lower LR
    assert main(["train", "--resume", str(config.out), "--lr0", "0.001"]) == 0
    summary = json.loads((config.out / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["config"]["lr0"] == 0.001


def test_cli_image_budget_stops_cleanly(shapes, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(shapes), "--epochs", "5", "--imgsz", "160", "--batch", "8",
            "--workers", "0", "--max-images", "20", "--noplots", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    progress = json.loads((out / "weights" / "last.state.json").read_text())["progress"]
    assert summary["end_reason"] == "max_images" and summary["epochs"] == 1
    assert progress["images_seen"] == 20  # 8 + 8 + 4: the last batch is cut to the budget
    assert summary["phases"][0]["end_reason"] == "max_images"
    assert main(args) == 2  # the folder holds a run now
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("epochs", "batch", "end", "images"),
    [
        (1, 32, "completed", 32),  # spent after the schedule's one batch: nothing was cut
        (2, 32, "max_seconds", 32),  # spent after epoch 1 of 2: the second never starts
        (1, 8, "max_seconds", 8),  # spent after batch 1 of 4: the epoch is cut
    ],
)
def test_a_time_budget_ends_a_run_only_when_it_cuts_the_schedule(
    shapes, tmp_path, epochs, batch, end, images
):
    config = TrainConfig(
        data=str(shapes), out=tmp_path / "run", epochs=epochs, max_seconds=1e-6, **{**SMALL, "batch": batch}
    )
    summary = train(config, load_strategy("full", epochs=epochs))
    progress = json.loads((config.out / "weights" / "last.state.json").read_text())["progress"]
    assert summary["end_reason"] == end and summary["epochs"] == 1 and progress["images_seen"] == images
    assert summary["phases"][0]["end_reason"] == ("epochs" if end == "completed" else end)


class StepClock:
    """The trainer's clock in a test: only training steps take time, one second each (three in the 0-based
    epoch ``slow_epoch``)."""

    def __init__(self, monkeypatch, slow_epoch: int | None = None):
        self.now, step = 0.0, Trainer._train_step

        def timed_step(trainer, *args, **kwargs):
            self.now += 3.0 if trainer.progress.epoch == slow_epoch else 1.0
            return step(trainer, *args, **kwargs)

        monkeypatch.setattr("yolo_transfer.engine.trainer.time", self)
        monkeypatch.setattr(Trainer, "_train_step", timed_step)

    def monotonic(self) -> float:
        return self.now

    perf_counter = staticmethod(time.perf_counter)


@pytest.mark.parametrize(
    ("max_seconds", "slow_epoch", "epochs"),
    [
        (9, None, 4),  # 2 s epochs: after phase 2's second epoch (6 s) one more fits in the 3 s left
        # epoch 3 takes 6 s: 5 epochs -> 3 (6 s left at 6 s), -> 4 after a 2 s epoch (4 s left at 4 s)
        (16, 2, 5),
    ],
)
def test_a_last_phase_slower_than_its_time_budget_is_fitted_with_its_lr_schedule(
    shapes, tmp_path, monkeypatch, max_seconds, slow_epoch, epochs
):
    StepClock(monkeypatch, slow_epoch)
    phases = [  # no warmup: each epoch's LR is lr0 times the phase's schedule
        Phase("head", trainable=["head"], epochs=1, warmup_epochs=0.0), Phase("all", warmup_epochs=0.0)
    ]  # fmt: skip
    config = TrainConfig(  # 32 training images in batches of 16: two steps per epoch
        data=str(shapes), out=tmp_path / "run", epochs=6, max_seconds=max_seconds, **{**SMALL, "batch": 16}
    )
    summary = train(config, Strategy("two", "", phases))

    assert summary["end_reason"] == "completed" and summary["epochs"] == epochs
    first, last = summary["phases"]
    assert "planned_epochs" not in first and last["planned_epochs"] == 5
    assert last["epochs_run"] == epochs - 1 and last["end_reason"] == "epochs"
    state = json.loads((config.out / "weights" / STATE_JSON).read_text())
    assert state["config"]["epochs"] == epochs  # a resumed run follows the shortened schedule
    hyp, rows = load_hyp("low"), read_rows(config.out)
    schedule = lr_lambda(epochs - 1, hyp["lrf"])
    assert float(rows[1]["x/lr0"]) == pytest.approx(hyp["lr0"] * lr_lambda(5, hyp["lrf"])(0))
    assert float(rows[-1]["x/lr0"]) == pytest.approx(hyp["lr0"] * schedule(epochs - 2))


def test_a_run_resumed_after_a_time_budget_re_plan_keeps_the_re_planned_schedule(
    shapes, tmp_path, monkeypatch
):
    clock, save = StepClock(monkeypatch), Trainer._save

    class Stop(Exception):
        pass

    def save_then_stop(self, is_best):
        save(self, is_best)
        if self.progress.epoch == stop_after:
            raise Stop

    monkeypatch.setattr(Trainer, "_save", save_then_stop)
    phases = [Phase("head", trainable=["head"], epochs=1), Phase("all")]
    runs = {}
    for name, stop_after in (("whole", None), ("resumed", 3)):  # phase 2 re-planned 5 -> 3 after epoch 3
        clock.now = 0.0
        config = TrainConfig(
            data=str(shapes), out=tmp_path / name, epochs=6, max_seconds=9, **{**SMALL, "batch": 16}
        )
        if stop_after is None:
            runs[name] = train(config, Strategy("two", "", phases))
            continue
        with pytest.raises(Stop):
            train(config, Strategy("two", "", phases))
        stop_after = None
        runs[name] = train(*load_run(config.out), resume=True)

    assert runs["whole"]["epochs"] == runs["resumed"]["epochs"] == 4
    assert runs["whole"]["phases"] == runs["resumed"]["phases"]
    assert runs["resumed"]["phases"][1]["planned_epochs"] == 5
    assert read_rows(tmp_path / "whole")[-1]["x/lr0"] == read_rows(tmp_path / "resumed")[-1]["x/lr0"]
    assert runs["whole"]["final"] == runs["resumed"]["final"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "missing.yaml"], "missing.yaml"),
        (["--data", "DATA", "--imgsz", "100"], "multiple of 32"),
        (["--data", "DATA", "--imgsz", "32", "--batch", "1"], "at least 64 to train"),
        (["--data", "DATA", "--weights", "nowhere.pt"], "nowhere.pt: no such weights file"),
        (["--data", "DATA", "--strategy", "bogus"], "unknown strategy 'bogus'"),
        (["--resume", "OUT"], "not a run folder to resume"),
        ([], "train needs --data"),
    ],
)
def test_cli_errors_are_one_line(shapes, tmp_path, capsys, extra, message):
    args = [a.replace("DATA", str(shapes)).replace("OUT", str(tmp_path)) for a in extra]
    assert main(["train", *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_plateau_rule_counts_ties_as_improvement():
    rule = Plateau(patience=2)
    assert [rule.update(e, f) for e, f in enumerate([0.1, 0.1, 0.05, 0.05])] == [False, False, False, True]
    assert not any(Plateau(patience=0).update(e, 0.0) for e in range(5))
    strict = Plateau(patience=1, min_delta=0.01)
    assert [strict.update(e, f) for e, f in enumerate([0.1, 0.105])] == [False, True]


def test_state_killed_between_renames_is_recovered(tmp_path):
    write_state(tmp_path, {"x": torch.zeros(2)}, {"epoch": 1})
    old_json = (tmp_path / STATE_JSON).read_text()
    write_state(tmp_path, {"x": torch.ones(2)}, {"epoch": 2})
    # as if killed after the tensor file was renamed but before the JSON was
    (tmp_path / (STATE_JSON + ".tmp")).write_text((tmp_path / STATE_JSON).read_text())
    (tmp_path / STATE_JSON).write_text(old_json)
    tensors, meta = read_state(tmp_path)
    assert meta["epoch"] == 2 and torch.equal(tensors["x"], torch.ones(2))
    (tmp_path / (STATE_JSON + ".tmp")).unlink()
    with pytest.raises(ConfigError, match="state files mismatched"):
        read_state(tmp_path)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_peak_rss_is_the_process_own_not_that_of_the_process_that_started_it():
    """getrusage's maximum carries the parent's resident memory into a child (across fork and exec): a run
    spawned by a compare process holding a model would report the parent's memory as its peak."""
    held = torch.ones(128 * 2**20)  # 512 MB, resident
    status = Path("/proc/self/status").read_text().splitlines()
    resident_mb = int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024
    child = subprocess.run(
        [sys.executable, "-c", "from yolo_transfer.engine.run_log import peak_rss_mb; print(peak_rss_mb())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert float(child.stdout) < resident_mb - 400, (child.stdout, resident_mb)
    del held
