"""report.html: one self-contained page (inline CSS, images embedded as base64) that reads well in a browser.

Layout: a summary card with the recommendation and the setting, the mean ± std table with each metric's
winner highlighted, the winner-per-metric verdicts, the plots, the prediction grid and the list of runs.
The only links are to files that exist next to it (results.json, report.md, the full-size PNGs, each run's
results.csv).
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from yolo_transfer.compare.plots import strategy_colors
from yolo_transfer.compare.results import EXCEEDS, METRIC_BY_KEY, WITHIN_NOISE

STYLE = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f8fafc; --card: #fff; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 32px 24px 64px; }
h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -0.02em; }
h2 { font-size: 19px; margin: 40px 0 12px; letter-spacing: -0.01em; }
.sub { color: var(--muted); margin: 0 0 24px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 20px 24px;
  box-shadow: 0 1px 2px rgba(0,0,0,.04); }
.card.flush { padding: 0; }
.summary { border-left: 6px solid var(--accent); display: grid; grid-template-columns: 1fr auto;
  gap: 8px 32px; }
.summary .label { text-transform: uppercase; font-size: 12px; letter-spacing: .08em; color: var(--muted); }
.summary .winner { font-size: 30px; font-weight: 700; margin: 2px 0 6px; }
.summary .reason { margin: 0; max-width: 700px; }
.summary dl { margin: 0; display: grid; grid-template-columns: auto auto; gap: 2px 12px; font-size: 13px;
  align-self: start; }
.summary dt { color: var(--muted); } .summary dd { margin: 0; font-family: ui-monospace, Menlo, monospace; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; background: var(--card); font-size: 13px; }
th, td { padding: 7px 8px; border-bottom: 1px solid var(--line); text-align: right; }
td.nowrap { white-space: nowrap; }
th { font-size: 11px; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); font-weight: 600;
  background: #f1f5f9; vertical-align: bottom; }
td.phases { min-width: 170px; font-size: 12px; line-height: 1.4; }
td:first-child, th:first-child, td.left, th.left { text-align: left; }
tbody tr:hover { background: #f8fafc; }
td.win { background: #dcfce7; font-weight: 700; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 8px; }
.pill { display: inline-block; padding: 1px 10px; border-radius: 999px; font-size: 12px; font-weight: 600; }
.pill.ok { background: #dcfce7; color: #166534; } .pill.noise { background: #fef3c7; color: #92400e; }
.pill.unknown { background: #e5e7eb; color: #374151; } .pill.failed { background: #fee2e2; color: #991b1b; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; }
.plots figure.wide { grid-column: 1 / -1; }
.notice { background: #fef3c7; border: 1px solid #f59e0b; border-left: 6px solid #d97706; color: #78350f;
  border-radius: 12px; padding: 14px 20px; margin: 16px 0 0; font-size: 16px; font-weight: 600; }
figure { margin: 0; } figure img { width: 100%; height: auto; display: block; border-radius: 8px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
.note { color: var(--muted); font-style: italic; }
.error { color: #991b1b; font-family: ui-monospace, Menlo, monospace; font-size: 13px; white-space: normal; }
footer { margin-top: 48px; color: var(--muted); font-size: 13px; }
a { color: var(--accent); }
"""

WIDE_PLOTS = {"cost"}  # the multi-panel cost figure gets the full width
PLOT_CAPTIONS = {
    "map_vs_epoch": "Validation mAP50-95 per epoch: each strategy's mean over its seeds (named in the "
    "legend); the band spans the seeds' min to max. ◇ marks a phase switch (e.g. staged unfreezing).",
    "map_vs_time": "The same curves against wall-clock time (the seeds' mean time per epoch): who gets there "
    "first.",
    "loss": "Training and validation loss (box + objectness + class), mean of seeds with min-max band.",
    "cost": "Cost: wall time, training throughput, peak memory, and trainable parameters in each phase.",
}


def _image(out_dir: Path, relative: str, alt: str) -> str:
    """An <img> with the PNG embedded, linked to the full-size file next to the report."""
    data = base64.b64encode((out_dir / relative).read_bytes()).decode("ascii")
    return f'<a href="{escape(relative)}"><img src="data:image/png;base64,{data}" alt="{escape(alt)}"></a>'


def _verdict_pill(verdict: str) -> str:
    kind = {EXCEEDS: "ok", WITHIN_NOISE: "noise"}.get(verdict, "unknown")
    return f'<span class="pill {kind}">{escape(verdict)}</span>'


def render_html(
    results: dict,
    out_dir: Path,
    figures: dict[str, str],
    grid_note: str | None,
    table: tuple[list[str], list[list[str]], set[tuple[int, int]]],
) -> str:
    """The whole page as a string."""
    setting = results["setting"]
    colors = strategy_colors(list(results["aggregate"]))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Strategy comparison — yolo-transfer</title>",
        f"<style>{STYLE}</style></head><body><main>",
        "<h1>Which fine-tuning strategy?</h1>",
        f'<p class="sub">{len(results["aggregate"])} strategies × {len(setting["seeds"])} seed(s), '
        f"same weights, data and budget ({escape(setting['budget']['description'])} each).</p>",
        _summary_card(results),
        _still_improving_notice(results),
        _phases_left_out_notice(results),
        f"<h2>Results <small class='note'>mean ± std over {len(setting['seeds'])} seed(s); "
        "green = best in its column</small></h2>",
        _results_table(table, colors),
        "<h2>Winner per metric</h2>",
        _winners_table(results, colors),
        _paired_table(results, colors),
        "<h2>Curves and cost</h2>",
        '<div class="plots">',
    ]
    for name, caption in PLOT_CAPTIONS.items():
        if name in figures:
            image = _image(out_dir, figures[name], caption)
            wide = ' class="wide"' if name in WIDE_PLOTS else ""
            parts.append(f"<figure{wide}>{image}<figcaption>{escape(caption)}</figcaption></figure>")
    parts += ["</div>", "<h2>Predictions on the same validation images</h2>"]
    if "predictions" in figures:
        caption = (
            "Top row: ground truth (white boxes). Each further row: a strategy's best weights (its best "
            "seed), detections with confidence ≥ 0.15 in the strategy's colour; grey outlines are the "
            "ground truth."
        )
        parts.append(
            f"<figure class='card'>{_image(out_dir, figures['predictions'], caption)}"
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    else:
        parts.append(f'<p class="note">{escape(grid_note or "")}</p>')
    parts += [
        "<h2>Runs</h2>",
        _runs_table(results, out_dir, colors),
        '<footer>Files: <a href="results.json">results.json</a> · <a href="report.md">report.md</a> · '
        "made by yolo-transfer compare.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _summary_card(results: dict) -> str:
    setting, recommendation = results["setting"], results["recommendation"]
    winner = escape(recommendation["strategy"]) if recommendation else "none"
    reason = escape(recommendation["reason"]) if recommendation else "No run finished."
    facts = {
        "data": setting["data"],
        "weights": setting["weights"],
        "budget": setting["budget"]["description"],
        "seeds": ", ".join(map(str, setting["seeds"])),
        "image size": setting["imgsz"],
        "batch": setting["batch"],
        "device": setting["device"],
    }
    facts_html = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts.items())
    return (
        '<section class="card summary"><div><div class="label">Recommendation</div>'
        f'<div class="winner">{winner}</div><p class="reason">{reason}</p></div>'
        f"<dl>{facts_html}</dl></section>"
    )


def _strategy(name: str, colors: dict[str, str], bold: bool = False) -> str:
    text = f"<b>{escape(name)}</b>" if bold else escape(name)
    return f'<span class="dot" style="background:{colors[name]}"></span>{text}'


def _table(
    head: list[str], rows: list[list[str]], left: set[int], classes: dict[tuple[int, int], str]
) -> str:
    """A table card; cells are HTML already; ``left`` columns align left; ``classes`` styles single cells."""

    def css(r: int | None, c: int) -> str:
        names = [name for name in ("left" if c in left else "", classes.get((r, c), "")) if name]
        return f' class="{" ".join(names)}"' if names else ""

    head_html = "".join(f"<th{css(None, c)}>{escape(label)}</th>" for c, label in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f"<td{css(r, c)}>{cell}</td>" for c, cell in enumerate(cells)) + "</tr>"
        for r, cells in enumerate(rows)
    )
    table = f"<table><thead><tr>{head_html}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll card flush">{table}</div>'


def _results_table(table, colors: dict[str, str]) -> str:
    """The mean ± std table. It fits 1400 px without a scrollbar: cells may break before "±" (never inside a
    number), and the trainable-params column puts each phase on its own line."""
    header, rows, highlight = table
    last = len(header) - 1
    cells = [
        [
            _strategy(row[0], colors, bold=True),
            *(_breakable(cell) for cell in row[1:last]),
            _phases(row[last]),
        ]
        for row in rows
    ]
    styles = {cell: "win" for cell in highlight}
    for r in range(len(rows)):
        styles[(r, 0)], styles[(r, last)] = "nowrap", "phases"
    return _table(header, cells, {0, last}, styles)


def _breakable(cell: str) -> str:
    """A table cell that may wrap only before ``±`` (``0.512 ± 0.013`` -> two lines at most)."""
    return escape(cell).replace("± ", "±\u00a0")


def _phases(cell: str) -> str:
    """``frozen-backbone 0.72M → all 1.77M`` as one phase per line."""
    parts = [escape(part).replace(" ", "\u00a0") for part in cell.split(" → ")]
    return "<br>→\u00a0".join(parts)


def _still_improving_notice(results: dict) -> str:
    """A prominent warning when every finished run had its best epoch at its last one (the lead's
    ``still_improving`` note in results.json when present, else computed from the runs)."""
    note = results.get("still_improving")
    done = [run for run in results["runs"] if run["status"] == "done"]
    if note is None and done and all(_still_improving(run) for run in done):
        note = "all runs were still improving at their last epoch: a longer budget may change the ranking."
    if not note:
        return ""
    return f'<p class="notice" role="alert">⚠ {escape(note)}</p>'


def _phases_left_out_notice(results: dict) -> str:
    """Which strategies a time budget trained without their last phase, and why."""
    note = results.get("phases_left_out")
    return f'<p class="notice">ⓘ {escape(note)}</p>' if note else ""


def _still_improving(run: dict) -> bool:
    """The run's ``still_improving`` flag, else whether its best epoch (1-based) is its last."""
    if run.get("still_improving") is not None:
        return bool(run["still_improving"])
    return bool(run["best"] and run["epochs"] and run["best"]["epoch"] == run["epochs"])


def _winners_table(results: dict, colors: dict[str, str]) -> str:
    if not results["winners"]:
        return '<p class="note">Fewer than two strategies finished: nothing to rank.</p>'
    rows = []
    for w in results["winners"]:
        fmt = METRIC_BY_KEY[w["metric"]].fmt
        spread = "-" if w["spread"] is None else format(w["spread"], fmt)
        margin = format(w["margin"], fmt)
        rows.append(
            [escape(w["label"]), _strategy(w["winner"], colors), _strategy(w["runner_up"], colors), margin,
             spread, _verdict_pill(w["verdict"])]
        )  # fmt: skip
    head = ["metric", "winner", "runner-up", "margin", "seed spread (σ₁+σ₂)", "verdict"]
    return _table(head, rows, {0, 1, 2, 5}, {})


def _paired_table(results: dict, colors: dict[str, str]) -> str:
    """The paired comparison with the winner (per-seed differences, bootstrap interval), when results.json
    has one."""
    paired = results.get("paired")
    if not paired:
        return ""
    rows = []
    for other, c in paired["comparisons"].items():
        low, high = c["interval95"]
        per_seed = ", ".join(f"{d:+.3f}" for d in c["difference_per_seed"])
        rows.append(
            [_strategy(other, colors), escape(",".join(map(str, c["seeds"]))), per_seed,
             f"{c['mean_difference']:+.3f}", f"[{low:+.3f}, {high:+.3f}]", escape(c["verdict"])]
        )  # fmt: skip
    title = (
        f"<h2>Paired with the winner ({escape(paired['winner'])}) <small class='note'>bootstrap over "
        f"{paired['images']} validation images</small></h2>"
    )
    head = ["strategy", "seeds", "winner − strategy per seed", "mean", "95% interval", "verdict"]
    return title + _table(head, rows, {0, 5}, {})


def _runs_table(results: dict, out_dir: Path, colors: dict[str, str]) -> str:
    rows = []
    for run in results["runs"]:
        done = run["status"] == "done"
        status = f'<span class="pill {"ok" if done else "failed"}">{escape(run["status"])}</span>'
        best = "-" if run["best"] is None else f"{run['best']['map50_95']:.3f}"
        csv_path = f"{run['dir']}/results.csv"
        folder = escape(run["dir"])
        if (out_dir / csv_path).is_file():
            folder = f'<a href="{escape(csv_path)}">{folder}/results.csv</a>'
        error = f'<span class="error">{escape(run["error"])}</span>' if run["error"] else ""
        rows.append(
            [_strategy(run["strategy"], colors), str(run["seed"]), status, str(run["epochs"] or "-"), best,
             folder, error]
        )  # fmt: skip
    head = ["strategy", "seed", "status", "epochs", "best mAP50-95", "results", "error"]
    return _table(head, rows, {0, 2, 5, 6}, {})
