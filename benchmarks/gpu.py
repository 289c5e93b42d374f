"""GPU figures: every variant a GPU runtime takes (onnx and onnx-int8 on onnxruntime's CUDA
execution provider, the Keras reference on Keras' JAX backend), on a real GPU, with the CPU
figures of the same artifacts beside them.

First, here (TensorFlow is needed): the export the GPU machine gets, from the trained model in
exports/ without its optimizer state (13 MB instead of 38 MB, so it fits a device transfer):

    python benchmarks/gpu.py --prepare-from exports --exports .gpu/exports

On the GPU machine (no TensorFlow there; the export is made elsewhere and carried):

    python benchmarks/gpu.py --exports DIR --out OUT --device cuda

  1. finds, per variant and runtime, the largest batch that runs (doubling from 1,024 until the
     GPU runs out of memory or 2^20 images; one inference each, in a fresh process per target);
  2. `toolkit bench --device cuda` twice back to back at batch 1, 32, 256 and that largest batch
     (onnxruntime-trt too: skipped with its stated reason where TensorRT is missing);
  3. `toolkit parity --device cuda` with the reference on keras-jax on the same GPU;
  4. writes OUT/gpu.json (all of it, with provenance) and OUT/gpu-predictions-cuda.npz (parity's
     per-image predictions).

On this (CPU) machine, the same plan without the largest batch, for the side-by-side table:

    python benchmarks/gpu.py --exports DIR --out benchmarks/results --device cpu

writes results/gpu-cpu-side.json and gpu-predictions-cpu.npz. `python benchmarks/gpu_md.py` makes
GPU.md from both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import parser, run_toolkit, toolkit_command

from toolkit import schema
from toolkit.artifacts import artifact_path, atomic_write_json, read_json, reference_model_path
from toolkit.exportdir import ExportDir
from toolkit.provenance import provenance

TARGETS = {"cuda": [("onnx", "onnxruntime"), ("onnx-int8", "onnxruntime"), ("keras", "keras-jax"),
                    ("onnx", "onnxruntime-tf32"), ("keras", "keras-jax-tf32")],
           "cpu": [("onnx", "onnxruntime"), ("onnx-int8", "onnxruntime"), ("keras", "keras-jax"),
                   ("keras", "tensorflow")]}
BATCHES = (1, 32, 256)

PROBE = """
import sys, json, numpy as np
from pathlib import Path
from toolkit import runners
variant, runtime, path, top = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
runner = runners.get(runtime).load(path, device="cuda")
shape = [d or 1 for d in runner.input_spec.shape[1:]]
largest, error, batch = None, None, 1024
while batch <= top:
    try:
        x = runner.prepare(np.full((batch, *shape), 0.5, dtype=np.float32))
        runner.run_raw(x)
        del x
        largest = batch
    except Exception as exc:  # out of memory (each runtime raises its own type)
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        break
    batch *= 2
print(json.dumps({"variant": variant, "runtime": runtime, "largest_batch": largest, "stopped_by": error
                  or f"the probe's limit of {top} images", "providers": runner.providers}))
"""


def _run(cmd: list[str], log: list[dict], check: bool = True) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log.append({"command": " ".join(cmd[1:] if cmd[0] == sys.executable else cmd), "exit_code": proc.returncode,
                "seconds": round(time.perf_counter() - start, 1), "stderr_tail": proc.stderr[-3000:]})
    print(f"$ {log[-1]['command']}\n  exit {proc.returncode} in {log[-1]['seconds']} s", flush=True)
    if proc.returncode and check:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", flush=True)
    return proc


def _path(exports: Path, manifest: schema.Manifest, variant: str) -> Path:
    if variant == "keras":
        return reference_model_path(exports, manifest)
    return artifact_path(exports, manifest.by_variant()[variant])


def prepare(source: Path, dest: Path) -> int:
    """The model without its optimizer state, saved reproducibly, and `toolkit export --format onnx`."""
    import os

    os.environ.setdefault("SOURCE_DATE_EPOCH", "1795000000")
    from toolkit.reproducible import normalize_keras_archive, source_date_epoch
    from toolkit.runners.keras import load_keras_model

    dest.mkdir(parents=True, exist_ok=True)
    load_keras_model(ExportDir(source).model_path).save(ExportDir(dest).model_path)
    normalize_keras_archive(ExportDir(dest).model_path, source_date_epoch())
    if (source / schema.TRAIN).is_file():  # the training record: dataset and preprocessing carry over
        shutil.copyfile(source / schema.TRAIN, dest / schema.TRAIN)
    return run_toolkit("export", "--exports", dest, "--format", "onnx", "--force").returncode


def probe_largest(exports: Path, targets: list[tuple[str, str]], max_probe: int, log: list[dict]) -> list[dict]:
    """Per target, the largest batch that runs on the GPU (each in a fresh process)."""
    manifest = schema.Manifest.read(exports)
    probes = []
    for variant, runtime in targets:
        if runtime.endswith("-tf32"):
            continue  # the same memory as float32
        proc = _run([sys.executable, "-c", PROBE, variant, runtime, str(_path(exports, manifest, variant)),
                     str(max_probe)], log)
        if proc.returncode == 0:
            probes.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return probes


def measure(args, targets: list[tuple[str, str]], batches: list[int], work: Path, log: list[dict]) -> dict:
    """`toolkit bench` twice and `toolkit parity` once on ``args.device``; their files, read back."""
    toolkit = toolkit_command()
    runtimes = sorted({r for _, r in targets} | ({"onnxruntime-trt"} if args.device == "cuda" else set()))
    variants = sorted({v for v, _ in targets})
    runs = []
    for i in (1, 2):
        json_path = work / f"bench-{args.device}-{i}.json"
        _run([*toolkit, "bench", "--exports", str(args.exports), "--device", args.device, "--variants", *variants,
              "--runtimes", *runtimes, "--batch-sizes", ",".join(map(str, batches)), "--threads",
              "1" if args.device == "cuda" else "2", "--json", str(json_path), "--quiet"], log, check=False)
        runs.append(read_json(json_path) if json_path.is_file() else None)
    parity_path = work / f"parity-{args.device}.json"
    reference = "keras-jax" if args.device == "cuda" else "tensorflow"
    _run([*toolkit, "parity", "--exports", str(args.exports), "--device", args.device, "--variants", "onnx",
          "onnx-int8", "--runtimes", *sorted({r for _, r in targets if r != reference}),
          "--reference-runtime", reference, "--json", str(parity_path), "--quiet"], log, check=False)
    predictions = parity_path.with_name(parity_path.stem + "-predictions.npz")
    if predictions.is_file():  # per-image labels and predictions: the GPU and CPU references compared image by image
        shutil.copyfile(predictions, args.out / f"gpu-predictions-{args.device}.npz")
    return {"bench": runs, "parity": read_json(parity_path) if parity_path.is_file() else None}


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--exports", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="where gpu.json (or gpu-cpu-side.json) goes")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--max-probe", type=int, default=2**20, help="the probe's largest batch (default: 2^20)")
    p.add_argument("--prepare-from", type=Path, default=None, metavar="DIR",
                   help="make --exports from DIR/model.keras (weights only, no optimizer) with its ONNX variants")
    args = p.parse_args()
    if args.prepare_from:
        return prepare(args.prepare_from, args.exports)
    if args.out is None:
        p.error("--out is required (except with --prepare-from)")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="toolkit-gpu-"))  # each command's own outputs; only gpu*.json kept
    log: list[dict] = []
    doc: dict = {"device": args.device, "commands": log}
    targets = TARGETS[args.device]
    batches = list(BATCHES)
    if args.device == "cuda":
        doc["largest_batch"] = probes = probe_largest(args.exports, targets, args.max_probe, log)
        largest = [p["largest_batch"] for p in probes if p["largest_batch"]]
        if largest:  # the largest batch every target ran (one bench plan for all of them)
            batches.append(min(largest))
    doc.update(measure(args, targets, batches, work, log))
    doc["provenance"] = provenance()
    name = "gpu.json" if args.device == "cuda" else "gpu-cpu-side.json"
    atomic_write_json(args.out / name, doc)
    print(f"wrote {args.out / name}")
    return 0 if all(c["exit_code"] == 0 for c in log) else 1

if __name__ == "__main__":
    sys.exit(main())
