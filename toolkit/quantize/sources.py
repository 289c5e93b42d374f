"""Where an int8 model's error comes from: its weights' rounding or its activations' (`toolkit parity --diagnose`).

Why: the levers differ. Learned rounding (``--learned-rounding``) and fine-tuning (``--fine-tune``) change only the
weights, so they can remove at most the error the weights' rounding causes; the activations' per-tensor 8-bit steps
need more bits (``--max-accuracy-drop``'s 16-bit activations) or float layers. AIMET's QuantAnalyzer asks the same
question of a PyTorch model (its weights-only and activations-only quantized accuracy); this answers it for the
Keras model an export came from, through toolkit/quantize/finetune.py's simulation of plain int8 (the weights on the
variant's own grid, the activations at the ranges the variant's estimator gives on its calibration images), three
times: everything quantized, only the activations, only the weights. Each is compared with the float model's
outputs on the same images (output RMS error, agreement on the class); the share of each part is its squared error
alone over the sum of both alone. The simulation is checked against the file itself (the share of images on
which it predicts the file's class): a file the search or a weight step changed is not plain int8 of the model's
own weights, and the figure says how far the simulation then stands for it. benchmarks/INT8_ERROR.md gives these
figures for the benchmark models.
"""

from __future__ import annotations

import numpy as np

WEIGHTS_LEVER = ("--learned-rounding (learned weight rounding and bias correction) or --fine-tune "
                 "(quantization-aware fine-tuning) can remove it")
ACTIVATIONS_LEVER = ("learned rounding and fine-tuning change only weights and cannot remove it; --max-accuracy-drop's "
                     "steps on the tensors that cause it can (16-bit activations where the format has them, float "
                     "layers)")


def _outputs(fn, images: np.ndarray, batch: int = 250) -> np.ndarray:
    return np.concatenate([np.asarray(fn(images[i : i + batch])) for i in range(0, len(images), batch)])


def _row(outputs: np.ndarray, reference: np.ndarray) -> dict:
    error = outputs - reference
    agrees = outputs.argmax(1) == reference.argmax(1)
    return {"output_rms_error": float(np.sqrt(np.mean(error**2))), "mean_squared_error": float(np.mean(error**2)),
            "agreement": float(agrees.mean()), "disagreements": int((~agrees).sum())}


def error_sources(model, images: np.ndarray, calibration: np.ndarray, estimator: str, levels: int = 127,
                  file_classes: np.ndarray | None = None) -> dict:
    """The simulated int8 model's error against ``model`` on ``images``: everything quantized, only the activations,
    only the weights (on the grid -levels..levels; activation ranges by ``estimator`` on ``calibration``), each
    part's share, which part causes most and what can remove it. ``file_classes``: the int8 file's classes on the
    same images, to say how well the simulation stands for it."""
    from toolkit.quantize.finetune import Simulation

    reference = _outputs(lambda x: model(x, training=False), images)
    sim = Simulation(model, levels)
    sim.calibrate(calibration, estimator)
    rows = {"everything": _outputs(lambda x: sim(x, quantize=True), images)}
    keep_fq, keep_fixed, keep_w = sim._fq, sim._fq_fixed, sim._fq_weights
    try:
        sim._fq_weights = lambda kernel, quantize: kernel
        rows["activations only"] = _outputs(lambda x: sim(x, quantize=True), images)
        sim._fq_weights, sim._fq, sim._fq_fixed = keep_w, (lambda x, key, q, record: x), (lambda x, lo, hi, q: x)
        rows["weights only"] = _outputs(lambda x: sim(x, quantize=True), images)
    finally:
        sim._fq, sim._fq_fixed, sim._fq_weights = keep_fq, keep_fixed, keep_w
    doc = {"images": int(len(images)), "estimator": estimator, "weight_grid": f"-{levels}..{levels}",
           "simulated": "plain int8 of the model's own weights, simulated (toolkit/quantize/finetune.py)",
           "rows": {k: _row(v, reference) for k, v in rows.items()}}
    if file_classes is not None:
        doc["same_class_as_file"] = float(np.mean(rows["everything"].argmax(1) == np.asarray(file_classes)))
    act, wts = doc["rows"]["activations only"]["mean_squared_error"], doc["rows"]["weights only"]["mean_squared_error"]
    total = act + wts
    doc["activation_share"] = act / total if total > 0 else None
    doc["weight_share"] = wts / total if total > 0 else None
    if total <= 0:
        doc["main"], doc["lever"] = None, "the simulated int8 model reproduces the float model's outputs exactly"
    elif act >= wts:
        doc["main"], doc["lever"] = "activations", ACTIVATIONS_LEVER
    else:
        doc["main"], doc["lever"] = "weights", WEIGHTS_LEVER
    return doc


def lines(doc: dict) -> list[str]:
    """The record as text (`parity --diagnose`'s table)."""
    if "skipped" in doc:
        return [f"where the error comes from: not measured ({doc['skipped']})"]
    head = (f"where the error comes from: {doc['simulated']}, weights on {doc['weight_grid']}, activation ranges "
            f"{doc['estimator']}, on {doc['images']} images")
    if "same_class_as_file" in doc:
        head += f" (it predicts the file's class on {doc['same_class_as_file']:.1%} of them)"
    out = [head, f"  {'quantized':<18} {'output RMS error':>16} {'agreement with the model':>25}"]
    for name, row in doc["rows"].items():
        out.append(f"  {name:<18} {row['output_rms_error']:>16.4g} {row['agreement']:>25.1%}")
    if doc["main"] is None:
        out.append(f"  {doc['lever']}")
    else:
        share = doc["activation_share"] if doc["main"] == "activations" else doc["weight_share"]
        out.append(f"  the {doc['main']} cause {share:.0%} of the error the two cause alone: {doc['lever']}")
    return out
