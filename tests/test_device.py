"""Device selection: yolov5's spellings, the first GPU by default (CUDA mocked here), CPU otherwise."""

import pytest
import torch

from yolo_transfer.cli import main
from yolo_transfer.engine.device import describe_device, device_info, select_device
from yolo_transfer.errors import ConfigError


class FakeProperties:
    name = "Fake GPU"
    total_memory = 24 * 2**30


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: FakeProperties())


@pytest.mark.parametrize("name", ["", "auto", "AUTO", "cpu", " cpu "])
def test_cpu_when_there_is_no_accelerator(no_accelerator, name):
    assert select_device(name) == torch.device("cpu")


def test_auto_prefers_mps_when_there_is_no_cuda(no_accelerator, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("") == torch.device("mps")
    assert select_device("mps") == torch.device("mps")


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("", 0),
        ("auto", 0),
        ("0", 0),
        ("1", 1),
        ("0,1", 0),
        ("1,0", 1),
        ("cuda", 0),
        ("cuda:1", 1),
        ("cuda:0,1", 0),
    ],
)
def test_yolov5_spellings_select_a_cuda_device(two_gpus, name, index):
    assert select_device(name) == torch.device("cuda", index)


def test_auto_takes_cuda_before_mps(two_gpus, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda", 0)


def test_cpu_stays_cpu_when_a_gpu_exists(two_gpus):
    assert select_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("2", "has 2 CUDA device(s), 0..1"),
        ("cuda:5", "has 2 CUDA device(s)"),
        ("gpu", "use auto"),
        ("0,x", "use"),
    ],
)
def test_unknown_or_absent_devices_are_refused(two_gpus, name, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select_device(name)


@pytest.mark.parametrize("name", ["0", "cuda", "cuda:0", "0,1"])
def test_cuda_names_fail_clearly_without_cuda(no_accelerator, name):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        select_device(name)


def test_mps_fails_clearly_without_mps(no_accelerator):
    with pytest.raises(ConfigError, match="MPS is not available"):
        select_device("mps")


def test_device_description_names_the_gpu_and_its_memory(two_gpus):
    info = device_info(torch.device("cuda", 1))
    assert info == {"device": "cuda:1", "name": "Fake GPU", "memory_gib": 24.0}
    assert describe_device(torch.device("cuda", 1)) == "cuda:1 (Fake GPU, 24.0 GiB)"


def test_cpu_description_counts_threads():
    info = device_info(torch.device("cpu"))
    assert info["device"] == "cpu" and info["threads"] == torch.get_num_threads()
    assert describe_device(torch.device("cpu")) == f"cpu (CPU, {torch.get_num_threads()} threads)"


def test_cli_refuses_a_bad_device_before_any_work(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pt").write_bytes(b"")  # found, never read: the device is refused first
    assert main(["predict", str(tmp_path / "w.pt"), str(tmp_path), "--device", "tpu"]) == 2
    assert "error: --device 'tpu'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (checked on GPU machines)")
def test_real_gpu_is_the_default():
    device = select_device("")
    assert device == torch.device("cuda", 0)
    assert torch.cuda.get_device_name(0) in describe_device(device)
    assert torch.zeros(2, device=select_device("0")).sum().item() == 0.0
