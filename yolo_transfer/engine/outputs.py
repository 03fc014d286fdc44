"""Output folders: checked writable before any work, one writer at a time, every file replaced atomically.

A file is written to a temporary file in the same folder, flushed to disk, then renamed over its target, so a
kill at any moment leaves either the old file or the new one. A full disk becomes an :class:`OutputError`
naming the folder and the space needed; the file being replaced stays as it was. Figures and images go
through the same path (:func:`write_figure`, :func:`write_image`); a non-essential file such as a plot is
written with :func:`write_optional`, which turns its failure into a one-line warning. :func:`run_lock`
keeps a second process out of a run folder while one trains there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
from safetensors import SafetensorError

from yolo_transfer.errors import OutputError

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

LOCK_FILE = "run.lock"
ORPHAN_WAIT_S = 15.0  # how long a lock whose owner has ended may stay held by the processes it forked
TEMPORARY_SUFFIX = ".tmp"
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def ensure_writable_dir(path: str | Path, option: str = "--out") -> Path:
    """``path`` when it is a folder this user can write into, or one that can be created; else OutputError.

    Nothing is created: the command that writes the folder creates it.
    """
    path = Path(path)
    if os.path.islink(path) and not os.path.exists(path):
        raise OutputError(f"{path}: {option} is a broken symbolic link")
    existing = path
    while not os.path.exists(existing) and existing.parent != existing:  # False also when not searchable
        existing = existing.parent
    if not os.path.isdir(existing):
        where = "" if existing == path else f" ({existing} is a file)"
        raise OutputError(f"{path}: {option} must be a folder, but it is a file{where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
        reason = "on a read-only file system" if read_only else "permission denied"
        where = "" if existing == path else f" ({existing})"
        raise OutputError(f"{path}: {option} is not writable: {reason}{where}")
    return path


def create_file(path: Path, write: Callable[[Path], None], size: int, target: Path | None = None) -> None:
    """Make the new file ``path`` with ``write(path)`` and flush it to disk; ``size``: bytes it needs.

    A failed write removes what was written and raises OutputError naming ``target`` (default ``path``): a
    full disk names the folder and the space needed.
    """
    try:
        write(path)
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except (OSError, SafetensorError) as err:
        path.unlink(missing_ok=True)
        raise write_error(target or path, err, size) from None


def replace_file(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` (one atomic step) and flush the folder entry."""
    os.replace(source, target)
    with contextlib.suppress(OSError):  # not every file system can fsync a folder
        descriptor = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def remove_file(path: Path) -> None:
    path.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` in one step: a temporary file next to it, flushed, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TEMPORARY_SUFFIX}")
    create_file(temporary, lambda file: file.write_bytes(data), len(data), target=path)
    try:
        replace_file(temporary, path)
    except OSError as err:
        remove_file(temporary)
        raise write_error(path, err, len(data)) from None


def write_figure(fig: Figure, path: str | Path, dpi: float | None = None) -> None:
    """Render matplotlib's ``fig`` in the format of ``path``'s suffix; write it with :func:`write_atomic`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip("."), dpi=dpi)
    write_atomic(path, buffer.getvalue())


def write_image(path: str | Path, image: np.ndarray, params: Sequence[int] = ()) -> None:
    """Encode a BGR ``image`` in the format of ``path``'s suffix (OpenCV) and write it with
    :func:`write_atomic`."""
    try:
        encoded, data = cv2.imencode(Path(path).suffix, image, list(params))
    except cv2.error:  # no encoder for this suffix
        encoded = False
    if not encoded:
        raise OutputError(
            f"{path}: OpenCV cannot encode an image of shape {image.shape} as {Path(path).suffix}"
        )
    write_atomic(path, data.tobytes())


def write_optional(path: Path, write: Callable[[Path], None]) -> bool:
    """``write(path)`` of a non-essential file (a plot): its OutputError becomes a warning line on stderr
    and False, so the command goes on without the file."""
    try:
        write(path)
    except OutputError as err:
        print(f"warning: {err}; going on without it", file=sys.stderr)
        return False
    return True


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files an interrupted write left in ``folder``; returns them."""
    leftovers = sorted(folder.glob(f"*{TEMPORARY_SUFFIX}")) if folder.is_dir() else []
    for path in leftovers:
        remove_file(path)
    return leftovers


def write_error(path: Path, err: Exception, size: int) -> OutputError:
    """One-line OutputError for a failed write of ``path`` that needed ``size`` bytes."""
    folder, name = path.parent, path.name
    if getattr(err, "errno", None) in NO_SPACE_ERRNOS or "os error 28" in str(err):
        free = shutil.disk_usage(folder).free
        return OutputError(
            f"{folder}: no space left on the device writing {name} "
            f"({_megabytes(size)} needed, {_megabytes(free)} free)"
        )
    reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
    return OutputError(f"{folder}: cannot write {name} ({reason})")


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[Path]:
    """Hold ``folder/run.lock`` (with this process's pid) while the block runs; OutputError when another
    live process holds it. A lock file left by a process that died is taken over (an flock ends with its
    holder, so a stale lock is never mistaken for a live one). The processes a holder forked, its loader
    workers, share its flock: when the holder was killed they keep the lock until they notice (torch's workers
    check every 5 s), so a lock whose recorded owner has ended is waited for, up to ``ORPHAN_WAIT_S``.
    Nested use in the holding process is free."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    descriptor = _acquire(path)
    if descriptor is None:  # this process holds it already (an outer block releases it)
        yield path
        return
    try:
        yield path
    finally:
        remove_file(path)
        os.close(descriptor)


def _acquire(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive flock, with this process written as the owner;
    None when this process holds the lock already."""
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(descriptor)
            os.close(descriptor)
            if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                return None
            ended = _ended_here(owner)
            if ended and time.monotonic() < deadline:  # its forked workers still hold it: they end soon
                time.sleep(0.1)
                continue
            if ended:
                holder = f"processes left by {_describe(owner)}, which has ended"
            else:
                holder = f"another yolo-transfer process ({_describe(owner)})"
            raise OutputError(
                f"{path.parent}: in use by {holder}; wait for it to end or use another output folder"
            ) from None
        except OSError as err:  # a file system without flock (some network mounts): go on, unprotected
            print(f"note: {path.parent}: cannot be locked ({err.strerror}); keep other processes out of it")
            return descriptor
        try:
            same_file = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # the holder removed the file between our open and flock: lock the new one
            os.close(descriptor)
            continue
        stale = _owner(descriptor)
        if stale:
            print(f"note: {path} was left by {_describe(stale)}, which has ended; taking it over")
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(record).encode(), 0)
        return descriptor


def _ended_here(owner: dict) -> bool:
    """Whether the recorded owner was a process of this host that no longer runs."""
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


def _owner(descriptor: int) -> dict:
    try:
        return json.loads(os.pread(descriptor, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner:
        return "owner unknown"
    return f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('since')}"
