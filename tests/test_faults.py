"""Faults end in one clear error and a resumable run: output folders, disk full, kills at every file operation
of a checkpoint, the run lock, orphaned compare workers, out-of-range values, broken weights files, divergence
and COCO annotations that point nowhere."""

import errno
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save

from yolo_transfer.cli import main
from yolo_transfer.compare.runner import RunSpec, execute_run
from yolo_transfer.data import load_dataset, load_hyp
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine import outputs, run_state
from yolo_transfer.engine.budget import Budget
from yolo_transfer.engine.lr0_note import lr0_precedence_note
from yolo_transfer.engine.outputs import ensure_writable_dir, run_lock, write_atomic
from yolo_transfer.engine.run_state import STATE_JSON, read_state, remove_leftovers, write_state
from yolo_transfer.engine.train_config import load_run
from yolo_transfer.engine.trainer import TrainConfig, Trainer, train
from yolo_transfer.errors import CheckpointError, ConfigError, OutputError, TrainingError
from yolo_transfer.models import build_model, load_model, save_model
from yolo_transfer.strategies import Phase, Strategy, load_strategy

REPO = Path(__file__).resolve().parents[1]
TINY = {"imgsz": 64, "batch": 2, "workers": 0, "device": "cpu", "hyp": "none", "noplots": True}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, cache_dir) -> Path:
    """4 synthetic images at 64 px (train and val)."""
    return make_domain(tmp_path_factory.mktemp("tiny"), "target", n_images=4, imgsz=64, seed=0)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory, tiny_data) -> Path:
    names = load_dataset(tiny_data).names
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    torch.manual_seed(0)
    save_model(build_model("yolov5n", names=names), path, {"imgsz": 64})
    return path


def checkpointed_trainer(data: Path, out: Path) -> Trainer:
    """A trainer whose run folder holds a complete first checkpoint (epoch 1), made without training."""
    config = TrainConfig(data=str(data), out=out, epochs=3, **TINY)
    torch.manual_seed(0)
    trainer = Trainer(
        build_model("yolov5n", names=load_dataset(data).names), load_dataset(data),
        load_strategy("full", epochs=3), config, out,
    )  # fmt: skip
    trainer.progress.epoch, trainer.progress.rows = 1, [{"epoch": 1, "phase": "all"}]
    trainer._save(is_best=True)
    return trainer


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---- output folders ---------------------------------------------------------------------------------------


def test_ensure_writable_dir_accepts_new_folders_and_refuses_files(tmp_path):
    assert ensure_writable_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing is created by the check
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputError, match=r"file.txt: --out must be a folder, but it is a file$"):
        ensure_writable_dir(tmp_path / "file.txt")
    with pytest.raises(OutputError, match=r"file.txt/sub: --project must be a folder.*file.txt is a file"):
        ensure_writable_dir(tmp_path / "file.txt" / "sub", option="--project")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root")
def test_ensure_writable_dir_refuses_a_read_only_file_system(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(OutputError, match=r"ro/run: --out is not writable: on a read-only file system"):
            ensure_writable_dir(mount / "run")
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)  # tensors may still be mapped


def test_ensure_writable_dir_refuses_a_folder_of_another_user(tmp_path, monkeypatch):
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root may write anywhere: let the OS answer as it does for other users
        monkeypatch.setattr(outputs.os, "access", lambda path, mode: Path(path) != folder)
    with pytest.raises(
        OutputError, match=r"theirs/run: --out is not writable: permission denied \(.*theirs\)"
    ):
        ensure_writable_dir(folder / "run")


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--data", "missing.yaml", "--epochs", "1"],
        ["val", "--weights", "missing.pt", "--data", "missing.yaml"],
        ["predict", "missing.pt", "missing.jpg"],
        ["compare", "--data", "missing.yaml", "--weights", "missing.pt"],
        ["data", "check", "missing.yaml"],
        ["data", "convert", "missing", "--format", "voc"],
    ],
)
def test_commands_refuse_an_out_that_is_a_file_before_any_work(tmp_path, capsys, command):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    # every other input is missing too: the folder check comes first, before anything is read
    assert main([*command, "--out", str(out)]) == 2
    assert f"{out}: --out must be a folder, but it is a file" in one_line_error(capsys)


# ---- disk full --------------------------------------------------------------------------------------------


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_names_the_folder_and_space_and_keeps_the_checkpoint(tiny_data, tmp_path, monkeypatch):
    trainer = checkpointed_trainer(tiny_data, tmp_path / "run")
    before = folder_digest(tmp_path / "run")
    trainer.progress.epoch = 2
    monkeypatch.setattr(run_state, "save_file", no_space)  # the resume state's tensors hit a full disk
    with pytest.raises(OutputError) as caught:
        trainer._save(is_best=True)
    message = str(caught.value)
    assert f"{tmp_path / 'run' / 'weights'}: no space left on the device writing last.state." in message
    needed = float(message.split("(")[1].split(" MB needed")[0])
    assert needed > 10  # model + EMA in fp32 (~2 x 7 MB)
    assert "keeps the last good checkpoint (epoch 1)" in message and "--resume" in message
    after = folder_digest(tmp_path / "run")
    state_files = [name for name in after if name.startswith("weights/last.state")]
    assert sorted(state_files) == sorted(name for name in before if name.startswith("weights/last.state"))
    assert all(after[name] == before[name] for name in state_files)  # resume state untouched
    assert read_state(tmp_path / "run" / "weights")[1]["progress"]["epoch"] == 1
    assert not [name for name in after if name.endswith(".tmp")]

    monkeypatch.setattr(outputs.Path, "write_bytes", no_space)  # and the weights files
    with pytest.raises(OutputError, match=r"no space left on the device writing best.safetensors \(6.8 MB"):
        trainer._save(is_best=True)
    assert folder_digest(tmp_path / "run") == after


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_real_full_disk_keeps_the_previous_files(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        write_atomic(mount / "results.csv", b"epoch\n1\n")
        with pytest.raises(
            OutputError, match=r"small: no space left on the device writing results.csv \(0.5 MB"
        ):
            write_atomic(mount / "results.csv", b"x" * 2**19)
        write_state(mount / "weights", {"x": torch.zeros(4)}, {"epoch": 1})
        with pytest.raises(OutputError, match=r"weights: no space left on the device writing last.state"):
            write_state(mount / "weights", {"x": torch.zeros(2**16)}, {"epoch": 2})
        assert (mount / "results.csv").read_bytes() == b"epoch\n1\n"
        tensors, meta = read_state(mount / "weights")
        assert meta["epoch"] == 1 and torch.equal(tensors["x"], torch.zeros(4))
        assert sorted(p.name for p in mount.rglob("*")) == sorted(
            ["results.csv", "weights", STATE_JSON, run_state.tensor_file_name(meta["token"])]
        )
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)  # tensors may still be mapped


# ---- a kill at every file operation of a checkpoint -------------------------------------------------------


class Killed(BaseException):
    """The process died here: nothing after it runs, no cleanup either."""


class KillAt:
    """Replaces the file operations of outputs.py; the ``at``-th one dies (a new file half-written)."""

    def __init__(self, at: int, monkeypatch):
        self.at, self.count, self.dead = at, 0, False
        self.real = {name: getattr(outputs, name) for name in ("create_file", "replace_file", "remove_file")}
        for name in self.real:
            monkeypatch.setattr(outputs, name, self._wrap(name))

    def _wrap(self, name: str):
        def operation(path, *args, **kwargs):
            if self.dead:
                raise Killed
            self.count += 1
            if self.count == self.at:
                self.dead = True
                if name == "create_file":  # killed while writing: part of the file is on disk
                    kwargs.pop("target", None)
                    self.real[name](path, *args, **kwargs)
                    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
                raise Killed
            return self.real[name](path, *args, **kwargs)

        return operation


def test_a_kill_at_any_file_operation_of_a_checkpoint_leaves_a_resumable_run(
    tiny_data, tmp_path, monkeypatch
):
    reference = checkpointed_trainer(tiny_data, tmp_path / "reference")
    reference.progress.epoch = 2
    counter = KillAt(at=0, monkeypatch=monkeypatch)  # counts the operations of one full checkpoint
    reference._save(is_best=True)
    operations = counter.count
    assert operations >= 10  # best, last, results.csv: write + rename each; state: tensors, JSON, rename, ...
    monkeypatch.undo()

    epochs_seen = set()
    for at in range(1, operations + 1):
        run = tmp_path / f"kill{at}"
        trainer = checkpointed_trainer(tiny_data, run)
        trainer.progress.epoch = 2
        with monkeypatch.context() as patch:
            KillAt(at, patch)
            with pytest.raises(Killed):
                trainer._save(is_best=True)
        # the next start: leftovers go, the run resumes from a complete state of epoch 1 or 2
        remove_leftovers(run / "weights")
        outputs.remove_temporaries(run)
        config, _ = load_run(run)
        tensors, meta = read_state(run / "weights")
        epochs_seen.add(meta["progress"]["epoch"])
        names = sorted(p.name for p in (run / "weights").iterdir())
        assert names == sorted(
            ["best.safetensors", "last.safetensors", STATE_JSON, run_state.tensor_file_name(meta["token"])]
        ), (at, names)
        assert not [p for p in run.iterdir() if p.name.endswith(".tmp")], at
        fresh = Trainer(
            build_model("yolov5n", names=load_dataset(tiny_data).names), load_dataset(tiny_data),
            load_strategy("full", epochs=3), config, run,
        )  # fmt: skip
        fresh._restore()
        assert fresh.progress.epoch == meta["progress"]["epoch"]
        for name in ("best", "last"):
            load_model(run / "weights" / f"{name}.safetensors")
    assert epochs_seen == {1, 2}  # killed before the commit: epoch 1; after it: epoch 2


def test_the_next_start_removes_leftovers_and_finishes_an_old_style_commit(tmp_path):
    weights = tmp_path / "weights"
    write_state(weights, {"x": torch.ones(2)}, {"epoch": 1})
    token = json.loads((weights / STATE_JSON).read_text())["token"]
    # what the previous version left when killed between its two renames, plus temporary files
    os.replace(weights / run_state.tensor_file_name(token), weights / run_state.STATE_TENSORS)
    os.replace(weights / STATE_JSON, weights / (STATE_JSON + ".tmp"))
    (weights / ".last.safetensors.0123abcd.tmp").write_bytes(b"half")
    (weights / "last.state.feedbeef.safetensors").write_bytes(b"half")
    removed = remove_leftovers(weights)
    assert {p.name for p in removed} == {".last.safetensors.0123abcd.tmp", "last.state.feedbeef.safetensors"}
    assert sorted(p.name for p in weights.iterdir()) == [STATE_JSON, run_state.STATE_TENSORS]
    assert read_state(weights)[1]["epoch"] == 1


def test_train_cleans_the_folder_at_start_and_releases_its_lock(tmp_path, capsys):
    run = tmp_path / "run"
    write_state(run / "weights", {"x": torch.ones(2)}, {"epoch": 1})
    (run / ".results.csv.0123abcd.tmp").write_bytes(b"half")
    (run / "weights" / "last.state.feedbeef.safetensors").write_bytes(b"half")
    config = TrainConfig(data=str(tmp_path / "missing.yaml"), out=run, **TINY)
    with pytest.raises(Exception, match="missing.yaml"):  # stops at the data, after the start-up work
        train(config, load_strategy("full", epochs=1), resume=True)
    assert sorted(p.name for p in run.rglob("*")) == sorted(
        ["weights", STATE_JSON, run_state.tensor_file_name(read_state(run / "weights")[1]["token"])]
    )


# ---- the run lock -----------------------------------------------------------------------------------------


def test_a_second_process_cannot_take_a_run_folder_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from yolo_transfer.engine.outputs import run_lock
            with run_lock({str(run)!r}):
                print("held", flush=True)
                time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = rf"run: in use by another yolo-transfer process \(pid {holder.pid} "
        with pytest.raises(OutputError, match=busy), run_lock(run):
            pass
        config = TrainConfig(data="missing.yaml", out=run, **TINY)
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):  # train refuses before reading anything
            train(config, load_strategy("full", epochs=1))
        spec = RunSpec("full", "full", 0, run, "missing.yaml", "missing.pt", Budget("epochs", 1), 4)
        outcome = execute_run(spec)  # a compare run into the same folder
        assert outcome.status == "failed" and f"pid {holder.pid}" in outcome.error
        assert not (run / "error.txt").exists()  # nothing written into the holder's folder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / "run.lock").exists()  # the killed holder could not remove it: a stale lock
    capsys.readouterr()
    with run_lock(run), run_lock(run):  # taken over; nested use in the same process is allowed
        assert json.loads((run / "run.lock").read_text())["pid"] == os.getpid()
    assert f"was left by pid {holder.pid}" in capsys.readouterr().out
    assert not (run / "run.lock").exists()


def _holder_with_a_forked_child(run: Path, child_seconds: float) -> subprocess.Popen:
    """A process holding ``run``'s lock that has forked a child (as a loader worker is) that outlives it by
    ``child_seconds``; it prints the child's pid once the lock is held."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os, time
            from yolo_transfer.engine.outputs import run_lock
            with run_lock({str(run)!r}):
                child = os.fork()
                if child == 0:
                    time.sleep({child_seconds})
                    os._exit(0)
                print(child, flush=True)
                time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip


def test_a_lock_held_by_the_workers_of_a_killed_run_is_waited_for(tmp_path, capsys, monkeypatch):
    # a run killed with SIGKILL leaves its forked loader workers holding the lock's flock for a few seconds:
    # an immediate --resume waits for them instead of calling the dead run "in use"
    run = tmp_path / "run"
    holder = _holder_with_a_forked_child(run, child_seconds=1.0)
    int(holder.stdout.readline())
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    start = time.monotonic()
    with run_lock(run):
        assert json.loads((run / "run.lock").read_text())["pid"] == os.getpid()
    assert 0.2 < time.monotonic() - start < outputs.ORPHAN_WAIT_S
    assert f"was left by pid {holder.pid}" in capsys.readouterr().out

    monkeypatch.setattr(outputs, "ORPHAN_WAIT_S", 0.5)  # workers that outlast the wait: a clear refusal
    holder = _holder_with_a_forked_child(tmp_path / "other", child_seconds=60)
    child = int(holder.stdout.readline())
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    try:
        ended = rf"in use by processes left by pid {holder.pid} on .*, which has ended; wait for it to end"
        with pytest.raises(OutputError, match=ended), run_lock(tmp_path / "other"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)


# ---- compare workers end with their parent ----------------------------------------------------------------


def test_a_worker_ends_when_its_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent("""
        import multiprocessing, os, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from yolo_transfer.compare.parent_watch import end_with_parent

        def work(path):
            open(path, "w").write(str(os.getpid()))
            time.sleep(120)

        if __name__ == "__main__":
            context = multiprocessing.get_context("spawn")
            parent = (os.getpid(),)
            pool = ProcessPoolExecutor(1, mp_context=context, initializer=end_with_parent, initargs=parent)
            pool.submit(work, sys.argv[1])
            time.sleep(120)
    """)
    )
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)], cwd=REPO)
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(worker)
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "the worker outlived its parent"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


# ---- input values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lr0", "nan"], "--lr0 must be a finite number, got nan"),
        (["--lr0", "inf"], "--lr0 must be a finite number, got inf"),
        (["--lr0", "-0.01"], "--lr0 must be in (0, 1], got -0.01"),
        (["--imgsz", "100000"], "--imgsz must be in [32, 8192], got 100000"),
        (["--imgsz", "8192", "--batch", "100000"], "training needs at least"),
        (["--val-fraction", "1"], "--val-fraction must be in (0, 1), got 1"),
        (["--l2sp", "-1"], "--l2sp must be >= 0, got -1"),
        (["--max-seconds", "nan"], "--max-seconds must be a finite number"),
        (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
        (["--workers", "100000"], "--workers must be in [0, 256]"),
    ],
)
def test_train_refuses_values_out_of_range(tmp_path, capsys, extra, message):
    data = tmp_path / "data.yaml"
    data.write_text("")  # found, never read: the options are refused first
    assert main(["train", "--data", str(data), *extra, "--out", str(tmp_path / "run")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "w.pt", "x.jpg", "--conf", "nan"],
        ["predict", "w.pt", "x.jpg", "--imgsz", "100000"],
        ["val", "--weights", "w.pt", "--data", "d.yaml", "--iou", "1.5"],
        ["compare", "--data", "d.yaml", "--weights", "w.pt", "--lr0", "inf"],
        ["advise", "--data", "d.yaml", "--weights", "w.pt", "--target-map", "nan"],
        ["info", "yolov5n", "--imgsz", "65536"],
    ],
)
def test_every_command_checks_its_numbers_first(capsys, command):
    assert main(command) == 2
    assert "must be" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("lr0: -0.01", "lr0 must be a finite number > 0"),
        ("mosaic: .nan", "mosaic must be a finite number >= 0"),
        ("degrees: -5", "degrees must be a finite number >= 0"),
    ],
)
def test_hyp_files_with_negative_or_nan_values_are_refused(tmp_path, capsys, line, message):
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text(line + "\n")
    with pytest.raises(ConfigError, match=message):
        load_hyp(hyp)
    data = tmp_path / "data.yaml"
    data.write_text("")  # found, never read: the hyp file is refused first
    assert main(["train", "--data", str(data), "--hyp", str(hyp), "--out", str(tmp_path / "run")]) == 2
    assert message in one_line_error(capsys)


def test_which_lr0_wins_is_said_when_a_hyp_file_sets_one(tmp_path, capsys):
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("lr0: 0.02\n")
    plan = Strategy("two", "", [Phase("head", trainable=["head"], lr0=0.05, epochs=1), Phase("all")])
    note = lr0_precedence_note(str(hyp), plan, None)
    assert note == (
        f"note: the strategy's phase lr0 wins over the lr0 0.02 of --hyp {hyp}: 'head' 0.05; "
        "other phases use 0.02 (--lr0 overrides both)"
    )
    assert lr0_precedence_note(str(hyp), plan, 0.001).startswith("note: --lr0 0.001 wins over the lr0 0.02")
    assert lr0_precedence_note("low", plan, None) is None  # a preset's lr0 is no user setting
    assert lr0_precedence_note(str(hyp), Strategy("one", "", [Phase("all")]), None) is None  # hyp lr0 is used
    config = TrainConfig(
        data=str(tmp_path / "missing.yaml"), out=tmp_path / "run", **{**TINY, "hyp": str(hyp)}
    )
    with pytest.raises(Exception, match="missing.yaml"):
        train(config, plan)
    assert note in capsys.readouterr().out  # the run prints it before its phase plan


# ---- broken weights files ---------------------------------------------------------------------------------


def tampered(tmp_path: Path, replace: dict | None = None, drop: str | None = None, tensor=None) -> Path:
    """A yolov5n checkpoint whose header fields are replaced / dropped, or one tensor replaced."""
    model = build_model("yolov5n", nc=2)
    path = tmp_path / "model.safetensors"
    save_model(model, path, {})
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        header = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    header.update({key: json.dumps(value) for key, value in (replace or {}).items()})
    header.pop(drop, None)
    if tensor is not None:
        tensors[tensor[0]] = tensor[1]
    path.write_bytes(save(tensors, metadata=header))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": "names"}, "metadata field 'names' must be a non-empty list of class names, got null"),
        (
            {"replace": {"names": "person"}},
            "field 'names' must be a non-empty list of class names, got \"person\"",
        ),
        ({"replace": {"names": [1, 2]}}, "field 'names' must be a non-empty list of class names, got [1, 2]"),
        (
            {"replace": {"cfg": 5}},
            "metadata field 'cfg' must be a model config mapping or a built-in model name",
        ),
        (
            {"replace": {"cfg": "../../etc/passwd"}},
            "field 'cfg' must be a model config mapping or a built-in",
        ),
        ({"replace": {"nc": 80}}, "metadata field 'nc' is 80 but 'names' lists 2"),
        ({"replace": {"provenance": "x"}}, "metadata field 'provenance' has the wrong type, got \"x\""),
    ],
)
def test_malformed_checkpoint_metadata_names_the_field(tmp_path, capsys, change, message):
    path = tampered(tmp_path, **change)
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert main(["info", str(path)]) == 2
    assert message in one_line_error(capsys)


def test_a_builtin_cfg_name_in_the_header_is_accepted(tmp_path):
    model, metadata = load_model(tampered(tmp_path, replace={"cfg": "yolov5n"}))
    assert model.nc == 2 and metadata["cfg"]["width_multiple"] == 0.25


def test_weights_with_nan_or_inf_are_refused_naming_the_tensor(tmp_path):
    weight = torch.zeros(16, 3, 6, 6)
    weight[0, 0, 0, 0] = math.inf
    path = tampered(tmp_path, tensor=("model.0.conv.weight", weight))
    with pytest.raises(CheckpointError, match=r"tensor 'model.0.conv.weight' holds NaN or inf values"):
        load_model(path)


# ---- predict inputs ---------------------------------------------------------------------------------------


def test_predict_names_missing_and_unreadable_inputs(tmp_path, tiny_weights, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(tiny_weights), "nowhere.jpg", str(tmp_path / "gone"), "--out", str(out)]) == 2
    assert f"nowhere.jpg, {tmp_path / 'gone'}: no such file or folder" in one_line_error(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tiny_weights), str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert f"{tmp_path / 'empty'}: no image files" in one_line_error(capsys)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["predict", str(tiny_weights), str(tmp_path / "broken.jpg"), "--out", str(out)]) == 2
    assert "broken.jpg: not a readable image (none of the 1 files)" in capsys.readouterr().err
    assert not (out / "predictions.json").exists()


# ---- divergence -------------------------------------------------------------------------------------------


def test_weights_that_became_nan_are_not_saved(tiny_data, tmp_path):
    trainer = checkpointed_trainer(tiny_data, tmp_path / "run")
    before = folder_digest(tmp_path / "run")
    trainer.progress.epoch = 2
    with torch.no_grad():  # the last optimizer step of epoch 2 diverged: loss was finite, the weights are not
        trainer.model.model[24].m[0].bias.fill_(math.nan)
        trainer.ema.ema.model[24].m[0].bias.fill_(math.nan)
    with pytest.raises(TrainingError, match=r"weights became NaN/inf in epoch 2 \(model.24.m.0.bias\).*"
                                             r"keeps the last good checkpoint \(epoch 1\)"):  # fmt: skip
        trainer._save(is_best=True)
    assert folder_digest(tmp_path / "run") == before
    assert read_state(tmp_path / "run" / "weights")[1]["progress"]["epoch"] == 1


# ---- COCO json --------------------------------------------------------------------------------------------


def test_coco_annotations_without_image_or_category_are_reported(tmp_path, cache_dir, capsys):
    images = []
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.full((64, 64, 3), 40 * i, np.uint8))
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 64})
    annotations = [{"id": 10 + i, "image_id": i, "category_id": 1, "bbox": [8, 8, 20, 20]} for i in range(4)]
    annotations += [
        {"id": 77, "image_id": 999, "category_id": 1, "bbox": [1, 1, 5, 5]},
        {"id": 78, "image_id": 3, "category_id": 555, "bbox": [1, 1, 5, 5]},
    ]
    coco = tmp_path / "instances_train.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "thing"}]}))  # fmt: skip
    assert main(["data", "check", str(coco), "--out", str(tmp_path / "report")]) == 0
    skipped = json.loads((tmp_path / "report" / "report.json").read_text())["skipped"]
    assert {
        "file": str(coco.resolve()),
        "reason": "annotation 77: image_id 999 has no image in the json",
    } in skipped
    assert {
        "file": str((tmp_path / "3.jpg").resolve()),
        "reason": "annotations: category_id 555 is not among the categories",
    } in skipped
    assert len(skipped) == 2
