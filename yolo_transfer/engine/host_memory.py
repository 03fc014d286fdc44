"""Freed host memory back to the operating system between the parts of an epoch.

glibc's malloc keeps the pages of freed activations in its heaps, scattered between live blocks, and the next
part of the epoch (validation after training, training after validation) allocates blocks of other sizes
around them: the resident set creeps up from epoch to epoch. ``malloc_trim(0)`` returns every whole free page
to the kernel, the host-side counterpart of ``torch.cuda.empty_cache()``.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


def release_free_heap() -> None:
    """Return the heaps' free pages to the kernel where the C library is glibc; nothing elsewhere."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # no C library to load by this name (Windows)
        return None
