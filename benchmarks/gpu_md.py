"""GPU.md from results/gpu.json (measured on the GPU machine by `benchmarks/gpu.py --device cuda`),
results/gpu-cpu-side.json (the same artifacts on this CPU machine, `--device cpu`), the per-image
predictions of both parity runs and the `pytest -m gpu` JUnit file. Nothing is typed by hand.

    python benchmarks/gpu_md.py [--results benchmarks/results] [--out benchmarks/GPU.md]

``markdown(read_results(results))`` is the page: the files are read once, the text is made from them alone.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from _common import BENCHMARKS, RESULTS, parser

from toolkit.artifacts import atomic_write_text, read_json
from toolkit.timing import tied

BATCHES_BESIDE_CPU = (1, 32, 256)
# what GPU.md is made from (benchmarks/gpu.py on each machine, `pytest -m gpu --junitxml` on the GPU machine)
FILES = ("gpu.json", "gpu-cpu-side.json", "gpu-predictions-cuda.npz", "gpu-predictions-cpu.npz", "gpu-pytest.xml")


def read_results(results: Path = RESULTS) -> dict:
    """The committed files GPU.md is made from, by file name: JSON as loaded, each .npz as a dict of its
    arrays, the JUnit XML as its root element."""
    def read(path: Path):
        if path.suffix == ".npz":
            with np.load(path) as npz:
                return {k: npz[k] for k in npz.files}
        if path.suffix == ".xml":
            return ET.parse(path).getroot()
        return read_json(path)

    return {name: read(results / name) for name in FILES}


def _key(r: dict) -> tuple:
    return (r["variant"], r["runtime"], r["batch_size"])


def _ci(r: dict) -> str:
    lo, hi = r["p50_ci95_ms"]
    return f"{lo:.3f}–{hi:.3f}"


def _faster(a: list[dict], b: list[dict]) -> bool:
    """a is faster than b in every run: each of a's p50 intervals lies below each of b's."""
    return all(not tied(x, y) and x["p50_ms"] < y["p50_ms"] for x in a for y in b)


def _verdict(gpu: list[dict], cpu: list[dict]) -> str:
    if _faster(gpu, cpu):
        return "GPU faster in both runs"
    if _faster(cpu, gpu):
        return "CPU faster in both runs"
    return "no clear winner (intervals overlap or the runs disagree)"


def _precision(r: dict) -> str:
    return r.get("inference_precision", "fp32")


def machine_lines(doc: dict, label: str) -> list[str]:
    prov = doc["provenance"]
    m, v = prov["machine"], prov["versions"]
    gpus = m.get("gpus") or []
    libs = ", ".join(f"{k} {v[k]}" for k in ("onnxruntime-gpu", "onnxruntime", "jax", "jaxlib", "jax-cuda13-plugin",
                                             "keras", "tensorflow", "nvidia-cudnn-cu13", "nvidia-cublas",
                                             "nvidia-cuda-runtime", "numpy", "python") if k in v)
    gpu_text = "; ".join(f"{g['name']} ({g['memory']}), driver {g['driver']}"
                         + (f", CUDA {g['cuda_driver_api']}" if g.get("cuda_driver_api") else "") for g in gpus)
    return [f"- **{label}**: {gpu_text or 'no GPU'}; CPU {m.get('cpu')} x{m.get('cpu_count')}; {m.get('platform')}",
            f"  - libraries: {libs}",
            f"  - measured {prov['created']}, toolkit commit `{(prov.get('git_commit') or 'unknown')[:12]}`"]


def latency_lines(runs: dict) -> list[str]:
    out = ["## Latency on the GPU", "",
           "| variant | runtime | precision | batch | p50 ms run 1 (95% CI) | p50 ms run 2 (95% CI) | p90 ms run 1 | "
           "images/s run 1 | peak RSS MiB | providers |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for key, r in runs["gpu"][0].items():
        r2 = runs["gpu"][1].get(key)
        out.append(f"| {r['variant']} | {r['runtime']} | {_precision(r)} | {r['batch_size']:,} | "
                   f"{r['p50_ms']:.3f} ({_ci(r)}) | "
                   + (f"{r2['p50_ms']:.3f} ({_ci(r2)})" if r2 else "–")
                   + f" | {r['p90_ms']:.3f} | {r['throughput']:,.0f} | {r['peak_rss_mb']:.0f} | "
                   f"{', '.join(r['providers'])} |")
    return out


def beside_cpu_lines(runs: dict) -> list[str]:
    threads = ", ".join(str(t) for t in sorted({r["threads"] for run in runs["cpu"] for r in run.values()}))
    out = ["", "## The GPU beside the CPU (same artifacts)", "",
           "GPU rows at float32 (`use_tf32=0` for onnxruntime, `highest` matmul precision for JAX) against every",
           f"CPU runtime that ran the same variant (CPU: {threads} threads).", "",
           "| variant | batch | GPU runtime | GPU p50 ms (run 1 / run 2) | CPU runtime | CPU p50 ms (run 1 / run 2) | "
           "CPU / GPU (run 1) | verdict |",
           "|---|---:|---|---:|---|---:|---:|---|"]
    for key, g in runs["gpu"][0].items():
        variant, runtime, batch = key
        if batch not in BATCHES_BESIDE_CPU or _precision(g) != "fp32":
            continue
        g2 = runs["gpu"][1][key]
        for ckey, c in runs["cpu"][0].items():
            if ckey[0] != variant or ckey[2] != batch:
                continue
            c2 = runs["cpu"][1][ckey]
            out.append(f"| {variant} | {batch} | {runtime} | {g['p50_ms']:.3f} / {g2['p50_ms']:.3f} | {ckey[1]} | "
                       f"{c['p50_ms']:.3f} / {c2['p50_ms']:.3f} | {c['p50_ms'] / g['p50_ms']:.1f}x | "
                       f"{_verdict([g, g2], [c, c2])} |")
    return out


def tf32_lines(runs: dict) -> list[str]:
    out = ["", "## TF32 against float32 on the GPU", "",
           "TF32 tensor cores are what CUDA libraries use for float32 by default; the toolkit pins float32 and",
           "offers TF32 as its own runtimes (`onnxruntime-tf32`, `keras-jax-tf32`), judged by the",
           "reduced-precision gates.", "",
           "| variant | batch | fp32 runtime | fp32 p50 ms (run 1 / run 2) | TF32 p50 ms (run 1 / run 2) | verdict |",
           "|---|---:|---|---:|---:|---|"]
    for key, g in runs["gpu"][0].items():
        variant, runtime, batch = key
        tf32_key = (variant, f"{runtime}-tf32", batch)
        if tf32_key not in runs["gpu"][0]:
            continue
        g2, t, t2 = runs["gpu"][1][key], runs["gpu"][0][tf32_key], runs["gpu"][1][tf32_key]
        verdict = ("TF32 faster in both runs" if _faster([t, t2], [g, g2]) else
                   "fp32 faster in both runs" if _faster([g, g2], [t, t2]) else "no clear winner")
        out.append(f"| {variant} | {batch:,} | {runtime} | {g['p50_ms']:.3f} / {g2['p50_ms']:.3f} | "
                   f"{t['p50_ms']:.3f} / {t2['p50_ms']:.3f} | {verdict} |")
    return out


def largest_and_skipped_lines(gpu: dict, gpu_runs: list[dict]) -> list[str]:
    out = ["", "## Largest batch", "",
           "Doubling from 1,024 images, one inference each, in a fresh process per target; the largest batch that",
           "ran and what stopped the next one. The bench's largest batch is the smallest of these.", "",
           "| variant | runtime | largest batch | stopped by |", "|---|---|---:|---|"]
    for p in gpu.get("largest_batch", []):
        out.append(f"| {p['variant']} | {p['runtime']} | {p['largest_batch'] or 0:,} | "
                   f"{p['stopped_by'].replace('|', '/')[:220]} |")
    skipped = {(s["variant"], s["runtime"]): s["reason"] for d in gpu_runs for s in d.get("skipped", [])}
    out += ["", "## Skipped on the GPU, with the reason", "", "| variant | runtime | reason |", "|---|---|---|"]
    out += [f"| {v} | {r} | {why} |" for (v, r), why in sorted(skipped.items())]
    return out


def parity_lines(gpu: dict, cpu: dict, g_pred, c_pred) -> list[str]:
    parity = gpu["parity"]
    ref = parity["reference"]
    out = ["", "## Parity on the GPU", "",
           f"`toolkit parity --device cuda`: the reference is the Keras model on {ref['runtime']} "
           f"({', '.join(ref['providers'])}), accuracy {ref['accuracy']:.2%} on {len(g_pred['labels']):,} "
           "test images; every variant ran on the GPU and is compared with it.", "",
           "| variant | runtime | precision | accuracy | diff (points, 95% CI) | agreement | max abs logit diff | gates |",
           "|---|---|---|---:|---:|---:|---:|---|"]
    for name, v in parity["variants"].items():
        lo, hi = v["accuracy_diff_ci95_points"]
        precision = (v.get("runtime_settings") or {}).get("inference_precision", "fp32")
        out.append(f"| {name} | {v['runtime']} | {precision} | {v['accuracy']:.2%} | {v['accuracy_diff_points']:+.2f} "
                   f"({lo:+.2f} to {hi:+.2f}) | {v['agreement']:.2%} | {v['max_abs_logit_diff']:.2e} | "
                   f"{'pass' if v['passed'] else '**FAIL**'} |")
    for s in parity.get("skipped", []):
        out.append(f"| {s['variant']} | {s['runtime']} | – | – | – | – | – | skipped: {s['reason']} |")
    same_labels = bool(np.array_equal(g_pred["labels"], c_pred["labels"]))
    agree = int((g_pred["reference"] == c_pred["reference"]).sum())
    cpu_ref = cpu["parity"]["reference"]
    out += ["", "## The GPU reference against the CPU reference", "",
            f"Same test images in the same order: {'yes' if same_labels else '**no**'}. The Keras model on "
            f"{ref['runtime']} on the GPU and on {cpu_ref['runtime']} on the CPU predict the same class on "
            f"{agree:,} of {len(g_pred['reference']):,} images (accuracy {ref['accuracy']:.2%} vs "
            f"{cpu_ref['accuracy']:.2%})."]
    if "keras@keras-jax" in cpu["parity"]["variants"]:
        kj = cpu["parity"]["variants"]["keras@keras-jax"]
        out.append(f"On the CPU, keras-jax against the TensorFlow reference: agreement {kj['agreement']:.2%}, "
                   f"max abs logit diff {kj['max_abs_logit_diff']:.2e}.")
    return out


def pytest_lines(junit: ET.Element) -> list[str]:
    suite = junit if junit.tag == "testsuite" else junit.find("testsuite")
    a = suite.attrib
    out = ["", "## `pytest -m gpu` on the GPU machine", "",
           f"{a['tests']} tests: {int(a['tests']) - int(a['failures']) - int(a['errors']) - int(a['skipped'])} passed, "
           f"{a['failures']} failed, {a['errors']} errors, {a['skipped']} skipped (results/gpu-pytest.xml)."]
    for case in suite.iter("testcase"):
        skip = case.find("skipped")
        status = "skipped: " + skip.attrib.get("message", "") if skip is not None else (
            "failed" if case.find("failure") is not None or case.find("error") is not None else "passed")
        out.append(f"- `{case.attrib['name']}`: {status}")
    return out


def markdown(docs: dict) -> str:
    """GPU.md from the files ``read_results`` reads, by file name."""
    gpu, cpu = docs["gpu.json"], docs["gpu-cpu-side.json"]
    gpu_runs = [d for d in gpu["bench"] if d]
    cpu_runs = [d for d in cpu["bench"] if d]
    if len(gpu_runs) != 2 or len(cpu_runs) != 2:
        sys.exit("expected two bench runs on each machine")
    runs = {"gpu": [{_key(r): r for r in d["results"]} for d in gpu_runs],
            "cpu": [{_key(r): r for r in d["results"]} for d in cpu_runs]}
    g_pred, c_pred = docs["gpu-predictions-cuda.npz"], docs["gpu-predictions-cpu.npz"]
    out = [
        "# GPU figures",
        "",
        "Measured on a real GPU by `python benchmarks/gpu.py --device cuda` (results/gpu.json), beside the same",
        f"artifacts (same sha256) on this project's {cpu_runs[0]['provenance']['machine']['cpu_count']}-core CPU "
        "machine (`--device cpu`, results/gpu-cpu-side.json).",
        "Generated by `python benchmarks/gpu_md.py`; every number below is read from those files. Each",
        "`toolkit bench` ran twice back to back on each machine; both runs are shown, with the p50's 95%",
        "order-statistic interval. A side is called faster only when every one of its intervals lies below",
        "every one of the other side's.",
        "",
        "## Machines",
        "",
        *machine_lines(gpu_runs[0], "GPU machine"),
        *machine_lines(cpu_runs[0], "CPU machine"),
        "",
        "Every GPU row ran where it says: onnxruntime's session had CUDAExecutionProvider first and no compute",
        "node on its CPU provider (node placement read from onnxruntime's own log and kept in each row; only",
        "shape arithmetic may sit on the CPU), and JAX's arrays lived on `gpu:0`. A row that could not run",
        "wholly on the GPU is not in the table; it is listed under *Skipped* with the reason.",
        "",
        *latency_lines(runs),
        *beside_cpu_lines(runs),
        *tf32_lines(runs),
        *largest_and_skipped_lines(gpu, gpu_runs),
        *parity_lines(gpu, cpu, g_pred, c_pred),
        *pytest_lines(docs["gpu-pytest.xml"]),
        "", "## Commands on the GPU machine", "", "```",
    ]
    out += [c["command"] if not c["command"].startswith("-c") else "(largest-batch probe: benchmarks/gpu.py PROBE "
            + " ".join(c["command"].split()[-4:]) + ")" for c in gpu["commands"]]
    out += ["```", ""]
    return "\n".join(out)


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--out", type=Path, default=BENCHMARKS / "GPU.md")
    args = p.parse_args()
    atomic_write_text(args.out, markdown(read_results(args.results)))
    print(f"wrote {args.out}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
