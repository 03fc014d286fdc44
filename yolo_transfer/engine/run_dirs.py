"""Run folders named as in yolov5: ``--project runs/train --name exp`` gives ``exp``, then ``exp2``, ...

``--exist-ok`` reuses ``PROJECT/NAME`` as it is (to resume a comparison, or to overwrite), and ``--out DIR``
names the folder exactly. Nothing is created here: the command that writes the folder creates it.
"""

from __future__ import annotations

from pathlib import Path


def increment_run_dir(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """``project/name`` when free (or ``exist_ok``), else the first free ``name2``, ``name3``, ..."""
    path = Path(project) / name
    if exist_ok or not path.exists():
        return path
    number = 2
    while (candidate := path.with_name(f"{name}{number}")).exists():
        number += 1
    return candidate


def resolve_run_dir(out: str | Path | None, project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """The run folder of a command: ``out`` exactly when given, else the incremented ``project/name``."""
    return Path(out) if out else increment_run_dir(project, name, exist_ok)
