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
            assert ax.get_legend() is not None or fig.legends, f"axes '{ax.get_title()}' has {len(tagged)} series and no legend"


def test_latency_figure_is_a_grid_with_numbers_spread_and_the_fastest_marked(bench_doc):
    """From the figure alone: the fastest runtime of each variant at each batch size, with its p50 and
    spread written in the cell."""
    fig = plots.latency_figure(bench_doc)
    rows = [r for r in bench_doc["results"] if r.get("samples_ms")]
    batches = sorted({r["batch_size"] for r in rows})
    panels = [ax for ax in fig.axes if ax.get_title().startswith("batch ")]
    assert 1 <= len(panels) <= 4 and panels[0].get_title().startswith(f"batch {batches[0]},")
    assert panels[-1].get_title().startswith(f"batch {batches[-1]},")  # batch 1 and the largest
    for ax in panels:
        batch = int(ax.get_title().split(",")[0].split()[1])
        threads = max(r["threads"] for r in rows if r["batch_size"] == batch)
        cells = {p.get_gid(): p for p in ax.patches if p.get_gid() and p.get_gid().count("|") == 1}
        texts = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
        boxed = {tuple(p.get_gid().split("|")[1:3]) for p in ax.patches if (p.get_gid() or "").startswith("fastest|")}
        mine = [r for r in rows if r["batch_size"] == batch and r["threads"] == threads]
        assert mine
        for r in mine:  # every measured cell drawn, its p50 written, with a spread
            assert f"{r['variant']}|{r['runtime']}" in cells
            text = texts[f"text|{r['variant']}|{r['runtime']}|{batch}"]
            assert f"{r['p50_ms']:.3g}" in text and "±" in text and "%" in text
        for variant in {r["variant"] for r in mine}:  # exactly the row's fastest runtime is boxed
            best = min((r for r in mine if r["variant"] == variant), key=lambda r: r["p50_ms"])
            assert (variant, best["runtime"]) in boxed
            assert sum(1 for v, _ in boxed if v == variant) == 1
        starred = [g for g, t in texts.items() if "*" in t]
        fastest = min(mine, key=lambda r: r["p50_ms"])
        assert starred == [f"text|{fastest['variant']}|{fastest['runtime']}|{batch}"]


def test_latency_figure_names_the_fastest_int8_runtime_on_a_made_up_run():
    """A made-up run where the answer is known: onnxruntime fastest at batch 1, openvino at batch 32."""
    def row(variant, runtime, batch, p50):
        return {"variant": variant, "runtime": runtime, "batch_size": batch, "threads": 1, "p50_ms": p50,
                "samples_ms": [p50 * 0.9, p50, p50 * 1.1]}
    doc = {"results": [row("onnx-int8", "onnxruntime", 1, 0.1), row("onnx-int8", "openvino", 1, 0.3),
                       row("onnx-int8", "onnxruntime", 32, 3.0), row("onnx-int8", "openvino", 32, 1.0)]}
    fig = plots.latency_figure(doc)
    boxed = {p.get_gid() for ax in fig.axes for p in ax.patches if (p.get_gid() or "").startswith("fastest|")}
    assert boxed == {"fastest|onnx-int8|onnxruntime|1", "fastest|onnx-int8|openvino|32"}


def test_memory_figure_colours_and_legend(bench_doc):
    fig = plots.memory_figure(bench_doc)
    _one_colour_per_variant(_series(fig))
    _legends_where_needed(fig)


def test_tradeoff_figure_intervals_axis_pareto_and_picks(bench_doc, parity_doc):
    fig = plots.tradeoff_figure(bench_doc, parity_doc)
    _one_colour_per_variant(_series(fig))
    _legends_where_needed(fig)
    points = plots._accuracy_points(bench_doc, parity_doc)
    full = [p for p in points if not p.get("sampled")]
    assert full and len(full) < len(points)  # the TFLM variant is measured on a sample, drawn apart
    widest = max(p["hi"] - p["lo"] for p in full)
    lo, hi = fig.axes[0].get_ylim()
    assert hi - lo >= widest  # a difference inside the noise looks like one
    assert lo <= min(p["lo"] for p in full) and hi >= max(p["hi"] for p in full)  # every full-set interval whole
    assert hi - lo < max(p["hi"] - p["lo"] for p in points)  # not stretched by the sampled one
    for ax in fig.axes:
        assert ax.containers, "accuracy points are drawn with their error bars"
    front = plots.pareto(points)
    assert front and all(p in points for p in front)
    texts = {t.get_text() for t in [*fig.texts, *(t for ax in fig.axes for t in ax.texts)]}
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
