"""DDP training on the CPU (gloo, 2 processes): the gradient step equals one process's, torchrun runs a
staged run end to end, a killed rank ends the run with an error, and a run resumes on another world size."""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.nn.modules.batchnorm import _BatchNorm

from yolo_transfer.cli import main
from yolo_transfer.data import load_dataset
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine.distributed import TIMEOUT_ENV, Distributed, launch, parse_devices, session
from yolo_transfer.engine.run_state import STATE_JSON, read_state
from yolo_transfer.engine.trainer import TrainConfig, Trainer
from yolo_transfer.errors import ConfigError, TrainingError
from yolo_transfer.models import build_model, load_model, save_model
from yolo_transfer.strategies import load_strategy

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["--imgsz", "64", "--batch", "4", "--workers", "0", "--device", "cpu", "--hyp", "none", "--noplots"]
BACKBONE = tuple(f"model.{i}." for i in range(10))


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> dict:
    """16 synthetic 64 px images, a yolov5n checkpoint for their classes, a shared dataset cache."""
    root = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_TRANSFER_CACHE", str(root / "cache"))  # inherited by every launched rank
        data = make_domain(root / "data", "target", n_images=16, imgsz=64, seed=1)
        names = load_dataset(data).names
        torch.manual_seed(0)
        weights = root / "start.safetensors"
        save_model(build_model("yolov5n", nc=len(names), names=names), weights, {})
        yield {"root": root, "data": data, "weights": weights, "names": names}


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def batch_of_eight() -> tuple[torch.Tensor, torch.Tensor]:
    """Eight images whose boxes lie in the same places (so each half matches as many anchors as the other,
    and the loss of 8 is the mean of the two halves' losses); contents and classes differ."""
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (8, 3, 64, 64), generator=generator, dtype=torch.uint8)
    rows = [[i, i % 2, 0.3, 0.3, 0.25, 0.3] for i in range(8)] + [[i, (i + 1) % 2, 0.65, 0.6, 0.4, 0.5]
                                                                   for i in range(8)]  # fmt: skip
    return images, torch.tensor(rows)


def one_step(setting: dict, out: Path, dist: Distributed | None, images, targets) -> dict:
    """One optimizer step of the real trainer (phase 'frozen-backbone' of freeze: backbone frozen)."""
    config = TrainConfig(
        data=str(setting["data"]), out=out, weights=str(setting["weights"]), epochs=1, imgsz=64, batch=8,
        workers=0, device="cpu", hyp="none",
    )  # fmt: skip
    model, _ = load_model(config.weights, names=setting["names"])
    trainer = Trainer(
        model, load_dataset(config.data), load_strategy("freeze", epochs=1), config, out, (), dist
    )
    active = trainer._start_phase(None)
    for layer in trainer.model.modules():  # eval-mode BN: a batch's statistics would differ between halves
        if isinstance(layer, _BatchNorm):
            layer.eval()
    trainer.progress.accumulate = 1  # step at once
    trainer._train_step(active, images, targets, iteration=0)
    return {name: value.detach().contiguous() for name, value in trainer.model.state_dict().items()}


def _rank_step(rank: int, setting: dict, rendezvous: str, out: Path) -> None:
    torch_dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        images, targets = batch_of_eight()
        half = targets[(targets[:, 0] >= 4 * rank) & (targets[:, 0] < 4 * rank + 4)].clone()
        half[:, 0] -= 4 * rank
        dist = Distributed(torch.device("cpu"), rank, rank, 2)
        state = one_step(setting, out / f"rank{rank}", dist, images[4 * rank : 4 * rank + 4], half)
        save_file(state, out / f"rank{rank}.safetensors")
    finally:
        torch_dist.destroy_process_group()


def test_two_ranks_of_four_step_as_one_process_of_eight(setting, tmp_path):
    # BatchNorm runs in eval mode here: in train mode each rank normalises by its own 4 images (as yolov5's
    # DDP without --sync-bn; SyncBatchNorm does not run on the CPU), so the two could not agree exactly
    mp.spawn(_rank_step, args=(setting, str(tmp_path / "rendezvous"), tmp_path), nprocs=2, join=True)
    single = one_step(setting, tmp_path / "single", None, *batch_of_eight())
    start = load_file(setting["weights"])
    for rank in (0, 1):
        state = load_file(tmp_path / f"rank{rank}.safetensors")
        for name, value in single.items():
            torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-6, msg=name)
            if name.startswith(BACKBONE):  # frozen, BN statistics too, on every rank
                assert torch.equal(state[name], start[name]), name
    assert not torch.equal(single["model.24.m.0.weight"], start["model.24.m.0.weight"])  # a real step


def test_torchrun_staged_run_writes_one_set_of_checkpoints(setting):
    out = setting["root"] / "torchrun"
    done = cli(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "yolo_transfer", "train", "--data", str(setting["data"]), "--weights", str(setting["weights"]),
        "--strategy", "staged", "--epochs", "2", "--out", str(out), *TRAIN,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 2 and summary["end_reason"] == "completed"
    assert [(p["name"], p["epochs_run"], p["batch"]) for p in summary["phases"]] == [
        ("frozen-backbone", 1, 4), ("all", 1, 4)
    ]  # fmt: skip
    with open(out / "results.csv", newline="") as handle:
        assert [row["epoch"].strip() for row in csv.DictReader(handle)] == ["1", "2"]
    weights = sorted(path.name for path in (out / "weights").iterdir())
    assert len(weights) == 4 and weights[:2] == ["best.safetensors", "last.safetensors"], weights
    assert weights[3] == STATE_JSON and weights[2].startswith("last.state.")
    assert done.stdout.count("epoch 2/2 [all]") == 1  # rank 0 alone prints


def _rank_pids(parent: int) -> list[int]:
    """The launched rank processes of ``parent`` (multiprocessing spawn children), in start order."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    ranks = [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    return sorted(ranks)


def test_killed_rank_ends_the_run_and_it_resumes_on_another_world_size(setting, monkeypatch, capsys):
    out = setting["root"] / "killed"
    command = [
        sys.executable, "-m", "yolo_transfer", "train", "--devices", "cpu,cpu", "--strategy", "staged",
        "--data", str(setting["data"]), "--weights", str(setting["weights"]), "--epochs", "2",
        "--out", str(out), *TRAIN,
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (out / "weights" / STATE_JSON).is_file():  # epoch 1 (the frozen phase) is saved
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        pids = _rank_pids(process.pid)
        assert len(pids) == 2, pids
        os.kill(pids[-1], signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=120)  # no hang: the launcher stops the other rank
    finally:
        process.kill()
    assert process.returncode == 2, stderr[-3000:]
    # the launcher names the first process it finds ended: the killed one, or rank 0 that lost contact with it
    named = ("rank 1 (signal SIGKILL)", "rank 0 (it lost contact with another training process")
    assert "error: 1 of 2 training processes failed: rank" in stderr, stderr
    assert any(name in stderr for name in named), stderr

    tensors, meta = read_state(out / "weights")
    assert meta["progress"]["epoch"] == 1  # the last epoch both ranks finished
    start = load_file(setting["weights"])
    frozen = [name for name in start if name.startswith(BACKBONE)]
    assert frozen and all(torch.equal(tensors[f"model.{name}"], start[name]) for name in frozen)

    with monkeypatch.context() as patch:  # refused before any process starts
        patch.setattr("yolo_transfer.engine.trainer.launch", lambda *args: pytest.fail("launched"))
        assert main(["train", "--resume", str(out), "--devices", "cpu,cpu,cpu"]) == 2
    refusal = "error: batch 4 is the global batch and must divide evenly between the 3"
    assert capsys.readouterr().err.count(refusal) == 1

    assert main(["train", "--resume", str(out)]) == 0  # one process (this one), global batch 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 1 and summary["epochs"] == 2 and summary["end_reason"] == "completed"
    assert [p["batch"] for p in summary["phases"]] == [4, 4]


def _leave_while_rank_0_waits(args) -> int:
    """Rank 1 ends at once (without an error); rank 0 waits for it in an all-reduce."""
    with session("cpu", 2) as dist:
        if dist.rank == 0:
            torch_dist.all_reduce(torch.ones(1))
    return 0


def test_a_rank_that_loses_contact_says_so_instead_of_failing_as_the_cause(monkeypatch, capfd):
    monkeypatch.setenv(TIMEOUT_ENV, "60")  # a wait that never ends would fail the test, not hang it
    with pytest.raises(TrainingError) as failure:
        launch(_leave_while_rank_0_waits, argparse.Namespace(devices="cpu,cpu"))
    expected = "1 of 2 training processes failed: rank 0 (it lost contact with another training process"
    assert str(failure.value).startswith(expected), failure.value
    stderr = capfd.readouterr().err
    assert "rank 0: lost contact with another training process" in stderr  # one line, not gloo's traceback
    assert "Connection closed by peer" not in stderr, stderr


def test_devices_and_batch_checks():
    assert parse_devices("0,1,2,3") == ("cuda", 4, "0,1,2,3")
    assert parse_devices("cpu,cpu") == ("cpu", 2, None)
    for bad in ("0,0", "cpu,1", "", "gpu"):
        with pytest.raises(ConfigError, match="--devices"):
            parse_devices(bad)
    two = Distributed(torch.device("cpu"), 1, 1, 2)
    assert two.rank_batch(16) == 8 and not two.is_main
    with pytest.raises(ConfigError, match="batch 5 is the global batch"):
        two.rank_batch(5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch", "4", "--devices", "cpu,cpu,cpu"], "batch 4 is the global batch"),
        (["--batch", "4", "--devices", "cpu,cpu", "--sync-bn"], "--sync-bn needs CUDA GPUs"),
        (["--batch", "4", "--devices", "cpu,cpu", "--imgsz", "100"], "multiple of 32"),
    ],
)
def test_what_every_rank_would_refuse_is_refused_before_any_process_starts(
    setting, tmp_path, monkeypatch, capsys, extra, message
):
    monkeypatch.setattr("yolo_transfer.engine.trainer.launch", lambda *args: pytest.fail("launched"))
    argv = ["train", "--data", str(setting["data"]), "--weights", str(setting["weights"]), "--device", "cpu"]
    assert main([*argv, *extra, "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.count(message) == 1


def test_sync_bn_needs_gpus_and_collectives_time_out(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="--sync-bn needs CUDA GPUs"), session("cpu", 8, sync_bn=True):
        pass
    seen = {}
    monkeypatch.setenv(TIMEOUT_ENV, "42")
    monkeypatch.setattr(
        torch_dist, "init_process_group", lambda backend, timeout: seen.update(b=backend, t=timeout)
    )
    monkeypatch.setattr(torch_dist, "get_rank", lambda: 1)
    monkeypatch.setattr(torch_dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch_dist, "destroy_process_group", lambda: seen.update(destroyed=True))
    with pytest.raises(ConfigError, match="batch 9 is the global batch"), session("cpu", 9):
        pass
    with session("cpu", 8) as dist:
        assert (dist.rank, dist.world_size, dist.device.type) == (1, 2, "cpu")
    assert seen == {"b": "gloo", "t": timedelta(seconds=42), "destroyed": True}
