"""Worker processes end with the process that started them, so a killed ``compare`` leaves no run training.

A daemon thread in the worker polls its parent pid; once the parent has died (the worker is re-parented), it
sends SIGTERM to its own process. The run's last committed epoch stays resumable, and the run folder's lock
ends with the worker.
"""

from __future__ import annotations

import os
import signal
import threading
import time

POLL_SECONDS = 0.5


def end_with_parent(parent_pid: int) -> None:
    """Call in a worker process (e.g. as a pool initializer): it is terminated when ``parent_pid`` dies."""
    threading.Thread(target=_watch, args=(parent_pid,), name="end-with-parent", daemon=True).start()


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
