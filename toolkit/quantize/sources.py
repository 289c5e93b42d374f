"""Where an int8 model's error comes from: its weights' rounding or its activations' (`toolkit parity --diagnose`).

Why: the levers differ. Learned rounding (``--learned-rounding``) and fine-tuning (``--fine-tune``) change only the
weights, so they can remove at most the error the weights' rounding causes; the activations' per-tensor 8-bit steps
need more bits (``--max-accuracy-drop``'s 16-bit activations) or float layers. AIMET's QuantAnalyzer asks the same
question of a PyTorch model (its weights-only and activations-only quantized accuracy); this answers it for the
Keras model an export came from, through toolkit/quantize/finetune.py's simulation of plain int8 (the weights on the
variant's own grid, the activations at the ranges the variant's estimator gives on its calibration images), three
times: everything quantized, only the activations, only the weights. Each is compared with the float model's
outputs on the same images (output RMS error, agreement on the class). Two figures per part: its share of the
squared output error (its error alone over the sum of both alone), and what agreement it costs: how many points
more of the images the simulation would agree on with that part left in float (only the other quantized), with
the paired 95% interval. The second decides the levers: a part can cause a small share of the squared error and
still flip the class of the images near a decision boundary, which is what parity counts. The
simulation is checked against the file itself (the share of images on which it predicts the file's class): a
file the search or a weight step changed is not plain int8 of the model's own weights, and the figure says how
far the simulation then stands for it. benchmarks/INT8_ERROR.md gives the shares for the benchmark models.
"""

from __future__ import annotations

import numpy as np

LEVERS = {
    "weights": "--learned-rounding (learned weight rounding and bias correction) or --fine-tune (quantization-aware "
               "fine-tuning) can recover at most that",
    "activations": "learned rounding and fine-tuning change only weights and cannot; --max-accuracy-drop's steps on "
                   "the tensors that cause it can (16-bit activations where the format has them, float layers)",
}
ALONE = {"weights": "activations only", "activations": "weights only"}  # the row with the part left in float


def _outputs(fn, images: np.ndarray, batch: int = 250) -> np.ndarray:
    return np.concatenate([np.asarray(fn(images[i : i + batch])) for i in range(0, len(images), batch)])


def _row(outputs: np.ndarray, reference: np.ndarray) -> dict:
    error = outputs - reference
    agrees = outputs.argmax(1) == reference.argmax(1)
    return {"output_rms_error": float(np.sqrt(np.mean(error**2))), "mean_squared_error": float(np.mean(error**2)),
            "agreement": float(agrees.mean()), "disagreements": int((~agrees).sum())}


def _cost(everything: np.ndarray, without: np.ndarray, reference: np.ndarray, confidence: float) -> dict:
    """The agreement a part costs: points more of the images agree with the part in float, with the paired interval."""
    from toolkit.stats import gain_beyond_noise

    before, after = everything.argmax(1) == reference.argmax(1), without.argmax(1) == reference.argmax(1)
    beyond, interval = gain_beyond_noise(after, before, confidence)
    return {"points": round(100 * float(after.mean() - before.mean()), 4), "ci_points": interval,
            "beyond_noise": beyond, "confidence": confidence}


def error_sources(model, images: np.ndarray, calibration: np.ndarray, estimator: str, levels: int = 127,
                  file_classes: np.ndarray | None = None, confidence: float = 0.95) -> dict:
    """The simulated int8 model's error against ``model`` on ``images``: everything quantized, only the activations,
    only the weights (on the grid -levels..levels; activation ranges by ``estimator`` on ``calibration``), each
    part's share of the squared error and the agreement it costs, and what can recover it. ``file_classes``: the
    int8 file's classes on the same images, to say how well the simulation stands for it."""
    from toolkit.quantize.finetune import Simulation

    reference = _outputs(lambda x: model(x, training=False), images)
    sim = Simulation(model, levels)
    sim.calibrate(calibration, estimator)
    rows = {"everything": _outputs(lambda x: sim(x, quantize=True), images)}
    for part in ("activations", "weights"):
        with sim.only(part):
            rows[f"{part} only"] = _outputs(lambda x: sim(x, quantize=True), images)
    doc = {"images": int(len(images)), "estimator": estimator, "weight_grid": f"-{levels}..{levels}",
           "simulated": "plain int8 of the model's own weights, simulated (toolkit/quantize/finetune.py)",
           "rows": {k: _row(v, reference) for k, v in rows.items()}}
    if file_classes is not None:
        doc["same_class_as_file"] = float(np.mean(rows["everything"].argmax(1) == np.asarray(file_classes)))
    act, wts = doc["rows"]["activations only"]["mean_squared_error"], doc["rows"]["weights only"]["mean_squared_error"]
    total = act + wts
    doc["activation_share"] = act / total if total > 0 else None
    doc["weight_share"] = wts / total if total > 0 else None
    doc["main"] = None if total <= 0 else ("activations" if act >= wts else "weights")  # of the squared error
    # the agreement each part costs, and what can recover it where that is beyond noise
    doc["costs"] = {part: _cost(rows["everything"], rows[ALONE[part]], reference, confidence) for part in LEVERS}
    doc["levers"] = {part: LEVERS[part] for part, c in doc["costs"].items() if c["beyond_noise"]}
    return doc


def lines(doc: dict) -> list[str]:
    """The record as text (`parity --diagnose`'s table)."""
    if "skipped" in doc:
        return [f"where the error comes from: not measured ({doc['skipped']})"]
    head = (f"where the error comes from: {doc['simulated']}, weights on {doc['weight_grid']}, activation ranges "
            f"{doc['estimator']}, on {doc['images']:,} images")
    if "same_class_as_file" in doc:
        head += f" (it predicts the file's class on {doc['same_class_as_file']:.1%} of them)"
    out = [head, f"  {'quantized':<18} {'output RMS error':>16} {'agreement with the model':>25}"]
    for name, row in doc["rows"].items():
        out.append(f"  {name:<18} {row['output_rms_error']:>16.4g} {row['agreement']:>25.1%}")
    if doc["main"] is not None:
        other = "weights" if doc["main"] == "activations" else "activations"
        share = doc["activation_share"] if doc["main"] == "activations" else doc["weight_share"]
        out.append(f"  of the squared error the two cause alone, the {doc['main']} cause {share:.1%}, the {other} "
                   f"{1 - share:.1%}")
    for part, cost in doc["costs"].items():
        lo, hi = cost["ci_points"]
        text = (f"  with the {part} in float it would agree on {cost['points']:+.2f} points of the images "
                f"({cost['confidence']:.0%} CI {lo:+.2f} to {hi:+.2f}): ")
        out.append(text + (LEVERS[part] if cost["beyond_noise"] else "not more beyond noise, so nothing done to the "
                           f"{part} alone can be shown to help on these images"))
    return out
