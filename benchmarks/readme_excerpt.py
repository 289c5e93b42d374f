"""Rewrite the report excerpt at the top of README.md from committed result files, so that every
number in it comes from a JSON file a named command wrote:

- results/pipeline.json (`python benchmarks/pipeline.py`): sizes and parity per variant;
- results/cpu-run1.json (`python benchmarks/cpu.py`): latency and throughput per variant on its
  reference runtime.

    python benchmarks/readme_excerpt.py

The block between ``<!-- excerpt:begin -->`` and ``<!-- excerpt:end -->`` is replaced.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from toolkit.report import recommendations  # noqa: E402

REFERENCE_RUNTIME = {"tflite": "litert", "tflite-fp16": "litert", "tflite-dynamic": "litert", "tflite-int8": "litert",
                     "onnx": "onnxruntime", "onnx-int8": "onnxruntime", "tflite-micro": "tflm",
                     "openvino": "openvino", "openvino-fp16": "openvino", "keras": "tensorflow"}


def main() -> int:
    pipeline = json.loads((HERE / "results" / "pipeline.json").read_text())
    bench = json.loads((HERE / "results" / "cpu-run1.json").read_text())
    big = 32
    rows = [r for r in bench["results"] if REFERENCE_RUNTIME.get(r["variant"]) == r["runtime"]
            and r["batch_size"] in (1, big)]
    threads = max(r["threads"] for r in rows)
    import numpy as np

    from toolkit.timing import quantile_interval

    for r in rows:  # results written before bench recorded intervals: computed from the kept samples
        r.setdefault("p50_ci95_ms", quantile_interval(np.sort(np.asarray(r["samples_ms"])), 0.5))

    def row(variant, batch, t):
        return next((r for r in rows if r["variant"] == variant and r["batch_size"] == batch and r["threads"] == t), None)

    parity = pipeline["parity"]
    lines = [
        f"An excerpt of a real report: the seed CNN trained with the defaults, exported, checked and "
        f"benchmarked on this project's 2-core machine ({bench['provenance']['machine']['cpu']}). Parity and sizes: "
        f"`python benchmarks/pipeline.py` (results/pipeline.json, commit `{pipeline['provenance']['git_commit'][:12]}`); "
        f"latency: `python benchmarks/cpu.py` (results/cpu-run1.json, commit "
        f"`{bench['provenance']['git_commit'][:12]}`), {threads} threads, each variant on its reference runtime "
        "(all runtimes: [benchmarks/RESULTS.md](benchmarks/RESULTS.md)); this block: `python benchmarks/readme_excerpt.py`.",
        "",
        f"| variant | size (bytes) | accuracy | diff (pts) | 95% CI (pts) | agreement | gates | runtime | p50 ms batch 1 | "
        f"p50 ms batch {big} | img/s batch {big} |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    k1, kb = row("keras", 1, threads), row("keras", big, threads)
    lines.append(f"| keras (reference) | - | {parity['reference_accuracy']:.2%} | - | - | - | - | tensorflow | "
                 f"{k1['p50_ms']:.3f} | {kb['p50_ms']:.3f} | {kb['throughput']:,.0f} |")
    for variant, v in parity["variants"].items():
        lo, hi = v["accuracy_diff_ci95_points"]
        t = threads if row(variant, 1, threads) else 1
        b1, bb = row(variant, 1, t), row(variant, big, t)
        sample = f" ({v['images']:,} images)" if v["images"] != 10_000 else ""
        size = pipeline["export"][variant].get("model_bytes", pipeline["export"][variant]["bytes"])
        lines.append(
            f"| {variant} | {size:,} | {v['accuracy']:.2%}{sample} | {v['accuracy_diff_points']:+.2f} | "
            f"{lo:+.2f} to {hi:+.2f} | {v['agreement']:.2%} | {'pass' if v['passed'] else 'FAIL'} | "
            f"{REFERENCE_RUNTIME[variant]} | {b1['p50_ms']:.3f} | "
            + (f"{bb['p50_ms']:.3f} | {bb['throughput']:,.0f} |" if bb else "- | - |"))
    manifest = {"artifacts": [{"variant": k, **e} for k, e in pipeline["export"].items()]}
    lines += ["", *[f"- {r}" for r in recommendations(manifest, {"variants": parity["variants"]}, {"results": rows})]]
    readme = HERE.parent / "README.md"
    text = readme.read_text()
    block = "<!-- excerpt:begin -->\n" + "\n".join(lines) + "\n<!-- excerpt:end -->"
    new, count = re.subn(r"<!-- excerpt:begin -->.*?<!-- excerpt:end -->", lambda _: block, text, flags=re.S)
    if count != 1:
        raise SystemExit("README.md has no <!-- excerpt:begin --> ... <!-- excerpt:end --> block")
    readme.write_text(new)
    print(f"rewrote the excerpt in {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
