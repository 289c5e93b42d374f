"""Write benchmarks/RESULTS.md from the committed result files (no number typed by hand).

    python benchmarks/results_md.py

``markdown(read_results())`` is the page: the files are read once, the text is made from them alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from _common import BENCHMARKS, RESULTS, cpu_text, row_key

from toolkit.artifacts import atomic_write_text, read_json

OTHER_CPU = "cpu-intel-amx"  # `python benchmarks/cpu.py --name cpu-intel-amx` on an Intel Xeon with AMX
# what RESULTS.md is made from: `python benchmarks/cpu.py` (and --name OTHER_CPU), harness_overhead.py, pipeline.py
FILES = ("cpu-run1.json", "cpu-run2.json", "cpu-parity.json", "cpu-spread.json", "harness-overhead.json",
         "pipeline.json", *(f"{OTHER_CPU}-{part}.json" for part in ("run1", "run2", "parity", "spread")))


def read_results(results: Path = RESULTS) -> dict[str, dict]:
    """The committed files RESULTS.md is made from, by file name (the second CPU kind's where they exist)."""
    return {name: read_json(results / name) for name in FILES if (results / name).is_file()}


def micro_lines(rows: list[dict], pipeline: dict) -> list[str]:
    tflm = [r for r in rows if r["runtime"] == "tflm"]
    fp = next((r for r in pipeline.get("footprint", []) if r["variant"] == "tflite-int8"), None)
    if not tflm or not fp:
        return []
    fits = [d["device"] for d in fp["devices"] if d["fits"]]
    return [f"- **Microcontrollers**: the seed CNN's int8 model needs {fp['model_bytes']:,} bytes of flash and a "
            f"{fp['arena_bytes']:,}-byte TFLM arena; it fits: {', '.join(fits) or 'none of the device classes'}. "
            "For small parts choose a smaller architecture ([ARCHITECTURES.md](ARCHITECTURES.md)). TFLM on this "
            f"host: {tflm[0]['p50_ms']:.3f} ms per image ({tflm[0]['note']}).", ""]


def accuracy_by_row(parity: dict) -> dict:
    """(variant, runtime) -> test accuracy, from `toolkit parity --runtimes ...` on the same export."""
    acc = {("keras", "tensorflow"): parity["reference"]["accuracy"]}
    for v in parity["variants"].values():
        acc[(v["variant"], v["runtime"])] = v["accuracy"]
    return acc


def openvino_lines(rows: list[dict], acc: dict, threads: int, big: int) -> list[str]:
    """OpenVINO at f32 and in bf16 (its CPU default here), side by side."""
    if not any(r["runtime"] == "openvino-bf16" for r in rows):
        return []
    by = {row_key(r): r for r in rows}
    variants = sorted({r["variant"] for r in rows if r["runtime"] == "openvino-bf16"})
    lines = ["## OpenVINO: f32 and bf16", "",
             "OpenVINO's CPU plugin runs float models in bf16 by default on CPUs with AVX512_BF16 (this one). "
             "`openvino` pins f32, `openvino-bf16` is the default; each row records the precision the compiled "
             f"model reported. p50 ms at {threads} threads; accuracy from `toolkit parity` under the same settings "
             "(results/cpu-parity.json).", "",
             f"| variant | f32 batch 1 | bf16 batch 1 | f32 batch {big} | bf16 batch {big} | f32 accuracy | "
             "bf16 accuracy |", "|---|---:|---:|---:|---:|---:|---:|"]
    for v in variants:
        cells = []
        for batch in (1, big):
            for rt in ("openvino", "openvino-bf16"):
                r = by.get((v, rt, batch, threads))
                cells.append(f"{r['p50_ms']:.3f}" if r else "-")
        cells = [cells[0], cells[1], cells[2], cells[3]]
        accs = [f"{acc[(v, rt)]:.2%}" if (v, rt) in acc else "-" for rt in ("openvino", "openvino-bf16")]
        lines.append(f"| {v} | " + " | ".join(cells + accs) + " |")
    precisions = sorted({(r["runtime"], r.get("inference_precision")) for r in rows if r["runtime"].startswith("openvino")})
    lines += ["", "Precision reported by the compiled models: "
              + ", ".join(f"{rt} {p}" for rt, p in precisions) + ".", ""]
    return lines


def both_runs(ranked: list[dict], second: list[dict], figure) -> str:
    """A winner only if it is clear of the others in run 1 (p50 intervals apart) and is also the
    fastest in run 2 with the same settings; otherwise the leaders of both runs are a tie."""
    from toolkit.report import _winner
    from toolkit.timing import tied

    key = row_key
    other = sorted((r for r in second if (r["batch_size"], r["threads"]) == (ranked[0]["batch_size"],
                                                                            ranked[0]["threads"])),
                   key=lambda r: r["p50_ms"])
    leaders1 = [r for r in ranked if r is ranked[0] or tied(ranked[0], r)]
    leaders2 = {key(r) for r in other if r is other[0] or tied(other[0], r)}
    if len(leaders1) == 1 and leaders2 == {key(ranked[0])}:
        return _winner(ranked, figure, second_run_agrees=True)
    tie = [r for r in ranked if r in leaders1 or key(r) in leaders2]
    names = ", ".join(f"`{r['variant']}` on {r['runtime']} ({figure(r)})" for r in tie)
    return f"a tie between {names}: a second run ranks them differently or their p50 intervals overlap"


def short(m: dict) -> str:
    """The CPU model with AMX or not: a column header."""
    text = cpu_text(m)
    return m["cpu"] + (" (AMX)" if "AMX" in text and "no AMX" not in text else " (no AMX)")


def _fastest(rows: list[dict], variant: str, batch: int, threads: int) -> dict | None:
    mine = [r for r in rows if (r["variant"], r["batch_size"], r["threads"]) == (variant, batch, threads)]
    return min(mine, key=lambda r: r["p50_ms"]) if mine else None


def _stable_fastest(run1: list[dict], run2: list[dict], variant: str, batch: int, threads: int) -> str | None:
    """The runtime that runs ``variant`` fastest at this batch in both runs, None when the runs disagree."""
    a, b = _fastest(run1, variant, batch, threads), _fastest(run2, variant, batch, threads)
    return a["runtime"] if a and b and a["runtime"] == b["runtime"] else None


def cpu_kinds_lines(docs: dict[str, dict], first: str = "cpu", other: str = OTHER_CPU) -> list[str]:
    """Where the two CPU kinds' conclusions differ: for each variant and batch, the runtime that runs it
    fastest on each machine, counted only when both runs on that machine agree."""
    if f"{other}-run1.json" not in docs:
        return []
    a1, a2, b1, b2 = (docs[f"{n}-run{i}.json"] for n in (first, other) for i in (1, 2))
    spread_b = docs[f"{other}-spread.json"]
    acc_b = accuracy_by_row(docs[f"{other}-parity.json"])
    ma, mb = a1["provenance"]["machine"], b1["provenance"]["machine"]
    desc = cpu_text
    threads = max(r["threads"] for r in b1["results"])
    batches = sorted({r["batch_size"] for r in b1["results"]} & {r["batch_size"] for r in a1["results"]})
    variants = [v for v in dict.fromkeys(r["variant"] for r in b1["results"])
                if any(r["variant"] == v for r in a1["results"])]
    lines = ["## Two CPU kinds: where the conclusions differ", "",
             f"The same benchmark (`python benchmarks/cpu.py --name {other}`) on a second machine: **{desc(mb)}**, "
             f"{mb['cpu_count']} cores (commit `{b1['provenance']['git_commit'][:12]}`, {b1['provenance']['created']}), "
             f"against the tables above: **{desc(ma)}**. Each machine ran its own training of the seed CNN, so "
             "compare rankings within a machine, not milliseconds across them. p50 spread between its two runs: "
             f"median {spread_b['median_spread_percent']:.1f}%, max {spread_b['max_spread_percent']:.1f}% "
             f"(`results/{other}-spread.json`). Full table: [results/{other}-run1.md](results/{other}-run1.md).", "",
             f"Fastest runtime for each variant ({threads} threads), counted only where both runs on that machine "
             "name the same one (else `runs disagree`):", "",
             f"| variant | batch | {short(ma)} | {short(mb)} | same? |",
             "|---|---:|---|---|---|"]
    differ = []
    several = {v for v in variants if len({r["runtime"] for r in b1["results"] if r["variant"] == v}) > 1}
    for v in [v for v in variants if v in several]:  # a variant only one runtime runs has nothing to rank
        for batch in batches:
            wa, wb = _stable_fastest(a1["results"], a2["results"], v, batch, threads), \
                _stable_fastest(b1["results"], b2["results"], v, batch, threads)
            if wa is None and wb is None and not any(r["variant"] == v and r["batch_size"] == batch
                                                     for r in b1["results"]):
                continue
            ra, rb = _fastest(a1["results"], v, batch, threads), _fastest(b1["results"], v, batch, threads)
            cell = lambda w, r: (f"{w} ({r['p50_ms']:.3f} ms)" if w else "runs disagree") if r else "-"  # noqa: E731
            same = "yes" if wa and wb and wa == wb else ("**no**" if wa and wb else "unresolved")
            if same == "**no**":
                differ.append((v, batch, wa, wb))
            lines.append(f"| {v} | {batch} | {cell(wa, ra)} | {cell(wb, rb)} | {same} |")
    lines += ["", f"The two machines name different fastest runtimes in {len(differ)} of these rows"
              + (": " + "; ".join(f"`{v}` at batch {b} ({short(ma)}: {wa}; {short(mb)}: {wb})"
                                  for v, b, wa, wb in differ) if differ else "") + ".", ""]
    ov = [r for r in b1["results"] if r["variant"] == "onnx-int8" and r["runtime"].startswith("openvino")]
    if ov:
        lines += [f"`onnx-int8` under OpenVINO on {short(mb)}: "
                  + ", ".join(f"{r['runtime']} ({r.get('inference_precision', '?')}) batch {r['batch_size']} "
                              f"{r['p50_ms']:.3f} ms" for r in sorted(ov, key=lambda r: (r['runtime'], r['batch_size']))
                              if r["threads"] == threads)
                  + "; parity under the same settings: "
                  + ", ".join(f"{rt} {acc_b[('onnx-int8', rt)]:.2%}" for rt in ("openvino", "openvino-bf16")
                              if ("onnx-int8", rt) in acc_b)
                  + " (the uint8-activation graph the toolkit now writes; its earlier int8-activation graph did not "
                  "compile in OpenVINO's default configuration, bf16, on this CPU).", ""]
    return lines


def header_lines(bench: dict, images: int) -> list[str]:
    rows, m, v = bench["results"], bench["provenance"]["machine"], bench["provenance"]["versions"]
    return [
        "# Benchmark results (CPU)",
        "",
        "Generated by `python benchmarks/results_md.py` from the files in `results/`; every number below "
        "is read from them.",
        "",
        f"**Machine**: {cpu_text(m)}, {m['cpu_count']} cores, no GPU; {m['platform']}. "
        f"TensorFlow {v.get('tensorflow')}, onnxruntime {v.get('onnxruntime')}, ai-edge-litert "
        f"{v.get('ai-edge-litert')}, OpenVINO "
        f"{v.get('openvino') or next((r['openvino'] for r in rows if 'openvino' in r), '-')}. Commit `{bench['provenance']['git_commit']}`, "
        f"{bench['provenance']['created']}.",
        "",
        f"**Method**: `toolkit bench` defaults: {bench['method']['measure']} after warm-up "
        f"({bench['method']['warmup']}); {bench['method']['timer']}; inputs: {bench['method']['inputs']}. "
        "Full table with p90/p99/std: [results/cpu-run1.md](results/cpu-run1.md); every sample: "
        f"`results/cpu-run1.json`. Memory: {bench['method'].get('memory', '-')}. Accuracy: `toolkit parity` on "
        f"all {images:,} test images under the runtime of the row (`results/cpu-parity.json`).",
        "",
    ]


def pick(rows: list[dict], batch: int, t: int) -> list[dict]:
    """The rows at one batch size and thread count, fastest first."""
    return sorted((r for r in rows if r["batch_size"] == batch and r["threads"] == t), key=lambda r: r["p50_ms"])


def table_lines(rows: list[dict], acc: dict, threads: int, big: int) -> list[str]:
    lines = []
    for batch in (1, big):
        lines += [f"## Batch {batch}, {threads} threads (fastest first)", "",
                  "| variant | runtime | p50 ms | p99 ms | img/s | peak RSS MiB | size MB | test accuracy |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in pick(rows, batch, threads):
            a = acc.get((r["variant"], r["runtime"]))
            lines.append(f"| {r['variant']} | {r['runtime']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                         f"{r['throughput']:,.0f} | {r['peak_rss_mb']:.0f} | {r['bytes'] / 1e6:.1f} | "
                         f"{f'{a:.2%}' if a is not None else '-'} |")
        lines.append("")
    lines += ["## 1 thread vs 2 threads (p50 ms)", "", "| variant | runtime | batch | 1 thread | 2 threads | speed-up |",
              "|---|---|---:|---:|---:|---:|"]
    by = {row_key(r): r for r in rows}
    for r in rows:
        if r["threads"] == 1 and (r["variant"], r["runtime"], r["batch_size"], 2) in by:
            two = by[(r["variant"], r["runtime"], r["batch_size"], 2)]
            lines.append(f"| {r['variant']} | {r['runtime']} | {r['batch_size']} | {r['p50_ms']:.3f} | "
                         f"{two['p50_ms']:.3f} | {r['p50_ms'] / two['p50_ms']:.2f}x |")
    lines += ["", "![latency vs batch size](results/cpu-run1-latency.png)", "",
              "![peak memory](results/cpu-run1-memory.png)", "",
              "![accuracy vs latency](results/cpu-run1-tradeoff.png)", ""]
    return lines


def ship_lines(rows: list[dict], second: list[dict], acc: dict, parity: dict, pipeline: dict,
               cores: int) -> list[str]:
    threads = max(r["threads"] for r in rows)
    big = max(r["batch_size"] for r in rows)
    # float32 on the formats' reference runtimes: bf16 (openvino-bf16) is not bit-for-bit close
    floats = [r for r in pick(rows, 1, threads) if r["variant"] in ("tflite", "onnx") and r["runtime"] in ("litert", "onnxruntime")]
    int8 = {r["variant"]: r for r in pick(rows, 1, threads) if r["variant"].endswith("int8")
            and r["runtime"] in ("litert", "onnxruntime")}
    return [
        "## Which format to ship",
        "",
        f"Read the latencies against the run-to-run spread below: on this shared {cores}-core machine, differences "
        "of a few tens of percent between int8 variants are within noise.",
        "",
        f"- **Lowest latency, one image at a time** (batch 1, {threads} threads): "
        + both_runs(pick(rows, 1, threads), second, lambda r: f"{r['p50_ms']:.3f} ms p50, "
                    f"{acc[(r['variant'], r['runtime'])]:.2%}, {r['bytes'] / 1e6:.1f} MB") + ".",
        f"- **Highest throughput** (batch {big}): "
        + both_runs(pick(rows, big, threads), second, lambda r: f"{r['throughput']:,.0f} images/s") + ".",
        f"- **Full-integer int8 (`tflite-int8`)** is what integer-only accelerators and microcontrollers run; here "
        f"it takes {int8['tflite-int8']['p50_ms']:.3f} ms at batch 1 and changes accuracy by "
        f"{parity['variants']['tflite-int8']['accuracy_diff_points']:+.2f} points "
        f"(95% CI {parity['variants']['tflite-int8']['accuracy_diff_ci95_points'][0]:+.2f} to "
        f"{parity['variants']['tflite-int8']['accuracy_diff_ci95_points'][1]:+.2f}).",
        f"- **Float (`{floats[0]['variant']}`)** when bit-for-bit closeness to the trained model matters more "
        f"than size: {floats[0]['p50_ms']:.3f} ms at batch 1 on {floats[0]['runtime']}, "
        f"{floats[0]['bytes'] / int8['tflite-int8']['bytes']:.1f}x the size of int8.",
        f"- **ONNX int8 (`onnx-int8`)**: {int8['onnx-int8']['p50_ms']:.3f} ms at batch 1 on onnxruntime's CPU "
        "provider; choose it where the deployment stack is onnxruntime.",
        "",
        *micro_lines(rows, pipeline),
        f"Accuracy figures are from `toolkit parity` on all {parity['reference']['images']:,} test images of "
        "the same export (`results/cpu-parity.json`).",
        "",
    ]


def spread_lines(spread: dict, overhead: dict) -> list[str]:
    return [
        "## Run-to-run spread",
        "",
        f"Two `toolkit bench` runs back to back (`python benchmarks/cpu.py`): p50 spread median "
        f"{spread['median_spread_percent']:.1f}%, max {spread['max_spread_percent']:.1f}% over "
        f"{len(spread['rows'])} rows ({spread['definition']}). Rows: `results/cpu-spread.json`. This "
        f"{spread['provenance']['machine']['cpu_count']}-core virtual machine is shared: treat differences smaller "
        "than the spread as noise. The rows that moved most:",
        "",
        "| variant | runtime | batch | threads | p50 ms run 1 | p50 ms run 2 | spread |",
        "|---|---|---:|---:|---:|---:|---:|",
        *[f"| {r['variant']} | {r['runtime']} | {r['batch_size']} | {r['threads']} | {r['p50_ms_run1']:.3f} | "
          f"{r['p50_ms_run2']:.3f} | {r['spread_percent']:.1f}% |"
          for r in sorted(spread["rows"], key=lambda r: -r["spread_percent"])[:5]],
        "",
        "## Harness overhead",
        "",
        f"`python benchmarks/harness_overhead.py`: {overhead['method']}.",
        "",
        "| variant | runtime | toolkit p50 ms | minimal loop p50 ms | ratio |",
        "|---|---|---:|---:|---:|",
        *[f"| {r['variant']} | {r['runtime']} | {r['toolkit_p50_ms']:.4f} | {r['minimal_loop_p50_ms']:.4f} | "
          f"{r['ratio']:.3f} |" for r in overhead["rows"]],
        "",
    ]


def with_interval(row: dict) -> dict:
    """The row with its p50's 95% interval: results written before bench recorded it get it computed from
    their kept samples (a copy: the loaded files are not changed)."""
    if "p50_ci95_ms" in row:
        return row
    from toolkit.timing import quantile_interval

    return {**row, "p50_ci95_ms": quantile_interval(np.sort(np.asarray(row["samples_ms"])), 0.5)}


def markdown(docs: dict[str, dict]) -> str:
    """RESULTS.md from the files ``read_results`` reads, by file name."""
    bench = docs["cpu-run1.json"]
    pipeline = docs["pipeline.json"]  # the footprint only: flash and arena depend on the architecture, not the weights
    parity = docs["cpu-parity.json"]  # the same export as cpu-run1/2: one model in every table
    rows = [with_interval(r) for r in bench["results"]]
    second = [with_interval(r) for r in docs["cpu-run2.json"]["results"]]
    threads = max(r["threads"] for r in rows)
    big = max(r["batch_size"] for r in rows)
    acc = accuracy_by_row(parity)
    lines = [*header_lines(bench, parity["reference"]["images"]), *table_lines(rows, acc, threads, big),
             *openvino_lines(rows, acc, threads, big), *cpu_kinds_lines(docs),
             *ship_lines(rows, second, acc, parity, pipeline, bench["provenance"]["machine"]["cpu_count"]),
             *spread_lines(docs["cpu-spread.json"], docs["harness-overhead.json"])]
    return "\n".join(lines)


def main() -> int:
    atomic_write_text(BENCHMARKS / "RESULTS.md", markdown(read_results()))
    print(f"wrote {BENCHMARKS / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
