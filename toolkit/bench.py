"""`toolkit bench`: latency and throughput per variant x runtime x device x batch x threads.

Honest by construction:
- inputs are fixed-seed test images, prepared in the model's own dtype before timing; only
  the inference call (copy in, run, copy out) is inside ``perf_counter_ns`` (toolkit/timing.py);
- load time and first inference are reported apart from the steady state;
- every sample is kept in the JSON;
- the providers/delegates actually used are recorded per row, and a GPU that is asked for but
  not really used is an error (exit 6) unless ``--allow-fallback``, in which case the rows
  say ``cpu`` and why.
"""

from __future__ import annotations

import csv
import functools
import io
import multiprocessing
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from toolkit import artifacts
from toolkit.config import BenchConfig
from toolkit.errors import DeviceUnavailableError, UsageError
from toolkit.provenance import provenance
from toolkit.timing import measure, summarize

BENCH_JSON = "bench.json"
REFERENCE = "keras"

# runtime -> (artifact formats it runs, devices it can use)
RUNTIMES = {
    "litert": (("tflite",), ("cpu",)),
    "onnxruntime": (("onnx",), ("cpu", "cuda")),
    "onnxruntime-trt": (("onnx",), ("cuda",)),
    "tensorflow": (("keras",), ("cpu", "cuda")),
    "tflm": (("tflite-micro",), ("cpu",)),
}
TFLM_NOTE = "TFLM host build, reference kernels, batch 1, one thread: not a device timing"
WHY_NOT_CUDA = {
    "litert": "LiteRT runs on the CPU here: the ai-edge-litert wheel ships no GPU delegate for Linux",
    "onnxruntime-trt": "TensorRT runs only with --device cuda",
    "tflm": "TFLM is a microcontroller runtime; its host build runs on the CPU only",
}


# ----------------------------------------------------------------------------- environment
def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(line.split(":", 1)[1].split())
    except OSError:
        pass
    return []


def gpu_info() -> list[dict]:
    """GPUs and driver from nvidia-smi, or [] when there is none."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        name, driver, memory = (part.strip() for part in line.split(","))
        gpus.append({"name": name, "driver": driver, "memory": memory})
    return gpus


@functools.cache
def ort_cuda_reason(runtime: str) -> str | None:
    """None when onnxruntime can offer the EP the runtime needs, else why not."""
    import onnxruntime as ort

    wanted = "TensorrtExecutionProvider" if runtime == "onnxruntime-trt" else "CUDAExecutionProvider"
    available = ort.get_available_providers()
    if wanted not in available:
        return f"onnxruntime offers no {wanted} (available: {', '.join(available)}; install onnxruntime-gpu)"
    return None


@functools.cache
def tf_cuda_reason() -> str | None:
    """None when TensorFlow sees a GPU, else why not (imports TensorFlow in this process)."""
    from toolkit._quiet import tf

    if not tf().config.list_physical_devices("GPU"):
        return ("TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty; "
                "install tensorflow[and-cuda] on a CUDA machine)")
    return None


# ----------------------------------------------------------------------------- plan
def _targets(cfg: BenchConfig, manifest: dict) -> list[dict]:
    entries = {e["variant"]: e for e in manifest["artifacts"]}
    names = list(cfg.variants) or [*entries, REFERENCE]
    unknown = [n for n in names if n not in entries and n != REFERENCE]
    if unknown:
        raise UsageError(f"variant(s) {', '.join(unknown)} not in the manifest "
                         f"(benchmarkable: {', '.join([*entries, REFERENCE])})")
    targets = []
    for n in names:
        if n == REFERENCE:
            from toolkit.inputs import reference_model

            path = reference_model(cfg, manifest)
            targets.append({"variant": REFERENCE, "format": "keras", "bytes": path.stat().st_size,
                            "sha256": manifest.get("source_model", {}).get("sha256")})
        else:
            targets.append(entries[n])
    return targets


def _check(cfg: BenchConfig) -> None:
    if cfg.device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda, got {cfg.device!r}")
    bad = [r for r in cfg.runtimes if r not in RUNTIMES]
    if bad:
        raise UsageError(f"unknown runtime(s) {', '.join(bad)} (known: {', '.join(RUNTIMES)})")
    if not cfg.batch_sizes or min(cfg.batch_sizes) < 1 or not cfg.threads or min(cfg.threads) < 1:
        raise UsageError("--batch-sizes and --threads take positive integers")
    if cfg.min_runs < 1 or cfg.min_seconds < 0 or cfg.warmup_runs < 0 or cfg.warmup_seconds < 0:
        raise UsageError("--min-runs must be >= 1; --min-seconds, --warmup and --warmup-seconds >= 0")


def plan(cfg: BenchConfig, manifest: dict) -> tuple[list[dict], list[dict]]:
    """(groups to run, skipped) where a group is one target on one runtime and device."""
    groups, skipped = [], []
    wanted = cfg.runtimes or tuple(RUNTIMES)
    for target in _targets(cfg, manifest):
        for runtime in wanted:
            formats, devices = RUNTIMES[runtime]
            if target["format"] not in formats:
                continue
            group = {"target": target, "runtime": runtime, "device": cfg.device, "fallback_reason": None}
            reason = None
            if cfg.device == "cuda":
                if "cuda" not in devices:
                    reason = WHY_NOT_CUDA[runtime]
                elif runtime.startswith("onnxruntime"):
                    reason = ort_cuda_reason(runtime)
                elif runtime == "tensorflow":
                    reason = tf_cuda_reason()
            elif "cpu" not in devices:
                reason = WHY_NOT_CUDA[runtime]
            if reason and cfg.device == "cuda" and cfg.allow_fallback and "cpu" in devices:
                group.update(device="cpu", fallback_reason=reason)
                reason = None
            if reason:
                skipped.append({"variant": target["variant"], "runtime": runtime, "device": cfg.device,
                                "reason": reason})
            else:
                groups.append(group)
    return groups, skipped


# ----------------------------------------------------------------------------- running
def _inputs(cfg: BenchConfig, manifest: dict) -> np.ndarray:
    """Fixed-seed test images, preprocessed as the manifest says (drawn with replacement only when
    the test split is smaller than the largest batch)."""
    from toolkit.inputs import data_for, reference_model
    from toolkit.modelinfo import for_export

    model_path = reference_model(cfg, manifest)
    dataset, prep, _ = data_for(cfg, manifest, for_export(manifest, model_path))
    n, size = len(dataset.test), max(cfg.batch_sizes)
    idx = np.random.default_rng(cfg.seed).choice(n, size=size, replace=size > n)
    return prep.load(dataset.test, idx)


def _timing_kwargs(cfg: BenchConfig) -> dict:
    return {"warmup_runs": cfg.warmup_runs, "warmup_seconds": cfg.warmup_seconds,
            "min_runs": cfg.min_runs, "min_seconds": cfg.min_seconds, "max_runs": cfg.max_runs}


def _row(group: dict, batch: int, threads: int, load_ms: float, timing: dict, providers: list[str],
         extra: dict | None = None) -> dict:
    target = group["target"]
    row = {
        "variant": target["variant"],
        "format": target["format"],
        "runtime": group["runtime"],
        "device": group["device"],
        "providers": providers,
        "batch_size": batch,
        "threads": threads,
        **summarize(timing["samples_ns"], batch),
        "load_ms": load_ms,
        "first_inference_ms": timing["first_ns"] / 1e6,
        "warmup_runs": timing["warmup_runs"],
        "sha256": target.get("sha256"),
        "bytes": target.get("bytes"),
        **(extra or {}),
    }
    if group["fallback_reason"]:
        row["requested_device"] = "cuda"
        row["fallback_reason"] = group["fallback_reason"]
    row["samples_ms"] = [s / 1e6 for s in timing["samples_ns"]]
    return row


def _run_litert(group, path, images, cfg, progress) -> list[dict]:
    from toolkit.runners.litert import LiteRTRunner

    rows = []
    for threads in cfg.threads:
        start = time.perf_counter_ns()
        runner = LiteRTRunner.load(path, threads=threads)
        load_ms = (time.perf_counter_ns() - start) / 1e6
        delegated = "DELEGATE" in {op["op_name"] for op in runner.interpreter._get_ops_details()}
        providers = ["XNNPACK"] if delegated else ["builtin kernels"]
        for batch in cfg.batch_sizes:
            x = runner.to_input(images[:batch])
            runner.run_raw(x)  # resize + allocate outside the timed region
            rows.append(_row(group, batch, threads, load_ms,
                             measure(lambda x=x, r=runner: r.run_raw(x), **_timing_kwargs(cfg)), providers))
            progress(rows[-1])
    return rows


def _run_onnxruntime(group, path, images, cfg, progress) -> list[dict]:
    from toolkit.runners.onnxrt import OnnxRuntimeRunner

    if group["device"] == "cuda":
        providers = (["TensorrtExecutionProvider", "CUDAExecutionProvider"]
                     if group["runtime"] == "onnxruntime-trt" else ["CUDAExecutionProvider"])
    else:
        providers = ["CPUExecutionProvider"]
    rows = []
    for threads in cfg.threads:
        start = time.perf_counter_ns()
        runner = OnnxRuntimeRunner.load(path, providers=providers, threads=threads,
                                        strict_device=group["device"] == "cuda")
        load_ms = (time.perf_counter_ns() - start) / 1e6
        for batch in cfg.batch_sizes:
            x = np.ascontiguousarray(images[:batch])
            rows.append(_row(group, batch, threads, load_ms,
                             measure(lambda x=x, r=runner: r.run_raw(x), **_timing_kwargs(cfg)), runner.providers,
                             {"graph_optimization": runner.optimization}))
            progress(rows[-1])
    return rows


def _run_tflm(group, path, images, cfg, progress) -> list[dict]:
    from toolkit.runners.tflm import TFLMRunner

    start = time.perf_counter_ns()
    runner = TFLMRunner.load(path)
    load_ms = (time.perf_counter_ns() - start) / 1e6
    x = runner.to_input(images[:1])
    row = _row(group, 1, 1, load_ms, measure(lambda: runner.run_raw(x), **_timing_kwargs(cfg)),
               ["TFLM reference kernels"], {"note": TFLM_NOTE})
    progress(row)
    return [row]


def _tf_worker(model_path: str, device: str, threads: int, batches: list[int], images: np.ndarray,
               timing_kwargs: dict) -> dict:
    """In a fresh process: TensorFlow's thread pools can be sized only before first use."""
    from toolkit._quiet import tf

    tf = tf()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cuda" and not gpus:
        return {"error": "TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)"}
    from toolkit.runners.keras import KerasRunner

    dev = "/GPU:0" if device == "cuda" else "/CPU:0"
    out = []
    with tf.device(dev):
        start = time.perf_counter_ns()
        runner = KerasRunner.load(Path(model_path))
        load_ms = (time.perf_counter_ns() - start) / 1e6
        for batch in batches:
            x = tf.constant(images[:batch])
            y = runner._fn(x)
            placed = y.device
            out.append({"batch": batch, "load_ms": load_ms, "device_name": placed,
                        "timing": measure(lambda x=x: runner._fn(x).numpy(), **timing_kwargs)})
    if device == "cuda" and any("GPU" not in r["device_name"] for r in out):
        return {"error": f"TensorFlow placed the model on {out[0]['device_name']}, not the GPU"}
    return {"rows": out}


def _run_tensorflow(group, model_path, images, cfg, progress) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    rows = []
    # a fresh process per thread count: TensorFlow sizes its pools once per process
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for threads in cfg.threads:
            result = pool.apply(_tf_worker, (str(model_path), group["device"], threads,
                                             list(cfg.batch_sizes), images, _timing_kwargs(cfg)))
            if "error" in result:
                raise DeviceUnavailableError(result["error"], hint="or pass --allow-fallback")
            for r in result["rows"]:
                rows.append(_row(group, r["batch"], threads, r["load_ms"], r["timing"],
                                 [r["device_name"]], {"graph": "tf.function (not model.predict)"}))
                progress(rows[-1])
    return rows


def run_bench(cfg: BenchConfig) -> dict:
    _check(cfg)
    exports = Path(cfg.exports)
    manifest = artifacts.read_manifest(exports)
    groups, skipped = plan(cfg, manifest)
    gpus = gpu_info()
    if cfg.device == "cuda":
        on_gpu = [g for g in groups if g["device"] == "cuda"]
        if not on_gpu and not cfg.allow_fallback:
            by_runtime = {s["runtime"]: s["reason"] for s in skipped}
            reasons = "; ".join(f"{r}: {why}" for r, why in by_runtime.items()) or "no runtime selected"
            gpu_text = ", ".join(g["name"] for g in gpus) or "no NVIDIA GPU found (nvidia-smi)"
            raise DeviceUnavailableError(f"--device cuda: no runtime can use a GPU here ({gpu_text}; {reasons})",
                                         hint="run on a CUDA machine with `pip install -e '.[gpu]'`, "
                                         "or pass --allow-fallback to measure on the CPU")
    if not groups:
        raise UsageError("nothing to benchmark: " + "; ".join(f"{s['variant']}/{s['runtime']}: {s['reason']}"
                                                              for s in skipped))
    images = _inputs(cfg, manifest)
    total = sum(1 if g["runtime"] == "tflm" else len(cfg.batch_sizes) * len(cfg.threads) for g in groups)
    done = []

    def progress(row: dict) -> None:
        done.append(row)
        if cfg.verbose:
            print(f"  [{len(done)}/{total}] {row['variant']:<15} {row['runtime']:<16} {row['device']:<4} "
                  f"batch {row['batch_size']:>4} threads {row['threads']}: p50 {row['p50_ms']:.3f} ms  "
                  f"{row['throughput']:,.0f} img/s  ({row['runs']} runs)", file=sys.stderr, flush=True)

    if cfg.verbose:
        print(f"benchmarking {len(groups)} variant/runtime pair(s) x {len(cfg.batch_sizes)} batch size(s) x "
              f"{len(cfg.threads)} thread setting(s) on {cfg.device}", file=sys.stderr, flush=True)
    results = []
    for group in groups:
        target = group["target"]
        if target["variant"] == REFERENCE:
            from toolkit.inputs import reference_model

            path = reference_model(cfg, manifest)
            results += _run_tensorflow(group, path, images, cfg, progress)
            continue
        path = artifacts.verify_entry(exports, target)
        runner = {"litert": _run_litert, "tflm": _run_tflm}.get(group["runtime"], _run_onnxruntime)
        results += runner(group, path, images, cfg, progress)
    prov = provenance()
    prov["machine"]["cpu_flags"] = cpu_flags()
    prov["machine"]["gpus"] = gpus
    return {
        "results": results,
        "skipped": skipped,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()
                   if k not in ("verbose", "plots")},
        "method": {
            "timer": "time.perf_counter_ns around the inference call only",
            "inputs": f"{max(cfg.batch_sizes)} fixed-seed (seed {cfg.seed}) test images, preprocessed as the "
                      "manifest says and prepared in the model's input dtype before timing",
            "call": "LiteRT: set_tensor+invoke+get_tensor; onnxruntime: session.run; "
                    "TensorFlow: tf.function(...).numpy()",
            "warmup": f"at least {cfg.warmup_runs} runs and {cfg.warmup_seconds} s",
            "measure": f"at least {cfg.min_runs} runs and {cfg.min_seconds} s (at most {cfg.max_runs:,} runs)",
            "throughput": "batch_size / mean latency",
        },
        "export_generation": manifest.get("generation"),
        "provenance": prov,
    }


# ----------------------------------------------------------------------------- outputs
CSV_FIELDS = ["variant", "runtime", "device", "providers", "batch_size", "threads", "runs", "min_ms", "p50_ms",
              "p90_ms", "p99_ms", "mean_ms", "std_ms", "max_ms", "throughput", "load_ms",
              "first_inference_ms", "bytes", "sha256"]


def to_csv(doc: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in doc["results"]:
        writer.writerow({**row, "providers": "+".join(row["providers"])})
    return buf.getvalue()


def to_markdown(doc: dict) -> str:
    m = doc["provenance"]["machine"]
    gpus = ", ".join(f"{g['name']} (driver {g['driver']})" for g in m.get("gpus", [])) or "none"
    v = doc["provenance"]["versions"]
    lines = [
        "# Inference latency",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores; GPU: {gpus}. "
        f"{', '.join(f'{k} {v[k]}' for k in ('tensorflow', 'onnxruntime', 'onnxruntime-gpu', 'ai-edge-litert') if k in v)}. "
        f"Commit {doc['provenance']['git_commit']}, {doc['provenance']['created']}.",
        "",
        f"Method: {doc['method']['measure']} after warm-up ({doc['method']['warmup']}); "
        f"{doc['method']['timer']}; throughput = {doc['method']['throughput']}.",
        "",
        "| variant | runtime | device | providers | batch | threads | p50 ms | p90 ms | p99 ms | mean ms | "
        "std ms | img/s | runs | load ms | first ms |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        device = r["device"] + (" (fallback)" if r.get("fallback_reason") else "")
        lines.append(
            f"| {r['variant']} | {r['runtime']} | {device} | {'+'.join(r['providers'])} | {r['batch_size']} | "
            f"{r['threads']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['mean_ms']:.3f} | "
            f"{r['std_ms']:.3f} | {r['throughput']:,.0f} | {r['runs']} | {r['load_ms']:.1f} | "
            f"{r['first_inference_ms']:.2f} |"
        )
    if doc["skipped"]:
        lines += ["", "Skipped:", ""]
        lines += [f"- {s['variant']} on {s['runtime']} ({s['device']}): {s['reason']}" for s in doc["skipped"]]
    notes = {r["note"] for r in doc["results"] if r.get("note")}
    if notes:
        lines += ["", *[f"Note: {n}." for n in sorted(notes)]]
    fallbacks = {r["fallback_reason"] for r in doc["results"] if r.get("fallback_reason")}
    if fallbacks:
        lines += ["", "Rows marked (fallback) ran on the CPU although CUDA was asked for:", ""]
        lines += [f"- {reason}" for reason in sorted(fallbacks)]
    return "\n".join(lines) + "\n"


def plot_latency(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = sorted({r["threads"] for r in doc["results"]})
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.5), squeeze=False, sharey=True)
    for ax, t in zip(axes[0], threads, strict=True):
        series: dict[tuple, list] = {}
        for r in doc["results"]:
            if r["threads"] == t:
                series.setdefault((r["variant"], r["runtime"], r["device"]), []).append(r)
        for (variant, runtime, device), rows in series.items():
            rows.sort(key=lambda r: r["batch_size"])
            ax.plot([r["batch_size"] for r in rows], [r["p50_ms"] for r in rows], marker="o",
                    label=f"{variant} / {runtime} ({device})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_title(f"{t} thread(s)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("p50 latency per call (ms)")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.suptitle("Latency vs batch size", fontsize=10)
    artifacts.atomic_savefig(fig, path)


def plot_tradeoff(doc: dict, parity: dict, path: Path) -> None:
    """Accuracy vs batch-1 latency, marker area by file size (one point per variant/runtime)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    best_threads = max(r["threads"] for r in doc["results"])
    accuracy = {name: v["accuracy"] for name, v in parity.get("variants", {}).items()}
    accuracy[REFERENCE] = parity.get("reference", {}).get("accuracy")
    for r in doc["results"]:
        acc = accuracy.get(r["variant"])
        if r["batch_size"] != 1 or r["threads"] != best_threads or acc is None:
            continue
        size = r["bytes"] / 1e6
        ax.scatter(r["p50_ms"], acc * 100, s=20 + size * 25, alpha=0.6,
                   label=f"{r['variant']} / {r['runtime']}: {acc:.2%}, {r['p50_ms']:.3f} ms, {size:.1f} MB")
    ax.set_xscale("log")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_xlabel(f"p50 latency at batch 1, {best_threads} thread(s) (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs latency (marker area ~ file size)", fontsize=10)
    ax.grid(True, alpha=0.3)
    artifacts.atomic_savefig(fig, path)


def write_outputs(doc: dict, cfg: BenchConfig) -> dict[str, Path]:
    json_path = Path(cfg.json_path) if cfg.json_path else Path(cfg.exports) / BENCH_JSON
    paths = {"json": json_path, "csv": json_path.with_suffix(".csv"), "markdown": json_path.with_suffix(".md")}
    artifacts.atomic_write_json(json_path, doc)
    artifacts.atomic_write_text(paths["csv"], to_csv(doc))
    artifacts.atomic_write_text(paths["markdown"], to_markdown(doc))
    if cfg.plots:
        paths["latency_png"] = json_path.with_name(json_path.stem + "-latency.png")
        plot_latency(doc, paths["latency_png"])
        parity_path = Path(cfg.exports) / "parity.json"
        if parity_path.is_file():
            paths["tradeoff_png"] = json_path.with_name(json_path.stem + "-tradeoff.png")
            plot_tradeoff(doc, artifacts.read_json(parity_path), paths["tradeoff_png"])
    return paths

