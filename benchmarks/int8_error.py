"""Where a full-integer int8 file's disagreement with its float model comes from, and so what fine-tuning can and
cannot mend (issue #35).

    python benchmarks/int8_error.py [--work /tmp/toolkit-ptq] [--models mobilenetv2 mobilenetv3small efficientnetb0] [--from-json]

For each model that `python benchmarks/ptq.py` trained (``WORK/MODEL/model.keras``, with the .npz it made), on
the validation images the model never trained on (``x_val``; the test set is not read):

1. the toolkit's default ``tflite-int8``, exported afresh by this commit's `toolkit export`, run on LiteRT;
2. toolkit/quantize/finetune.py's simulation of that file (the fine-tuning trains through it) at the ranges the
   export's manifest says it used: how often it predicts what the file predicts;
3. the simulation with only the activations quantized, and with only the weights: the logits' error against
   the float model, the error of the margin between the float model's top two classes (what decides a
   disagreement) and the disagreements each leaves. Weight rounding is what learned rounding, bias correction and
   fine-tuning change; activation rounding at per-tensor 8-bit steps stays whatever the weights;
4. each activation quantization point alone (every other tensor and every weight in float): its share of the
   logits' squared error, largest first;
5. how rough the simulated loss is: the distillation loss on 256 training images after adding noise of
   1e-7 times a standard normal to one weight tensor at a time (how many tensors raise it, how many lower it).

Writes results/int8-error.json and INT8_ERROR.md (every number from the JSON).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from _common import BENCHMARKS, RESULTS, parser, provenance_line, run_toolkit

from toolkit import schema
from toolkit.artifacts import atomic_write_json, atomic_write_text, read_json
from toolkit.provenance import provenance
from toolkit.stats import wilson_interval

MODELS = ("mobilenetv2", "mobilenetv3small", "efficientnetb0")
IMAGES_PER_POINT = 500  # validation images each single-point run uses (the full split for the rest)
PERTURBATION = 1e-7


def _npz(work: Path, model: str) -> Path:
    return work / ("mnist32rgb-val-small.npz" if model.endswith("-small") else "mnist32rgb-val.npz")


def _errors(logits: np.ndarray, reference: np.ndarray) -> dict:
    """The logits' error against the float model's, and the disagreements."""
    n = len(reference)
    top, second = reference.argmax(1), np.argsort(reference, 1)[:, -2]
    error = logits - reference
    margin = error[np.arange(n), top] - error[np.arange(n), second]
    disagree = int((logits.argmax(1) != top).sum())
    lo, hi = wilson_interval(n - disagree, n, 0.95)
    return {"logit_rms": float(np.sqrt(np.mean(error**2))), "margin_error_std": float(margin.std()),
            "disagreements": disagree, "images": n, "agreement": 1 - disagree / n, "agreement_ci95": [lo, hi]}


def _simulated(sim, images: np.ndarray, batch: int = 250) -> np.ndarray:
    return np.concatenate([np.asarray(sim(images[i : i + batch], quantize=True)) for i in range(0, len(images), batch)])


def _file_logits(path: Path, images: np.ndarray) -> np.ndarray:
    from toolkit.runners.litert import LiteRTRunner

    return LiteRTRunner(path.read_bytes()).infer_batched(images, 250)


def _export(model: str, work: Path, npz: Path, data_dir: str | None) -> tuple[Path, dict]:
    exports = work / "int8-error" / model
    args = ["export", "--model", work / model / schema.MODEL, "--dataset", npz, "--exports", exports,
            "--format", "tflite", "--quantize", "int8", "--force", "--quiet"]
    proc = run_toolkit(*args, *(("--data-dir", data_dir) if data_dir else ()), capture=True)
    if proc.returncode != 0:
        raise SystemExit(f"{model}: toolkit export failed: {proc.stderr.strip()[-400:]}")
    manifest = read_json(exports / schema.MANIFEST)
    entry = next(a for a in manifest["artifacts"] if a["variant"] == "tflite-int8")
    return exports / entry["path"], {"sha256": entry["sha256"], "calibration": entry["calibration"],
                                     "preprocessing": manifest["preprocessing"]}


def _points(sim, images: np.ndarray, reference: np.ndarray) -> list[dict]:
    """Each activation quantization point alone: the logits' mean squared error it causes."""
    keep_fq, keep_w = sim._fq, sim._fq_weights
    only = {"key": None}
    sim._fq_weights = lambda kernel, quantize: kernel
    sim._fq = lambda x, key, quantize, record: keep_fq(x, key, quantize, record) if key == only["key"] else x
    rows = []
    try:
        for key in list(sim.ranges):
            only["key"] = key
            rows.append({"point": key, "logit_mse": float(np.mean((_simulated(sim, images) - reference) ** 2))})
    finally:
        sim._fq, sim._fq_weights = keep_fq, keep_w
    total = sum(r["logit_mse"] for r in rows)
    for r in rows:
        r["share"] = r["logit_mse"] / total if total else 0.0
    return sorted(rows, key=lambda r: -r["logit_mse"])


def _roughness(model, sim, images: np.ndarray) -> dict:
    """The simulated distillation loss after a tiny random change to one weight tensor at a time."""
    from toolkit.quantize.finetune import distillation_loss

    loss = distillation_loss(1.0)
    teacher = np.asarray(model(images, training=False))
    student = sim.model
    base_weights = [w.copy() for w in student.get_weights()]
    base = float(loss(teacher, np.asarray(sim(images, quantize=True))))
    rng = np.random.default_rng(0)
    changes = []
    for variable in student.trainable_variables:
        student.set_weights(base_weights)
        value = np.asarray(variable.numpy())
        variable.assign(value + PERTURBATION * rng.standard_normal(value.shape).astype(np.float32))
        changes.append(float(loss(teacher, np.asarray(sim(images, quantize=True)))) / base - 1)
    student.set_weights(base_weights)
    changes = np.array(changes)
    return {"loss": base, "images": int(len(images)), "perturbation": PERTURBATION, "tensors": int(len(changes)),
            "raised": int((changes > 1e-6).sum()), "lowered": int((changes < -1e-6).sum()),
            "largest_rise": float(changes.max()), "largest_fall": float(changes.min())}


def measure(model_name: str, work: Path, data_dir: str | None) -> dict:
    import keras

    from toolkit.quantize.finetune import Simulation

    npz = _npz(work, model_name)
    if not (work / model_name / schema.MODEL).is_file() or not npz.is_file():
        return {"error": f"no model at {work / model_name}: run `python benchmarks/ptq.py --models {model_name}` first"}
    started = time.perf_counter()
    from toolkit.preprocess import Preprocessing

    data = np.load(npz)
    path, file_record = _export(model_name, work, npz, data_dir)
    prep = Preprocessing.from_json(file_record["preprocessing"])  # what the toolkit feeds this model
    images, train = prep.finish(data["x_val"]), prep.finish(data["x_train"][:256])
    model = keras.models.load_model(work / model_name / schema.MODEL)
    reference = np.concatenate([np.asarray(model(images[i : i + 250], training=False))
                                for i in range(0, len(images), 250)])
    sim = Simulation(model)
    calibration = np.load(work / model_name / "calibration.npy").astype(np.float32)
    estimator = file_record["calibration"].get("estimator", "minmax")
    sim.calibrate(calibration, estimator)
    file_logits = _file_logits(path, images)
    simulated = _simulated(sim, images)
    with sim.only("activations"):
        activations_only = _simulated(sim, images)
    with sim.only("weights"):
        weights_only = _simulated(sim, images)
    points = _points(sim, images[:IMAGES_PER_POINT], reference[:IMAGES_PER_POINT])
    return {
        "file": {**file_record, **_errors(file_logits, reference)},
        "simulation": {**_errors(simulated, reference), "estimator": estimator,
                       "same_class_as_file": float(np.mean(simulated.argmax(1) == file_logits.argmax(1)))},
        "activations_only": _errors(activations_only, reference),
        "weights_only": _errors(weights_only, reference),
        "points": points, "point_images": int(min(IMAGES_PER_POINT, len(images))),
        "roughness": _roughness(model, sim, train),
        "validation": f"x_val of {npz.name} ({len(images):,} images the model never trained on)",
        "seconds": round(time.perf_counter() - started, 1),
    }


def _command(m: dict) -> str:
    if "command" in m:
        return f"`{m['command']}`"
    return "an earlier run of `python benchmarks/int8_error.py`, its command not recorded per model"


def markdown(doc: dict) -> str:
    lines = ["# Where int8's disagreement comes from", "",
             "Written from `results/int8-error.json` by the command each model names below, on validation images the models "
             "never trained on (the test set is not read). For each model, the toolkit's default `tflite-int8` "
             "and toolkit/quantize/finetune.py's simulation of it (what `--fine-tune` trains through), with only "
             "the activations or only the weights quantized. *Margin error*: the error of the gap between the "
             "float model's top two logits, which decides a disagreement.", "",
             "| model | what is quantized | logit RMS error | margin error (std) | disagreements | agreement (95% CI) |",
             "|---|---|---:|---:|---:|---|"]
    for name, m in doc["models"].items():
        if "error" in m:
            lines.append(f"| {name} | not measured: {m['error']} |  |  |  |  |")
            continue
        for label, key in (("the file (LiteRT)", "file"), ("simulation: everything", "simulation"),
                           ("simulation: activations only", "activations_only"),
                           ("simulation: weights only", "weights_only")):
            r = m[key]
            lo, hi = r["agreement_ci95"]
            lines.append(f"| {name} | {label} | {r['logit_rms']:.4f} | {r['margin_error_std']:.4f} | "
                         f"{r['disagreements']} of {r['images']:,} | {100 * r['agreement']:.2f}% "
                         f"({100 * lo:.2f} to {100 * hi:.2f}) |")
    lines += [""]
    for name, m in doc["models"].items():
        if "error" in m:
            continue
        sim, act, wts = m["simulation"], m["activations_only"], m["weights_only"]
        variance = act["logit_rms"] ** 2 + wts["logit_rms"] ** 2
        top = m["points"][:5]
        rough = m["roughness"]
        lines += [
            f"**{name}** ({_command(m)}; ranges: {sim['estimator']}; the simulation predicts "
            "the file's class on "
            f"{100 * sim['same_class_as_file']:.2f}% of the images). Of the squared logit error the two parts "
            f"cause alone, the activations cause {100 * act['logit_rms'] ** 2 / variance:.0f}% and the weights "
            f"{100 * wts['logit_rms'] ** 2 / variance:.0f}%. The five activation tensors that cause the most error "
            f"alone (of {len(m['points'])}; {m['point_images']:,} images): "
            + ", ".join(f"`{p['point']}` {100 * p['share']:.1f}%" for p in top)
            + f" ({100 * sum(p['share'] for p in top):.0f}% together). A change of {rough['perturbation']:g} "
            f"times a standard normal to one weight tensor at a time raised the simulated distillation loss "
            f"({rough['loss']:.3g} on {rough['images']} training images) for {rough['raised']} of "
            f"{rough['tensors']} tensors and lowered it for {rough['lowered']} (from {100 * rough['largest_fall']:+.0f}% "
            f"to {100 * rough['largest_rise']:+.0f}%): at that scale the loss is rounding noise, not a slope.", ""]
    lines += ["What follows: learned rounding and bias correction change how the weights round, so they can remove at "
              "most about the weights' share above. Fine-tuning changes the weights and, through them, the "
              "activations: it can pull values inside a clipped range, but not remove the rounding noise of "
              "per-tensor 8-bit steps, and at the scale of one weight step the loss it descends is noise (the "
              "roughness figures above). The activations' share needs more bits on the tensors that cause it (the "
              "accuracy search's 16-bit activations) or ranges that the validation images choose.", "",
              provenance_line(doc["provenance"]),
              ""]
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--work", type=Path, default=Path("/tmp/toolkit-ptq"))
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--data-dir", default=None, help="MNIST's folder, for the toolkit's own checks (TOOLKIT_DATA_DIR)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--from-json", action="store_true", help="only rewrite INT8_ERROR.md from results/int8-error.json")
    args = p.parse_args()
    out = args.out / "int8-error.json"
    if args.from_json:
        atomic_write_text(BENCHMARKS / "INT8_ERROR.md", markdown(read_json(out)))
        return
    doc = read_json(out) if out.is_file() else {"models": {}}
    command = ("python benchmarks/int8_error.py " + " ".join(sys.argv[1:])).rstrip()
    for name in args.models:
        print(f"{name}: measuring", file=sys.stderr, flush=True)
        doc["models"][name] = {**measure(name, args.work, args.data_dir), "command": command}
    doc.update(command=command, provenance=provenance())
    atomic_write_json(out, doc)
    atomic_write_text(BENCHMARKS / "INT8_ERROR.md", markdown(doc))
    print(f"wrote {out} and {BENCHMARKS / 'INT8_ERROR.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
