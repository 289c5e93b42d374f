"""The bench and parity figures, drawn so that they tell the truth at a glance:

- one colour and marker per variant and one line style per runtime (toolkit/style.py), the same in
  every figure, with a legend on every axes that shows more than one series;
- latency as the p50 with its p10-p90 band, per call and per image;
- accuracy with its 95% interval on every point, on an axis never narrower than the widest
  interval, so that a difference inside the noise looks like one;
- the accuracy/latency/size trade-off with its Pareto front marked and the report's picks named.

Every function takes the JSON documents the commands wrote (bench.json, parity.json), so the
figures can be redrawn from committed results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit import artifacts
from toolkit.style import runtime_style, variant_style


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _percentile(row: dict, q: float) -> float:
    return float(np.percentile(np.asarray(row["samples_ms"], dtype=np.float64), q))


def _legend(ax, variants: list[str], runtimes: list[str], **kwargs) -> None:
    """One compact legend: a marker per variant (its colour), a line per runtime (its style)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="none", markersize=6, label=v, **variant_style(v)) for v in variants]
    handles += [Line2D([], [], color="black", label=r, **runtime_style(r)) for r in runtimes]
    ax.legend(handles=handles, fontsize=6, **kwargs)


def plot_latency(doc: dict, path: Path) -> None:
    artifacts.atomic_savefig(latency_figure(doc), path)


def latency_figure(doc: dict):
    """p50 latency vs batch size with the p10-p90 band, per call (top) and per image (bottom), one
    column per thread count."""
    plt = _plt()
    rows = [r for r in doc["results"] if r.get("samples_ms")]
    threads = sorted({r["threads"] for r in rows})
    fig, axes = plt.subplots(2, len(threads), figsize=(6.5 * len(threads), 8), squeeze=False, sharex=True)
    for col, t in enumerate(threads):
        series: dict[tuple, list] = {}
        for r in rows:
            if r["threads"] == t:
                series.setdefault((r["variant"], r["runtime"], r["device"]), []).append(r)
        for per_image, ax in ((False, axes[0][col]), (True, axes[1][col])):
            for (variant, runtime, device), group in series.items():
                group.sort(key=lambda r: r["batch_size"])
                b = np.array([r["batch_size"] for r in group], dtype=np.float64)
                scale = b if per_image else np.ones_like(b)
                p50 = np.array([r["p50_ms"] for r in group]) / scale
                p10 = np.array([_percentile(r, 10) for r in group]) / scale
                p90 = np.array([_percentile(r, 90) for r in group]) / scale
                style = variant_style(variant)
                line, = ax.plot(b, p50, markersize=5, label=f"_{variant} / {runtime} ({device})",
                                **style, **runtime_style(runtime))
                line.set_gid(f"{variant}|{runtime}")
                ax.fill_between(b, p10, p90, color=style["color"], alpha=0.12, linewidth=0)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{t} thread(s), {'per image' if per_image else 'per call'}", fontsize=9)
            ax.set_ylabel("ms per image (p50, p10-p90 band)" if per_image else "ms per call (p50, p10-p90 band)")
            if len(series) > 1:
                _legend(ax, sorted({k[0] for k in series}), sorted({k[1] for k in series}), loc="best", ncol=2)
        axes[1][col].set_xlabel("batch size")
    fig.suptitle("Latency vs batch size", fontsize=10)
    fig.tight_layout()
    return fig


def plot_memory(doc: dict, path: Path) -> None:
    artifacts.atomic_savefig(memory_figure(doc), path)


def memory_figure(doc: dict):
    """Peak resident memory of each variant x runtime (its largest batch, most threads), with the
    process's resident memory before the model was loaded marked."""
    plt = _plt()
    best: dict[tuple, dict] = {}
    for r in doc["results"]:
        if "peak_rss_mb" not in r:
            continue
        key = (r["variant"], r["runtime"])
        if key not in best or (r["threads"], r["batch_size"]) > (best[key]["threads"], best[key]["batch_size"]):
            best[key] = r
    rows = sorted(best.values(), key=lambda r: r["peak_rss_mb"])
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.8))
    labels = [f"{r['variant']} / {r['runtime']} (batch {r['batch_size']}, {r['threads']} thr)" for r in rows]
    for i, r in enumerate(rows):
        style = variant_style(r["variant"])
        bar = ax.barh(i, r["peak_rss_mb"], color=style["color"], alpha=0.75, edgecolor="black",
                      linestyle=runtime_style(r["runtime"])["linestyle"], linewidth=1.0)
        bar.patches[0].set_gid(f"{r['variant']}|{r['runtime']}")
    ax.scatter([r["rss_before_load_mb"] for r in rows], range(len(rows)), color="black", marker="|", s=200,
               zorder=3, label="RSS before the model was loaded")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_xlabel("peak resident memory, MiB (the benchmark process: Python and the runtime's libraries included)")
    ax.set_title("Peak resident memory per variant and runtime (edge: runtime's line style)", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    _legend(ax, sorted({r["variant"] for r in rows}), sorted({r["runtime"] for r in rows}), loc="lower right")
    return fig


def _accuracy_points(doc: dict, parity: dict) -> list[dict]:
    """One point per variant x runtime whose accuracy parity measured under that runtime, at batch 1
    and the most threads."""
    variants = parity.get("variants", {})
    measured = {(v.get("variant", k), v.get("runtime")): v for k, v in variants.items()}
    ref = parity.get("reference", {})
    if ref:
        measured[("keras", "tensorflow")] = ref
    rows = [r for r in doc["results"] if r["batch_size"] == 1]
    if not rows:
        return []
    points = []
    for (variant, runtime), v in measured.items():
        mine = [r for r in rows if r["variant"] == variant and r["runtime"] == runtime]
        if not mine:
            continue
        r = max(mine, key=lambda r: r["threads"])
        lo, hi = v["accuracy_ci95"]
        points.append({"variant": variant, "runtime": runtime, "latency": r["p50_ms"], "bytes": r["bytes"],
                       "accuracy": v["accuracy"] * 100, "lo": lo * 100, "hi": hi * 100, "threads": r["threads"],
                       "agreement": v.get("agreement", 1.0)})
    return points


def pareto(points: list[dict]) -> list[dict]:
    """The points no other point beats on latency, size and accuracy at once."""
    def beats(q, p):
        no_worse = q["latency"] <= p["latency"] and q["bytes"] <= p["bytes"] and q["accuracy"] >= p["accuracy"]
        better = q["latency"] < p["latency"] or q["bytes"] < p["bytes"] or q["accuracy"] > p["accuracy"]
        return no_worse and better

    return [p for p in points if not any(beats(q, p) for q in points if q is not p)]


def accuracy_limits(points: list[dict]) -> tuple[float, float]:
    """A y range that shows every interval whole and is never narrower than the widest of them
    (plus a margin), so one image out of 10,000 does not fill the axis."""
    lo, hi = min(p["lo"] for p in points), max(p["hi"] for p in points)
    widest = max(p["hi"] - p["lo"] for p in points)
    pad = max(widest * 0.5, (hi - lo) * 0.1, 0.05)
    return lo - pad, hi + pad


def plot_tradeoff(doc: dict, parity: dict, path: Path) -> None:
    artifacts.atomic_savefig(tradeoff_figure(doc, parity), path)


def tradeoff_figure(doc: dict, parity: dict):
    """Accuracy (95% interval) against batch-1 latency and against model size; Pareto-optimal
    points ringed, the report's picks named."""
    plt = _plt()
    points = _accuracy_points(doc, parity)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    if not points:
        for ax in axes:
            ax.axis("off")
        axes[0].text(0.5, 0.5, "no variant has both a parity result and a batch-1 latency", ha="center")
        return fig
    front = pareto(points)
    fastest = min(points, key=lambda p: p["latency"])
    smallest = min((p for p in points if p["variant"] != "keras"), key=lambda p: p["bytes"], default=None)
    closest = max((p for p in points if p["variant"] != "keras"), key=lambda p: p["agreement"], default=None)
    picks = {id(fastest): "lowest latency"}
    if smallest:
        picks[id(smallest)] = picks.get(id(smallest), "") + ("; " if id(smallest) in picks else "") + "smallest"
    if closest:
        picks[id(closest)] = picks.get(id(closest), "") + ("; " if id(closest) in picks else "") + "closest to Keras"
    for ax, key, label, scale in ((axes[0], "latency", "p50 latency at batch 1 (ms, log)", "log"),
                                  (axes[1], "bytes", "model size (bytes, log)", "log")):
        for p in points:
            style = variant_style(p["variant"])
            container = ax.errorbar(p[key], p["accuracy"], yerr=[[max(0.0, p["accuracy"] - p["lo"])], [max(0.0, p["hi"] - p["accuracy"])]],
                                    fmt=style["marker"], color=style["color"], markersize=7, capsize=3,
                                    linestyle="none", elinewidth=1.2)
            container.lines[0].set_gid(f"{p['variant']}|{p['runtime']}")
            for bar in container.lines[2]:
                bar.set_linestyle(runtime_style(p["runtime"])["linestyle"])
            if p in front:
                ax.scatter(p[key], p["accuracy"], s=220, facecolors="none", edgecolors="black", linewidths=1.0,
                           zorder=3)
            if id(p) in picks:
                ax.annotate(picks[id(p)], (p[key], p["accuracy"]), textcoords="offset points", xytext=(6, 8),
                            fontsize=7, arrowprops={"arrowstyle": "-", "lw": 0.5})
        ax.set_xscale(scale)
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
        _legend(ax, sorted({p["variant"] for p in points}), sorted({p["runtime"] for p in points}), loc="lower right",
                ncol=2)
    axes[0].set_ylim(*accuracy_limits(points))
    axes[0].set_ylabel("test accuracy, % (95% Wilson interval)")
    fig.suptitle("Accuracy vs latency and size: ringed points are Pareto-optimal (no other is faster, smaller "
                 "and as accurate); intervals that overlap are not differences", fontsize=9)
    return fig
