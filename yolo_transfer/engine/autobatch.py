"""``batch: auto``: the largest power-of-two batch whose training memory fits a budget.

The estimate is measured, not modelled: one train-mode forward pass of a copy of the model on two blank images
records the bytes of every tensor autograd saves for the backward pass (``saved_tensors_hooks``), which is the
activation memory a training batch holds. A frozen prefix run under ``no_grad`` saves nothing, so frozen
phases get bigger batches. The per-image figure is doubled for the transient tensors of the backward pass and
added to the weights, gradients and two optimizer buffers per trainable parameter.

Budget: on CUDA 80% of the free device memory; otherwise a quarter of the available RAM: ``MemAvailable`` of
/proc/meminfo on Linux (free plus reclaimable page cache), free plus inactive pages of ``vm_stat`` on macOS
(as psutil counts it), free pages elsewhere.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

MAX_AUTO_BATCH = 64  # the nominal batch: larger batches only lower the number of optimizer steps
BACKWARD_FACTOR = 2.0
CPU_RAM_FRACTION = 0.25
CUDA_FREE_FRACTION = 0.8
MEMINFO = Path("/proc/meminfo")


def memory_budget_bytes(device: torch.device) -> int:
    """Bytes a training batch may use on `device`."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_FRACTION)
    return int(available_ram_bytes() * CPU_RAM_FRACTION)


def available_ram_bytes(meminfo: Path = MEMINFO, platform: str = sys.platform) -> int:
    """RAM that can be used without swapping (see the module docstring for where it is read)."""
    if meminfo.is_file():
        match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo.read_text(), re.MULTILINE)
        if match:  # absent only on kernels older than 3.14
            return int(match.group(1)) * 1024
    if platform == "darwin":
        return vm_stat_available_bytes(subprocess.run(["vm_stat"], capture_output=True, text=True).stdout)
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def vm_stat_available_bytes(vm_stat_output: str) -> int:
    """Free plus inactive pages, times the page size, from macOS ``vm_stat`` output."""
    page_size = re.search(r"page size of (\d+) bytes", vm_stat_output)
    pages = {
        key: re.search(rf"^Pages {key}:\s+(\d+)", vm_stat_output, re.MULTILINE)
        for key in ("free", "inactive")
    }
    if page_size is None or None in pages.values():
        raise OSError("cannot read the available memory from vm_stat")
    return sum(int(match.group(1)) for match in pages.values()) * int(page_size.group(1))


def activation_bytes_per_image(
    model: nn.Module, imgsz: int, device: torch.device, no_grad_prefix: int
) -> int:
    """Bytes autograd keeps per training image, measured on a throw-away copy of ``model``."""
    probe = copy.deepcopy(model).train()
    seen: set[int] = set()
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return tensor

    images = torch.zeros(2, 3, imgsz, imgsz, device=device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        probe(images, no_grad_prefix=no_grad_prefix)
    return total // 2


def auto_batch_size(
    model: nn.Module, imgsz: int, device: torch.device, no_grad_prefix: int, n_images: int
) -> int:
    """Largest power of two <= min(64, n_images) whose estimated training memory fits the device budget."""
    per_image = activation_bytes_per_image(model, imgsz, device, no_grad_prefix) * BACKWARD_FACTOR
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    available = memory_budget_bytes(device) - weights - 3 * trainable
    batch = 1
    while batch * 2 <= min(MAX_AUTO_BATCH, n_images) and batch * 2 * per_image <= available:
        batch *= 2
    return batch
