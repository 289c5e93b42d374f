"""Accuracy-controlled int8 (`toolkit export --max-accuracy-drop PTS`, `--recipe FILE`).

Plain full-integer int8 is exported first. Its accuracy drop against the Keras model is measured
on the **validation split** (the test set stays for parity's final figure) with a paired 95%
interval (Newcombe). If the upper bound is above the budget, the search raises the precision of
one layer at a time, the layer that adds the most quantization error first, and re-measures:

1. ``int16x8``: 16-bit activations with 8-bit weights for that layer, still full-integer
   (LiteRT/TFLM 16x8 kernels through ai-edge-quantizer; not in ONNX, whose runtimes have no 16-bit kernels:
   toolkit/exporters/onnx ONNX_LEVELS);
2. ``float``: the layer left in float (not full-integer: ``int8_only: false``).

Per-layer error, for both formats the same measure as `parity --diagnose onnx-int8`: each
activation of the quantized model is compared with the float model's (SQNR, dB) on validation
images, and a layer is charged with the SQNR it loses between its inputs and its output.

The search stops when the bound holds, or when ``max_layers`` layers are changed and none of them
can go higher; it then keeps the step with the lowest bound (exit 4 from the CLI). It ranks and
accepts on half the validation images and the step it keeps must pass again on the other half
(``split_for_confirmation``: a search that stops at the first passing step picks the luckiest figure). The outcome is
a recipe (the layers changed, to what, in which order, the validation drop and the cost of each
step in bytes and batch-1 p50 latency) that ``--recipe`` replays without searching.

Formats register a ``Backend`` here (one per format): what the layers are, how a model with a
given precision per layer is built, how its activations compare with the float model's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit import schema
from toolkit.config import Gates
from toolkit.errors import UsageError
from toolkit.stats import paired_difference_interval, paired_gain_interval, wilson_interval

LEVELS = ("int8", "int16x8", "float")
INTEGER_LEVELS = ("int8", "int16x8")
RANK_IMAGES = 256  # validation images the per-layer error is measured on
RECIPE_SCHEMA = 1
# a controlled model slower than this times plain int8 at batch 1 is named as such in its outcome
SLOWER_THAN_PLAIN = 1.25
# the step limit beyond the layer limit: each layer can be raised at most twice
MAX_STEPS_PER_LAYER = len(LEVELS) - 1


@dataclass(frozen=True)
class ControlSettings:
    """The search's acceptance test is parity's int8 gates by parity's rule (toolkit/verdicts.py), on
    the validation split: the accuracy loss must *pass* against the budget (its interval within
    ``max_drop``) and agreement with Keras must *pass* against parity's int8 agreement gate (99.5%, or
    ``min_agreement``). Pass, not merely "not fail": an agreement of 99.35% is inconclusive on 5,000
    validation images but fails on 10,000 test images, so anything weaker than pass would accept
    models parity then fails. So an export the search accepts is one `toolkit parity` passes."""

    max_drop: float | None  # percentage points; None: only --recipe replay
    max_layers: int = 5
    recipe: dict | None = None  # a recipe file's content to replay
    confidence: float = 0.95
    min_agreement: float | None = None  # percent of validation images on which it must agree with Keras
    parity_min_agreement: float = Gates.int8_min_agreement  # parity's int8 agreement gate
    npu: tuple[str, ...] = ()  # NPU configurations the int8 files are for (toolkit/targets): keep layers on the NPU
    max_slowdown: float | None = None  # a kept step may not run clearly slower than this times plain int8 (batch 1)

    def verdicts(self, m: dict) -> list:
        from toolkit.verdicts import at_least, at_most, paired_resize, wilson_resize

        lo, hi = m["drop_ci95_points"]
        agree_lo, agree_hi = m["agreement_ci95"]
        bound = self.parity_min_agreement if self.min_agreement is None else self.min_agreement
        n, b, c = m["images"], m["ref_right_variant_wrong"], m["ref_wrong_variant_right"]
        both = round(m["accuracy"] * n) - c
        return [at_most("accuracy_loss_points", m["drop_points"], self.max_drop, (lo, hi), n,
                        resize=paired_resize(both, b, c, n - both - b - c, self.confidence)),
                at_least("agreement_percent", 100.0 * m["agreement"], bound, (100.0 * agree_lo, 100.0 * agree_hi),
                         n, resize=wilson_resize(round(m["agreement"] * n), n, self.confidence))]

    def met(self, m: dict) -> bool:
        from toolkit.verdicts import PASS

        return all(v.status == PASS for v in self.verdicts(m))

    def rank(self, m: dict) -> tuple:
        """Sort key, best first: meets the budget, then the smallest shortfall in drop, then in agreement."""
        _, agreement = self.verdicts(m)
        short_agreement = max(0.0, agreement.bound - 100.0 * m["agreement_ci95"][1])
        return (not self.met(m), max(0.0, m["drop_upper_points"] - self.max_drop), short_agreement,
                m["drop_upper_points"], -m["agreement"])

    def describe(self, m: dict) -> str:
        loss, agreement = self.verdicts(m)
        return (f"loss {loss.value:+.2f} points (95% CI {loss.interval[0]:+.2f} to {loss.interval[1]:+.2f}, budget "
                f"{self.max_drop}: {loss.status}), agreement {agreement.value:.2f}% (at least {agreement.bound:g}%: "
                f"{agreement.status})")


@dataclass
class Validation:
    """The validation split, preprocessed, with the Keras model's predictions on it."""

    images: np.ndarray
    labels: np.ndarray
    reference: np.ndarray  # Keras' predicted class per image
    description: str

    def part(self, k: int) -> Validation:
        """Every second image from the ``k``-th (0 or 1): half the split, the classes mixed as in the whole."""
        n = len(self.labels[k::2])
        return Validation(self.images[k::2], self.labels[k::2], self.reference[k::2],
                          f"{self.description}: its {('even', 'odd')[k]}-numbered images ({n:,})")


@dataclass
class Backend:
    format: str  # the format it builds (toolkit/exporters: Format.control names the module)
    tool: str  # what builds the mixed-precision models, with its version
    layers: Callable  # layers(ctx) -> list[dict(name, op)] in graph order
    build: Callable  # build(ctx, levels: {layer: level}) -> bytes
    applied: Callable  # applied(ctx, content, levels) -> {layer: level actually in the model}
    activation_sqnr: Callable  # activation_sqnr(ctx, content, images) -> (sqnr {tensor: dB}, graph [(layer, op, inputs, output)])
    predict: Callable  # predict(content, images) -> class per image
    latency: Callable  # latency(content) -> batch-1 p50 summary (dict)
    check: Callable | None = None  # check(content) -> None or raises: the target runtime takes it (TFLM)


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    BACKENDS[backend.format] = backend
    return backend


def backend_for(fmt: str) -> Backend:
    """The format's backend: the module its ``Format.control`` names registers it on first use."""
    if fmt not in BACKENDS:
        import importlib

        from toolkit import exporters

        module = exporters.get_format(fmt).control
        if module is not None:
            importlib.import_module(module).backend()
    if fmt not in BACKENDS:
        raise UsageError(f"accuracy control has no backend for format {fmt!r} (formats with one: "
                         f"{', '.join(n for n, f in exporters.load_all().items() if f.control)})")
    return BACKENDS[fmt]


# --- measuring ---------------------------------------------------------------------------------

def measure(val: Validation, predicted: np.ndarray, confidence: float = 0.95) -> dict:
    """Accuracy drop against the Keras model on the validation split, in points, with its interval."""
    labels, ref = val.labels, val.reference
    ref_right, var_right = ref == labels, predicted == labels
    n = int(len(labels))
    b = int((ref_right & ~var_right).sum())
    c = int((~ref_right & var_right).sum())
    both = int((ref_right & var_right).sum())
    lo, hi = paired_difference_interval(b, c, n, confidence, both_right=both)
    return {
        "accuracy": float(var_right.mean()),
        "reference_accuracy": float(ref_right.mean()),
        "drop_points": 100.0 * (b - c) / n,
        "drop_ci95_points": [-100.0 * hi, -100.0 * lo],
        "drop_upper_points": -100.0 * lo,
        "agreement": float((predicted == ref).mean()),
        "agreement_ci95": list(wilson_interval(int((predicted == ref).sum()), n, confidence)),
        "ref_right_variant_wrong": b,
        "ref_wrong_variant_right": c,
        "images": n,
    }


def _perfect_passes(n: int, settings: ControlSettings) -> bool:
    """A step agreeing with the model on each of ``n`` images passes the budget there (only counts matter)."""
    same = np.zeros(n, dtype=np.int64)
    return settings.met(measure(Validation(np.empty((0,)), same, same, ""), same, settings.confidence))


def split_for_confirmation(val: Validation, settings: ControlSettings) -> tuple[Validation, Validation | None, dict]:
    """Selection bias: a search tries many steps on the same images and stops at the first that passes, so the
    figure it stops on is the luckiest of several. So the search ranks and accepts on half the validation images
    (every second one) and the step it keeps is judged once, on the other half, which no choice was made on.
    Only where that half can show the budget: if even a step agreeing with the model on every held-out image would
    not pass there, the search uses every image and its record says it could not be confirmed, and why."""
    search, held = val.part(0), val.part(1)
    if _perfect_passes(len(held.labels), settings):
        return search, held, {"made": True, "search_images": len(search.labels),
                              "held_out_images": len(held.labels)}
    lo, hi = len(held.labels), 1 << 24
    while lo + 1 < hi:  # the smallest half on which a perfect step passes
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _perfect_passes(mid, settings) else (mid, hi)
    return val, None, {"made": False, "images": len(val.labels), "images_needed": 2 * hi,
                       "reason": (f"not confirmed on held-out images: half of the {len(val.labels):,} validation "
                                  f"images cannot show this budget even where every prediction matches the model "
                                  f"(holding half out needs at least {2 * hi:,})")}


def better_than_plain(val: Validation, plain_predicted: np.ndarray, step_predicted: np.ndarray, step: int,
                      confidence: float = 0.95) -> dict:
    """Whether a step agrees with the model on more of ``val``'s images than plain int8 does, beyond noise: the
    paired 95% interval (Newcombe) of the difference in agreement lies above zero. A step that missed the budget
    replaces plain int8 only then: ranking on point figures kept, on MobileNetV3Small, a step one image 'better'
    on validation that failed parity on the test set where plain int8 was inconclusive."""
    ref = val.reference
    plain_right, step_right = plain_predicted == ref, step_predicted == ref
    n = int(len(ref))
    b, c = int((plain_right & ~step_right).sum()), int((~plain_right & step_right).sum())
    lo, hi = paired_gain_interval(plain_right, step_right, confidence)
    return {"step": step, "images": n, "plain_only_agrees": b, "step_only_agrees": c,
            "agreement_difference_ci95_points": [100.0 * lo, 100.0 * hi], "beyond_noise": bool(lo > 0),
            "text": f"step {step} agrees on {c} image(s) plain int8 does not, plain on {b} the step does not: "
                    f"difference {100.0 * (c - b) / n:+.2f} points, 95% CI {100.0 * lo:+.2f} to {100.0 * hi:+.2f}"}


def local_errors(sqnr: dict[str, float], graph: list[tuple]) -> list[dict]:
    """Each layer's own error: the SQNR (dB) it loses between its activation inputs and its
    output. Sorted worst first. A layer whose inputs are not activations is charged its output's
    distance from a perfect copy (its SQNR below 60 dB)."""
    rows = []
    for layer, op, inputs, output in graph:
        if output not in sqnr:
            continue
        ins = [sqnr[i] for i in inputs if i in sqnr]
        if inputs and not ins:
            continue  # its inputs were fused away in the quantized model: its error cannot be told apart
        base = min(ins) if ins else 60.0
        out = sqnr[output]
        rows.append({"layer": layer, "op": op, "sqnr_db": round(out, 3),
                     "input_sqnr_db": round(base, 3), "loss_db": round(max(0.0, min(base, 60.0) - min(out, 60.0)), 3)})
    rows.sort(key=lambda r: (-r["loss_db"], r["sqnr_db"]))
    return rows


def images_key(images: np.ndarray) -> tuple:
    """A cache key for a batch of images (the float model's activations on them are computed once)."""
    import hashlib

    return images.shape, hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    reference = reference.astype(np.float64).ravel()
    noise = float(np.sum((reference - approx.astype(np.float64).ravel()) ** 2))
    signal = float(np.sum(reference**2))
    if noise == 0.0:
        return 120.0
    if signal == 0.0:
        return -120.0
    return float(max(-120.0, min(120.0, 10 * math.log10(signal / noise))))


_SCOPE_SUFFIX = re.compile(r"_\d+(?=/|;|:|$)")  # Keras' per-process name scopes: model_1/dense_2/...


def _match_layers(levels: dict, known: set[str]) -> dict:
    """A recipe's layer names in this model: exact, else equal once Keras' per-process scope
    suffixes are dropped (a model traced in another process may be ``net_2/...`` for ``net_1/...``)."""
    canonical: dict[str, list[str]] = {}
    for name in known:
        canonical.setdefault(_SCOPE_SUFFIX.sub("", name), []).append(name)
    out = {}
    for name, level in levels.items():
        same = canonical.get(_SCOPE_SUFFIX.sub("", name), [])
        out[name if name in known or len(same) != 1 else same[0]] = level
    return out


def read_recipe(path: Path) -> schema.Recipe:
    from toolkit.errors import DataError

    try:
        doc = schema.Recipe.read_file(Path(path))
    except DataError as exc:
        raise UsageError(f"--recipe {path}: {exc}") from None
    if not isinstance(doc.raw(), dict) or doc.get("schema") != RECIPE_SCHEMA or not isinstance(doc.get("variants"), dict):
        raise UsageError(f"--recipe {path}: not a toolkit quantization recipe (schema {RECIPE_SCHEMA}, 'variants')")
    return doc


def p50_latency(call: Callable[[], object]) -> dict:
    from toolkit.timing import measure as time_calls
    from toolkit.timing import summarize

    samples = time_calls(call, warmup_runs=10, warmup_seconds=0.1, min_runs=200, min_seconds=0.3, max_runs=5000)
    summary = summarize(samples["samples_ns"], 1)
    return {"p50_ms": summary["p50_ms"], "p50_ci95_ms": summary["p50_ci95_ms"], "runs": summary["runs"]}


def exact(name: str) -> str:
    """A regular expression matching exactly this op scope (ai-edge-quantizer appends ';')."""
    return "^" + re.escape(name) + ";$"
