"""Freed host memory goes back to the kernel between the parts of an epoch (glibc's malloc_trim)."""

import subprocess
import sys

import pytest

from yolo_transfer.engine.host_memory import _malloc_trim

# 1000 blocks of 100 kB (below glibc's mmap threshold, so they live in the heap); every tenth stays alive, so
# the freed ones sit between live blocks where the heap's top cannot simply shrink
FRAGMENTED_HEAP = """
import sys
from yolo_transfer.engine.host_memory import release_free_heap
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
blocks = [bytearray(100_000) for _ in range(1000)]
kept = blocks[::10]
del blocks
before = rss_mb()
release_free_heap()
print(before - rss_mb())
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_freed_heap_pages_go_back_to_the_kernel():
    done = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, check=True)
    assert float(done.stdout) > 50  # of the ~86 MB freed between the live blocks
