"""report.html at 1400 px: no horizontal scrollbar, full-width cost figure, seed bands, the still-improving
notice; and the prediction grid's ground-truth colour. The layout is checked structurally here and, when
Chromium is installed, measured in a headless browser."""

import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from rich.console import Console

from yolo_transfer.compare.gallery import GT_COLOR, _box_label, hex_to_bgr
from yolo_transfer.compare.html_report import _paired_table, _still_improving_notice
from yolo_transfer.compare.plots import PALETTE, _plot_runs, strategy_colors
from yolo_transfer.compare.report import write_report
from yolo_transfer.compare.results import read_run
from yolo_transfer.engine import run_log

PHASES = {
    "full": ["all"],
    "freeze": ["frozen-backbone"],
    "staged": ["frozen-backbone", "all"],
    "gradual": ["head", "neck-head", "all"],
    "lp-ft": ["head", "all"],
    "surgical-early": ["early-and-head"],
}
SEEDS = [0, 1]
EPOCHS = 4
WINDOW = 1400
CONTENT_WIDTH = 1400 - 2 * 24  # the window less main's side padding, when main's max-width is not reached


def fake_run(out, strategy: str, seed: int, best_epoch: int) -> dict:
    """A finished run folder (results.csv, summary.json) read back as results.json's run entry."""
    run_dir = out / "runs" / f"{strategy}-s{seed}"
    run_dir.mkdir(parents=True)
    phases = PHASES[strategy]
    per_phase = -(-EPOCHS // len(phases))
    rows = []
    for epoch in range(1, EPOCHS + 1):
        score = 0.3 + 0.02 * epoch + 0.01 * seed - (0.05 if epoch > best_epoch else 0.0)
        values = {key: 0.05 for key in run_log.RESULTS_COLUMNS}
        phase = phases[min((epoch - 1) // per_phase, len(phases) - 1)]
        rows.append({**values, "epoch": epoch, "phase": phase, "metrics/mAP_0.5:0.95": score,
                     "wall_s": 10.0 * epoch + seed})  # fmt: skip
    run_log.write_results_csv(run_dir / "results.csv", rows)
    point = {"precision": 0.6, "recall": 0.5, "map50": 0.6, "coco": {"AP": 0.35, "AP50": 0.6}}
    summary = {
        "best": {**point, "epoch": best_epoch, "map50_95": rows[best_epoch - 1]["metrics/mAP_0.5:0.95"]},
        "final": {**point, "epoch": EPOCHS, "map50_95": rows[-1]["metrics/mAP_0.5:0.95"]},
        "epochs": EPOCHS, "wall_seconds": 1234.5 + seed, "train_img_per_s": 123.4,
        "time_to_95pct_best_s": 1000.0, "peak_rss_mb": 12345.0, "gpu_mem_mb": 23456.0, "strategy": strategy,
        "phases": [{"name": name, "trainable_params": 1_769_329 - 100_000 * i, "lr0": 0.01, "batch": 16,
                    "epochs_run": per_phase, "end_reason": "epochs"} for i, name in enumerate(phases)],
    }  # fmt: skip
    run_log.write_json(run_dir / "summary.json", summary)
    return read_run(strategy, seed, run_dir, out, "done", None)


def make_report(out, best_epoch: int = EPOCHS) -> str:
    runs = [fake_run(out, strategy, seed, best_epoch) for seed in SEEDS for strategy in PHASES]
    setting = {
        "data": "/data/a-rather-long-path/to/the/dataset/data.yaml", "weights": "/weights/yolov5n.pt",
        "strategies": {name: name for name in PHASES}, "seeds": SEEDS,
        "budget": {"kind": "epochs", "value": EPOCHS, "description": f"{EPOCHS} epochs"},
        "imgsz": 640, "batch": 16, "hyp": "low", "optimizer": "SGD", "lr0": None, "cos_lr": False,
        "patience": 100, "device": "cuda:0", "workers": 2, "cache": False, "val_fraction": 0.2,
        "split_seed": 0,
    }  # fmt: skip
    write_report(out, setting, runs, list(PHASES), Console(file=io.StringIO(), width=200))
    return (out / "report.html").read_text()


class Tables(HTMLParser):
    """Every table's rows of cells; a cell's text keeps <br> as a newline."""

    def __init__(self):
        super().__init__()
        self.tables, self.cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ""
        elif tag == "br" and self.cell is not None:
            self.cell += "\n"

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def min_content_width(table: list[list[str]], char_px: float = 7.6, padding_px: int = 16) -> float:
    """A generous estimate of a table's narrowest layout: per column, its longest unbreakable run of text
    (spaces break, no-break spaces do not) at ~7.6 px per character of 13 px text, plus cell padding."""
    columns = max(len(row) for row in table)
    widest = [0] * columns
    for row in table:
        for c, cell in enumerate(row):
            words = re.split(r"[ \n]+", cell.strip())
            widest[c] = max(
                widest[c], max(len(word) for word in words) * char_px + padding_px + 18 * (c == 0)
            )
    return sum(widest)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, make_report(out)


def test_results_table_fits_1400_px_without_a_scrollbar(report):
    _, html = report
    assert re.search(r"main \{ max-width: (\d+)px", html).group(1) == "1320"
    tables = Tables()
    tables.feed(html)
    results = tables.tables[0]
    assert results[0][-1] == "trainable params" and "gpu" in " ".join(results[0]).lower()
    phases = next(row[-1] for row in results[1:] if row[0].startswith("gradual"))
    assert phases.count("\n") == 2  # one phase per line
    assert all("±\u00a0" in cell for row in results[1:] for cell in row[3:-1] if "±" in cell)
    for table in tables.tables:
        assert min_content_width(table) < CONTENT_WIDTH


def test_cost_figure_takes_the_full_width(report):
    _, html = report
    assert ".plots figure.wide { grid-column: 1 / -1; }" in html
    wide = re.findall(r'<figure class="wide"><a href="([^"]+)"', html)
    assert wide == ["plots/cost.png"]


def test_all_runs_still_improving_is_said_prominently(report, tmp_path):
    _, html = report
    assert '<p class="notice" role="alert">' in html and "all runs were still improving" in html
    assert "all runs were still improving" not in make_report(tmp_path, best_epoch=2)


def test_notice_falls_back_to_best_epoch_equals_last():
    def results(best: int) -> dict:
        return {"runs": [{"status": "done", "best": {"epoch": best}, "epochs": 5}]}

    assert "all runs were still improving" in _still_improving_notice(results(5))
    assert _still_improving_notice(results(3)) == ""
    flagged = {"runs": [{"status": "done", "best": {"epoch": 3}, "epochs": 5, "still_improving": True}]}
    assert "all runs were still improving" in _still_improving_notice(flagged)


def test_map_curves_are_seed_means_with_a_band():
    histories = []
    for seed, offset in ((0, 0.0), (1, 0.2)):
        run = {"strategy": "full", "seed": seed}
        rows = [{"epoch": e, "phase": "all", "wall_s": 10.0 * e, "y": offset + e} for e in (1, 2, 3)]
        histories.append((run, rows))
    ax = Figure().subplots()
    _plot_runs(ax, histories, strategy_colors(["full"]), "epoch", lambda row: row["y"])
    mean = next(line for line in ax.get_lines() if line.get_label() == "full (seeds 0, 1)")
    np.testing.assert_allclose(mean.get_ydata(), [1.1, 2.1, 3.1])
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(1.0) and ys.max() == pytest.approx(3.2)


def test_ground_truth_colour_is_no_strategy_colour_and_labels_shrink():
    assert all(hex_to_bgr(color) != GT_COLOR for color in PALETTE)
    box = np.array([0, 0, 10, 10, 0.87, 0])
    assert _box_label(box, ["person"], box_width=10) == "0.87"
    assert _box_label(box, ["person"], box_width=200) == "person 0.87"
    assert _box_label(np.array([0, 0, 10, 10, 1.0, 0]), ["person"], box_width=10) == "per"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
MEASURE = """<script>
window.addEventListener("load", () => {
  const page = document.documentElement.scrollWidth > document.documentElement.clientWidth;
  const boxes = [...document.querySelectorAll(".scroll")].filter(e => e.scrollWidth > e.clientWidth + 1);
  document.body.setAttribute("data-overflow", `${page ? 1 : 0},${boxes.length}`);
});
</script></body>"""


@pytest.mark.skipif(
    CHROMIUM is None, reason="needs chromium (apt-get install chromium) for the browser check"
)
def test_headless_chromium_shows_no_horizontal_scrollbar_at_1400_px(report):
    out, html = report
    page = out / "measured.html"
    page.write_text(html.replace("</body>", MEASURE))
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WINDOW},1000",
               "--hide-scrollbars", "--virtual-time-budget=5000"]  # fmt: skip
    dom = subprocess.run(
        [*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert 'data-overflow="0,0"' in dom, re.search(r'data-overflow="[^"]*"', dom)
    subprocess.run(
        [*browser, f"--screenshot={out / 'report-1400.png'}", (out / "report.html").as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert (out / "report-1400.png").stat().st_size > 10_000


def test_paired_comparison_is_shown_when_results_have_one():
    comparison = {"seeds": [0, 1], "difference_per_seed": [0.02, 0.01], "mean_difference": 0.015,
                  "interval95": [0.004, 0.027], "lost_every_seed": True, "verdict": "better"}  # fmt: skip
    results = {"paired": {"winner": "full", "images": 50, "comparisons": {"freeze": comparison}}}
    tables = Tables()
    tables.feed(_paired_table(results, strategy_colors(["full", "freeze"])))
    assert tables.tables[0][1] == ["freeze", "0,1", "+0.020, +0.010", "+0.015", "[+0.004, +0.027]", "better"]
    assert _paired_table({}, {}) == ""
