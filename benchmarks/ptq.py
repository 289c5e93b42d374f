"""Post-training int8 and fine-tuned int8 side by side: the toolkit against its old default and the peers,
on models the toolkit did not train (issues #23, #33, #35).

    python benchmarks/ptq.py [--models efficientnetb0 mobilenetv2 ...] [--work DIR] [--out benchmarks/results]
                             [--nncf-python PY] [--from-json]

The data: MNIST upsampled to 32x32 RGB (bilinear), an .npz the toolkit reads as it reads a user's: the
first 20,000 training images (what the models train on), 2,000 further training images as ``x_val/y_val``
(validation images the models never trained on: the toolkit's int8 choices are made on them, and only the
toolkit uses them; the peers calibrate on the same 500 training images as the toolkit and choose nothing)
and the 10,000 test images. The small-data models (``-small``) train on the first 2,000 images, with 190
validation images. Each Keras Applications model is built with ``weights=None`` at 32x32x3 and trained
briefly (Adam, seed 0); the seed CNN and the standardized-pixel MLP of benchmarks/accuracy_control.py are
the project's own (MNIST's own validation split: its first 5,000 training images, which they never train on).

Per model, in one run on this machine (each toolkit export also checked by `toolkit parity` on the whole
test set, its verdict in the table):

- float (the toolkit's ``tflite``, ``onnx``);
- the toolkit's default int8 (``toolkit export``: ``--calibration-method auto``, toolkit/ranges.py), its
  previous default (``--calibration-method minmax``), the layer search (``--max-accuracy-drop 0.3``), learned
  weight rounding (``--learned-rounding``, toolkit/quantize/rounding.py, with its time per weight grid) and
  quantization-aware fine-tuning (``--fine-tune``, toolkit/quantize/finetune.py, with its time);
- onnxruntime ``quantize_static`` with its defaults on the toolkit's float ONNX;
- ai-edge-quantizer's default recipe (``static_wi8_ai8``) on the toolkit's float TFLite;
- NNCF's default ``nncf.quantize`` (ONNX backend) on the toolkit's float ONNX, when a separate
  virtualenv with NNCF is given (``--nncf-python``; NNCF is not a dependency of the toolkit).

For each file: test accuracy with its 95% Wilson interval, agreement with Keras, size, batch-1 p50 latency
on its natural runtime (LiteRT for .tflite, onnxruntime for .onnx) and, for every .onnx, on OpenVINO too
(NNCF's Q/DQ files are made for OpenVINO); one thread, one file after another (not interleaved:
PTQ.md states how far one file timed twice moved in a run). Whether the default int8 is within 0.3 points of each peer is a
verdict on the paired interval of the accuracy difference on the same test images (toolkit/verdicts.py),
never a point estimate; the same verdict on the agreement with Keras (a peer can score above the float model by
departing from it). ``--from-json`` computes that one from the predictions for runs recorded before it. Per-image predictions go to results/ptq-predictions.npz. Writes results/ptq.json
and PTQ.md (every number from the JSON and the predictions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import (
    BENCHMARKS,
    README,
    RESULTS,
    artifact_files,
    mnist_array,
    parser,
    replace_block,
    run_toolkit,
)

from toolkit import schema
from toolkit.artifacts import atomic_write_json, atomic_write_text, read_json
from toolkit.exportdir import ExportDir
from toolkit.provenance import provenance

TRAIN_IMAGES = 20_000
BUDGET = 0.3
MINMAX = "toolkit --calibration-method minmax"
# labels of earlier runs, as the texts show them (the JSON keeps what the run wrote)
DISPLAY = {"toolkit minmax (previous default)": MINMAX}


def shown(label: str) -> str:
    for old, new in DISPLAY.items():
        label = label.replace(old, new)
    return label
SIZE = 32
VAL_IMAGES = 2_000  # MNIST training images after the first TRAIN_IMAGES: never trained on
SMALL_TRAIN, SMALL_VAL = 2_000, 190  # the small-data cases: fewer training images, under 200 for validation
APPLICATIONS = {  # name -> (constructor, epochs, small data)
    "efficientnetb0": ("EfficientNetB0", 3, False),
    "mobilenetv2": ("MobileNetV2", 3, False),
    "mobilenetv3small": ("MobileNetV3Small", 3, False),
    "resnet50": ("ResNet50", 2, False),
    "efficientnetb0-small": ("EfficientNetB0", 10, True),
    "mobilenetv2-small": ("MobileNetV2", 10, True),
}
OWN = ("seed-cnn", "standardized-mlp")
PREDICTIONS = "ptq-predictions.npz"
FINE_TUNE = "toolkit --fine-tune"
LEARNED = "toolkit --learned-rounding"
# the weight steps' columns in the summary: (label, the prefix of its row fields (_seconds, _kept), its words)
STEPS = ((LEARNED, "rounding", "learned-rounding time"), (FINE_TUNE, "fine_tune", "fine-tuning time"))
GRIDS = {"tflite-int8": "-127..127", "onnx-int8": "-64..64"}  # each int8 file's weight grid (learned rounding's keys)


def mnist_rgb(data_dir: Path, path: Path, small: bool = False, val_images: int | None = None) -> Path:
    """The .npz: 32x32 RGB uint8 images (bilinear upsampling of the 28x28 digits), with x_val/y_val (``val_images``
    of them where given: MNIST training images after the first TRAIN_IMAGES, never trained on)."""
    if path.exists():
        return path
    import tensorflow as tf

    def rgb(x: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(x), 2000):
            up = tf.image.resize(x[i : i + 2000, ..., None].astype(np.float32), (SIZE, SIZE), "bilinear").numpy()
            out.append(np.repeat(np.clip(np.round(up), 0, 255).astype(np.uint8), 3, axis=-1))
        return np.concatenate(out)

    train, val = (SMALL_TRAIN, SMALL_VAL) if small else (TRAIN_IMAGES, val_images or VAL_IMAGES)
    x_all, y_all = mnist_array(data_dir, "train_images"), mnist_array(data_dir, "train_labels")
    x_train, y_train = x_all[:train], y_all[:train]
    x_val, y_val = x_all[TRAIN_IMAGES : TRAIN_IMAGES + val], y_all[TRAIN_IMAGES : TRAIN_IMAGES + val]
    x_test = mnist_array(data_dir, "test_images")
    y_test = mnist_array(data_dir, "test_labels")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=rgb(x_train), y_train=y_train, x_val=rgb(x_val), y_val=y_val, x_test=rgb(x_test),
             y_test=y_test)
    return path


def train_application(name: str, npz: Path, out: Path) -> dict:
    import keras

    ctor, epochs, _ = APPLICATIONS[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, ctor)(weights=None, input_shape=(SIZE, SIZE, 3), classes=10,
                                              classifier_activation=None)
    for layer in model.layers:  # trained briefly: BatchNormalization's moving statistics must keep up
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = 0.9
    data = np.load(npz)
    # the toolkit's rule: raw 0..255 pixels for a model that starts with its own Rescaling, else x / 255
    rescales = any(type(layer).__name__ == "Rescaling" for layer in model.layers[:4])
    x, y = data["x_train"].astype(np.float32) / (1.0 if rescales else 255.0), data["y_train"].astype(np.int64)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.perf_counter()
    hist = model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    model.save(out)
    return {"architecture": f"keras.applications.{ctor}(weights=None, input_shape=(32, 32, 3), classes=10)"
                            + (" (small data)" if APPLICATIONS[name][2] else ""),
            "training": f"Adam 1e-3, batch 64, {epochs} epochs on {len(x):,} images, seed 0, BatchNormalization "
                        f"momentum 0.9, pixels {'0..255 (the model rescales)' if rescales else 'x / 255'}",
            "train_seconds": round(time.perf_counter() - start, 1),
            "final_train_accuracy": round(float(hist.history["accuracy"][-1]), 4)}


def toolkit(*args: str) -> tuple[int, str]:
    proc = run_toolkit(*args, env={**os.environ, "TOOLKIT_NO_PROGRESS": "1"}, capture=True)
    return proc.returncode, proc.stderr[-3000:]


def _test_set(exports: Path, data_dir: Path):
    """The export's dataset and the preprocessing its manifest records."""
    from toolkit.datasets import reopen
    from toolkit.preprocess import Preprocessing

    manifest = schema.Manifest.read(exports)
    data = reopen(manifest.get("dataset"), data_dir=data_dir)
    prep = Preprocessing.from_json(manifest["preprocessing"])
    return data, prep


def evaluate(kind: str, path: Path, images: np.ndarray, labels: np.ndarray, reference: np.ndarray,
             predictions: dict, row: str) -> dict:
    """One file's figures; its per-image predictions go into ``predictions[row]``."""
    from toolkit.accuracy_control import p50_latency
    from toolkit.provenance import sha256_file
    from toolkit.stats import wilson_interval

    if kind == "tflite":
        from toolkit.runners.litert import LiteRTRunner

        runner, one = LiteRTRunner(path.read_bytes()), LiteRTRunner(path.read_bytes(), threads=1)
    else:
        from toolkit.runners.onnxrt import OnnxRuntimeRunner

        runner, one = OnnxRuntimeRunner(path), OnnxRuntimeRunner(path, threads=1)
    predicted = runner.infer_batched(images, 250).argmax(1)
    predictions[row] = predicted.astype(np.uint8)
    right = int((predicted == labels).sum())
    lo, hi = wilson_interval(right, len(labels), 0.95)
    x = one.prepare(images[:1])
    latency = p50_latency(lambda: one.run_raw(x))
    out = {"accuracy": right / len(labels), "accuracy_ci95": [lo, hi],
           "agreement": float((predicted == reference).mean()), "bytes": path.stat().st_size,
           "p50_ms_batch1": latency["p50_ms"], "p50_ci95_ms_batch1": latency["p50_ci95_ms"],
           "runtime": "litert" if kind == "tflite" else "onnxruntime", "images": int(len(labels)),
           "sha256": sha256_file(path)}
    if kind == "onnx":  # NNCF's Q/DQ files are made for OpenVINO: every .onnx is timed there too
        try:
            from toolkit.runners.openvino import OpenVINORunner

            ov = OpenVINORunner(path, threads=1)
            xo = ov.prepare(images[:1])
            out["openvino_p50_ms_batch1"] = p50_latency(lambda: ov.run_raw(xo))["p50_ms"]
        except Exception as exc:  # a file OpenVINO cannot compile: said in the table
            out["openvino_error"] = str(exc).strip().splitlines()[0][:200]
    return out


def peers(exports: Path, work: Path, calibration: np.ndarray, nncf_python: str | None) -> dict:
    """The peers' int8 files made from the toolkit's float exports: {name: (kind, path) or error}."""
    files = artifact_files(exports, schema.Manifest.read(exports))
    out: dict = {}
    # onnxruntime quantize_static, its defaults (QDQ, int8 activations and weights, per-tensor, MinMax)
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(range(0, len(calibration), 10))

        def get_next(self):
            i = next(self._it, None)
            return None if i is None else {"image": calibration[i : i + 10]}

    pre, ort_path = work / "float.pre.onnx", work / "ort-default.onnx"
    quant_pre_process(str(files["onnx"]), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(ort_path), Reader())
    out["onnxruntime quantize_static defaults"] = ("onnx", ort_path)
    # ai-edge-quantizer, its default recipe on the float TFLite
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(files["tflite"].read_bytes())
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    from ai_edge_litert.interpreter import Interpreter

    sig = Interpreter(model_content=files["tflite"].read_bytes()).get_signature_list()
    key = next(iter(sig))
    name = sig[key]["inputs"][0]
    qsv = q.calibrate({key: [{name: calibration[i : i + 1]} for i in range(len(calibration))]})
    aeq_path = work / "aeq-default.tflite"
    aeq_path.write_bytes(bytes(q.quantize(qsv).quantized_model))
    out["ai-edge-quantizer static_wi8_ai8"] = ("tflite", aeq_path)
    # NNCF, in its own virtualenv
    if nncf_python:
        np.save(work / "calibration.npy", calibration)
        nncf_path = work / "nncf-default.onnx"
        script = ("import sys, numpy as np, onnx, nncf\n"
                  "model = onnx.load(sys.argv[1]); x = np.load(sys.argv[2])\n"
                  "ds = nncf.Dataset([{'image': x[i:i+1]} for i in range(len(x))])\n"
                  "q = nncf.quantize(model, ds, subset_size=len(x))\n"
                  "onnx.save(q, sys.argv[3]); print(nncf.__version__)\n")
        proc = subprocess.run([nncf_python, "-c", script, str(files["onnx"]), str(work / "calibration.npy"),
                               str(nncf_path)], capture_output=True, text=True)
        if proc.returncode == 0:
            out[f"NNCF {proc.stdout.strip().splitlines()[-1]} nncf.quantize defaults"] = ("onnx", nncf_path)
        else:
            out["NNCF nncf.quantize defaults"] = f"failed: {proc.stderr.strip().splitlines()[-1][:300]}"
    return out


def train_model(name: str, npz: Path, mwork: Path, data_dir: Path, log) -> tuple[dict, str]:
    """The model's training record and the dataset its exports read (the model trained first when missing)."""
    model = ExportDir(mwork).model_path
    record_path = mwork / "train-record.json"
    if name in APPLICATIONS:
        if not model.exists():
            log(f"{name}: training")
            train = train_application(name, npz, model)
            record_path.write_text(json.dumps(train))
            return train, str(npz)
        return read_json(record_path), str(npz)
    if name == "seed-cnn":
        if not model.exists():
            rc, err = toolkit("train", "--exports", str(mwork), "--data-dir", str(data_dir), "--quiet")
            assert rc == 0, err
        return {"architecture": "the seed CNN (toolkit train defaults)"}, "mnist"
    import accuracy_control  # benchmarks/accuracy_control.py, beside this script

    if not model.exists():
        train = accuracy_control.train_standardized(model, data_dir)
        record_path.write_text(json.dumps(train, default=str))
        return train, "mnist"
    return read_json(record_path), "mnist"


def export_all(name: str, model: Path, dataset: str, mwork: Path, data_dir: Path, log, fine_tune: bool = True) -> dict:
    """The toolkit's int8 exports of the model (default, minmax, the search, fine-tuned unless ``fine_tune`` is
    False), each checked by `toolkit parity`: {label: its export directory, seconds and parity rows, or the error}."""
    variants: dict = {}
    for label, extra, folder in (("toolkit default", [], "default"),
                                 (MINMAX, ["--calibration-method", "minmax"], "minmax"),
                                 (f"toolkit --max-accuracy-drop {BUDGET}", ["--max-accuracy-drop", str(BUDGET)],
                                  "controlled"),
                                 (LEARNED, ["--learned-rounding"], "rounded"),
                                 *([(FINE_TUNE, ["--fine-tune"], "finetuned")] if fine_tune else [])):
        exports = mwork / folder
        start = time.perf_counter()
        rc, err = toolkit("export", "--model", str(model), "--dataset", dataset, "--data-dir", str(data_dir),
                          "--exports", str(exports), "--format", "tflite", "onnx", "--quantize", "none", "int8",
                          "--force", "--quiet", *extra)
        seconds = time.perf_counter() - start
        log(f"{name}: export {label}: exit {rc} in {seconds:.0f} s")
        if rc not in (0, 4, 7):
            variants[label] = {"error": err.strip().splitlines()[-1][:400]}
            continue
        prc, perr = toolkit("parity", "--exports", str(exports), "--data-dir", str(data_dir), "--quiet",
                            "--micro-images", "200")
        log(f"{name}: parity {label}: exit {prc}")
        manifest = schema.Manifest.read(exports)
        variants[label] = {"export_seconds": round(seconds, 1), "exports": exports, "export_exit": rc,
                           "parity": schema.Parity.read(exports).variants,
                           "grids": {step: {g: {"seconds": r.get("total_seconds"),
                                                "kept": "learned" if "model" in r else "own",
                                                **({"skipped": r["error_sources"]["costs"]["weights"]}
                                                   if r.get("skipped") else {})}
                                            for g, r in (manifest.get(step) or {}).items()}
                                     for step in ("learned_rounding", "fine_tuning")}}
    return variants


def _grid_fields(grids: dict, variant: str) -> dict:
    """A row's weight-step fields: the seconds of the learned rounding and the fine-tuning on its file's weight
    grid, and whether each kept the model's own weights (``own``) or its own (``learned``)."""
    out = {}
    for step, prefix in (("learned_rounding", "rounding"), ("fine_tuning", "fine_tune")):
        r = grids.get(step, {}).get(GRIDS.get(variant, ""))
        if r:
            out.update({f"{prefix}_seconds": r["seconds"], f"{prefix}_kept": r["kept"]})
            if r.get("skipped"):
                out[f"{prefix}_skipped"] = r["skipped"]
    return out


def toolkit_rows(variants: dict, images: np.ndarray, labels: np.ndarray, reference: np.ndarray,
                 predictions: dict) -> dict:
    """A row per file of the toolkit's exports (every file of the default export, the int8 files of the others)."""
    rows: dict = {}
    for label, v in variants.items():
        if "error" in v:
            rows[label] = v
            continue
        manifest = schema.Manifest.read(v["exports"])
        files = artifact_files(v["exports"], manifest)
        for e in manifest["artifacts"]:
            if label != "toolkit default" and e["quantization"] != "int8":
                continue
            row_name = e["variant"] if label == "toolkit default" else f"{e['variant']} ({label})"
            verdict = v["parity"].get(e["variant"], {})
            control = e.get("accuracy_control") or {}
            rows[row_name] = {**evaluate(e["format"], files[e["variant"]], images, labels, reference, predictions,
                                         row_name),
                              "made_by": label, "calibration": e.get("calibration", {}).get("estimator"),
                              **_grid_fields(v.get("grids", {}), e["variant"]),
                              "parity_verdict": verdict.get("verdict"),
                              "parity_gates": {g["metric"]: g.get("status") for g in verdict.get("gates", [])},
                              **({"control": {k: control.get(k) for k in ("met", "source", "layers", "int8_only",
                                                                           "p50_vs_plain", "outcome", "confirmation")}}
                                 if control else {})}
    return rows


def run_model(name: str, npz: Path, work: Path, data_dir: Path, nncf_python: str | None, log,
              predictions: dict, fine_tune: bool = True) -> dict:
    mwork = work / name
    mwork.mkdir(parents=True, exist_ok=True)
    model = ExportDir(mwork).model_path
    record: dict = {"model": name}
    record["train"], dataset = train_model(name, npz, mwork, data_dir, log)
    small = APPLICATIONS.get(name, (None, None, False))[2]
    train, val = (SMALL_TRAIN, SMALL_VAL) if small else (TRAIN_IMAGES, VAL_IMAGES)
    record["dataset"] = "mnist (28x28 grayscale; validation: its first 5,000 training images)" if dataset == "mnist" \
        else (f"MNIST upsampled to {SIZE}x{SIZE} RGB, {train:,} training images, {val:,} validation images the "
              "model never trained on (x_val), 10,000 test images")
    variants = export_all(name, model, dataset, mwork, data_dir, log, fine_tune)
    if not fine_tune:
        record["fine_tune_skipped"] = "not run (--skip-fine-tune)"
    base = mwork / "default"
    data, prep = _test_set(base, data_dir)
    images, labels = prep.load(data.test), np.asarray(data.test.labels)
    from toolkit.runners.keras import KerasRunner, load_keras_model

    reference = KerasRunner(load_keras_model(model)).infer_batched(images, 250).argmax(1)
    record["float_keras_accuracy"] = float((reference == labels).mean())
    mine: dict = {}
    rows = toolkit_rows(variants, images, labels, reference, mine)
    # the calibration images: the toolkit's sample of the training split, as `toolkit export` draws it by default
    from toolkit.config import ExportConfig
    from toolkit.datasets import sample_indices

    defaults = ExportConfig()
    n = min(defaults.calibration_samples, len(data.train))
    calib = prep.load(data.train, sample_indices(n, len(data.train), defaults.calibration_seed)).astype(np.float32)
    for peer, made in peers(base, mwork, calib, nncf_python).items():
        if isinstance(made, str):
            rows[peer] = {"error": made}
            continue
        kind, path = made
        rows[peer] = {**evaluate(kind, path, images, labels, reference, mine, peer), "made_by": peer}
        log(f"{name}: {peer}: {rows[peer]['accuracy']:.4f}")
    record["rows"] = rows
    record["export_seconds"] = {k: v.get("export_seconds") for k, v in variants.items()}
    record["validation_images"] = len(data.validation)
    record["peer_verdicts"] = peer_verdicts(rows, mine, labels)
    record["peer_agreement_verdicts"] = peer_verdicts(rows, mine, reference, AGREEMENT_METRIC)
    predictions.update({f"{name}/{row}": p for row, p in mine.items()})
    predictions[f"{name}/labels"] = labels.astype(np.uint8)
    predictions[f"{name}/keras"] = reference.astype(np.uint8)
    return record


def peer_verdicts(rows: dict, predictions: dict, labels: np.ndarray, metric: str = "accuracy_vs_peer_points") -> dict:
    """For the default tflite-int8 and onnx-int8: against each peer, the accuracy difference (toolkit minus
    peer, points) on the same test images with Newcombe's paired interval, and the verdict on ">= -0.3".
    With ``labels`` the Keras model's own classes: the same for agreement with the model."""
    from toolkit.verdicts import at_least, paired_resize

    out: dict = {}
    for ours in ("tflite-int8", "onnx-int8"):
        if ours not in predictions:
            continue
        mine_ok = predictions[ours] == labels
        for peer in (k for k in rows if k.startswith(PEERS) and k in predictions):
            their_ok = predictions[peer] == labels
            e, f = int((mine_ok & their_ok).sum()), int((mine_ok & ~their_ok).sum())
            g, h = int((~mine_ok & their_ok).sum()), int((~mine_ok & ~their_ok).sum())
            resize = paired_resize(e, f, g, h)
            n = len(labels)
            v = at_least(metric, (f - g) / n * 100, -BUDGET, resize(n), n, resize=resize)
            out.setdefault(ours, {})[peer] = v.to_json()
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--models", nargs="+", default=[*OWN, *APPLICATIONS], choices=[*OWN, *APPLICATIONS])
    p.add_argument("--work", type=Path, default=Path("/tmp/toolkit-ptq"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TOOLKIT_DATA_DIR", "")))
    p.add_argument("--nncf-python", default=None, help="a Python with nncf, onnx and onnxruntime installed")
    p.add_argument("--from-json", action="store_true", help="only rewrite PTQ.md and README's table")
    p.add_argument("--skip-fine-tune", action="store_true",
                   help="no --fine-tune export (its column says 'not run'): fine-tuning passes over up to 20,000 "
                   "training images per epoch, as long as an epoch of the model's own training")
    args = p.parse_args()
    if args.from_json:
        doc = read_json(args.out / "ptq.json")
        if _add_agreement_verdicts(doc, args.out / PREDICTIONS):
            atomic_write_json(args.out / "ptq.json", doc)
        write_texts(doc)
        return

    def log(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    out_json, out_npz = args.out / "ptq.json", args.out / PREDICTIONS
    doc = read_json(out_json) if out_json.exists() else {"models": {}}
    predictions = dict(np.load(out_npz)) if out_npz.exists() else {}
    for name in args.models:
        small = APPLICATIONS.get(name, (None, None, False))[2]
        npz = mnist_rgb(args.data_dir.resolve(), args.work / ("mnist32rgb-val-small.npz" if small else "mnist32rgb-val.npz"),
                        small)
        predictions = {k: v for k, v in predictions.items() if not k.startswith(f"{name}/")}
        doc["models"][name] = run_model(name, npz, args.work, args.data_dir.resolve(), args.nncf_python, log,
                                        predictions, fine_tune=not args.skip_fine_tune)
        doc["models"][name]["provenance"] = provenance()
        doc["command"] = "python benchmarks/ptq.py " + " ".join(sys.argv[1:])
        atomic_write_json(out_json, json.loads(json.dumps(doc, default=str)))
        np.savez_compressed(out_npz, **predictions)
        log(f"{name}: done, wrote {out_json} and {out_npz}")
    write_texts(doc)


def _add_agreement_verdicts(doc: dict, npz: Path) -> bool:
    """Runs recorded before the agreement comparison had the per-image classes it needs in the predictions file:
    compute it from them (Keras' classes are stored beside every file's). Returns whether any was added."""
    if not npz.exists():
        return False
    predictions = np.load(npz)
    added = False
    for name, m in doc["models"].items():
        if "peer_agreement_verdicts" in m or f"{name}/keras" not in predictions:
            continue
        mine = {k.split("/", 1)[1]: predictions[k] for k in predictions.files if k.startswith(f"{name}/")}
        m["peer_agreement_verdicts"] = peer_verdicts(m["rows"], mine, predictions[f"{name}/keras"], AGREEMENT_METRIC)
        added = True
    return added


def write_texts(doc: dict) -> None:
    atomic_write_text(BENCHMARKS / "PTQ.md", markdown(doc))
    replace_block(README, "ptq", readme_block(doc), required=False)


PEERS = ("onnxruntime quantize_static defaults", "ai-edge-quantizer static_wi8_ai8", "NNCF")


AGREEMENT_METRIC = "agreement_vs_peer_points"


def _peer_cell(m: dict, ours: str, key: str = "peer_verdicts") -> str:
    """The verdict of "``ours`` >= each peer - 0.3 points" on paired intervals: fail if any fails, else
    inconclusive if any is; the closest peer's interval shown. ``key``: peer_verdicts (accuracy on the labels) or
    peer_agreement_verdicts (agreement with the Keras model)."""
    from toolkit.verdicts import Verdict, combine

    verdicts = {peer: Verdict.from_json(v) for peer, v in (m.get(key) or {}).get(ours, {}).items()}
    if not verdicts:
        return "not decided (no per-image predictions in this run: a point estimate never decides)"
    peer, v = min(verdicts.items(), key=lambda kv: kv[1].interval[0])
    return (f"{combine(verdicts.values())} (closest: {shown(peer)}, {v.value:+.2f} pts, 95% CI {v.interval[0]:+.2f} to "
            f"{v.interval[1]:+.2f})")


def _needed_agreement(images: int, bound: float = 99.5) -> float | None:
    """The smallest agreement (percent) whose Wilson lower bound on ``images`` reaches ``bound``."""
    from toolkit.stats import wilson_interval

    for k in range(images, 0, -1):
        if wilson_interval(k, images)[0] * 100 < bound:
            return 100.0 * (k + 1) / images if k < images else None
    return None


def same_bytes(rows: dict, name: str) -> str | None:
    """The first earlier row whose file has the same sha256 as row ``name`` (runs before the sha256 was recorded:
    None). Their p50s differ only by re-measurement."""
    digest = rows[name].get("sha256")
    for other, r in rows.items():
        if other == name:
            return None
        if digest and r.get("sha256") == digest:
            return other
    return None


def retime_spread(rows: dict) -> float | None:
    """The largest max/min ratio of the p50s of rows that are the same file (the same sha256): how far one file's
    batch-1 p50 moved between its timings in this run. None: no file was timed twice."""
    groups: dict = {}
    for r in rows.values():
        if r.get("sha256") and r.get("p50_ms_batch1"):
            groups.setdefault(r["sha256"], []).append(r["p50_ms_batch1"])
    ratios = [max(g) / min(g) for g in groups.values() if len(g) > 1]
    return max(ratios) if ratios else None


def _step_cell(m: dict, label: str, prefix: str | None) -> str:
    """One export's int8 files in the summary: parity's verdict on the test set, p50 against plain int8 (or that it
    is the same file), the step's time; which weights learned rounding kept."""
    rows, found = m["rows"], []
    for variant in ("tflite-int8", "onnx-int8"):
        r = rows.get(f"{variant} ({label})")
        if not r or "accuracy" not in r:
            continue
        ratio = r["p50_ms_batch1"] / rows[variant]["p50_ms_batch1"]
        seconds = r.get(f"{prefix}_seconds") if prefix else None
        time_text = f", {seconds:.0f} s" if seconds is not None else ""
        kept = " (own weights kept: not better on validation)" if prefix and r.get(f"{prefix}_kept") == "own" else ""
        if prefix and r.get(f"{prefix}_skipped"):  # not run: what float weights would gain in agreement (validation)
            cost = r[f"{prefix}_skipped"]
            kept = (f" (not run: float weights would agree on {cost['points']:+.2f} points of the validation images, "
                    f"95% CI {cost['ci_points'][0]:+.2f} to {cost['ci_points'][1]:+.2f}: own weights kept)")
        cost = "the same file as plain int8" if same_bytes(rows, f"{variant} ({label})") == variant else f"{ratio:.2f}x"
        found.append(f"{variant} {r.get('parity_verdict')}{kept}, {cost}{time_text}")
    if found:
        return "; ".join(found)
    if "error" in rows.get(label, {}):  # refused: its reason, without the advice in brackets
        return "refused: " + rows[label]["error"].split("error: ", 1)[-1].split(" (give", 1)[0]
    if label == FINE_TUNE and m.get("fine_tune_skipped"):
        return m["fine_tune_skipped"]
    if label not in (m.get("export_seconds") or {}):
        return "not run (this model's run predates the column)"
    return "-"


def summary(doc: dict) -> list[str]:
    """Per model: the default int8 against the peers (paired verdicts), onnx-int8's speed, the search, learned
    rounding and fine-tuning as parity judges them on the test set."""
    out = ["## What the tables show", "",
           "| model | default `tflite-int8` >= each peer - 0.3 pts | default `onnx-int8` >= each peer - 0.3 pts | "
           "`onnx-int8` vs `onnx` p50, batch 1 | "
           f"`--max-accuracy-drop {BUDGET}`: `toolkit parity` on the test set, p50 vs plain int8 | "
           + " | ".join(f"`{label.removeprefix('toolkit ')}`: `toolkit parity`, p50 vs plain int8, {words}"
                        for label, _, words in STEPS) + " |",
           "|---|---|---|---|---|---|---|"]
    spreads: list[str] = []
    for name, m in doc["models"].items():
        rows = m["rows"]
        speed = rows["onnx-int8"]["p50_ms_batch1"] / rows["onnx"]["p50_ms_batch1"]
        spread = retime_spread(rows)
        if spread:
            spreads.append(f"{name} {100 * (spread - 1):.0f}%")
        speed_word = ("within one file's re-timing spread: not a ranking" if spread and max(speed, 1 / speed) <= spread
                      else "faster" if speed < 1 else "slower")
        cells = [_step_cell(m, label, prefix) for label, prefix in
                 ((f"toolkit --max-accuracy-drop {BUDGET}", None), *((label, prefix) for label, prefix, _ in STEPS))]
        out.append(f"| {name} | {_peer_cell(m, 'tflite-int8')} | {_peer_cell(m, 'onnx-int8')} | {speed:.2f}x "
                   f"({speed_word}) | " + " | ".join(cells) + " |")
    out += ["", "Accuracy on the labels can favour a file that departs from the model in a lucky direction (a peer above "
            "the float model itself); agreement with the Keras model is what parity judges. The same comparison on "
            "agreement (toolkit minus peer, points of the test images on which each gives Keras' class):", "",
            "| model | default `tflite-int8` agreement >= each peer - 0.3 pts | default `onnx-int8` agreement >= each "
            "peer - 0.3 pts |", "|---|---|---|"]
    out += [f"| {name} | {_peer_cell(m, 'tflite-int8', 'peer_agreement_verdicts')} | "
            f"{_peer_cell(m, 'onnx-int8', 'peer_agreement_verdicts')} |" for name, m in doc["models"].items()]
    short = [name for name, m in doc["models"].items()
             if max(v.get("agreement", 0.0) for k, v in m["rows"].items() if k not in ("tflite", "onnx")) < 0.995]
    sizes = sorted({m["validation_images"] for m in doc["models"].values() if m.get("validation_images")})
    needs = "; ".join(f"on {n:,} validation images it passes only from {_needed_agreement(n):.2f}% measured"
                      for n in sizes if _needed_agreement(n)) or "on the validation split"
    out += ["", "Agreement with Keras is what parity's int8 gate asks, at 99.5%"
            + (f": on {', '.join(short)} no int8 file here, ours or a peer's, reaches it (see the tables), so "
               "they cannot pass parity there" if short else "")
            + f". Where plain int8 is inconclusive, the search must *show* 99.5% ({needs}), and may find no step "
            "that does.", ""]
    if spreads:
        out += ["The p50s are single timings, one file after another: the same file (the same sha256) timed twice in "
                "one run moved by up to " + ", ".join(spreads) + " (max/min - 1). A ratio inside that is not a "
                "ranking; interleaved rounds (as `toolkit gate` times) would be needed to rank them.", ""]
    return out


def _readme_verdicts(rows: dict, label: str | None) -> str:
    """``tflite-int8``'s / ``onnx-int8``'s parity verdicts made plain (``label`` None) or by the export ``label``:
    "refused" where the export was refused, "not run" where the model's run did not have it."""
    if label is not None and "error" in rows.get(label, {}):
        return "refused"
    found = [rows.get(v if label is None else f"{v} ({label})", {}).get("parity_verdict") for v in
             ("tflite-int8", "onnx-int8")]
    return "not run" if not any(found) else "/".join(f or "-" for f in found)


def readme_block(doc: dict) -> str:
    """README's table: per model, float, the toolkit's default int8 (TFLite and ONNX), the best peer."""
    steps = [f"toolkit --max-accuracy-drop {BUDGET}", LEARNED, FINE_TUNE]
    lines = ["Measured (`python benchmarks/ptq.py`, [benchmarks/PTQ.md](benchmarks/PTQ.md); test accuracy, each "
             "model from one run; the last column: `toolkit parity`'s verdict on the test set for `tflite-int8` / "
             "`onnx-int8` as plain int8 makes them and with each option):", "",
             "| model | Keras float | toolkit `tflite-int8` | toolkit `onnx-int8` | `--calibration-method minmax` | best peer "
             "| parity: plain; " + "; ".join(f"`{s.removeprefix('toolkit ')}`" for s in steps) + " |",
             "|---|---:|---:|---:|---:|---|---|"]
    for name, m in doc["models"].items():
        rows = m["rows"]
        peers = {k: v for k, v in rows.items() if k.startswith(PEERS) and "accuracy" in v}
        best = max(peers, key=lambda k: peers[k]["accuracy"]) if peers else None
        old = next((v for k, v in rows.items() if k.startswith("tflite-int8 (") and shown(k).endswith(f"({MINMAX})")), {})
        old_text = f"{100 * old['accuracy']:.2f}%" if old.get("accuracy") is not None else "-"
        best_text = f"{100 * peers[best]['accuracy']:.2f}% ({best})" if best else "-"
        verdicts = "; ".join(_readme_verdicts(rows, s) for s in (None, *steps))
        lines.append(f"| {name} | {100 * m['float_keras_accuracy']:.2f}% | {100 * rows['tflite-int8']['accuracy']:.2f}% | "
                     f"{100 * rows['onnx-int8']['accuracy']:.2f}% | {old_text} | {best_text} | {verdicts} |")
    return "\n".join(lines)


def markdown(doc: dict) -> str:
    lines = ["# Post-training int8 against the peers", "",
             "Written by `python benchmarks/ptq.py` from [results/ptq.json](results/ptq.json) and "
             f"results/{PREDICTIONS} (one model per table, each from one run; the machine of each is in its "
             "provenance). Accuracy is on the full test set with its 95% Wilson interval; agreement is with the "
             "Keras model on the same images; \"within 0.3 points of a peer\" is a verdict on the paired 95% "
             "interval of the accuracy difference on those images, never a point estimate. p50 is batch 1, one "
             "thread, on the file's natural runtime (and every .onnx on OpenVINO too), measured one file after "
             "another (not interleaved: the summary gives how far one file's p50 moved when timed twice in a run; rows "
             "that are the same bytes are marked so). Only the toolkit makes choices "
             "on validation images (its range estimator, the search, learned rounding, fine-tuning); the peers calibrate on the "
             "same 500 training images and choose nothing.", ""]
    lines += summary(doc)
    for name, m in doc["models"].items():
        cpu = m.get("provenance", {}).get("machine", {}).get("cpu", "")
        lines += [f"## {name}", "", f"{m['train'].get('architecture', '')}; {m['dataset']}; Keras float test "
                  f"accuracy {100 * m['float_keras_accuracy']:.2f}%. CPU: {cpu}.", "",
                  "| file | made by | range estimator | test accuracy (95% CI) | agreement | `toolkit parity` | size | "
                  "p50 ms batch 1 | p50 ms batch 1, OpenVINO |",
                  "|---|---|---|---:|---:|---|---:|---:|---:|"]
        for row, r in m["rows"].items():
            if "error" in r:
                lines.append(f"| {shown(row)} | | | {r['error']} | | | | | |")
                continue
            lo, hi = r["accuracy_ci95"]
            ov = (f"{r['openvino_p50_ms_batch1']:.3f}" if "openvino_p50_ms_batch1" in r else
                  f"failed: {r['openvino_error']}" if "openvino_error" in r else "-")
            same = same_bytes(m["rows"], row)
            made_by = shown(r["made_by"]) + (f" (the same bytes as `{shown(same)}`)" if same else "")
            lines.append(f"| {shown(row)} | {made_by} | {r.get('calibration') or '-'} | {100 * r['accuracy']:.2f}% "
                         f"({100 * lo:.2f}-{100 * hi:.2f}) | {100 * r['agreement']:.2f}% | {r.get('parity_verdict') or '-'} "
                         f"| {r['bytes'] / 1e6:.2f} MB | {r['p50_ms_batch1']:.3f} ({r['runtime']}) | {ov} |")
        lines.append("")
        for row, r in m["rows"].items():
            if r.get("control"):
                lines.append(f"- `{shown(row)}`: {r['control']['outcome']}.")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
