"""batch: auto: the RAM budget is the available memory (MemAvailable, macOS vm_stat); it sets the batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yolo_transfer.engine import autobatch
from yolo_transfer.models import build_model

MEMINFO = """MemTotal:       16318480 kB
MemFree:          812344 kB
MemAvailable:    9876543 kB
Buffers:          123456 kB
Cached:          8000000 kB
"""
VM_STAT = """Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                                5000.
Pages active:                            200000.
Pages inactive:                          120000.
Pages speculative:                         3000.
Pages throttled:                              0.
Pages wired down:                         90000.
Pages purgeable:                           1000.
"""


def test_linux_budget_is_mem_available_not_free_pages(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO)
    assert autobatch.available_ram_bytes(meminfo, platform="linux") == 9876543 * 1024  # not MemFree


def test_macos_budget_is_free_plus_inactive_pages(tmp_path, monkeypatch):
    def fake_run(command, **kwargs):
        assert command == ["vm_stat"]
        return subprocess.CompletedProcess(command, 0, stdout=VM_STAT)

    monkeypatch.setattr(autobatch.subprocess, "run", fake_run)
    available = autobatch.available_ram_bytes(tmp_path / "no-meminfo", platform="darwin")
    assert available == (5000 + 120000) * 16384
    with pytest.raises(OSError, match="vm_stat"):
        autobatch.vm_stat_available_bytes("Pages free: 12.\n")


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="needs Linux /proc/meminfo")
def test_cpu_budget_on_this_machine_is_a_quarter_of_mem_available():
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable:"))
    mem_available = int(line.split()[1]) * 1024
    budget = autobatch.memory_budget_bytes(torch.device("cpu"))
    assert budget == pytest.approx(mem_available * autobatch.CPU_RAM_FRACTION, rel=0.05)  # memory moves a bit
    free_pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert budget >= 0.9 * free_pages * autobatch.CPU_RAM_FRACTION  # page cache counts as available


@pytest.mark.skipif(sys.platform != "darwin", reason="needs macOS vm_stat")
def test_vm_stat_of_this_mac_parses():
    assert autobatch.available_ram_bytes() > 0


def test_batch_follows_the_budget(monkeypatch):
    model = build_model("yolov5n", nc=2)
    per_image = (
        autobatch.activation_bytes_per_image(model, 64, torch.device("cpu"), 0) * autobatch.BACKWARD_FACTOR
    )
    fixed = sum(p.numel() * p.element_size() for p in model.parameters()) * 4  # weights, grads, 2 buffers

    def batch_with(budget: float, n_images: int = 1000) -> int:
        monkeypatch.setattr(autobatch, "available_ram_bytes", lambda: budget / autobatch.CPU_RAM_FRACTION)
        return autobatch.auto_batch_size(model, 64, torch.device("cpu"), 0, n_images)

    assert batch_with(fixed + 5 * per_image) == 4
    assert batch_with(fixed + 8 * per_image + 1) == 8
    assert batch_with(fixed) == 1
    assert batch_with(1e15) == autobatch.MAX_AUTO_BATCH
    assert batch_with(1e15, n_images=20) == 16
