"""Accuracy-controlled int8 on a model where plain int8 fails: the search's wall time and its
per-step table, and the final test-set figures beside plain int8's.

    python benchmarks/accuracy_control.py [--work DIR] [--out benchmarks/results] [--data-dir DIR]

The model: an MLP (784-384-10, ReLU), 8 epochs of Adam on MNIST's 55,000 training images, seed 0,
then one hidden unit scaled up 1000x (its incoming weights and bias x1000, its outgoing weights
/1000: ReLU is positively homogeneous, so the float model computes the same function). Every
image's hidden tensor holds one channel about 1000x the others: not a rare tail a range estimator
could clip, so per-tensor int8 activations leave the other channels a few steps, and only a wider
activation type or float keeps them. (The standardized-pixel MLP this benchmark used before issue
#23 is handled by plain int8 now: `train_standardized`, measured in benchmarks/PTQ.md.)

Runs `toolkit export --format all --quantize fp16 int8 --max-accuracy-drop 0.3` twice (two
directories, to show the search's wall-time spread and that both runs give the same bytes), then
`toolkit parity` on the first. Writes benchmarks/results/accuracy-control.json and
benchmarks/ACCURACY_CONTROL.md (every number from the JSON).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import BENCHMARKS, README, RESULTS, mnist_array, replace_block, run_toolkit

from toolkit import schema
from toolkit.artifacts import atomic_write_json, atomic_write_text, read_json
from toolkit.exportdir import ExportDir
from toolkit.provenance import provenance, sha256_file

BUDGET = 0.3
EPOCHS, HIDDEN = 8, 384


SCALE = 1000.0


def training_split(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The toolkit's MNIST training split (the 55,000 images after the validation split), x / 255."""
    from toolkit.datasets.mnist import VALIDATION_SIZE

    x = mnist_array(data_dir, "train_images").reshape(-1, 28, 28, 1).astype(np.float32)[VALIDATION_SIZE:] / 255.0
    return x, mnist_array(data_dir, "train_labels").astype(np.int64)[VALIDATION_SIZE:]


def train(path: Path, data_dir: Path) -> dict:
    """The outlier-channel MLP (see the module's docstring)."""
    import keras
    from keras import layers

    x, y = training_split(data_dir)
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    h = layers.Dense(HIDDEN, activation="relu", name="hidden")(layers.Flatten()(inp))
    model = keras.Model(inp, layers.Dense(10, name="logits")(h), name="outlier_mlp")
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=EPOCHS, verbose=0)
    seconds = time.perf_counter() - start
    hidden, logits = model.get_layer("hidden"), model.get_layer("logits")
    (w1, b1), (w2, b2) = hidden.get_weights(), logits.get_weights()
    active = np.maximum(x[:2000].reshape(2000, -1) @ w1 + b1, 0)
    unit = int(np.argmax(np.median(active, axis=0)))  # the unit the median image uses most
    w1[:, unit] *= SCALE
    b1[unit] *= SCALE
    w2[unit] /= SCALE
    hidden.set_weights([w1, b1])
    logits.set_weights([w2, b2])
    model.save(path)
    acts = np.maximum(x[:2000].reshape(2000, -1) @ w1 + b1, 0)
    others = np.delete(acts, unit, axis=1)
    return {"path": path.name, "sha256": sha256_file(path), "train_seconds": round(seconds, 1),
            "architecture": f"Flatten -> Dense({HIDDEN}, relu) -> Dense(10) logits, hidden unit {unit} scaled "
                            f"{SCALE:g}x (outgoing weights /{SCALE:g}: the same function)",
            "training": f"Adam 1e-3, batch 128, {EPOCHS} epochs on the 55,000 training images, seed 0",
            "outlier_channel": {"unit": unit, "median_image_value": float(np.median(acts[:, unit])),
                                "median_image_max_of_the_others": float(np.median(others.max(1))),
                                "images": 2000}}


def train_standardized(path: Path, data_dir: Path) -> dict:
    """The standardized-pixel MLP: per-pixel standardization (scikit-learn's StandardScaler rule) in a
    Normalization layer, then 784-384-10; rarely inked pixels standardize to values in the hundreds."""
    import keras
    from keras import layers

    x, y = training_split(data_dir)
    keras.utils.set_random_seed(0)
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean, var = flat.mean(0), flat.var(0)
    var[var == 0] = 1.0
    inp = keras.Input((28, 28, 1), name="image")
    h = layers.Normalization(mean=mean, variance=var, name="standardize")(layers.Flatten()(inp))
    h = layers.Dense(HIDDEN, activation="relu", name="hidden")(h)
    model = keras.Model(inp, layers.Dense(10, name="logits")(h), name="standardized_mlp")
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=EPOCHS, verbose=0)
    seconds = time.perf_counter() - start
    model.save(path)
    z = (flat - mean) / np.sqrt(var)
    return {"path": path.name, "sha256": sha256_file(path), "train_seconds": round(seconds, 1),
            "architecture": f"Flatten -> Normalization(per-pixel mean/variance, zero variance -> 1) -> "
                            f"Dense({HIDDEN}, relu) -> Dense(10) logits",
            "training": f"Adam 1e-3, batch 128, {EPOCHS} epochs on the 55,000 training images, seed 0",
            "standardized_training_pixels": {"max": float(z.max()), "p99.9_abs": float(np.percentile(np.abs(z), 99.9))}}


def toolkit(*args: str, env: dict) -> tuple[int, float, str]:
    start = time.perf_counter()
    proc = run_toolkit(*args, env=env, capture=True)
    return proc.returncode, time.perf_counter() - start, proc.stdout + proc.stderr[-2000:]


def controlled_variants() -> list[str]:
    """The variants `--format all --quantize int8` makes: the ones the search runs on, in the registry's order."""
    from toolkit import exporters

    return [e.variant for e in exporters.select("all", ("int8",))]


def export_twice(model: Path, work: Path, env: dict) -> list[dict]:
    """`toolkit export --max-accuracy-drop` into two directories: the search's wall-time spread, the same bytes."""
    runs = []
    for run in (1, 2):
        exports = work / f"exports-{run}"
        command = ["export", "--quiet", "--model", str(model), "--exports", str(exports), "--force",
                   "--format", "all", "--quantize", "fp16", "int8", "--max-accuracy-drop", str(BUDGET)]
        rc, wall, output = toolkit(*command, env=env)
        manifest = schema.Manifest.read(exports)
        runs.append({"run": run, "command": "toolkit " + " ".join(command[:3] + ["MODEL"] + command[4:5] + ["DIR"]
                                                                    + command[6:]),
                     "exit_code": rc, "wall_seconds": round(wall, 2), "manifest": manifest, "output_tail": output[-1500:]})
        print(f"export run {run}: exit {rc} in {wall:.1f} s", flush=True)
    return runs


def variant_records(runs: list[dict], parity: schema.Parity) -> dict:
    """Per controlled variant: its search record, bytes, and the test-set figures beside plain int8's."""
    first = runs[0]["manifest"].by_variant()
    second = runs[1]["manifest"].by_variant()
    variants = {}
    for name in controlled_variants():
        entry = first.get(name)
        if entry is None:
            failed = next((f for f in runs[0]["manifest"].failed if f["variant"] == name), None)
            variants[name] = {"exported": False, "reason": failed["reason"] if failed else "not exported"}
            continue
        test = parity.variants.get(name, {})
        plain = parity.variants.get(f"{name}:plain", {})
        variants[name] = {
            "exported": True,
            "bytes": entry.size,
            "sha256": entry.sha256,
            "same_bytes_in_run_2": (second[name].sha256 if name in second else None) == entry.sha256,
            "int8_only": entry.get("int8_only"),
            "record": entry["accuracy_control"],
            "search_seconds": [r["manifest"].by_variant()[name]["accuracy_control"].get("search_seconds") for r in runs],
            "test": {k: test.get(k) for k in ("accuracy", "accuracy_diff_points", "accuracy_diff_ci95_points",
                                              "agreement", "disagreements", "gates", "passed",
                                              "agreement_with_litert", "images_used")},
            "test_plain": {k: plain.get(k) for k in ("accuracy", "accuracy_diff_points", "accuracy_diff_ci95_points",
                                                     "agreement", "gates_if_enforced")} if plain else None,
        }
    return variants


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TOOLKIT_DATA_DIR", "../shared/data/mnist")))
    ap.add_argument("--from-json", action="store_true",
                    help="only rewrite ACCURACY_CONTROL.md and the README block from results/accuracy-control.json")
    args = ap.parse_args()
    if args.from_json:
        write_texts(read_json(args.out / "accuracy-control.json"))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="toolkit-accuracy-control-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir.resolve()
    env = {**os.environ, "TOOLKIT_DATA_DIR": str(data_dir)}
    model = ExportDir(work).model_path
    info = train(model, data_dir)
    print(f"trained {info['architecture']} in {info['train_seconds']} s", flush=True)
    runs = export_twice(model, work, env)
    parity_json = work / schema.PARITY
    rc, wall, output = toolkit("parity", "--quiet", "--exports", str(work / "exports-1"), "--json", str(parity_json),
                               "--micro-images", "all", env=env)
    parity = schema.Parity.read_file(parity_json)
    print(f"parity: exit {rc} in {wall:.1f} s", flush=True)
    doc = {
        "what": "accuracy-controlled int8 on a model where plain int8 fails",
        "command": "python benchmarks/accuracy_control.py",
        "budget_points": BUDGET,
        "model": info,
        "reference_test_accuracy": parity.reference["accuracy"],
        "tflite_fp16_bytes": runs[0]["manifest"].by_variant()["tflite-fp16"].size,
        "export_runs": [{k: v for k, v in r.items() if k != "manifest"} for r in runs],
        "parity": {"exit_code": rc, "wall_seconds": round(wall, 2), "passed": parity["passed"]},
        "variants": variant_records(runs, parity),
        "provenance": provenance(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "accuracy-control.json", doc)
    write_texts(doc)
    print(f"wrote {args.out / 'accuracy-control.json'}")

def write_texts(doc: dict) -> None:
    """benchmarks/ACCURACY_CONTROL.md and README's measured paragraph, from the JSON alone."""
    atomic_write_text(BENCHMARKS / "ACCURACY_CONTROL.md", markdown(doc))
    replace_block(README, "accuracy-control", readme_block(doc))
    print("wrote benchmarks/ACCURACY_CONTROL.md and README.md's accuracy-control block")


def changes(layers: dict) -> str:
    """'one layer to int16x8', 'two layers (one to float, one to int16x8)' from a recipe's layers."""
    words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    counts: dict[str, int] = {}
    for level in layers.values():
        counts[level] = counts.get(level, 0) + 1
    n = len(layers)
    if len(counts) == 1:
        return f"{words.get(n, n)} layer{'s' if n > 1 else ''} to {next(iter(counts))}"
    return f"{words.get(n, n)} layers (" + ", ".join(f"{words.get(c, c)} to {lv}" for lv, c in counts.items()) + ")"


def _outcome(v: dict) -> str:
    return "met" if v["record"].get("met") else "not met (exit 4, the best step kept)"


def readme_block(doc: dict) -> str:
    t, o, m = doc["variants"]["tflite-int8"], doc["variants"]["onnx-int8"], doc["variants"].get("tflite-micro", {})
    seconds = t["search_seconds"] + o["search_seconds"]
    def size(v: dict) -> str:
        fp16 = doc["tflite_fp16_bytes"]
        shown = f"{fp16 / v['bytes']:.2f}x smaller than fp16" if v["bytes"] < fp16 else f"{v['bytes'] / fp16:.2f}x the size of fp16"
        return f"{shown}, {latency(v)}"

    text = (
        f"Measured (`python benchmarks/accuracy_control.py`, [benchmarks/ACCURACY_CONTROL.md](benchmarks/ACCURACY_CONTROL.md)): "
        f"an MLP whose hidden tensor holds one channel {SCALE:g}x the others (the same function in float; not a rare "
        f"tail a range estimator could clip) scores "
        f"{doc['reference_test_accuracy']:.2%} on the test set in Keras and {t['test_plain']['accuracy']:.2%} as plain "
        f"int8 ({t['test_plain']['agreement']:.2%} agreement). With `--max-accuracy-drop {doc['budget_points']}` the search must make parity's int8 gates pass on the "
        f"validation split, the loss within the budget and agreement with Keras at 99.5% "
        f"([docs/verdicts.md](docs/verdicts.md)): `onnx-int8` changes {changes(o['record']['layers'])} and scores "
        f"{o['test']['accuracy']:.2%} with {o['test']['agreement']:.2%} agreement ({o['bytes']:,} bytes, {size(o)}, "
        f"{'' if o['int8_only'] else 'not '}full-integer); `tflite-int8` changes {changes(t['record']['layers'])}, "
        f"budget {_outcome(t)}, and scores {t['test']['accuracy']:.2%} with {t['test']['agreement']:.2%} agreement "
        f"({t['bytes']:,} bytes, {size(t)}, {'' if t['int8_only'] else 'not '}full-integer)")
    if m.get("exported"):
        text += (f"; `tflite-micro`, with integer steps only, changes {changes(m['record']['layers'])}, budget "
                 f"{_outcome(m)} ({latency(m)}; TFLM agrees with LiteRT on {m['test']['agreement_with_litert']:.2%} "
                 "of the test set)")
    text += (f". Each search took {min(seconds):.1f} to {max(seconds):.1f} s here, and two runs gave the same bytes"
             if all(v.get("same_bytes_in_run_2") for v in (t, o)) else
             f". Each search took {min(seconds):.1f} to {max(seconds):.1f} s here")
    return text + "."


RUNTIME = {"tflite": "LiteRT", "onnx": "onnxruntime"}  # what the search times each format's candidates on


def latency(v: dict) -> str:
    """The controlled file's batch-1 p50 beside plain int8's, as the search timed them (its record): on LiteRT
    for both TFLite variants (tflite-micro's too: not a TFLM timing), on onnxruntime for ONNX."""
    record = v["record"]
    chosen = next((s for s in record["steps"] if s["step"] == record.get("chosen_step")), None)
    if chosen is None or not record.get("p50_vs_plain"):
        return "latency not recorded"
    return (f"batch-1 p50 on {RUNTIME.get(record['format'], record['format'])} {chosen['p50_ms_batch1']:.3f} ms vs "
            f"plain int8's {record['plain']['p50_ms_batch1']:.3f} ms: {record['p50_vs_plain']:.2f}x")


def all_gates(test: dict) -> str:
    gates = test.get("gates") or []
    if not gates:
        return "none"
    shown = [g for g in gates if g.get("status", "pass" if g["passed"] else "fail") != "pass"]
    return "pass" if not shown else "; ".join(f"{g['metric']} {g['value']:.2f}: {g.get('status', 'fail').upper()}"
                                              for g in shown)


def markdown(doc: dict) -> str:
    m = doc["model"]
    machine = doc["provenance"].get("machine", {})
    lines = [
        "# Accuracy-controlled int8",
        "",
        f"Written by `{doc['command']}` from `results/accuracy-control.json`; machine: "
        f"{machine.get('cpu', machine) if isinstance(machine, dict) else machine}.",
        "",
        f"Model: {m['architecture']}; {m['training']} ({m['train_seconds']} s). Keras test accuracy "
        f"{doc['reference_test_accuracy']:.2%}. Why int8 fails on it: on the median one of "
        f"{m['outlier_channel']['images']:,} training images the scaled unit reads "
        f"{m['outlier_channel']['median_image_value']:.0f} while the largest of the other channels reads "
        f"{m['outlier_channel']['median_image_max_of_the_others']:.1f}: one per-tensor int8 range for both.",
        "",
        f"Budget: `--max-accuracy-drop {doc['budget_points']}`. The search accepts a step when parity's int8 gates "
        "pass on the validation split (the loss's 95% interval within the budget, agreement with Keras at 99.5%: "
        "docs/verdicts.md); the test set is only for the figures below.",
        "",
        "| variant | plain int8 test accuracy | controlled test accuracy | diff vs Keras (pts, 95% CI) | agreement | "
        "accuracy gate | all int8 gates | layers changed | full-integer | bytes | fp16 / bytes | search s (run 1, run 2) | same bytes in run 2 |",
        "|---|---:|---:|---|---:|---|---|---|---|---:|---:|---|---|",
    ]
    for name, v in doc["variants"].items():
        if not v["exported"]:
            lines.append(f"| {name} | not exported: {v['reason']} ||||||||||||")
            continue
        t, p, r = v["test"], v["test_plain"], v["record"]
        gate = next((g for g in t.get("gates") or [] if g["metric"] == "accuracy_loss_points"), None)
        lo, hi = t["accuracy_diff_ci95_points"] or (float("nan"), float("nan"))
        changed = ", ".join(f"`{k}` -> {lv}" for k, lv in r["layers"].items()) or "none"
        lines.append(
            f"| {name} | {p['accuracy']:.2%} | {t['accuracy']:.2%} | {t['accuracy_diff_points']:+.2f} ({lo:+.2f} to "
            f"{hi:+.2f}) | {t['agreement']:.2%} | {'n/a' if gate is None else gate.get('status', 'pass' if gate['passed'] else 'fail')} | "
            f"{all_gates(t)} | "
            f"{changed} | {'yes' if v['int8_only'] else 'no'} | {v['bytes']:,} | {doc['tflite_fp16_bytes'] / v['bytes']:.2f}x | "
            f"{', '.join(f'{s:.1f}' for s in v['search_seconds'])} | {'yes' if v['same_bytes_in_run_2'] else 'NO'} |"
            if p else f"| {name} | {'(the tflite-int8 bytes)' if v['sha256'] == doc['variants']['tflite-int8'].get('sha256') else '-'} | {t['accuracy']:.2%} on {t['images_used']} images under TFLM | "
            f"TFLM agrees with LiteRT on {t['agreement_with_litert']:.2%} of them | | | {all_gates(t)} | {changed} | "
            f"{'yes' if v['int8_only'] else 'no'} | {v['bytes']:,} | | | {'yes' if v['same_bytes_in_run_2'] else 'NO'} |")
    for name, v in doc["variants"].items():
        if not v["exported"] or not v["record"].get("steps"):
            continue
        r = v["record"]
        lines += ["", f"## {name}: search steps", "", r["outcome"] + ".", "",
                  "Validation split; latency: batch 1, one thread, p50 (95% CI) on this machine.", "",
                  "| step | change | accuracy | drop (pts) | drop upper 95% | agreement | bytes | +bytes | p50 ms | +p50 ms |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        pl = r["plain"]
        lines.append(f"| plain | the exporter's plain int8 | {pl['accuracy']:.2%} | {pl['drop_points']:+.2f} | "
                     f"{pl['drop_upper_points']:.2f} | {pl['agreement']:.2%} | {pl['bytes']:,} | | "
                     f"{pl['p50_ms_batch1']:.3f} | |")
        for st in r["steps"]:
            change = f"`{st['layer']}` ({st['op']}) {st['from']} -> {st['to']}" if "layer" in st else st["change"]
            kept = " (kept)" if st["step"] == r["chosen_step"] else ""
            lo, hi = st["p50_ci95_ms_batch1"]
            lines.append(f"| {st['step']}{kept} | {change} | {st['accuracy']:.2%} | {st['drop_points']:+.2f} | "
                         f"{st['drop_upper_points']:.2f} | {st['agreement']:.2%} | {st['bytes']:,} | "
                         f"{st.get('bytes_added', 0):+,} | "
                         f"{st['p50_ms_batch1']:.3f} ({lo:.3f}-{hi:.3f}) | {st.get('p50_ms_added', 0.0):+.3f} |")
    lines += ["", "Export runs: " + "; ".join(f"run {r['run']}: exit {r['exit_code']}, {r['wall_seconds']} s wall "
                                              "(training-free: conversion, search and checks)" for r in doc["export_runs"]),
              f"Parity (`toolkit parity --micro-images all`): exit {doc['parity']['exit_code']}, "
              f"{'all gates pass' if doc['parity']['passed'] else 'some gates fail (see the agreement column)'}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
