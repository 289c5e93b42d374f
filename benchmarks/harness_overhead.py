"""How much does the toolkit's harness add? Its p50 at batch 1 against a minimal hand-written
loop of the same runtime call, alternating the two so drift hits both alike.

    python benchmarks/harness_overhead.py [--exports exports] [--rounds 5]

Writes results/harness-overhead.json. The minimal loops use the runtimes directly (no toolkit
code): LiteRT set_tensor/invoke/get_tensor, onnxruntime session.run.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, artifact_files, parser

from toolkit import schema
from toolkit.artifacts import atomic_write_json
from toolkit.bench import run_bench
from toolkit.config import BenchConfig
from toolkit.datasets import open_dataset
from toolkit.provenance import provenance

RUNS, WARMUP = 2000, 200


def minimal_litert(path: Path, image: np.ndarray, threads: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=path.read_bytes(), num_threads=threads)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    x = image
    if inp["dtype"] == np.int8:
        scale, zp = inp["quantization"]
        x = np.clip(np.round(image / scale) + zp, -128, 127).astype(np.int8)
    samples = []
    for i in range(WARMUP + RUNS):
        t = time.perf_counter_ns()
        it.set_tensor(inp["index"], x)
        it.invoke()
        it.get_tensor(out["index"])
        if i >= WARMUP:
            samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1e6


def minimal_onnxruntime(path: Path, image: np.ndarray, threads: int) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: image}
    samples = []
    for i in range(WARMUP + RUNS):
        t = time.perf_counter_ns()
        sess.run(None, feed)
        if i >= WARMUP:
            samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1e6


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--exports", type=Path, default=Path("exports"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    paths = artifact_files(args.exports, schema.Manifest.read(args.exports))
    # the toolkit's inputs: the first of its fixed-seed images
    test = open_dataset("mnist").test
    idx = np.random.default_rng(0).choice(len(test), size=1, replace=False)
    image = test.read(idx).astype(np.float32) / 255.0
    cases = [("tflite", "litert", minimal_litert), ("tflite-int8", "litert", minimal_litert),
             ("onnx", "onnxruntime", minimal_onnxruntime), ("onnx-int8", "onnxruntime", minimal_onnxruntime)]
    rows = []
    for variant, runtime, minimal in cases:
        toolkit_p50, minimal_p50 = [], []
        for _ in range(args.rounds):
            cfg = BenchConfig(exports=args.exports, variants=(variant,), runtimes=(runtime,), batch_sizes=(1,),
                              threads=(args.threads,), warmup_runs=WARMUP, warmup_seconds=0, min_runs=RUNS,
                              min_seconds=0, max_runs=RUNS, verbose=False)
            toolkit_p50.append(run_bench(cfg)["results"][0]["p50_ms"])
            minimal_p50.append(minimal(paths[variant], image, args.threads))
        t, m = statistics.median(toolkit_p50), statistics.median(minimal_p50)
        rows.append({"variant": variant, "runtime": runtime, "batch_size": 1, "threads": args.threads,
                     "toolkit_p50_ms": t, "minimal_loop_p50_ms": m, "ratio": t / m,
                     "toolkit_p50_ms_rounds": toolkit_p50, "minimal_loop_p50_ms_rounds": minimal_p50})
        print(f"{variant:<12} {runtime:<12} toolkit {t:.4f} ms  minimal {m:.4f} ms  ratio {t / m:.3f}")
    atomic_write_json(args.out / "harness-overhead.json", {
        "rows": rows,
        "method": f"{args.rounds} alternating rounds of {RUNS} timed runs after {WARMUP} warm-up each; "
                  "median of the per-round p50s",
        "provenance": provenance(),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
