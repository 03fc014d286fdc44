"""Which lr0 wins when a ``--hyp`` file sets one too: ``--lr0``, then a phase's own lr0, then the hyp file's.

The trainer gives the first phase ``--lr0`` when it is set (later phases keep the strategy's ratios to it);
without it a phase with its own ``lr0`` uses that, and the others the hyperparameters' lr0. A run prints
:func:`lr0_precedence_note` so that an lr0 in a user's hyp file is never overridden silently.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from yolo_transfer.data.hyps import PRESETS
from yolo_transfer.strategies import Strategy


def hyp_file_lr0(hyp: str | Path | dict | None) -> float | None:
    """The lr0 a user's hyp file (or dict) sets; None for presets, files without lr0, or unreadable files
    (load_hyp reports those)."""
    if isinstance(hyp, dict):
        return hyp.get("lr0")
    if hyp is None or str(hyp) in PRESETS:
        return None
    try:
        data = yaml.safe_load(Path(hyp).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data.get("lr0") if isinstance(data, dict) else None


def lr0_precedence_note(
    hyp: str | Path | dict | None, strategy: Strategy, cli_lr0: float | None
) -> str | None:
    """One line saying which lr0 wins when the hyp file's lr0 is overridden, or None when it is not."""
    file_lr0 = hyp_file_lr0(hyp)
    if file_lr0 is None:
        return None
    source = f"lr0 {file_lr0:g} of --hyp {hyp if not isinstance(hyp, dict) else '(dict)'}"
    if cli_lr0 is not None:
        return f"note: --lr0 {cli_lr0:g} wins over the {source} (later phases keep the strategy's ratios)"
    own = [phase for phase in strategy.phases if phase.lr0 is not None]
    if not own:
        return None
    listed = ", ".join(f"'{phase.name}' {phase.lr0:g}" for phase in own)
    return (
        f"note: the strategy's phase lr0 wins over the {source}: {listed}; other phases use {file_lr0:g} "
        "(--lr0 overrides both)"
    )
