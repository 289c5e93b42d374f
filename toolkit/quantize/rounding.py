"""Learned weight rounding (AdaRound) and bias correction, for Keras 3 models: a transformation of the float
weights onto the exporters' int8 grid.

Why: the exporters round each weight to the nearest step of its output channel's grid (per channel, symmetric,
-127..127, step = the channel's largest magnitude / 127). Nearest is not the best choice when a channel's steps
are coarse for its weights (a large weight, for example on an input that is always zero, makes every other weight
of that channel round on a few steps): rounding some weights the other way can cancel their errors on the
layer's output. AdaRound (Nagel et al., 2020; AIMET's and NNCF's PyTorch AdaRound) learns, layer by layer, whether
each weight rounds down or up, so that the layer's output on calibration images reproduces the float model's; a
regularizer drives every choice to 0 or 1. Then empirical bias correction (as NNCF's and AIMET's): each layer's
bias takes the mean error its int8 output still has, per output channel.

The result is a Keras model of the same architecture whose weights lie **on the grid** (BatchNormalizations the
converter folds are folded in first: Simulation.fold_batchnorms), with each channel's largest magnitude kept, so
the grid's step is unchanged and every exporter's round-to-nearest reproduces the chosen integers: tflite-int8,
tflite-micro and onnx-int8 made from it are ordinary files. Each layer learns on the float model's inputs
(AdaRound's original: only the layer's own rounding). The asymmetric variant (``inputs="int8"``: the simulated
int8 model's inputs, so that a layer also makes up for what earlier layers and the activations' rounding lost)
made EfficientNetB0-small agree 6.65 points less with its float model on 2,000 unseen images while each layer
reproduced its output better on held-out calibration images (benchmarks/LEARNED_ROUNDING.md's run at git 3dfd49a,
committed in 732683a): where activation rounding dominates the error, as there, weights bent to absorb it do not
compose. This default was chosen on those 2,000 images (never the test set); LEARNED_ROUNDING.md gives its
figures.

benchmarks/INT8_ERROR.md bounds what it can do: it changes only how the weights round, so it removes at most the
weights' share of the int8 error (22% on MobileNetV2, 0% measurable on MobileNetV3Small and EfficientNetB0).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (AdaRound's values)
# one layer's inputs and outputs kept in memory at most (float32): a layer whose are larger per image (an early
# layer of a 224x224 model: megabytes per image) learns on fewer images, at least MIN_IMAGES
LAYER_MEMORY, MIN_IMAGES = 1 << 30, 64


@dataclass(frozen=True)
class RoundingSettings:
    """AdaRound's recipe: the paper's regularizer (lambda 0.01, beta annealed 20 -> 2 after a 20% warm start) and
    rectified sigmoid, fewer iterations (this runs on CPUs), a learning rate not tuned on any model; which inputs
    a layer learns on was chosen on validation images (the module's docstring)."""

    iterations: int = 1000  # per layer
    batch_size: int = 32  # images per step
    images: int = 512  # calibration images whose layer inputs are kept (at most; the export's sample: 500)
    learning_rate: float = 1e-2  # Adam on the rounding variables
    regularization: float = 0.01  # lambda of the rounding regularizer
    beta: tuple[float, float] = (20.0, 2.0)  # the regularizer's exponent, annealed from the first to the second
    warm_start: float = 0.2  # the first fifth of the iterations without the regularizer
    bias_correction: bool = True
    # the layer's input learned on: "int8" (the simulated int8 model's: a layer also makes up for what earlier
    # layers lost) or "float" (the float model's: AdaRound's original, only the layer's own rounding)
    inputs: str = "float"
    held_out: float = 0.2  # of the images: not learned on; each layer keeps nearest unless learned is better there
    seed: int = 0
    estimator: str = "auto"  # the activation ranges simulated (toolkit/ranges.py)
    levels: int = 127  # the exporter's grid: per channel, symmetric, -levels..levels (onnxruntime's 7-bit: 64)


class _Captured(Exception):
    pass


def _layer_inputs(sim, op, images: np.ndarray, quantize: bool, batch: int = 64) -> np.ndarray:
    """The input of weight layer ``op`` in the (simulated int8, or float) forward pass on ``images``; the pass
    stops at the layer."""
    captured = []
    own = type(sim)._weight_layer

    def hook(layer, x, q):
        if layer is op:
            captured.append(np.asarray(x))
            raise _Captured
        return own(sim, layer, x, q)

    sim._weight_layer = hook
    try:
        for i in range(0, len(images), batch):
            with contextlib.suppress(_Captured):
                sim(images[i : i + batch], quantize=quantize)
    finally:
        del sim._weight_layer
    return np.concatenate(captured)


def _grid_layout(op, kernel: np.ndarray) -> np.ndarray:
    """The kernel as the exporters quantize it: output channels on the last axis."""
    if type(op).__name__ == "DepthwiseConv2D":
        kh, kw, cin, mult = kernel.shape
        return kernel.reshape(kh, kw, cin * mult)
    return kernel


def _apply(op, x, kernel, bias):
    """The layer's linear output (before any activation) with ``kernel`` in the grid layout."""
    import keras

    ops = keras.ops
    kind = type(op).__name__
    if kind == "DepthwiseConv2D":
        y = ops.depthwise_conv(x, ops.reshape(kernel, op.kernel.shape), strides=op.strides, padding=op.padding,
                               data_format="channels_last", dilation_rate=op.dilation_rate)
    elif kind == "Conv2D":
        y = ops.conv(x, kernel, strides=op.strides, padding=op.padding, data_format="channels_last",
                     dilation_rate=op.dilation_rate)
    else:
        y = ops.matmul(x, kernel)
    return y if bias is None else y + bias


def _bias_of(sim, op):
    """(the variable holding the layer's bias after the fold, or None): its own, or its folded
    BatchNormalization's beta."""
    if op.use_bias:
        return op.bias
    bn = sim.folded.get(id(op))
    return bn.beta if bn is not None and bn.center else None


def _learned_up(op, x_q: np.ndarray, target: np.ndarray, bias, floor: np.ndarray, rest: np.ndarray,
                scale: np.ndarray, settings: RoundingSettings, rng) -> tuple[np.ndarray, Callable]:
    """AdaRound's optimization: (per weight, 1 where it rounds up; the output error of a choice of ups)."""
    import keras
    import tensorflow as tf

    levels = float(settings.levels)
    rest = np.clip(rest, 1e-4, 1 - 1e-4)
    v = tf.Variable(-np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0).astype(np.float32))  # soft(v) = rest
    floor_t, scale_t = tf.constant(floor, tf.float32), tf.constant(scale.astype(np.float32))
    b = None if bias is None else tf.constant(bias.numpy())
    optimizer = keras.optimizers.Adam(settings.learning_rate)
    optimizer.build([v])

    def reconstruction(xb, yb, h):
        y = _apply(op, xb, scale_t * tf.clip_by_value(floor_t + h, -levels, levels), b)
        return tf.reduce_mean(tf.reduce_sum(tf.square(y - yb), axis=-1))

    @tf.function(reduce_retracing=True)
    def step(xb, yb, beta, lam):
        with tf.GradientTape() as tape:
            h = tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
            loss = reconstruction(xb, yb, h) + lam * tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta))
        optimizer.apply_gradients([(tape.gradient(loss, v), v)])

    warm = int(settings.warm_start * settings.iterations)
    hi, lo = settings.beta
    for it in range(settings.iterations):
        pick = rng.choice(len(x_q), min(settings.batch_size, len(x_q)), replace=False)
        beta, lam = (hi, 0.0) if it < warm else (
            hi + (lo - hi) * (it - warm) / max(1, settings.iterations - warm), settings.regularization)
        step(tf.constant(x_q[pick]), tf.constant(target[pick]), tf.constant(beta, tf.float32),
             tf.constant(lam, tf.float32))

    def error(up: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        h = tf.constant(up, tf.float32)
        return float(np.mean([reconstruction(x[i : i + 64], y[i : i + 64], h).numpy() for i in range(0, len(x), 64)]))

    return (v.numpy() >= 0).astype(np.float32), error


def learn_layer(op, x_q: np.ndarray, target: np.ndarray, bias, settings: RoundingSettings, rng) -> dict:
    """AdaRound on one layer: its kernel replaced by one on its grid whose rounding was learned so that the
    layer's output on ``x_q`` (its inputs: the float model's, or the simulated int8 model's) reproduces ``target``
    (the float model's output). The
    last ``settings.held_out`` of the images are not learned on: the exporters' own rounding (to nearest) stays
    unless the learned one reproduces the output better on them (a layer with many weights and few input
    positions, as late layers of a small input, can fit the images it learns on and lose on others)."""
    kernel = _grid_layout(op, op.kernel.numpy())
    flat = kernel.reshape(-1, kernel.shape[-1])
    levels = float(settings.levels)
    scale = np.maximum(np.abs(flat).max(0), 1e-12) / levels
    scaled = kernel / scale
    floor = np.floor(scaled)
    fit = len(x_q) - max(1, int(round(settings.held_out * len(x_q))))
    up, error = _learned_up(op, x_q[:fit], target[:fit], bias, floor, scaled - floor, scale, settings, rng)
    # each channel's largest magnitude stays on +-levels, so the exporters compute the same step from the new kernel
    top, cols = np.abs(flat).argmax(0), np.arange(flat.shape[1])

    def pinned(chosen: np.ndarray) -> np.ndarray:
        chosen = np.clip(chosen, -levels, levels).reshape(flat.shape)
        chosen[top, cols] = np.sign(flat[top, cols]) * levels
        return chosen.reshape(kernel.shape)

    nearest, learned = pinned(np.round(scaled)), pinned(floor + up)
    errors = {k: error(v - floor, x_q[fit:], target[fit:]) for k, v in (("nearest", nearest), ("learned", learned))}
    kept = "learned" if errors["learned"] < errors["nearest"] else "nearest"
    chosen = learned if kept == "learned" else nearest
    op.kernel.assign((chosen * scale).astype(np.float32).reshape(op.kernel.shape))
    return {"layer": op.name, "weights": int(flat.size), "rounded_other_way": int(np.sum(chosen != nearest)),
            "held_out_error_nearest": round(errors["nearest"], 6),
            "held_out_error_learned": round(errors["learned"], 6),
            "kept": kept}


def correct_bias(op, x_q: np.ndarray, target: np.ndarray, bias) -> float:
    """Adds to the layer's bias the mean error of its output on ``x_q`` against ``target``, per output channel;
    returns that error's largest magnitude."""
    got = np.concatenate([np.asarray(_apply(op, x_q[i : i + 64], _grid_layout(op, op.kernel.numpy()), bias))
                          for i in range(0, len(x_q), 64)])
    error = (target - got).reshape(-1, target.shape[-1]).mean(0)
    bias.assign(bias.numpy() + error.astype(np.float32))
    return float(np.abs(error).max())


def _images_for(op, available: int) -> int:
    """How many images a layer learns on: all, unless their inputs and outputs would exceed LAYER_MEMORY."""
    try:
        per_image = 4 * (int(np.prod(op.input.shape[1:])) + int(np.prod(op.output.shape[1:])))
    except (AttributeError, ValueError, TypeError):  # a layer called more than once has no single input shape
        return available
    return min(available, max(MIN_IMAGES, LAYER_MEMORY // max(1, per_image)))


def learn_rounding(model, calibration_images: np.ndarray, settings: RoundingSettings,
                   log: Callable[[str], None] = lambda s: None):
    """A copy of ``model`` (BatchNormalizations folded) whose weights lie on the exporters' int8 grid with their
    rounding learned, and its biases corrected; returns (the model, a record of what was done)."""
    import keras
    import tensorflow as tf

    from toolkit.quantize.finetune import Simulation

    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(settings.seed)
    started = time.perf_counter()

    def folded_copy():
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        sim = Simulation(copy, settings.levels)
        sim.fold_batchnorms()
        return copy, sim

    (rounded, student), (_, reference) = folded_copy(), folded_copy()
    images = calibration_images.astype(np.float32)
    if len(images) > settings.images:
        images = images[np.sort(rng.choice(len(images), settings.images, replace=False))]
    student.calibrate(calibration_images.astype(np.float32), settings.estimator)
    layers = [n.operation for n in student.nodes if student._simulated(n.operation)]
    unfolded = {id(op) for op in student.fold.values()
                if not op.use_bias and not student.folded[id(op)].center}  # the converter folds these itself
    floats = {n.operation.name: n.operation for n in reference.nodes}
    rows = []
    for k, op in enumerate(layers, 1):
        if id(op) in unfolded:
            rows.append({"layer": op.name, "skipped": "its BatchNormalization has no bias to fold into: the "
                                                      "converter folds it, off the grid learned here"})
            continue
        twin = floats[op.name]
        use = images[: _images_for(twin, len(images))]
        x_f = _layer_inputs(reference, twin, use, quantize=False)
        target = np.concatenate([np.asarray(reference._weight_layer(twin, x_f[i : i + 64], False))
                                 for i in range(0, len(x_f), 64)])
        x_q = _layer_inputs(student, op, use, quantize=True) if settings.inputs == "int8" else x_f
        bias = _bias_of(student, op)
        row = {**learn_layer(op, x_q, target, bias, settings, rng), "images": len(use)}
        if settings.bias_correction and bias is not None:
            row["bias_correction_max"] = round(correct_bias(op, x_q, target, bias), 6)
        rows.append(row)
        log(f"  learned rounding: layer {k}/{len(layers)} {op.name}: output error on held-out images "
            f"{row['held_out_error_nearest']:.4g} rounded to nearest, {row['held_out_error_learned']:.4g} learned; "
            f"kept {row['kept']} ({row['rounded_other_way']:,} of {row['weights']:,} weights the other way)")
    record = {"settings": {**settings.__dict__, "beta": list(settings.beta)}, "images": int(len(images)),
              "layers": rows, "folded_batchnorms": len(student.fold),
              "seconds": round(time.perf_counter() - started, 1)}
    return rounded, record


def judge(model, rounded, validation: tuple[np.ndarray, np.ndarray], calibration: np.ndarray, estimator: str,
          levels: int = 127) -> dict:
    """Whether the learned rounding's simulated int8 model agrees with the float model on more ``validation``
    images (images, the float model's classes) than the model's own weights' beyond noise (the paired interval of
    the difference above zero, 95%): the rule that decides which weights the int8 variants are made from."""
    from toolkit.quantize.finetune import Simulation, _simulated_agreement
    from toolkit.stats import gain_beyond_noise

    own = _simulated_agreement(Simulation(model, levels), *validation, calibration, estimator)
    learned = _simulated_agreement(Simulation(rounded, levels), *validation, calibration, estimator)
    beyond, interval = gain_beyond_noise(learned, own, 0.95)
    return {"validation_images": int(len(own)), "own_agreement": float(own.mean()),
            "learned_agreement": float(learned.mean()), "learned_minus_own_ci_points": interval, "kept": (
                "learned" if beyond else "own"),
            "rule": "the model's own weights unless the learned rounding's simulated int8 model agrees with the float "
                    "model on more validation images beyond noise (the paired 95% interval of the difference above "
                    "zero)"}
