"""The bench and parity figures, drawn so that they tell the truth at a glance:

- one colour and marker per variant and one line style per runtime (toolkit/style.py), the same in
  every figure, with a legend on every axes that shows more than one series;
- latency as a variant x runtime grid per batch size, the p50 with its spread in each cell and the
  fastest runtime of each variant marked;
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


def _legend(ax, variants: list[str], runtimes: list[str], extra: list | None = None, **kwargs) -> None:
    """One compact legend: a marker per variant (its colour), a line per runtime (its style), and any
    other mark the axes draws (``extra``), so that nothing on a figure is unexplained."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="none", markersize=6, label=v, **variant_style(v)) for v in variants]
    handles += [Line2D([], [], color="black", label=r, **runtime_style(r)) for r in runtimes]
    ax.legend(handles=handles + list(extra or []), fontsize=6, **kwargs)


def plot_latency(doc: dict, path: Path) -> None:
    artifacts.atomic_savefig(latency_figure(doc), path)


def latency_figure(doc: dict, max_panels: int = 4):
    """One heat map per batch size (up to ``max_panels``: batch 1, the largest, and between), at the most
    threads a runtime ran with: a row per variant, a column per runtime, each cell the p50 in ms with its
    p10-p90 spread (+-%, half the range over the p50). A cell's shade is its p50 over the fastest
    runtime of its row; the fastest runtime of each row is boxed and bold, the fastest cell of the
    panel starred. From it alone: which runtime runs a variant fastest at which batch size."""
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    from toolkit import exporters, runners

    plt = _plt()
    exporters.load_all()
    VARIANT_ORDER, RUNTIME_ORDER = ["keras", *exporters.REGISTRY], list(runners.load_all())  # noqa: N806
    rows = [r for r in doc["results"] if r.get("samples_ms")]
    batches = sorted({r["batch_size"] for r in rows})
    if len(batches) > max_panels:  # batch 1, the largest, and evenly between
        keep = {batches[round(i * (len(batches) - 1) / (max_panels - 1))] for i in range(max_panels)}
        batches = sorted(keep)
    order = lambda names, known: sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))  # noqa: E731
    variants = order({r["variant"] for r in rows}, VARIANT_ORDER)
    runtimes = order({r["runtime"] for r in rows}, RUNTIME_ORDER)
    cols = 2 if len(batches) > 1 else 1
    nrow = -(-len(batches) // cols)
    fig, axes = plt.subplots(nrow, cols, figsize=(1.25 * len(runtimes) * cols + 2.5, 0.42 * len(variants) * nrow + 1.6),
                             squeeze=False)
    norm = LogNorm(1.0, 8.0)
    cmap = plt.get_cmap("YlOrRd")
    for ax, batch in zip(axes.flat, batches, strict=False):
        cells: dict[tuple, dict] = {}
        for r in rows:
            if r["batch_size"] != batch:
                continue
            key = (r["variant"], r["runtime"])
            if key not in cells or r["threads"] > cells[key]["threads"]:
                cells[key] = r
        best_in_panel = min(cells.values(), key=lambda r: r["p50_ms"]) if cells else None
        for i, variant in enumerate(variants):
            mine = {rt: cells[(variant, rt)] for rt in runtimes if (variant, rt) in cells}
            fastest = min(mine.values(), key=lambda r: r["p50_ms"])["p50_ms"] if mine else None
            for j, runtime in enumerate(runtimes):
                r = mine.get(runtime)
                if r is None:
                    ax.add_patch(Rectangle((j, i), 1, 1, color="#f2f2f2", linewidth=0))
                    continue
                ratio = r["p50_ms"] / fastest
                cell = Rectangle((j, i), 1, 1, color=cmap(norm(min(max(ratio, 1.0), 8.0))), linewidth=0)
                cell.set_gid(f"{variant}|{runtime}")
                ax.add_patch(cell)
                spread = (_percentile(r, 90) - _percentile(r, 10)) / 2 / r["p50_ms"] * 100
                best = ratio == 1.0
                star = " *" if r is best_in_panel else ""
                ax.text(j + 0.5, i + 0.5, f"{r['p50_ms']:.3g}{star}\n±{spread:.0f}%"
                        + (f" ({r['threads']} thr)" if r["threads"] != max(x["threads"] for x in cells.values()) else ""),
                        ha="center", va="center", fontsize=7, fontweight="bold" if best else "normal",
                        color="black" if ratio < 4 else "white", gid=f"text|{variant}|{runtime}|{batch}")
                if best:
                    ax.add_patch(Rectangle((j + 0.04, i + 0.04), 0.92, 0.92, fill=False, edgecolor="black",
                                           linewidth=1.6, gid=f"fastest|{variant}|{runtime}|{batch}"))
        ax.set_xlim(0, len(runtimes))
        ax.set_ylim(len(variants), 0)
        ax.set_xticks(np.arange(len(runtimes)) + 0.5, runtimes, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(np.arange(len(variants)) + 0.5, variants, fontsize=8)
        ax.tick_params(length=0)
        threads = max((r["threads"] for r in cells.values()), default=0)
        ax.set_title(f"batch {batch}, {threads} thread(s): p50 ms per call, ±p10-p90 half-range", fontsize=9)
    for ax in list(axes.flat)[len(batches):]:
        ax.axis("off")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(sm, ax=axes, fraction=0.025, pad=0.02)
    bar.set_ticks([1, 1.5, 2, 3, 4, 6, 8], labels=["1x", "1.5x", "2x", "3x", "4x", "6x", "8x or more"])
    bar.minorticks_off()
    bar.set_label("p50 / the row's fastest runtime (boxed, bold); * the panel's fastest cell", fontsize=8)
    fig.suptitle("Latency: which runtime runs each variant fastest (one run; "
                 "a second run may rank close cells differently)", fontsize=10)
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
               zorder=3)
    for i, r in enumerate(rows):  # what a microcontroller needs is the arena, not the host process
        if r.get("arena_bytes"):
            ax.annotate(f"TFLM tensor arena on the device: {r['arena_bytes'] / 1024:,.1f} KiB (the bar is the host "
                        "process running TFLM's reference kernels)", (r["peak_rss_mb"], i), xytext=(6, 0),
                        textcoords="offset points", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_xlabel("peak resident memory, MiB (the benchmark process: Python and the runtime's libraries included)")
    ax.set_title("Peak resident memory per variant and runtime (edge: runtime's line style)", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    if any(r.get("arena_bytes") for r in rows):
        ax.set_xlim(0, max(r["peak_rss_mb"] for r in rows) * 1.9)  # room for the arena's note
    from matplotlib.lines import Line2D

    _legend(ax, sorted({r["variant"] for r in rows}), sorted({r["runtime"] for r in rows}), loc="lower right",
            extra=[Line2D([], [], color="black", marker="|", linestyle="none", markersize=10,
                          label="resident before the model was loaded")])
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
                       "agreement": v.get("agreement", 1.0), "images": v.get("images"),
                       "sampled": bool(ref.get("images")) and v.get("images") not in (None, ref.get("images"))})
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
    full = [p for p in points if not p.get("sampled")] or points  # a sampled variant's wide interval is drawn
    lo, hi = min(p["lo"] for p in full), max(p["hi"] for p in full)  # apart; it does not set the scale
    widest = max(p["hi"] - p["lo"] for p in full)
    pad = max(widest * 0.5, (hi - lo) * 0.1, 0.05)
    return lo - pad, hi + pad


def plot_tradeoff(doc: dict, parity: dict, path: Path) -> None:
    artifacts.atomic_savefig(tradeoff_figure(doc, parity), path)


def tradeoff_figure(doc: dict, parity: dict):
    """Accuracy (95% interval) against batch-1 latency and against model size; Pareto-optimal
    points ringed, the report's picks named."""
    plt = _plt()
    points = _accuracy_points(doc, parity)
    fig, axes = plt.subplots(1, 2, figsize=(13, 6), sharey=True)
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
    ylim = accuracy_limits(points)
    numbered = {pid: n + 1 for n, pid in enumerate(picks)}
    for ax, key, label in ((axes[0], "latency", "p50 latency at batch 1, ms (log)"),
                           (axes[1], "mb", "model size, MB (log)")):
        for p in points:
            p["mb"] = p["bytes"] / 1e6
            style = variant_style(p["variant"])
            y = min(max(p["accuracy"], ylim[0]), ylim[1])  # a sampled point off the scale sits on its edge
            container = ax.errorbar(p[key], y, yerr=[[max(0.0, y - max(p["lo"], ylim[0]))],
                                                     [max(0.0, min(p["hi"], ylim[1]) - y)]],
                                    fmt=style["marker"], color=style["color"], markersize=7, capsize=3,
                                    linestyle="none", elinewidth=1.2, markerfacecolor="white" if p["sampled"] else None)
            container.lines[0].set_gid(f"{p['variant']}|{p['runtime']}")
            for bar in container.lines[2]:
                bar.set_linestyle(runtime_style(p["runtime"])["linestyle"])
            if p in front:
                ax.scatter(p[key], y, s=220, facecolors="none", edgecolors="black", linewidths=1.0, zorder=3)
            if id(p) in picks:
                ax.annotate(str(numbered[id(p)]), (p[key], y), textcoords="offset points", xytext=(0, 16),
                            ha="center", fontsize=8, fontweight="bold", zorder=5,
                            bbox={"boxstyle": "circle,pad=0.15", "facecolor": "white", "edgecolor": "black",
                                  "linewidth": 0.6})
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        if key == "mb":  # label the sizes the variants have, not only the decades
            sizes = sorted({float(f"{p['mb']:.2g}") for p in points})
            ax.set_xticks(sizes, [f"{v:g}" for v in sizes])
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
    _legend(fig, sorted({p["variant"] for p in points}), sorted({p["runtime"] for p in points}),
            loc="lower center", ncol=9)
    fig.subplots_adjust(bottom=0.22, top=0.88)
    key_text = "; ".join(f"{numbered[pid]}: {what} ({p['variant']} on {p['runtime']})" for pid, what in picks.items()
                         for p in points if id(p) == pid)
    sampled = [p for p in points if p["sampled"]]
    if sampled:
        key_text += "\nhollow: checked on a sample, its interval not setting this scale: " + "; ".join(
            f"{p['variant']} ({p['images']:,} images, 95% CI {p['lo']:.1f}-{p['hi']:.1f}%)" for p in sampled)
    import textwrap

    fig.text(0.5, 0.115, "\n".join(textwrap.fill(line, 180) for line in key_text.splitlines()), ha="center",
             va="center", fontsize=7)
    axes[0].set_ylim(*ylim)
    axes[0].set_ylabel("test accuracy, % (95% Wilson interval)")
    fig.suptitle("Accuracy vs latency and size: ringed points are Pareto-optimal (no other is faster, smaller "
                 "and as accurate); intervals that overlap are not differences", fontsize=9)
    return fig
