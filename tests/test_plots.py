"""What a person sees: the plots, drawn from committed results, checked from the figure objects
(not the pixels); progress bars on a terminal and none in a captured log."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit import plots
from toolkit.style import runtime_style, variant_style

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


@pytest.fixture(scope="module")
def bench_doc():
    return json.loads((RESULTS / "cpu-run1.json").read_text())


@pytest.fixture(scope="module")
def parity_doc():
    return json.loads((RESULTS / "cpu-parity.json").read_text())


def _series(fig) -> list[tuple]:
    """(axes, variant, runtime, colour, linestyle) of every artist the plots tag with a gid."""
    out = []
    for ax in fig.axes:
        for artist in [*ax.lines, *ax.patches]:
            gid = artist.get_gid()
            if gid and "|" in gid:
                variant, runtime = gid.split("|")
                colour = artist.get_color() if hasattr(artist, "get_color") else artist.get_facecolor()
                out.append((ax, variant, runtime, colour, artist.get_linestyle()))
    return out


def _one_colour_per_variant(series) -> None:
    from matplotlib.colors import to_hex

    seen: dict[str, str] = {}
    for _, variant, _, colour, _ in series:
        colour = to_hex(colour)
        assert seen.setdefault(variant, colour) == colour, f"{variant} drawn in {seen[variant]} and {colour}"
        assert colour == to_hex(variant_style(variant)["color"])  # the project-wide colour, not a per-plot one


def _legends_where_needed(fig) -> None:
    for ax in fig.axes:
        tagged = {(v, r) for a, v, r, _, _ in _series(fig) if a is ax}
        if len(tagged) > 1:
            assert ax.get_legend() is not None, f"axes '{ax.get_title()}' has {len(tagged)} series and no legend"


def test_latency_figure_colours_styles_legends_and_bands(bench_doc):
    fig = plots.latency_figure(bench_doc)
    series = _series(fig)
    assert len(fig.axes) == 4  # per call and per image, for 1 and 2 threads
    assert {v for _, v, _, _, _ in series} >= {"tflite", "tflite-int8", "onnx", "keras"}
    _one_colour_per_variant(series)
    _legends_where_needed(fig)
    for _, _, runtime, _, linestyle in series:  # one line style per runtime, everywhere
        from matplotlib.lines import Line2D

        probe = Line2D([], [], **runtime_style(runtime))
        assert linestyle == probe.get_linestyle()
    for ax in fig.axes:  # a p10-p90 band behind every line
        assert len(ax.collections) >= len([a for a in series if a[0] is ax])
    assert "per image" in fig.axes[1].get_title() or "per image" in fig.axes[2].get_title()


def test_memory_figure_colours_and_legend(bench_doc):
    fig = plots.memory_figure(bench_doc)
    _one_colour_per_variant(_series(fig))
    _legends_where_needed(fig)


def test_tradeoff_figure_intervals_axis_pareto_and_picks(bench_doc, parity_doc):
    fig = plots.tradeoff_figure(bench_doc, parity_doc)
    _one_colour_per_variant(_series(fig))
    _legends_where_needed(fig)
    points = plots._accuracy_points(bench_doc, parity_doc)
    widest = max(p["hi"] - p["lo"] for p in points)
    lo, hi = fig.axes[0].get_ylim()
    assert hi - lo >= widest  # a difference inside the noise looks like one
    assert lo <= min(p["lo"] for p in points) and hi >= max(p["hi"] for p in points)  # every interval whole
    for ax in fig.axes:
        assert ax.containers, "accuracy points are drawn with their error bars"
    front = plots.pareto(points)
    assert front and all(p in points for p in front)
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert any("lowest latency" in t for t in texts) and any("smallest" in t for t in texts)


def test_narrow_accuracy_differences_are_not_magnified():
    """Two variants one image apart on 10,000 (0.01 points) must not fill the axis."""
    points = [{"lo": 99.10, "hi": 99.46, "accuracy": 99.30}, {"lo": 99.09, "hi": 99.45, "accuracy": 99.29}]
    lo, hi = plots.accuracy_limits(points)
    assert hi - lo >= 0.36 and lo < 99.09 and hi > 99.46


def test_styles_are_fixed_and_unknown_names_stable():
    assert variant_style("tflite-int8") == variant_style("tflite-int8@openvino")
    assert variant_style("my-variant") == variant_style("my-variant")  # stable for names we do not know
    assert runtime_style("my-runtime") == runtime_style("my-runtime")


# ----------------------------------------------------------------------------- progress
TRAIN = ["train", "--arch", "softmax", "--epochs", "1", "--train-limit", "3000"]


def _env(data_dir: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "TOOLKIT_DATA_DIR": str(Path(data_dir).resolve()),
            "TOOLKIT_NO_PROGRESS": ""}


def test_progress_bars_on_a_terminal(tmp_path, data_dir):
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", *TRAIN, "--exports", str(tmp_path)],
                            stdin=child_fd, stdout=child_fd, stderr=child_fd, env=_env(data_dir), close_fds=True)
    os.close(child_fd)
    out = b""
    while True:
        ready, _, _ = select.select([main_fd], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(main_fd)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-2000:]
    assert "epoch 1/1" in text and "batch/s" in text and "%|" in text  # a tqdm bar was drawn


def test_no_bars_in_a_captured_log_and_quiet_is_quiet(tmp_path, data_dir):
    proc = subprocess.run([sys.executable, "-m", "toolkit", *TRAIN, "--exports", str(tmp_path / "a")],
                          capture_output=True, text=True, env=_env(data_dir), timeout=300)
    assert proc.returncode == 0
    assert "epoch 1/1" in proc.stderr  # the one-line summaries stay
    assert "%|" not in proc.stderr and "\r" not in proc.stderr and "█" not in proc.stderr
    quiet = subprocess.run([sys.executable, "-m", "toolkit", *TRAIN, "--exports", str(tmp_path / "b"), "--quiet"],
                           capture_output=True, text=True, env=_env(data_dir), timeout=300)
    assert quiet.returncode == 0 and quiet.stderr.strip() == "" and "test accuracy" in quiet.stdout
