"""How long a training run still needs, from its measured epoch time (train + validation)."""

from __future__ import annotations


def run_eta_seconds(
    wall_seconds: float, epochs_done: int, epochs_total: int, max_seconds: float | None = None
) -> float | None:
    """Seconds left: the mean epoch time so far times the epochs left, capped by a ``max_seconds`` budget.

    None before the first epoch has been measured. A plateau or early stop may end the run sooner.
    """
    if epochs_done < 1:
        return None
    left = wall_seconds / epochs_done * max(epochs_total - epochs_done, 0)
    if max_seconds is not None:
        left = min(left, max(max_seconds - wall_seconds, 0.0))
    return left


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` as rich prints times (``0:04:05``), or ``-:--:--`` when unknown."""
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
