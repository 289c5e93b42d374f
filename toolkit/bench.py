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

import contextlib
import multiprocessing
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from toolkit import artifacts, runners, schema
from toolkit.bench_render import CSV_FIELDS, failed_line, to_csv, to_markdown  # noqa: F401 - importable from here
from toolkit.config import BenchConfig, config_json
from toolkit.errors import DataError, DeviceUnavailableError, NotReadableHere, UsageError
from toolkit.inputs import test_images
from toolkit.progress import bar as progress_bar
from toolkit.progress import say
from toolkit.provenance import cpu_flags, provenance
from toolkit.timing import measure, summarize

REFERENCE = "keras"


# ----------------------------------------------------------------------------- environment
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
    cuda = None
    try:  # the CUDA version the driver supports is only in nvidia-smi's banner
        banner = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
        cuda = banner.split("CUDA Version:", 1)[1].split()[0] if "CUDA Version:" in banner else None
    except (OSError, subprocess.SubprocessError):
        pass
    gpus = []
    for line in out.strip().splitlines():
        name, driver, memory = (part.strip() for part in line.split(","))
        gpus.append({"name": name, "driver": driver, "memory": memory, **({"cuda_driver_api": cuda} if cuda else {})})
    return gpus


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
            framework = (manifest.get("model") or {}).get("framework", "keras")  # the reference's own runtime runs it
            targets.append({"variant": REFERENCE, "format": framework, "bytes": path.stat().st_size,
                            "sha256": manifest.get("source_model", {}).get("sha256")})
        else:
            targets.append(entries[n])
    return targets


def _check(cfg: BenchConfig) -> None:
    if cfg.device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda, got {cfg.device!r}")
    known = runners.names()
    bad = [r for r in cfg.runtimes if r not in known]
    if bad:
        raise UsageError(f"unknown runtime(s) {', '.join(bad)} (known: {', '.join(known)})")
    if not cfg.batch_sizes or min(cfg.batch_sizes) < 1 or not cfg.threads or min(cfg.threads) < 1:
        raise UsageError("--batch-sizes and --threads take positive integers")
    if cfg.min_runs < 1 or cfg.min_seconds < 0 or cfg.warmup_runs < 0 or cfg.warmup_seconds < 0:
        raise UsageError("--min-runs must be >= 1; --min-seconds, --warmup and --warmup-seconds >= 0")


def _settings(runtime, values: tuple[int, ...], fixed: tuple[int, ...] | None) -> tuple[int, ...]:
    """The batch sizes or thread counts a runtime runs: the asked ones, or its only ones (TFLM: 1)."""
    return tuple(fixed) if fixed is not None else tuple(values)


def fixed_batch(target: dict) -> int | None:
    """The batch a file's input is fixed at (a PyTorch model's TFLite files where litert-torch could not keep a
    symbolic batch), else None. Only that batch can be timed: a runner would feed another in pieces."""
    inputs = target.get("inputs") or []
    first = inputs[0].get("shape") if inputs else None
    return first[0] if first and isinstance(first[0], int) else None


def plan(cfg: BenchConfig, manifest: dict) -> tuple[list[dict], list[dict]]:
    """(groups to run, skipped) where a group is one target on one runtime and device."""
    groups, skipped = [], []
    every = runners.load_all()
    if cfg.runtimes:
        wanted = [every[r] for r in cfg.runtimes]
    else:  # the default set; on the CPU without the runtimes that exist only for a GPU
        wanted = [r for r in every.values() if (r.in_default_set or r.default_where_available)
                  and (cfg.device != "cpu" or "cpu" in r.devices)]
        for runtime in [r for r in wanted if r.default_where_available and r.why_not(cfg.device)]:
            wanted.remove(runtime)
            skipped.append({"variant": "(every variant)", "runtime": runtime.name, "device": cfg.device,
                            "reason": runtime.why_not(cfg.device)})
    for target in _targets(cfg, manifest):
        for runtime in wanted:
            if target["format"] not in runtime.formats:
                continue
            batches = _settings(runtime, cfg.batch_sizes, runtime.batch_sizes)
            fixed = fixed_batch(target)
            if fixed is not None and any(b != fixed for b in batches):  # not the runtime's: the file cannot
                skipped.append({"variant": target["variant"], "runtime": runtime.name, "device": cfg.device,
                                "batch_sizes": [b for b in batches if b != fixed],
                                "reason": f"the file's batch is fixed at {fixed}"
                                          + (f" ({target['batch_note']})" if target.get("batch_note") else "")})
                batches = tuple(b for b in batches if b == fixed)
                if not batches:
                    continue
            group = {"target": target, "runtime": runtime.name, "device": cfg.device, "fallback_reason": None,
                     "batch_sizes": batches, "threads": _settings(runtime, cfg.threads, runtime.threads),
                     "note": runtime.note}
            reason = runtime.why_not(cfg.device)
            if reason and cfg.device == "cuda" and cfg.allow_fallback and runtime.why_not("cpu") is None:
                group.update(device="cpu", fallback_reason=reason)
                reason = None
            if reason:
                skipped.append({"variant": target["variant"], "runtime": runtime.name, "device": cfg.device,
                                "reason": reason})
            else:
                groups.append(group)
    return groups, skipped


# ----------------------------------------------------------------------------- running
def _timing_kwargs(cfg: BenchConfig) -> dict:
    return {"warmup_runs": cfg.warmup_runs, "warmup_seconds": cfg.warmup_seconds,
            "min_runs": cfg.min_runs, "min_seconds": cfg.min_seconds, "max_runs": cfg.max_runs}


def _mib(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)


def peak_rss_bytes() -> int:
    """This process's peak resident set since it started: VmHWM on Linux. (Not ru_maxrss: Linux keeps
    it across fork and exec, so a worker would report its parent's size when that was larger.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys as _sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if _sys.platform == "darwin" else peak * 1024


def measure_group(runtime_name: str, path: str, device: str, threads: int, batches: list[int], images: np.ndarray,
                  timing_kwargs: dict) -> dict:
    """In a fresh process: load the model in the runtime, then time every batch size. The one
    generic loop: ``prepare`` outside the timer, ``run_raw`` inside it. Memory: the process's
    resident set before loading and its peak after each row. A runtime that cannot load the file,
    or cannot run one batch size, costs that row (returned under ``failed`` with its whole reason),
    not the group or the run."""
    import psutil

    from toolkit import runners
    from toolkit.errors import failure_record

    def failure(stage: str, exc: BaseException, batch: int | None = None) -> dict:
        return failure_record(stage, exc, **({"batch": batch} if batch is not None else {}))

    runtime = runners.get(runtime_name)
    rss_before = psutil.Process().memory_info().rss
    start = time.perf_counter_ns()
    try:
        runner = runtime.load(path, device=device, threads=threads)
    except DeviceUnavailableError:
        raise
    except NotReadableHere as exc:
        return {"rows": [], "failed": [], "not_readable": str(exc)}
    except Exception as exc:  # every runtime raises its own types: this row's failure, not the run's
        return {"rows": [], "failed": [failure("load", exc)]}
    load_ms = (time.perf_counter_ns() - start) / 1e6
    rss_loaded = psutil.Process().memory_info().rss
    rows, failed = [], []
    for batch in batches:
        try:
            x = runner.prepare(images[:batch])
            timing = measure(lambda x=x: runner.run_raw(x), **timing_kwargs)  # noqa: B023 - called at once
        except Exception as exc:
            failed.append(failure("run", exc, batch))
            continue
        if device == "cuda" and runner.used_device() != "cuda":
            raise DeviceUnavailableError(f"{runtime_name} ran on {', '.join(runner.providers)}, not the GPU",
                                         hint="or pass --allow-fallback")
        rows.append({"batch": batch, "timing": timing, "providers": runner.providers, **runner.bench_fields(),
                     "peak_rss_mb": _mib(peak_rss_bytes())})
    return {"load_ms": load_ms, "rss_before_load_mb": _mib(rss_before), "rss_after_load_mb": _mib(rss_loaded),
            "rows": rows, "failed": failed}


def _row(group: dict, batch: int, threads: int, result: dict, measured: dict) -> dict:
    target = group["target"]
    timing = measured["timing"]
    extra = {k: v for k, v in measured.items() if k not in ("batch", "timing", "providers", "peak_rss_mb")}
    row = {
        "variant": target["variant"],
        "format": target["format"],
        "runtime": group["runtime"],
        "device": group["device"],
        "providers": measured["providers"],
        "batch_size": batch,
        "threads": threads,
        **summarize(timing["samples_ns"], batch),
        "load_ms": result["load_ms"],
        "first_inference_ms": timing["first_ns"] / 1e6,
        "warmup_runs": timing["warmup_runs"],
        "peak_rss_mb": measured["peak_rss_mb"],
        "rss_before_load_mb": result["rss_before_load_mb"],
        "rss_after_load_mb": result["rss_after_load_mb"],
        "sha256": target.get("sha256"),
        "bytes": schema.model_bytes(target),
        **extra,
    }
    if target.get("arena"):
        row["arena_bytes"] = target["arena"]["arena_bytes"]
    if group["note"]:
        row["note"] = group["note"]
    if group["fallback_reason"]:
        row["requested_device"] = "cuda"
        row["fallback_reason"] = group["fallback_reason"]
    row["samples_ms"] = [s / 1e6 for s in timing["samples_ns"]]
    return row


def _run_group(group: dict, path: Path, images: np.ndarray, cfg: BenchConfig, progress,
               skipped: list[dict], failed: list[dict]) -> list[dict]:
    """Each thread setting in a fresh worker process: rows do not inherit another model's memory
    peak, and runtimes that size their thread pools once per process (TensorFlow) get the count. A
    row that fails (the runtime cannot load the file or run a batch size, or its process dies) is
    appended to ``failed`` with the runtime's whole reason; the other rows go on. A file a second reader cannot
    read (errors.NotReadableHere: OpenVINO's TFLite reader on ai-edge-quantizer's fp16 file) is that reader's
    limit, not the file's: the group is skipped with the reason."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    rows = []
    where = {"variant": group["target"]["variant"], "runtime": group["runtime"], "device": group["device"]}
    for n, threads in enumerate(group["threads"]):
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            try:
                result = pool.submit(measure_group, group["runtime"], str(path), group["device"], threads,
                                     list(group["batch_sizes"]), images, _timing_kwargs(cfg)).result()
            except DeviceUnavailableError as exc:  # found only when loaded (e.g. nodes placed on the CPU)
                if group["device"] != "cuda":
                    raise
                skipped.append({**where, "reason": str(exc)})
                say(f"  skipped {where['variant']} on {where['runtime']}: {exc}", cfg.verbose)
                return rows
            except BrokenProcessPool as exc:  # the runtime killed its process (a crash in native code)
                result = {"rows": [], "failed": [{
                    "stage": "process", "reason": f"the worker process running {group['runtime']} died "
                    f"(a crash in the runtime's native code): {type(exc).__name__}", "detail": str(exc)}]}
        if result.get("not_readable"):  # a second reader's limit (errors.NotReadableHere), not the file's
            skipped.append({**where, "reason": result["not_readable"]})
            say(f"  skipped {where['variant']} on {where['runtime']}: {result['not_readable']}", cfg.verbose)
            progress(None, len(group["batch_sizes"]) * (len(group["threads"]) - n))
            return rows
        for bad in result["failed"]:
            batches = [bad["batch"]] if "batch" in bad else list(group["batch_sizes"])
            failed.append({**where, "threads": threads, "batch_sizes": batches, **bad})
            say(f"  FAILED {where['variant']} on {where['runtime']} (threads {threads}, batch "
                f"{','.join(map(str, batches))}, {bad['stage']}): {bad['reason']}", cfg.verbose)
            progress(None, len(batches))
        for measured in result["rows"]:
            rows.append(_row(group, measured["batch"], threads, result, measured))
            progress(rows[-1])
    return rows


def _check_gpu_usable(cfg: BenchConfig, *, groups: list[dict], skipped: list[dict], gpus: list[dict]) -> None:
    """With --device cuda and no --allow-fallback: an error naming the GPUs and every runtime's reason
    when no group would run on the GPU."""
    if cfg.device == "cuda":
        on_gpu = [g for g in groups if g["device"] == "cuda"]
        if not on_gpu and not cfg.allow_fallback:
            by_runtime = {s["runtime"]: s["reason"] for s in skipped}
            reasons = "; ".join(f"{r}: {why}" for r, why in by_runtime.items()) or "no runtime selected"
            gpu_text = ", ".join(g["name"] for g in gpus) or "no NVIDIA GPU found (nvidia-smi)"
            raise DeviceUnavailableError(f"--device cuda: no runtime can use a GPU here ({gpu_text}; {reasons})",
                                         hint="run on a CUDA machine with `pip install -e '.[gpu]'`, "
                                         "or pass --allow-fallback to measure on the CPU")


def _progress_reporter(bar, total: int, verbose: bool):
    """The callback ``_run_group`` reports each row to (None for ``count`` failed rows): it advances
    ``bar`` and says each measured row's figures."""
    done = []

    def progress(row: dict | None, count: int = 1) -> None:
        done.extend([row] * count)
        bar.update(count)
        if row is None:
            return
        say(f"  [{len(done)}/{total}] {row['variant']:<15} {row['runtime']:<16} {row['device']:<4} "
            f"batch {row['batch_size']:>4} threads {row['threads']}: p50 {row['p50_ms']:.3f} ms  "
            f"{row['throughput']:,.0f} img/s  peak RSS {row['peak_rss_mb']:.0f} MiB  ({row['runs']} runs)",
            verbose)

    return progress


def _measure_groups(cfg: BenchConfig, *, manifest: dict, groups: list[dict], images: np.ndarray, progress,
                    skipped: list[dict]) -> tuple[list[dict], list[dict]]:
    """Run every group on its verified file (the Keras reference model for ``keras``); return the
    measured rows and the failed ones (groups found unusable on the GPU are appended to ``skipped``)."""
    results, failed = [], []
    for group in groups:
        target = group["target"]
        if target["variant"] == REFERENCE:
            from toolkit.inputs import reference_model

            path = reference_model(cfg, manifest)
        else:
            path = cfg.exports.verified(target)
        results += _run_group(group, path, images, cfg, progress, skipped, failed)
    return results, failed


def _method(cfg: BenchConfig, groups: list[dict]) -> dict:
    """The bench document's ``method``: how every number was measured."""
    return {
        "timer": "time.perf_counter_ns around the inference call only",
        "inputs": f"{max(cfg.batch_sizes)} fixed-seed (seed {cfg.seed}) test images, preprocessed as the "
                  "manifest says and prepared in the model's input dtype before timing",
        "call": "each runtime's raw call on an input prepared beforehand (per runtime in 'calls')",
        "calls": {g["runtime"]: runners.get(g["runtime"]).timed_call for g in groups},
        "process": "each variant x runtime x thread count in a fresh worker process (spawn)",
        "memory": "peak_rss_mb: the worker's peak resident set (VmHWM) after the row, so it includes "
                  "Python and the runtime's libraries (rss_before_load_mb) and grows with batch size",
        "warmup": f"at least {cfg.warmup_runs} runs and {cfg.warmup_seconds} s",
        "measure": f"at least {cfg.min_runs} runs and {cfg.min_seconds} s (at most {cfg.max_runs:,} runs)",
        "first_inference": "the first call at each batch size; at the first batch size of a process, the "
                           "first inference after load",
        "throughput": "batch_size / mean latency",
    }


def run_bench(cfg: BenchConfig) -> dict:
    """Plan, measure every group in fresh worker processes, and return the bench document (rows,
    skipped and failed ones, config, method, runtimes, provenance); nothing is written."""
    _check(cfg)
    with contextlib.ExitStack() as stack:
        manifest = stack.enter_context(cfg.exports.reading())  # hold this generation while reading it
        groups, skipped = plan(cfg, manifest)
        gpus = gpu_info()
        _check_gpu_usable(cfg, groups=groups, skipped=skipped, gpus=gpus)
        if not groups:
            raise UsageError("nothing to benchmark: " + "; ".join(f"{s['variant']}/{s['runtime']}: {s['reason']}"
                                                                  for s in skipped))
        images = test_images(cfg, manifest, max(cfg.batch_sizes), cfg.seed)
        total = sum(len(g["batch_sizes"]) * len(g["threads"]) for g in groups)
        bar = stack.enter_context(progress_bar(total, "bench", unit="row", verbose=cfg.verbose))
        progress = _progress_reporter(bar, total, cfg.verbose)
        say(f"benchmarking {len(groups)} variant/runtime pair(s) x {len(cfg.batch_sizes)} batch size(s) x "
            f"{len(cfg.threads)} thread setting(s) on {cfg.device}, each in a fresh process", cfg.verbose)
        results, failed = _measure_groups(cfg, manifest=manifest, groups=groups, images=images, progress=progress,
                                          skipped=skipped)
        if cfg.device == "cuda" and not cfg.allow_fallback and not any(r["device"] == "cuda" for r in results):
            raise DeviceUnavailableError("--device cuda: nothing ran on the GPU (" + "; ".join(
                f"{s['variant']}/{s['runtime']}: {s['reason']}" for s in skipped) + ")")
        prov = provenance()
        prov["machine"]["cpu_flags"] = cpu_flags()
        prov["machine"]["gpus"] = gpus
        if not results and failed:
            # nothing measured at all: the outputs would hold no row; say so with every reason
            raise DataError("no row could be measured: " + "; ".join(
                f"{f['variant']} on {f['runtime']}: {f['reason']}" for f in failed))
        return schema.Bench.versioned({
            "results": results,
            "skipped": skipped,
            "failed": failed,
            "config": {k: v for k, v in config_json(cfg).items() if k not in ("verbose", "plots")},
            "method": _method(cfg, groups),
            "runtimes": {g["runtime"]: runners.get(g["runtime"]).summary for g in groups},
            "export_generation": manifest.get("generation"),
            "provenance": prov,
        })


# ----------------------------------------------------------------------------- outputs
def write_outputs(doc: dict, cfg: BenchConfig) -> dict[str, Path]:
    outputs = cfg.exports.bench_outputs(Path(cfg.json_path) if cfg.json_path else cfg.exports.bench_path)
    paths = {k: outputs[k] for k in ("json", "csv", "markdown")}
    artifacts.atomic_write_json(paths["json"], doc)
    artifacts.atomic_write_text(paths["csv"], to_csv(doc))
    artifacts.atomic_write_text(paths["markdown"], to_markdown(doc))
    if cfg.plots:
        from toolkit.plots import plot_latency, plot_memory, plot_tradeoff

        paths["latency_png"] = outputs["latency_png"]
        plot_latency(doc, paths["latency_png"])
        if any("peak_rss_mb" in r for r in doc["results"]):
            paths["memory_png"] = outputs["memory_png"]
            plot_memory(doc, paths["memory_png"])
        parity = cfg.exports.parity(required=False)
        if parity is not None:
            paths["tradeoff_png"] = outputs["tradeoff_png"]
            plot_tradeoff(doc, parity, paths["tradeoff_png"])
    return paths

