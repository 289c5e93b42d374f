"""Parity's run: which checks (variant x runtime), the runners opened, the test split streamed through
the reference and every runner, and each check's metrics and gates. A runtime's own rules (TFLM's
sample of the images, its LiteRT twin and gate) come from the hooks it declares (``Runtime.parity``):
nothing here names a runtime or a format."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit import runners, schema
from toolkit.config import ParityConfig
from toolkit.errors import DataError, DeviceUnavailableError, UsageError, WriteError
from toolkit.exportdir import ExportDir
from toolkit.inputs import data_for, reference_model
from toolkit.modelinfo import confirm_output, for_export, inspect_model
from toolkit.parity.metrics import (
    ParityReport,
    Scores,
    VariantParity,
    accuracy_block,
    compare_predictions,
    per_class_accuracy,
)
from toolkit.progress import bar as progress_bar
from toolkit.progress import say
from toolkit.verdicts import parity_gates


def _log(cfg: ParityConfig, message: str) -> None:
    say(message, cfg.verbose)


def select_entries(manifest: dict, wanted: tuple[str, ...]) -> list[dict]:
    entries = manifest["artifacts"]
    if not wanted:
        return entries
    known = {e["variant"]: e for e in entries}
    missing = [w for w in wanted if w not in known]
    if missing:
        raise UsageError(f"variant(s) {', '.join(missing)} not in the manifest (exported: {', '.join(known)})")
    return [known[w] for w in wanted]


def plan_checks(entries: list[dict], wanted: tuple[str, ...], device: str = "cpu",
                reference_runtime: str | None = None) -> tuple[dict, list[dict]]:
    """{key: (entry, runtime)} to check, and what was skipped with why. Without ``--runtimes`` each
    variant runs on its format's reference runtime (key: the variant); with it, on every listed
    runtime that runs its format (key: the variant, or VARIANT@RUNTIME for a non-reference runtime).
    A runtime that cannot run on ``device`` here is skipped with its reason."""
    checks, skipped = {}, []
    for entry in entries:
        reference = runners.default_for(entry["format"])
        chosen = [runners.get(name) for name in wanted] if wanted else [reference]
        for runtime in chosen:
            if entry["format"] not in runtime.formats:
                continue
            if entry["format"] == "keras" and runtime.name == reference_runtime:
                continue  # the reference itself
            reason = runtime.why_not(device) if wanted or device != "cpu" else None  # default on the CPU: must run
            if reason:
                skipped.append({"variant": entry["variant"], "runtime": runtime.name, "reason": reason})
                continue
            key = (entry["variant"] if runtime is reference and entry["format"] != "keras"
                   else f"{entry['variant']}@{runtime.name}")
            checks[key] = (entry, runtime)
        if wanted and not any(e is entry for e, _ in checks.values()) and not any(
                s["variant"] == entry["variant"] for s in skipped):
            skipped.append({"variant": entry["variant"], "runtime": ", ".join(wanted),
                            "reason": f"none of these runtimes runs format {entry['format']}"})
    if not checks:
        asked = f"--runtimes {' '.join(wanted)}" if wanted else "the variants' reference runtimes"
        raise UsageError(f"{asked}: none of them runs the selected variants on {device} here ("
                         + "; ".join(f"{s['variant']}/{s['runtime']}: {s['reason']}" for s in skipped)
                         + ")" if skipped else f"{asked} runs none of the selected variants' "
                         f"formats ({', '.join(sorted({e['format'] for e in entries}))})")
    return checks, skipped


def open_reference(cfg: ParityConfig, model_path: Path, manifest: dict):
    """The reference model on ``--reference-runtime`` (default: its framework's reference runtime: TensorFlow for
    Keras, onnxruntime for ONNX, PyTorch for .pt2) on ``--device``, and what the model is."""
    framework = (manifest.get("model") or {}).get("framework", "keras")
    runtime = runners.get(cfg.reference_runtime) if cfg.reference_runtime else runners.default_for(framework)
    if framework not in runtime.formats:
        raise UsageError(f"--reference-runtime {runtime.name} does not run {framework} models "
                         f"(these do: {', '.join(r.name for r in runners.for_format(framework))})")
    reason = runtime.why_not(cfg.device)
    if reason:
        raise DeviceUnavailableError(f"the reference cannot run on {runtime.name} ({cfg.device}): {reason}",
                                     hint="choose another with --reference-runtime")
    runner = runtime.load(model_path, device=cfg.device)
    model = getattr(runner, "model", None)
    if model is None or framework != "keras":  # what the manifest says of it (the runtime may hold it elsewhere)
        return runner, for_export(manifest, model_path)
    return runner, inspect_model(model, model_path)


def check_device(cfg: ParityConfig, opened: dict) -> None:
    """Every runner really ran on ``--device``: onnxruntime, for one, falls back to the CPU silently."""
    wrong = {k: r.providers for k, r in opened.items() if r.used_device() != cfg.device}
    if wrong:
        raise DeviceUnavailableError(f"asked for {cfg.device}, but " + "; ".join(
            f"{k} ran on {', '.join(p)}" for k, p in wrong.items()))


def _timed(runner, x: np.ndarray, seconds: dict, key: str) -> np.ndarray:
    start = time.perf_counter()
    out = runner.infer(x)
    seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
    return out


def _plain_companions(exports: ExportDir, entries: list[dict], checks: dict, paths: dict) -> dict:
    """For each accuracy-controlled variant checked on its reference runtime, the plain int8 model
    it replaced (kept beside it) is checked too, as ``VARIANT:plain``. Returns the variants'
    accuracy-control records."""
    from toolkit.provenance import sha256_file

    records = {}
    for entry in entries:
        record = entry.get("accuracy_control")
        if not record:
            continue
        records[entry["variant"]] = record
        plain = next((c for c in entry.get("companions", []) if c.get("role") == "plain-int8"), None)
        if plain is None or entry["variant"] not in checks:
            continue
        path = exports.named(plain["path"])
        if not path.is_file() or sha256_file(path) != plain["sha256"]:
            raise DataError(f"{path}: the plain int8 companion of {entry['variant']} is missing or changed",
                            hint="export again")
        name = f"{entry['variant']}:plain"
        checks[name] = ({"variant": name, "format": entry["format"], "quantization": "int8",
                         "bytes": plain["bytes"], "sha256": plain["sha256"],
                         "informational": f"plain int8 before accuracy control replaced it with {entry['variant']}; "
                                          "its gates are shown, not enforced"}, checks[entry["variant"]][1])
        paths[name] = path
    return records


def failed_row(key: str, entry: dict, runtime: str, stage: str, exc: BaseException) -> dict:
    """A check that could not be made (the runtime cannot load or run the file), with the runtime's
    whole reason: recorded, shown, and the command exits 7; the other checks go on."""
    from toolkit.errors import failure_record

    return failure_record(stage, exc, key=key, variant=entry["variant"], format=entry["format"], runtime=runtime)


@dataclass
class _Run:
    """One parity run while the test split streams past: the runners, what each runtime's hooks asked
    for (a sample of the images, a twin on the same bytes) and what has been measured so far."""

    checks: dict  # key -> (entry, runtime)
    skipped: list
    opened: dict = field(default_factory=dict)  # key -> Runner
    samples: dict = field(default_factory=dict)  # key -> sorted test-image indices it runs (absent: all)
    twins: dict = field(default_factory=dict)  # key -> the twin Runner on the same bytes
    failed: list = field(default_factory=list)
    scores: dict = field(default_factory=dict)  # key -> Scores against the reference
    twin_scores: dict = field(default_factory=dict)  # key -> the twin's Scores against this runner's
    seconds: dict = field(default_factory=dict)
    ref_preds: list = field(default_factory=list)
    first: np.ndarray | None = None  # the reference's first batch of scores (what the model outputs)


def _open_runners(cfg: ParityConfig, run: _Run, paths: dict, n: int) -> None:
    """Load every planned check; a runtime that cannot load its file fails that row only."""
    for variant, (entry, runtime) in list(run.checks.items()):
        try:
            run.opened[variant] = runtime.load(paths[entry["variant"]], device=cfg.device)
        except DeviceUnavailableError as exc:  # found only when loaded (e.g. nodes placed on the CPU)
            if cfg.device == "cpu":
                raise
            run.skipped.append({"variant": entry["variant"], "runtime": runtime.name, "reason": str(exc)})
            del run.checks[variant]
            continue
        except (UsageError, WriteError):
            raise
        except Exception as exc:  # this runtime cannot load this file: that row fails, the others go on
            run.failed.append(failed_row(variant, entry, runtime.name, "load", exc))
            _log(cfg, f"  FAILED {variant} on {runtime.name} (load): {run.failed[-1]['reason']}")
            del run.checks[variant]
            continue
        hooks = runtime.parity
        sample = hooks.sample(cfg, n)
        if sample is not None:
            run.samples[variant] = sample
        if hooks.twin is not None:
            run.twins[variant] = hooks.twin(run.opened[variant])
    if not run.opened and run.failed:
        raise DataError("no variant could be loaded: " + "; ".join(
            f"{f['key']} on {f['runtime']}: {f['reason']}" for f in run.failed))
    if not run.opened:
        raise DeviceUnavailableError(f"nothing to check on {cfg.device}: " + "; ".join(
            f"{s['variant']}/{s['runtime']}: {s['reason']}" for s in run.skipped))


def _stream(cfg: ParityConfig, run: _Run, reference_runner, prep, test, bar) -> None:
    """The test split, batch by batch, through the reference and every runner (each on its sample)."""
    run.scores = {v: Scores() for v in run.opened}
    run.twin_scores = {v: Scores() for v in run.twins}
    for idx, x in prep.batches(test, cfg.batch_size):
        bar.update(len(idx))
        ref = _timed(reference_runner, x, run.seconds, "keras")
        run.first = ref if run.first is None else run.first
        run.ref_preds.append(ref.argmax(1))
        for variant, runner in list(run.opened.items()):
            sample = run.samples.get(variant)
            mask = slice(None) if sample is None else np.isin(idx, sample)
            xs = x[mask]
            if not len(xs):
                continue
            try:
                out = _timed(runner, xs, run.seconds, variant)
            except Exception as exc:  # the runtime loaded the file but cannot run it: that row fails
                entry, runtime = run.checks.pop(variant)
                run.failed.append(failed_row(variant, entry, runtime.name, "run", exc))
                _log(cfg, f"  FAILED {variant} on {runtime.name} (run): {run.failed[-1]['reason']}")
                del run.opened[variant]
                continue
            run.scores[variant].add(out, ref[mask])
            if variant in run.twins:
                run.twin_scores[variant].add(run.twins[variant].infer(xs), out)


def _reference_row(reference_runner, model_path: Path, manifest: dict, info, ref_pred: np.ndarray,
                   labels: np.ndarray, seconds: dict) -> dict:
    return {
        "variant": "keras",  # the reference's key in parity.json, whatever its framework (``framework``)
        "framework": info.framework,
        "runtime": reference_runner.name,
        "device": reference_runner.used_device(),
        "providers": reference_runner.providers,
        "path": str(model_path),
        "sha256": manifest.get("source_model", {}).get("sha256"),
        "output": info.output,
        "output_evidence": info.output_evidence,
        "classes": info.classes,
        **accuracy_block(ref_pred, labels),
        "per_class_accuracy": per_class_accuracy(ref_pred, labels, info.classes),
        "seconds": round(seconds.get("keras", 0.0), 3),
    }


def _variant_result(cfg: ParityConfig, run: _Run, variant: str, ref_pred: np.ndarray, labels: np.ndarray,
                    classes: int) -> VariantParity:
    """One check's metrics and gates (its runtime's hooks add theirs)."""
    entry, runtime = run.checks[variant]
    idx = run.samples.get(variant)
    sel = slice(None) if idx is None else idx
    metrics = compare_predictions(ref_pred[sel], run.scores[variant], labels[sel], classes)
    gates = parity_gates(entry["quantization"], metrics, cfg.gates, runtime.reduced_precision)
    if entry.get("informational"):
        # the plain int8 model that accuracy control replaced: shown beside it, not enforced
        metrics["informational"] = entry["informational"]
        metrics["gates_if_enforced"] = [g.to_json() for g in gates]
        gates = []
    if idx is not None:
        # On a sample, accuracy-loss and agreement bounds meant for the full test set are noise (one image
        # in 300 is 0.33 points); the runtime's twin check speaks for it (ParityHooks)
        gates = []
    if variant in run.twins:
        twin = run.twin_scores[variant]
        same = twin.predictions == run.scores[variant].predictions
        extra, more = runtime.parity.twin_result(same, twin.max_abs_diff, idx, len(labels), cfg)
        metrics.update(extra)
        gates.extend(more)
    runner = run.opened[variant]
    metrics.update({
        "variant": entry["variant"],
        "format": entry["format"],
        "runtime": runner.name,
        "device": runner.used_device(),
        "providers": runner.providers,
        **({"runtime_settings": runner.bench_fields()} if runner.bench_fields() else {}),
        "bytes": entry["bytes"],
        **({"model_bytes": schema.model_bytes(entry)} if "model_bytes" in entry else {}),
        "sha256": entry["sha256"],
        "seconds": round(run.seconds.get(variant, 0.0), 3),
    })
    return VariantParity(variant, entry["quantization"], metrics, gates, run.scores[variant].predictions, idx)


def _with_keras_twin(cfg: ParityConfig, entries: list[dict], paths: dict, reference_runner, model_path: Path,
                     manifest: dict) -> list[dict]:
    """The reference model itself on another Keras runtime (keras@keras-jax) when --runtimes asks: same predictions?"""
    if not any("keras" in runners.get(r).formats and r != reference_runner.name for r in cfg.runtimes):
        return entries
    paths["keras"] = model_path
    return [*entries, {"variant": "keras", "format": "keras", "quantization": "none",
                       "bytes": model_path.stat().st_size, "sha256": manifest.get("source_model", {}).get("sha256")}]


def run_parity(cfg: ParityConfig) -> ParityReport:
    """Every variant and the reference on the whole test split, streamed batch by batch: memory
    holds one batch of images and the scores (N x K), whatever the size of the dataset."""
    exports = cfg.exports
    with contextlib.ExitStack() as stack:
        manifest = stack.enter_context(exports.reading())  # hold this generation while reading it
        entries = select_entries(manifest, cfg.variants)
        paths = {e["variant"]: exports.verified(e) for e in entries}
        model_path = reference_model(cfg, manifest)
        reference_runner, info = open_reference(cfg, model_path, manifest)
        dataset, prep, matches = data_for(cfg, manifest, info)
        if manifest.get("dataset") and not matches:
            _log(cfg, f"note: dataset {dataset.source} is not the one the export was calibrated and checked on "
                      f"({manifest['dataset'].get('source')})")
        test = dataset.test
        labels = test.labels
        n = len(labels)
        entries = _with_keras_twin(cfg, entries, paths, reference_runner, model_path, manifest)
        checks, skipped = plan_checks(entries, cfg.runtimes, cfg.device, reference_runner.name)
        controlled = _plain_companions(exports, entries, checks, paths)
        run = _Run(checks, skipped)
        _open_runners(cfg, run, paths, n)
        _log(cfg, f"parity of {len(entries)} variant(s) on {n:,} {dataset.kind} test images ({prep.describe()})")
        bar = stack.enter_context(progress_bar(n, f"parity ({len(run.opened)} runner(s) + keras)", unit="img",
                                               verbose=cfg.verbose))
        _stream(cfg, run, reference_runner, prep, test, bar)
        if run.first is None:
            raise UsageError(f"the test split of {dataset.source} holds no images")
        if not run.opened:
            raise DataError("no variant could be run: " + "; ".join(
                f"{f['key']} on {f['runtime']}: {f['reason']}" for f in run.failed))
        check_device(cfg, {"keras": reference_runner, **run.opened})
        info = confirm_output(info, run.first)
        ref_pred = np.concatenate(run.ref_preds)
        class_names = list(dataset.class_names) + [str(k) for k in range(dataset.num_classes, info.classes)]
        reference = _reference_row(reference_runner, model_path, manifest, info, ref_pred, labels, run.seconds)
        _log(cfg, f"reference {reference.get('framework', 'keras')} model: accuracy {reference['accuracy']:.2%} on {n:,} test images")
        variants: dict[str, VariantParity] = {}
        for variant in run.checks:
            result = variants[variant] = _variant_result(cfg, run, variant, ref_pred, labels, info.classes)
            m = result.metrics
            _log(cfg, f"  {variant:<15} accuracy {m['accuracy']:.2%}  diff {m['accuracy_diff_points']:+.2f} pts  "
                      f"agreement {m['agreement']:.2%}  {result.verdict.upper()}")
        for s in run.skipped:
            _log(cfg, f"  skipped {s['variant']} on {s['runtime']}: {s['reason']}")
        return ParityReport(reference, variants, labels, ref_pred, test, prep, class_names,
                            {"dataset": dataset.describe(), "preprocessing": prep.to_json(), "model": info.to_json(),
                             "dataset_matches_export": matches, "skipped": run.skipped, "failed": run.failed,
                             **({"accuracy_control": controlled} if controlled else {})},
                            manifest.get("generation"))
