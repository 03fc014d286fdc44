"""Every command, given bad input, ends with exit code 2 and an error line, never a Python traceback.

The cases run through the real ``yolo_transfer.cli.main`` in one subprocess that forks a child per case (the
imports are paid once), each child with its own stderr and a time limit.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yolo_transfer.data import load_dataset
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.models import build_model, save_model

REPO = Path(__file__).resolve().parents[1]
CASE_SECONDS = 120
DRIVER = """
import importlib, json, os, signal, sys, traceback
from yolo_transfer import cli

for module in ("yolo_transfer.engine.trainer", "yolo_transfer.engine.predict", "yolo_transfer.compare",
               "yolo_transfer.advise", "yolo_transfer.data.commands", "yolo_transfer.models.info"):
    importlib.import_module(module)
cases, results = json.load(open(sys.argv[1])), []
for argv in cases:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        signal.alarm(int(sys.argv[3]))
        os.dup2(write_end, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        try:
            code = cli.main(argv)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, errors="replace") as pipe:
        stderr = pipe.read()
    status = os.waitpid(pid, 0)[1]
    results.append({"argv": argv, "code": os.waitstatus_to_exitcode(status), "stderr": stderr})
json.dump(results, open(sys.argv[2], "w"))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory, cache_dir) -> dict[str, str]:
    """Valid inputs (a 4-image dataset, weights, an image) and broken ones, by name."""
    root = tmp_path_factory.mktemp("cli")
    data = make_domain(root / "data", "target", n_images=4, imgsz=64, seed=0)
    names = load_dataset(data).names
    model = build_model("yolov5n", names=names)
    save_model(model, root / "weights.safetensors", {"imgsz": 64})
    save_model(model, root / "bad_meta.safetensors", {"provenance": "not a mapping"})
    with torch.no_grad():
        model.model[0].conv.weight[0, 0, 0, 0] = math.nan
    save_model(model, root / "nan.safetensors", {})
    (root / "garbage.pt").write_bytes(b"\x80\x04not a pickle at all")
    (root / "garbage.json").write_text("{not json")
    (root / "bad_hyp.yaml").write_text("lr0: -1\n")
    (root / "a_file").write_text("x")
    image = next((data.parent / "images" / "val").iterdir())
    named = {"W": "weights.safetensors", "BADMETA": "bad_meta.safetensors", "NANW": "nan.safetensors",
             "GARBAGE": "garbage.pt", "BADJSON": "garbage.json", "BADHYP": "bad_hyp.yaml", "FILE": "a_file",
             "OUT": "out"}  # fmt: skip
    return {"DATA": str(data), "IMG": str(image), **{key: str(root / name) for key, name in named.items()}}


BAD_INPUTS = [
    ["info"],
    ["info", "nowhere.pt"],
    ["info", "GARBAGE"],
    ["info", "BADMETA"],
    ["info", "NANW"],
    ["info", "bogus-model"],
    ["info", "yolov5n", "--nc", "0"],
    ["info", "yolov5n", "--imgsz", "100000"],
    ["convert", "nowhere.pt", "OUT/x.safetensors"],
    ["convert", "GARBAGE", "OUT/x.safetensors"],
    ["convert", "W", "OUT/x.safetensors"],
    ["predict", "W", "nowhere.jpg", "--out", "OUT/p"],
    ["predict", "nowhere.pt", "IMG", "--out", "OUT/p"],
    ["predict", "BADMETA", "IMG", "--out", "OUT/p"],
    ["predict", "NANW", "IMG", "--out", "OUT/p"],
    ["predict", "GARBAGE", "IMG", "--out", "OUT/p"],
    ["predict", "W", "IMG", "--conf", "nan", "--out", "OUT/p"],
    ["predict", "W", "IMG", "--imgsz", "100000", "--out", "OUT/p"],
    ["predict", "W", "IMG", "--imgsz", "33", "--out", "OUT/p"],
    ["predict", "W", "IMG", "--out", "FILE"],
    ["predict", "W", "FILE", "--out", "OUT/p"],
    ["data", "check", "nowhere.yaml", "--out", "OUT/d"],
    ["data", "check", "BADJSON", "--out", "OUT/d"],
    ["data", "check", "DATA", "--out", "FILE"],
    ["data", "check", "DATA", "--val-fraction", "2", "--out", "OUT/d"],
    ["data", "convert", "nowhere", "--format", "voc", "--out", "OUT/c"],
    ["data", "convert", "BADJSON", "--format", "coco", "--out", "OUT/c"],
    ["data", "convert", "DATA", "--format", "voc", "--out", "OUT/c"],
    ["data", "convert", "DATA", "--format", "bogus", "--out", "OUT/c"],
    ["train"],
    ["train", "--data", "nowhere.yaml", "--out", "OUT/t"],
    ["train", "--data", "BADJSON", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--lr0", "nan", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--lr0", "inf", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--epochs", "0", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--epochs", "two", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--batch", "0", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--imgsz", "100000", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--imgsz", "100", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--seed", "-1", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--weights", "nowhere.pt", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--weights", "BADMETA", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--weights", "NANW", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--weights", "GARBAGE", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--strategy", "bogus", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--hyp", "BADHYP", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--hyp", "nowhere.yaml", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--device", "cuda:7", "--out", "OUT/t"],
    ["train", "--data", "DATA", "--out", "FILE"],
    ["train", "--resume", "nowhere"],
    ["train", "--resume", "FILE"],
    ["val", "--weights", "W", "--data", "nowhere.yaml", "--out", "OUT/v"],
    ["val", "--weights", "nowhere.pt", "--data", "DATA", "--out", "OUT/v"],
    ["val", "--weights", "BADMETA", "--data", "DATA", "--out", "OUT/v"],
    ["val", "--weights", "NANW", "--data", "DATA", "--out", "OUT/v"],
    ["val", "--weights", "W", "--data", "DATA", "--batch", "0", "--out", "OUT/v"],
    ["val", "--weights", "W", "--data", "DATA", "--iou", "-1", "--out", "OUT/v"],
    ["val", "--weights", "W", "--data", "DATA", "--out", "FILE"],
    ["compare", "--data", "DATA", "--weights", "nowhere.pt", "--out", "OUT/m"],
    ["compare", "--data", "nowhere.yaml", "--weights", "W", "--out", "OUT/m"],
    ["compare", "--data", "DATA", "--weights", "W", "--budget", "epochs=0", "--out", "OUT/m"],
    ["compare", "--data", "DATA", "--weights", "W", "--budget", "time=nan", "--out", "OUT/m"],
    ["compare", "--data", "DATA", "--weights", "W", "--seeds", "a,b", "--out", "OUT/m"],
    ["compare", "--data", "DATA", "--weights", "W", "--seeds", "-1", "--out", "OUT/m"],
    ["compare", "--data", "DATA", "--weights", "W", "--jobs", "0", "--out", "OUT/m"],
    ["compare", "--data", "DATA", "--weights", "W", "--strategies", "bogus", "--out", "OUT/m"],
    ["compare", "--data", "DATA", "--weights", "W", "--strategies", ",", "--out", "OUT/m"],
    ["compare", "--data", "DATA", "--weights", "W", "--lr0", "nan", "--out", "OUT/m"],
    ["compare", "--data", "DATA", "--weights", "W", "--out", "FILE"],
    ["advise", "--data", "nowhere.yaml", "--weights", "W"],
    ["advise", "--data", "DATA", "--weights", "nowhere.pt"],
    ["advise", "--data", "DATA", "--weights", "BADMETA"],
    ["advise", "--data", "DATA", "--weights", "W", "--budget", "bogus"],
    ["advise", "--data", "DATA", "--weights", "W", "--target-map", "2"],
    ["advise", "--data", "DATA", "--weights", "W", "--imgsz", "100000"],
    ["advise", "--data", "DATA", "--weights", "W", "--imgsz", "32"],
    ["strategies", "--bogus"],
]


def test_bad_inputs_end_with_exit_code_2_and_no_traceback(files, tmp_path):
    cases = [[files.get(arg, arg.replace("OUT", files["OUT"])) for arg in argv] for argv in BAD_INPUTS]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path / "cases.json"), str(tmp_path / "results.json"),
         str(CASE_SECONDS)],
        cwd=tmp_path, check=True, timeout=CASE_SECONDS * len(cases),
    )  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    wrong = [
        f"{' '.join(r['argv'])} -> exit {r['code']}: {r['stderr'][-400:]}"
        for r in results
        if r["code"] != 2 or "Traceback" in r["stderr"] or "error" not in r["stderr"]
    ]
    assert not wrong, "\n".join(wrong)
    commands = {r["argv"][0] if r["argv"][0] != "data" else " ".join(r["argv"][:2]) for r in results}
    assert commands == {
        "info", "convert", "predict", "data check", "data convert", "train", "val", "compare", "advise",
        "strategies",
    }  # fmt: skip


MISSING_FILE_CASES = [  # argv, the file named; a present file (W.pt, a.jpg) only needs to exist here
    (["info", "nowhere.pt"], "nowhere.pt: no such weights file"),
    (["convert", "nowhere.pt", "out.safetensors"], "nowhere.pt: no such weights file"),
    (["export", "nowhere.pt"], "nowhere.pt: no such weights file"),
    (["predict", "nowhere.pt", "nowhere.jpg"], "nowhere.jpg: no such file or folder"),
    (["predict", "nowhere.pt", "a.jpg"], "nowhere.pt: no such weights file"),
    (["val", "--weights", "nowhere.pt", "--data", "nowhere.yaml"], "nowhere.pt: no such weights file"),
    (["val", "--weights", "W.pt", "--data", "nowhere.yaml"], "nowhere.yaml: dataset not found"),
    (["train", "--data", "nowhere.yaml"], "nowhere.yaml: dataset not found"),
    (["train", "--data", "nowhere.yaml", "--weights", "nowhere.pt"], "nowhere.pt: no such weights file"),
    (["compare", "--data", "nowhere.yaml", "--weights", "W.pt"], "nowhere.yaml: dataset not found"),
    (["advise", "--data", "nowhere.yaml", "--weights", "nowhere.pt"], "nowhere.yaml: dataset not found"),
    (["advise", "--data", "a.jpg", "--weights", "nowhere.pt"], "nowhere.pt: no such weights file"),
    (["data", "check", "nowhere.yaml"], "nowhere.yaml: dataset not found"),
    (["data", "convert", "nowhere", "--format", "voc", "--out", "yolo"], "nowhere: dataset not found"),
]


@pytest.mark.parametrize(
    ("argv", "message"),
    MISSING_FILE_CASES,
    ids=[" ".join(a) for a, _ in MISSING_FILE_CASES],
)
def test_missing_input_files_are_refused_before_torch_is_imported(tmp_path, argv, message):
    # importing torch from a cold disk takes a minute: a missing file is named before that, in the order
    # the command reads its files, and nothing is created
    (tmp_path / "W.pt").write_bytes(b"")
    (tmp_path / "a.jpg").write_bytes(b"")
    code = (
        "import sys; from yolo_transfer import cli; rc = cli.main(sys.argv[1:]); "
        "print('torch' in sys.modules); sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"
    assert result.stdout.strip() == "False"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["W.pt", "a.jpg"]
