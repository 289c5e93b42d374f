"""Accuracy parity of every exported artifact against the Keras model it came from, on the
whole test split of the dataset (MNIST's 10,000 images by default), with statistics and gates.

Every gate is a verdict of toolkit/verdicts.py: pass, fail or inconclusive, decided on an interval.
A ``ParityReport`` is truthy unless a gate failed (like Polygraphy's comparator results); its
``verdict`` says which of the three.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit import artifacts, runners
from toolkit.config import Gates, ParityConfig
from toolkit.datasets import Split
from toolkit.errors import DataError, DeviceUnavailableError, UsageError, WriteError
from toolkit.inputs import data_for, reference_model
from toolkit.modelinfo import confirm_output, for_export, inspect_model
from toolkit.preprocess import Preprocessing
from toolkit.progress import bar as progress_bar
from toolkit.progress import say
from toolkit.provenance import provenance
from toolkit.stats import mcnemar_exact, paired_difference_interval, wilson_interval
from toolkit.verdicts import FAIL, INCONCLUSIVE, PASS, Verdict, agreement_between, combine, parity_gates

PARITY_JSON = "parity.json"
PARITY_MD = "parity.md"
PARITY_PNG = "parity-disagreements.png"


@dataclass
class VariantParity:
    variant: str
    quantization: str
    metrics: dict
    gates: list[Verdict]
    predictions: np.ndarray = field(repr=False)
    indices: np.ndarray | None = field(default=None, repr=False)  # test images used; None = all

    @property
    def verdict(self) -> str:
        """pass, fail or inconclusive (toolkit/verdicts.py)."""
        return combine(self.gates)

    def __bool__(self) -> bool:
        """True unless a gate failed (an inconclusive variant is not a failure)."""
        return self.verdict != FAIL

    def failures(self) -> list[Verdict]:
        return [g for g in self.gates if g.failed]

    def inconclusive(self) -> list[Verdict]:
        return [g for g in self.gates if g.status == INCONCLUSIVE]

    def to_json(self) -> dict:
        return {**self.metrics, "passed": self.verdict == PASS, "verdict": self.verdict,
                "gates": [g.to_json() for g in self.gates]}


@dataclass
class ParityReport:
    reference: dict
    variants: dict[str, VariantParity]
    labels: np.ndarray = field(repr=False)
    reference_predictions: np.ndarray = field(repr=False)
    test: Split = field(repr=False)  # the test split, to read the images shown in the plot
    preprocessing: Preprocessing = field(repr=False)
    class_names: list[str] = field(default_factory=list)
    context: dict = field(default_factory=dict)  # dataset, preprocessing, model: for the JSON
    export_generation: str | None = None

    @property
    def verdict(self) -> str:
        return combine(v.verdict for v in self.variants.values())

    def __bool__(self) -> bool:
        """True unless a gate failed."""
        return self.verdict != FAIL

    def failures(self) -> list[tuple[str, Verdict]]:
        return [(name, g) for name, v in self.variants.items() for g in v.failures()]

    def inconclusive(self) -> list[tuple[str, Verdict]]:
        return [(name, g) for name, v in self.variants.items() for g in v.inconclusive()]

    def raise_if_failed(self, command: str, details: Path, strict: bool = False) -> None:
        """One stderr line per failed gate and per inconclusive one, then GateError (exit 4) if a gate
        failed, or, with ``strict``, if one is inconclusive."""
        from toolkit.errors import GateError

        for name, gate in self.inconclusive():
            print(f"toolkit {command}: INCONCLUSIVE: {name}: {gate}", file=sys.stderr)
        for name, gate in self.failures():
            print(f"toolkit {command}: gate failed: {name}: {gate}", file=sys.stderr)
        if self.failures():
            raise GateError(f"{len(self.failures())} parity gate(s) failed; see {details}")
        if strict and self.inconclusive():
            raise GateError(f"{len(self.inconclusive())} parity gate(s) inconclusive (--strict); see {details}",
                            hint="more test images decide them: each line says about how many")

    def raise_if_incomplete(self, command: str, details: Path) -> None:
        """One stderr line per check the runtime could not make, then PartialError (exit 7)."""
        failed = self.context.get("failed") or []
        if not failed:
            return
        from toolkit.errors import PartialError

        for f in failed:
            print(f"toolkit {command}: not checked: {f['key']} on {f['runtime']} ({f['stage']}): {f['reason']}",
                  file=sys.stderr)
        raise PartialError(f"{len(failed)} check(s) could not be made, {len(self.variants)} made and written; "
                           f"see {details}")


def accuracy_block(predictions: np.ndarray, labels: np.ndarray) -> dict:
    n = len(labels)
    correct = int((predictions == labels).sum())
    lo, hi = wilson_interval(correct, n)
    return {"accuracy": correct / n, "correct": correct, "images": n, "accuracy_ci95": [lo, hi]}


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, classes: int) -> list[float | None]:
    """Accuracy on each class's images; None for a class with no image in the split."""
    return [float((predictions[labels == k] == k).mean()) if (labels == k).any() else None
            for k in range(classes)]


class Scores:
    """What parity keeps of a variant's scores while the test split streams past: its predictions
    and the running max and sum of |scores - reference scores|. Memory per image: one integer."""

    def __init__(self):
        self._preds: list[np.ndarray] = []
        self.max_abs_diff = 0.0
        self._sum = 0.0
        self._count = 0

    def add(self, scores: np.ndarray, reference: np.ndarray) -> None:
        diff = np.abs(scores.astype(np.float64) - reference.astype(np.float64))
        if diff.size:
            self.max_abs_diff = max(self.max_abs_diff, float(diff.max()))
        self._sum += float(diff.sum())
        self._count += diff.size
        self._preds.append(scores.argmax(1).astype(np.int32))

    @property
    def predictions(self) -> np.ndarray:
        return np.concatenate(self._preds) if self._preds else np.zeros(0, np.int32)

    @property
    def mean_abs_diff(self) -> float:
        return self._sum / self._count if self._count else 0.0


def compare(ref_logits: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> dict:
    """Every parity metric of one variant against the reference, from whole score arrays."""
    scores = Scores()
    scores.add(logits, ref_logits)
    return compare_predictions(ref_logits.argmax(1), scores, labels, ref_logits.shape[1])


def compare_predictions(ref_pred: np.ndarray, scores: Scores, labels: np.ndarray, classes: int) -> dict:
    """Every parity metric of one variant against the reference on the same images."""
    pred = scores.predictions
    ref_ok, ok = ref_pred == labels, pred == labels
    b = int((ref_ok & ~ok).sum())  # reference right, variant wrong
    c = int((~ref_ok & ok).sum())  # variant right, reference wrong
    n = len(labels)
    acc = accuracy_block(pred, labels)
    lo, hi = paired_difference_interval(b, c, n, both_right=int((ref_ok & ok).sum()))
    agree = int((pred == ref_pred).sum())
    alo, ahi = wilson_interval(agree, n)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    ref_class = per_class_accuracy(ref_pred, labels, classes)
    var_class = per_class_accuracy(pred, labels, classes)
    return {
        **acc,
        "accuracy_diff_points": (acc["accuracy"] - float(ref_ok.mean())) * 100,
        "accuracy_diff_ci95_points": [lo * 100, hi * 100],
        "agreement": float((pred == ref_pred).mean()),
        "agreement_ci95": [alo, ahi],
        "disagreements": int((pred != ref_pred).sum()),
        "discordant_ref_right_variant_wrong": b,
        "discordant_ref_wrong_variant_right": c,
        "mcnemar_p": mcnemar_exact(b, c),
        "max_abs_logit_diff": scores.max_abs_diff,
        "mean_abs_logit_diff": scores.mean_abs_diff,
        "per_class_accuracy_diff_points": [None if v is None else (v - r) * 100
                                           for v, r in zip(var_class, ref_class, strict=True)],
        "confusion_matrix": confusion.tolist(),
    }


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


def micro_subset(cfg: ParityConfig, n: int) -> np.ndarray | None:
    """TFLM's host build runs reference kernels one image at a time (milliseconds each for the
    CNN), so by default it sees a fixed-seed sample of the test set; --micro-images all: every image."""
    if cfg.micro_images is None or cfg.micro_images >= n:
        return None
    return np.sort(np.random.default_rng(cfg.seed).choice(n, size=cfg.micro_images, replace=False))


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
    """The Keras reference on ``--reference-runtime`` (default: the keras format's reference runtime,
    TensorFlow) on ``--device``, and what the model is (read from it)."""
    runtime = runners.get(cfg.reference_runtime) if cfg.reference_runtime else runners.default_for("keras")
    if "keras" not in runtime.formats:
        raise UsageError(f"--reference-runtime {runtime.name} does not run Keras models "
                         f"(these do: {', '.join(r.name for r in runners.for_format('keras'))})")
    reason = runtime.why_not(cfg.device)
    if reason:
        raise DeviceUnavailableError(f"the reference cannot run on {runtime.name} ({cfg.device}): {reason}",
                                     hint="choose another with --reference-runtime")
    runner = runtime.load(model_path, device=cfg.device)
    model = getattr(runner, "model", None)
    if model is None:  # the runtime holds the model in another process: what the manifest says of it
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


def _plain_companions(exports: Path, entries: list[dict], checks: dict, paths: dict) -> dict:
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
        path = exports / plain["path"]
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
    from toolkit.errors import ToolkitError, first_line, whole_message

    reason = first_line(exc, None)
    return {"key": key, "variant": entry["variant"], "format": entry["format"], "runtime": runtime, "stage": stage,
            "reason": reason if isinstance(exc, ToolkitError) else f"{type(exc).__name__}: {reason}",
            "detail": getattr(exc, "detail", None) or whole_message(exc)}


def run_parity(cfg: ParityConfig) -> ParityReport:
    """Every variant and the reference on the whole test split, streamed batch by batch: memory
    holds one batch of images and the scores (N x K), whatever the size of the dataset."""
    exports = Path(cfg.exports)
    with contextlib.ExitStack() as stack:
        manifest = stack.enter_context(artifacts.reading(exports))  # hold this generation while reading it
        entries = select_entries(manifest, cfg.variants)
        paths = {e["variant"]: artifacts.verify_entry(exports, e) for e in entries}
        model_path = reference_model(cfg, manifest)
        reference_runner, info = open_reference(cfg, model_path, manifest)
        dataset, prep, matches = data_for(cfg, manifest, info)
        if manifest.get("dataset") and not matches:
            _log(cfg, f"note: dataset {dataset.source} is not the one the export was calibrated and checked on "
                      f"({manifest['dataset'].get('source')})")
        test = dataset.test
        labels = test.labels
        n = len(labels)

        if any("keras" in runners.get(r).formats and r != reference_runner.name for r in cfg.runtimes):
            # the reference model itself on another Keras runtime (keras@keras-jax): same predictions?
            entries = [*entries, {"variant": "keras", "format": "keras", "quantization": "none",
                                  "bytes": model_path.stat().st_size,
                                  "sha256": manifest.get("source_model", {}).get("sha256")}]
            paths["keras"] = model_path
        checks, skipped = plan_checks(entries, cfg.runtimes, cfg.device, reference_runner.name)
        controlled = _plain_companions(exports, entries, checks, paths)
        opened, samples, twins, failed = {}, {}, {}, []
        for variant, (entry, runtime) in list(checks.items()):
            try:
                opened[variant] = runtime.load(paths[entry["variant"]], device=cfg.device)
            except DeviceUnavailableError as exc:  # found only when loaded (e.g. nodes placed on the CPU)
                if cfg.device == "cpu":
                    raise
                skipped.append({"variant": entry["variant"], "runtime": runtime.name, "reason": str(exc)})
                del checks[variant]
                continue
            except (UsageError, WriteError):
                raise
            except Exception as exc:  # this runtime cannot load this file: that row fails, the others go on
                failed.append(failed_row(variant, entry, runtime.name, "load", exc))
                _log(cfg, f"  FAILED {variant} on {runtime.name} (load): {failed[-1]['reason']}")
                del checks[variant]
                continue
            if entry["format"] == "tflite-micro":
                samples[variant] = micro_subset(cfg, n)
                # the same model bytes on the desktop LiteRT interpreter: do TFLM's kernels agree?
                from toolkit.runners.litert import LiteRTRunner

                twins[variant] = LiteRTRunner(opened[variant].content)
        if not opened and failed:
            raise DataError("no variant could be loaded: " + "; ".join(
                f"{f['key']} on {f['runtime']}: {f['reason']}" for f in failed))
        if not opened:
            raise DeviceUnavailableError(f"nothing to check on {cfg.device}: " + "; ".join(
                f"{s['variant']}/{s['runtime']}: {s['reason']}" for s in skipped))
        _log(cfg, f"parity of {len(entries)} variant(s) on {n:,} {dataset.kind} test images ({prep.describe()})")
        ref_preds: list[np.ndarray] = []
        scores = {v: Scores() for v in opened}
        twin_scores = {v: Scores() for v in twins}  # LiteRT's scores on TFLM's bytes, against TFLM's
        seconds: dict[str, float] = {}
        first = None
        bar = stack.enter_context(progress_bar(n, f"parity ({len(opened)} runner(s) + keras)", unit="img",
                                               verbose=cfg.verbose))
        for idx, x in prep.batches(test, cfg.batch_size):
            bar.update(len(idx))
            ref = _timed(reference_runner, x, seconds, "keras")
            first = ref if first is None else first
            ref_preds.append(ref.argmax(1))
            for variant, runner in list(opened.items()):
                sample = samples.get(variant)
                mask = slice(None) if sample is None else np.isin(idx, sample)
                xs = x[mask]
                if not len(xs):
                    continue
                try:
                    out = _timed(runner, xs, seconds, variant)
                except Exception as exc:  # the runtime loaded the file but cannot run it: that row fails
                    entry, runtime = checks.pop(variant)
                    failed.append(failed_row(variant, entry, runtime.name, "run", exc))
                    _log(cfg, f"  FAILED {variant} on {runtime.name} (run): {failed[-1]['reason']}")
                    del opened[variant]
                    continue
                scores[variant].add(out, ref[mask])
                if variant in twins:
                    twin_scores[variant].add(twins[variant].infer(xs), out)
        if first is None:
            raise UsageError(f"the test split of {dataset.source} holds no images")
        if not opened:
            raise DataError("no variant could be run: " + "; ".join(
                f"{f['key']} on {f['runtime']}: {f['reason']}" for f in failed))
        check_device(cfg, {"keras": reference_runner, **opened})
        info = confirm_output(info, first)
        ref_pred = np.concatenate(ref_preds)
        class_names = list(dataset.class_names) + [str(k) for k in range(dataset.num_classes, info.classes)]
        reference = {
            "variant": "keras",
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
        _log(cfg, f"reference keras: accuracy {reference['accuracy']:.2%} on {n:,} test images")

        variants: dict[str, VariantParity] = {}
        for variant, (entry, runtime) in checks.items():
            idx = samples.get(variant)
            sel = slice(None) if idx is None else idx
            metrics = compare_predictions(ref_pred[sel], scores[variant], labels[sel], info.classes)
            gates = parity_gates(entry["quantization"], metrics, cfg.gates, runtime.reduced_precision)
            if entry.get("informational"):
                # the plain int8 model that accuracy control replaced: shown beside it, not enforced
                metrics["informational"] = entry["informational"]
                metrics["gates_if_enforced"] = [g.to_json() for g in gates]
                gates = []
            if entry["format"] == "tflite-micro" and idx is not None:
                # On a sample, accuracy-loss and agreement bounds meant for the full test set are noise
                # (one image in 300 is 0.33 points). The sound check is that TFLM computes what the
                # LiteRT interpreter computes on the same bytes; tflite-int8 carries the full-set gates.
                gates = []
            if variant in twins:
                twin = twin_scores[variant]
                same = twin.predictions == scores[variant].predictions
                metrics.update({
                    "images_used": "all" if idx is None else f"fixed-seed sample of {len(idx)} of {n} (seed {cfg.seed})",
                    "agreement_with_litert": float(same.mean()),
                    "disagreements_with_litert": int((~same).sum()),
                    "max_abs_logit_diff_vs_litert": twin.max_abs_diff,
                })
                gates.append(agreement_between("agreement_with_litert_percent", int(same.sum()), len(same),
                                               cfg.gates.micro_min_agreement_with_litert,
                                               note="TFLM against LiteRT on the same model bytes"))
            metrics.update({
                "variant": entry["variant"],
                "format": entry["format"],
                "runtime": opened[variant].name,
                "device": opened[variant].used_device(),
                "providers": opened[variant].providers,
                **({"runtime_settings": opened[variant].bench_fields()} if opened[variant].bench_fields() else {}),
                "bytes": entry["bytes"],
                **({"model_bytes": entry["model_bytes"]} if "model_bytes" in entry else {}),
                "sha256": entry["sha256"],
                "seconds": round(seconds.get(variant, 0.0), 3),
            })
            result = VariantParity(variant, entry["quantization"], metrics, gates, scores[variant].predictions, idx)
            variants[variant] = result
            _log(
                cfg,
                f"  {variant:<15} accuracy {metrics['accuracy']:.2%}  "
                f"diff {metrics['accuracy_diff_points']:+.2f} pts  agreement {metrics['agreement']:.2%}  "
                f"{result.verdict.upper()}",
            )
        for s in skipped:
            _log(cfg, f"  skipped {s['variant']} on {s['runtime']}: {s['reason']}")
        return ParityReport(reference, variants, labels, ref_pred, test, prep, class_names,
                            {"dataset": dataset.describe(), "preprocessing": prep.to_json(), "model": info.to_json(),
                             "dataset_matches_export": matches, "skipped": skipped, "failed": failed,
                             **({"accuracy_control": controlled} if controlled else {})},
                            manifest.get("generation"))


def report_json(report: ParityReport, cfg: ParityConfig) -> dict:
    return {
        "reference": report.reference,
        "variants": {name: v.to_json() for name, v in report.variants.items()},
        "passed": report.verdict == PASS and not report.context.get("failed"),  # a check not made is not a pass
        "verdict": report.verdict,
        "class_names": report.class_names,
        **report.context,
        "gates": vars(cfg.gates),
        "export_generation": report.export_generation,
        "statistics": {
            "accuracy_ci95": "Wilson score interval",
            "agreement_ci95": "Wilson score interval",
            "accuracy_diff_ci95_points": "Newcombe (1998) hybrid score interval for paired proportions (method 10): "
                                         "valid, and not of zero width, when no image disagrees",
            "mcnemar_p": "exact two-sided McNemar test on discordant pairs",
        },
        "provenance": provenance(),
    }


def verdict_cell(verdict: str, gates: list[Verdict]) -> str:
    """A table cell: pass, or the failed / inconclusive gates with how many images would decide."""
    if verdict == PASS:
        return "pass"
    shown = [g for g in gates if g.status == verdict]
    return f"**{verdict.upper()}**: " + "; ".join(str(g) for g in shown)


def markdown(report: ParityReport, gates: Gates) -> str:
    ref = report.reference
    dataset = report.context.get("dataset", {})
    kind = {"mnist": "the MNIST", "folder": "an image folder's", "npz": "an .npz dataset's"}.get(dataset.get("kind"),
                                                                                                "the")
    scores = "probability" if ref.get("output") == "probabilities" else "logit"
    lines = [
        f"# Accuracy parity on {kind} test split",
        "",
        f"Reference: Keras model `{ref['path']}`"
        + (f" on {ref['runtime']} ({', '.join(ref.get('providers', []))})" if ref.get("runtime") else "")
        + f", accuracy **{ref['accuracy']:.2%}** "
        f"(95% CI {ref['accuracy_ci95'][0]:.2%} to {ref['accuracy_ci95'][1]:.2%}) on {ref['images']:,} images.",
    ]
    if dataset:
        lines += ["", f"Data: `{dataset['source']}` ({dataset['kind']}, {len(report.class_names)} classes, "
                  f"fingerprint `{dataset['fingerprint']['sha256'][:16]}...`). Preprocessing: "
                  f"{report.preprocessing.describe()}. The model outputs **{ref.get('output', 'logits')}** "
                  f"({ref.get('output_evidence', '')}); score differences below are in that space."]
    lines += [
        "",
        "| variant | size (bytes) | accuracy | 95% CI | diff (pts) | diff 95% CI (pts) | agreement | "
        f"disagreements | McNemar p | max abs {scores} diff | mean abs {scores} diff | gates |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, v in report.variants.items():
        m = v.metrics
        lo, hi = m["accuracy_ci95"]
        dlo, dhi = m["accuracy_diff_ci95_points"]
        verdict = verdict_cell(v.verdict, v.gates)
        if "informational" in m:
            would = [Verdict.from_json(g) for g in m["gates_if_enforced"]]
            status = combine(would)
            verdict = "not enforced (plain int8 before accuracy control): would " + (
                "pass" if status == PASS else f"be {status}: " + "; ".join(
                    f"{g.metric} = {g.value:.4g}" for g in would if g.status == status))
        lines.append(
            f"| {name} | {m['bytes']:,} | {m['accuracy']:.2%} | {lo:.2%} to {hi:.2%} | "
            f"{m['accuracy_diff_points']:+.2f} | {dlo:+.2f} to {dhi:+.2f} | {m['agreement']:.2%} | "
            f"{m['disagreements']} | {m['mcnemar_p']:.3g} | {m['max_abs_logit_diff']:.3g} | "
            f"{m['mean_abs_logit_diff']:.3g} | {verdict} |"
        )
    failed_rows = report.context.get("failed") or []
    if failed_rows:
        lines += ["", f"**Could not be checked ({len(failed_rows)})**: the runtime could not load or run the file "
                  "(not counted as passing; the command exits 7):", ""]
        lines += [f"- `{f['key']}` on {f['runtime']} ({f['stage']}): {f['reason']}" for f in failed_rows]
    skipped = report.context.get("skipped") or []
    if skipped:
        lines += ["", "Not checked (and not counted as passing):", ""]
        lines += [f"- `{s['variant']}` on {s['runtime']}: {s['reason']}" for s in skipped]
    for name, v in report.variants.items():
        m = v.metrics
        if "agreement_with_litert" in m:
            lines += ["", f"`{name}` ran under TFLM on {m['images_used']} test images (`--micro-images`); "
                      f"its predictions agree with the LiteRT interpreter's on the same model bytes for "
                      f"{m['agreement_with_litert']:.2%} of them ({m['disagreements_with_litert']} disagreements, "
                      f"max abs {scores} difference {m['max_abs_logit_diff_vs_litert']:.3g})."]
    lines += control_markdown(report.context.get("accuracy_control", {}),
                              {name: v.metrics for name, v in report.variants.items()})
    names = report.class_names or [str(k) for k in range(len(ref["per_class_accuracy"]))]
    lines += [
        "",
        "Gates: float variants agree on >= "
        f"{gates.float_min_agreement}% of images and max abs {scores} diff <= {gates.float_max_logit_diff:g}; "
        f"fp16 and dynamic lose at most {gates.reduced_max_accuracy_loss} points; int8 variants lose at most "
        f"{gates.int8_max_accuracy_loss} points and agree on >= {gates.int8_min_agreement}%; TFLM agrees with "
        f"LiteRT on >= {gates.micro_min_agreement_with_litert}%. Each is a verdict on its 95% interval: pass when "
        "the interval lies within the bound, fail when it lies beyond it, inconclusive when it straddles it (the "
        "images cannot tell; the line says about how many would); the largest logit difference is measured on "
        "every image and decides on its value. Inconclusive exits 0, or 4 with `--strict`.",
        "",
        "## Per-class accuracy",
        "",
        "Reference accuracy per class, and each variant's difference from it (points, variant minus reference).",
        "",
        "| class | reference | " + " | ".join(report.variants) + " |",
        "|---|---:|" + "---:|" * len(report.variants),
    ]
    for k, name in enumerate(names):
        acc = ref["per_class_accuracy"][k]
        diffs = [v.metrics["per_class_accuracy_diff_points"][k] for v in report.variants.values()]
        cells = ["-" if d is None else f"{d:+.2f}" for d in diffs]
        lines.append(f"| {name} | {'-' if acc is None else f'{acc:.2%}'} | " + " | ".join(cells) + " |")
    lines += ["", "Confusion matrices (rows: true class, columns: predicted; classes in the order above) are in "
              "parity.json.", ""]
    return "\n".join(lines)


def control_markdown(records: dict, variants: dict[str, dict], heading: str = "##") -> list[str]:
    """Accuracy-controlled variants (``records``: their manifest records): the test-set figures
    beside the plain int8 ones (``variants``: parity metrics by name), and the search's steps
    (measured on the validation split at export)."""
    lines: list[str] = []
    for name, record in records.items():
        lines += ["", f"{heading} Accuracy-controlled `{name}`", "", record["outcome"] + "."]
        budget = record.get("budget", {})
        lines += ["", f"Budget: the upper 95% bound of the accuracy drop on the {record.get('validation', 'validation split')} "
                  f"<= {budget.get('max_accuracy_drop_points')} points, at most {budget.get('max_fallback_layers')} "
                  f"layer(s) changed, levels {', '.join(budget.get('allowed_levels', []))}"
                  + (f"; built with {record['tool']}" if record.get("tool") else "") + "."
                  + (" Full-integer: every layer is int8 or int16x8." if record.get("int8_only")
                     else " **Not full-integer**: some layers run in float (`int8_only: false`).")]
        rows = [(label, variants.get(key)) for label, key in (("plain int8", f"{name}:plain"),
                                                               ("accuracy-controlled", name))]
        if all(v is not None for _, v in rows):
            lines += ["", "Test set (the final figures; the search never saw it):", "",
                      "| model | bytes | accuracy | diff (pts) | diff 95% CI (pts) | agreement |", "|---|---:|---:|---:|---|---:|"]
            for label, m in rows:
                lines.append(f"| {label} | {m['bytes']:,} | {m['accuracy']:.2%} | {m['accuracy_diff_points']:+.2f} | "
                             f"{m['accuracy_diff_ci95_points'][0]:+.2f} to {m['accuracy_diff_ci95_points'][1]:+.2f} | "
                             f"{m['agreement']:.2%} |")
        steps = record.get("steps") or []
        if steps:
            lines += ["", "Search steps (validation split; latency: batch 1, one thread, p50 on this machine):", "",
                      "| step | change | accuracy | drop (pts) | drop upper 95% | bytes | +bytes | p50 ms | +p50 ms |",
                      "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
            plain = record["plain"]
            lines.append(f"| plain | the exporter's plain int8 | {plain['accuracy']:.2%} | {plain['drop_points']:+.2f} | "
                         f"{plain['drop_upper_points']:.2f} | {plain['bytes']:,} | | {plain['p50_ms_batch1']:.3f} | |")
            for st in steps:
                change = f"`{st['layer']}` ({st['op']}) {st['from']} -> {st['to']}" if "layer" in st else st.get("change", "")
                chosen = " **(kept)**" if st["step"] == record.get("chosen_step") else ""
                lines.append(f"| {st['step']}{chosen} | {change} | {st['accuracy']:.2%} | {st['drop_points']:+.2f} | "
                             f"{st['drop_upper_points']:.2f} | {st['bytes']:,} | {st.get('bytes_added', 0):+,} | "
                             f"{st['p50_ms_batch1']:.3f} | {st.get('p50_ms_added', 0.0):+.3f} |")
    return lines


def plot_disagreements(report: ParityReport, path: Path, per_variant: int = 12) -> None:
    """A grid of the test images on which each variant disagrees with the reference (read from the
    dataset again: only these images, never the whole test split)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for name, v in report.variants.items():
        idx = np.arange(len(report.labels)) if v.indices is None else v.indices
        wrong = idx[v.predictions != report.reference_predictions[idx]][:per_variant]
        by_image = dict(zip(idx.tolist(), v.predictions.tolist(), strict=True))
        rows.append((name, wrong, by_image))
    rows = [r for r in rows if len(r[1])]
    names = report.class_names or [str(k) for k in range(int(report.labels.max()) + 1)]

    def label(k) -> str:
        text = names[k] if k < len(names) else str(k)
        return text if len(text) <= 10 else text[:9] + "…"

    if not rows:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "No variant disagrees with the reference on any test image.",
                ha="center", va="center")
    else:
        shown = np.unique(np.concatenate([r[1] for r in rows]))
        pictures = dict(zip(shown.tolist(), report.preprocessing.read_raw(report.test, shown), strict=True))
        fig, axes = plt.subplots(len(rows), per_variant, figsize=(per_variant * 1.1, len(rows) * 1.5),
                                 squeeze=False)
        for r, (name, idx, by_image) in enumerate(rows):
            for col in range(per_variant):
                ax = axes[r][col]
                ax.axis("off")
                if col < len(idx):
                    i = int(idx[col])
                    img = pictures[i]
                    if img.shape[-1] == 1:
                        ax.imshow(img[..., 0], cmap="gray_r", vmin=0, vmax=255)
                    else:
                        ax.imshow(img)
                    ax.set_title(f"#{i} y={label(report.labels[i])}\nref={label(report.reference_predictions[i])} "
                                 f"var={label(by_image[i])}", fontsize=6)
            axes[r][0].text(-0.5, 0.5, name, transform=axes[r][0].transAxes, ha="right", va="center",
                            fontsize=8)
        fig.suptitle("Test images where a variant disagrees with the Keras reference", fontsize=9)
    artifacts.atomic_savefig(fig, path)


def predictions_path(json_path: Path) -> Path:
    """Where the per-image predictions of a parity JSON file are: beside it, ``*-predictions.npz``."""
    json_path = Path(json_path)
    return json_path.with_name(json_path.stem + "-predictions.npz")


def save_predictions(report: ParityReport, path: Path) -> None:
    """Every image's label and prediction (reference and each variant; a sampled variant with its
    indices), so that `toolkit gate` can compare two exports image by image."""
    import io

    arrays = {"labels": report.labels.astype(np.int32), "reference": report.reference_predictions.astype(np.int32)}
    for name, v in report.variants.items():
        arrays[f"variant:{name}"] = v.predictions.astype(np.int32)
        if v.indices is not None:
            arrays[f"indices:{name}"] = v.indices.astype(np.int64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    artifacts.atomic_write_bytes(path, buf.getvalue())


def write_outputs(report: ParityReport, cfg: ParityConfig) -> dict:
    """parity.json (or --json PATH), its per-image predictions, parity.md and the disagreement PNG."""
    exports = Path(cfg.exports)
    doc = report_json(report, cfg)
    json_path = Path(cfg.json_path) if cfg.json_path else exports / PARITY_JSON
    doc["predictions_file"] = predictions_path(json_path).name
    save_predictions(report, predictions_path(json_path))
    artifacts.atomic_write_json(json_path, doc)
    artifacts.atomic_write_text(exports / PARITY_MD, markdown(report, cfg.gates))
    plot_disagreements(report, exports / PARITY_PNG)
    return {"json": json_path, "predictions": predictions_path(json_path), "markdown": exports / PARITY_MD,
            "png": exports / PARITY_PNG}
