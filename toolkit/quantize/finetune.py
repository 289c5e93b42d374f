"""Quantization-aware fine-tuning toward the float model, for Keras 3 models.

Why: post-training int8 of some architectures cannot pass parity with any tool (benchmarks/PTQ.md:
EfficientNetB0 agrees with its float model on under 98% of the test images, ours and every peer's).
tensorflow-model-optimization's ``quantize_model`` refuses Keras 3 models (model-optimization#1270),
NNCF dropped its TensorFlow backend and AIMET has no Keras package; so this module simulates the int8
arithmetic of the exported files in the forward pass and fine-tunes the weights so that the simulated
int8 model reproduces **the user's float model** (distillation: its logits are the targets; labels are
not needed), as tfmot's QAT wrappers and NNCF's and AIMET's QAT do for their frameworks.

What is simulated (what the TFLite converter builds for a full-integer model, as tfmot's registry
says per layer; ONNX's Q/DQ graph quantizes the same tensors, its weights on onnxruntime's 7-bit grid,
-64..64: ``fine_tune(..., weight_levels=64)`` trains through that grid, and `toolkit export` fine-tunes once per
grid its int8 variants use, as learned rounding does):

- weights of Conv2D, DepthwiseConv2D and Dense layers, per output channel, symmetric int8 (-127..127, or the
  exporter's grid -levels..levels);
  a BatchNormalization whose only input is such a layer (and that layer's only consumer) is folded into
  its weights and bias first, with its moving statistics, as the converter folds it;
- every activation tensor the converter quantizes, per tensor, asymmetric 8-bit, at the range the
  exporter's estimator gives on the calibration images (toolkit/ranges.py; re-measured on the current
  weights before every epoch): the model input, each layer's output, except where the converter fuses
  the next op into this one (ReLU/ReLU6 after a convolution, a folded BatchNormalization or an Add) or
  the op only moves values (padding, max pooling, reshapes, dropout);
- sigmoid, softmax and tanh outputs at their fixed int8 scales (1/256, 1/256, 1/128), and swish as the
  converter builds it: a LOGISTIC at 1/256 times its input, then the product quantized.

Gradients pass the rounding straight through (Keras' ``fake_quant_with_min_max_vars``, TensorFlow's
fake-quant ops on the TensorFlow backend). Moving statistics stay frozen (tfmot freezes them too after
a few steps; here they are the float model's, so folding stays exact). The result is an ordinary Keras
model of the same architecture with other weights: the exporters make ordinary int8 files from it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from toolkit.stats import gain_beyond_noise as _beyond_noise  # (after, before)

WEIGHT_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")
# ops whose output takes its input's quantization (values move, none is computed)
PASS_THROUGH = ("InputLayer", "Reshape", "Flatten", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
                "ZeroPadding2D", "MaxPooling2D", "Cropping2D", "Permute", "GaussianNoise", "GaussianDropout",
                "ActivityRegularization", "Identity")
FIXED = {"sigmoid": (0.0, 255 / 256), "softmax": (0.0, 255 / 256), "tanh": (-1.0, 127 / 128)}
FUSED = ("relu", "relu6")
INPUT_KEY = "input"


@dataclass(frozen=True)
class FineTuneSettings:
    """The recipe (chosen on MobileNetV2's validation images; benchmarks/INT8_ERROR.md shows why no recipe tried
    there beat the model's own weights; benchmarks/FINETUNE_RECIPES.md measures the others on small-data models)."""

    epochs: int = 3
    learning_rate: float = 1e-5
    patience: int = 1  # with validation images: epochs without improvement before stopping
    batch_size: int = 64
    seed: int = 0
    temperature: float = 1.0  # distillation temperature (1: the float model's own probabilities)
    max_images: int = 20_000  # training images per epoch (a fixed-seed sample when there are more)
    # the activation ranges simulated (toolkit/ranges.py); auto: minmax unless a tensor has a long tail, as the
    # exporters' auto (it simulated tail-aware always, where MobileNetV2's files are built with minmax)
    estimator: str = "auto"
    optimizer: str = "adam"  # adam or sgd (with momentum 0.9)
    loss: str = "kl"  # kl, mse (on logits), kl+margin
    mixup: float = 0.0  # Beta(a, a) mixing of training images, the teacher's logits on the mixed images
    fold: bool = True  # train the folded weights (Simulation.fold_batchnorms)


def _kind(op) -> str:
    return type(op).__name__


def _activation_name(fn) -> str:
    import keras

    if fn is None:
        return "linear"
    try:
        name = keras.activations.serialize(fn)
    except (ValueError, TypeError):
        name = getattr(fn, "__name__", "other")
    if isinstance(name, dict):
        name = name.get("config", {}).get("name") or name.get("class_name", "other")
    return {"silu": "swish"}.get(str(name), str(name))


def _layer_activation(op) -> str | None:
    """The activation a standalone activation layer applies (None: not an activation layer)."""
    kind = _kind(op)
    if kind == "Activation":
        return _activation_name(op.activation)
    if kind == "ReLU":
        plain = not op.negative_slope and not op.threshold
        return {None: "relu", 6.0: "relu6"}.get(None if op.max_value is None else float(op.max_value), "other") \
            if plain else "other"
    if kind == "Softmax":
        return "softmax"
    return None


class Simulation:
    """The model's forward pass with its int8 arithmetic simulated (or not: ``quantize=False``), walking
    the functional graph node by node (as Keras' own ``Functional`` call does)."""

    def __init__(self, model, weight_levels: int = 127):
        import keras

        # a Sequential model walks the functional graph Keras builds for it (the same layer objects)
        if getattr(model, "_functional", None) is not None:
            model = model._functional
        if not hasattr(model, "_nodes_by_depth"):
            from toolkit.errors import UsageError

            raise UsageError("quantization-aware fine-tuning needs a functional Keras model (keras.Model(inputs, "
                             "outputs) or Sequential); this one is subclassed")
        self.model = model
        self.parts = frozenset({"weights", "activations"})  # what quantize=True quantizes (``only`` narrows it)
        depths = sorted(model._nodes_by_depth, reverse=True)
        self.nodes = [n for d in depths for n in model._nodes_by_depth[d] if n.operation and not n.is_input]
        consumers: dict[int, list] = {}
        for node in self.nodes:
            for t in node.input_tensors:
                producer = t._keras_history.operation
                consumers.setdefault(id(producer), []).append(node.operation)
        self._consumers = consumers
        self.fold = {}  # id(BatchNormalization) -> the weight layer it folds into
        self.folded = {}  # id(weight layer) -> its BatchNormalization
        for node in self.nodes:
            op = node.operation
            if _kind(op) != "BatchNormalization" or len(node.input_tensors) != 1:
                continue
            producer = node.input_tensors[0]._keras_history.operation
            axis = op.axis if isinstance(op.axis, int) else (op.axis[0] if len(op.axis) == 1 else None)
            if (_kind(producer) in WEIGHT_LAYERS and len(consumers.get(id(producer), [])) == 1
                    and axis in (-1, len(node.input_tensors[0].shape) - 1) and self._simulated(producer)
                    and _activation_name(producer.activation) == "linear"):
                self.fold[id(op)] = producer
                self.folded[id(producer)] = op
        self.ranges: dict[str, object] = {}  # quantization point -> keras.Variable([lo, hi])
        self.weight_levels = weight_levels  # the exporter's weight grid: -levels..levels per channel
        self._keras = keras

    def fold_batchnorms(self) -> None:
        """Fold each folded BatchNormalization into its layer's weights and make it the identity: the same function
        (to float rounding; the converter folds the identity, so the file's integers round the weights trained),
        but the weights trained are the ones quantized. Trained through the fold, a kernel's SGD step is scaled by
        gamma^2 / variance: SGD at 1e-3 through the fold changed the best epoch's simulated agreement by -16.10 points
        on MobileNetV2 and -12.65 on EfficientNetB0 (small-data models), folded by -1.05 and +0.90
        (benchmarks/FINETUNE_RECIPES.md)."""
        for op in self.fold.values():
            bn = self.folded[id(op)]
            if not op.use_bias and not bn.center:  # no bias to hold the fold's: trained through the fold
                continue
            inv = (bn.gamma.numpy() if bn.scale else 1.0) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
            kernel = op.kernel.numpy()
            op.kernel.assign(kernel * (inv.reshape(kernel.shape[2:]) if _kind(op) == "DepthwiseConv2D" else inv))
            bias = (bn.beta.numpy() if bn.center else 0.0) + ((op.bias.numpy() if op.use_bias else 0.0)
                                                             - bn.moving_mean.numpy()) * inv
            if op.use_bias:
                op.bias.assign(bias)
            bn.moving_mean.assign(np.zeros_like(inv))
            bn.moving_variance.assign(np.full_like(inv, 1.0 - bn.epsilon))
            if bn.scale:
                bn.gamma.assign(np.ones_like(inv))
            if bn.center:  # without a bias of its own, the layer's bias lives in the BatchNormalization's beta
                bn.beta.assign(np.zeros_like(inv) if op.use_bias else bias.astype(np.float32))

    def folded_layers(self) -> list:
        """The weight layers a BatchNormalization is folded into."""
        return list(self.fold.values())

    # ------------------------------------------------------------------ what is quantized where
    def _simulated(self, op) -> bool:
        """A weight layer whose int8 arithmetic is simulated (channels-last, ungrouped)."""
        return (_kind(op) in WEIGHT_LAYERS and getattr(op, "data_format", "channels_last") == "channels_last"
                and getattr(op, "groups", 1) == 1)

    def _fused_into_consumer(self, op) -> bool:
        """The converter fuses a sole ReLU/ReLU6 consumer into a convolution, a folded BatchNormalization or an
        Add: this op's output is not a quantized tensor of the file."""
        users = self._consumers.get(id(op), [])
        if len(users) != 1 or _layer_activation(users[0]) not in FUSED:
            return False
        kind = _kind(op)
        return (kind in WEIGHT_LAYERS and self._simulated(op)) or id(op) in self.fold or kind in ("Add",)

    def _quantized_output(self, op) -> bool:
        if _kind(op) in PASS_THROUGH or id(op) in self.folded:
            return False
        return not self._fused_into_consumer(op)

    # ------------------------------------------------------------------ fake quantization
    @contextlib.contextmanager
    def only(self, part: str):
        """Within: ``quantize=True`` quantizes only ``part`` ("weights" or "activations"; toolkit/quantize/sources.py)."""
        keep, self.parts = self.parts, frozenset({part})
        try:
            yield self
        finally:
            self.parts = keep

    def _fq(self, x, key: str, quantize: bool, record):
        if record is not None:
            record.add(key, self._keras.ops.convert_to_numpy(x), batched=True)
        if not quantize or "activations" not in self.parts:
            return x
        var = self.ranges.get(key)
        if var is None:
            return x  # not calibrated (a point the calibration pass never reached)
        return self._keras.quantizers.fake_quant_with_min_max_vars(x, var[0], var[1], num_bits=8)

    def _fq_fixed(self, x, lo: float, hi: float, quantize: bool):
        if not quantize or "activations" not in self.parts:
            return x
        return self._keras.quantizers.fake_quant_with_min_max_vars(x, lo, hi, num_bits=8)

    def _fq_weights(self, kernel, quantize: bool):
        """Per output channel (the last axis), symmetric, -127..127 (narrow range; or -levels..levels, the
        rounding's gradient passed straight through)."""
        if not quantize or "weights" not in self.parts:
            return kernel
        ops = self._keras.ops
        flat = ops.reshape(kernel, (-1, kernel.shape[-1]))
        bound = ops.maximum(ops.max(ops.abs(flat), axis=0), 1e-12)
        bound = ops.stop_gradient(bound)
        if self.weight_levels != 127:
            step = bound / self.weight_levels
            q = flat + ops.stop_gradient(ops.round(flat / step) * step - flat)
            return ops.reshape(q, kernel.shape)
        q = self._keras.quantizers.fake_quant_with_min_max_vars(flat, -bound, bound, num_bits=8, narrow_range=True,
                                                                axis=-1)
        return ops.reshape(q, kernel.shape)

    def _activation(self, name: str, x, key: str, quantize: bool, record):
        """An activation after a quantized tensor ``x``: its ops as the converter builds them; returns the
        activation's output before its own output quantization (done by the caller), or None for fixed."""
        ops = self._keras.ops
        if name in FIXED:
            fn = {"sigmoid": ops.sigmoid, "softmax": ops.softmax, "tanh": ops.tanh}[name]
            return self._fq_fixed(fn(x), *FIXED[name], quantize), True
        if name == "swish":
            gate = self._fq_fixed(ops.sigmoid(x), *FIXED["sigmoid"], quantize)
            return x * gate, False
        act = self._keras.activations.get(name) if name not in ("other",) else None
        return (act(x) if act is not None else x), False

    # ------------------------------------------------------------------ layers
    def _weight_layer(self, op, x, quantize: bool):
        ops = self._keras.ops
        kind = _kind(op)
        kernel = op.kernel
        bias = op.bias if op.use_bias else None
        bn = self.folded.get(id(op))
        if bn is not None:
            gamma = bn.gamma if bn.scale else 1.0
            beta = bn.beta if bn.center else 0.0
            inv = gamma / ops.sqrt(bn.moving_variance + bn.epsilon)
            shaped = ops.reshape(inv, kernel.shape[2:]) if kind == "DepthwiseConv2D" else inv
            kernel = kernel * shaped
            bias = beta + ((bias if bias is not None else 0.0) - bn.moving_mean) * inv
        if kind == "DepthwiseConv2D":
            kh, kw, cin, mult = kernel.shape
            q = ops.reshape(self._fq_weights(ops.reshape(kernel, (kh, kw, cin * mult)), quantize), kernel.shape)
            y = ops.depthwise_conv(x, q, strides=op.strides, padding=op.padding, data_format="channels_last",
                                   dilation_rate=op.dilation_rate)
        elif kind == "Conv2D":
            y = ops.conv(x, self._fq_weights(kernel, quantize), strides=op.strides, padding=op.padding,
                         data_format="channels_last", dilation_rate=op.dilation_rate)
        else:
            y = ops.matmul(x, self._fq_weights(kernel, quantize))
        return y if bias is None else y + bias

    def _call(self, node, args, kwargs, quantize: bool, record):
        op = node.operation
        name = op.name
        if id(op) in self.fold:  # folded into the layer before it: its output is that layer's
            out = args[0]
        elif self._simulated(op):
            out = self._weight_layer(op, args[0], quantize)
            act = _activation_name(op.activation)
            if act != "linear":
                if act not in FUSED:  # the convolution's own output is an int8 tensor before the activation
                    out = self._fq(out, f"{name}/pre", quantize, record)
                out, fixed = self._activation(act, out, name, quantize, record)
                if fixed:
                    return out
        elif (act := _layer_activation(op)) is not None:
            out, fixed = self._activation(act, args[0], name, quantize, record)
            if fixed:
                return out
        else:
            kwargs = {**kwargs, "training": False} if _accepts_training(op) else kwargs
            out = op(*args, **kwargs)
        if self._quantized_output(op) and not isinstance(out, (list, tuple)):
            out = self._fq(out, name, quantize, record)
        return out

    def __call__(self, x, quantize: bool = True, record=None):
        import keras

        tensors = {id(self.model.inputs[0]): self._fq(x, INPUT_KEY, quantize, record)}
        for node in self.nodes:
            if any(id(t) not in tensors for t in node.input_tensors):
                continue
            args, kwargs = node.arguments.fill_in(tensors)
            out = self._call(node, args, kwargs, quantize, record)
            for ref, value in zip(node.outputs, keras.tree.flatten(out), strict=False):
                tensors[id(ref)] = value
        return tensors[id(self.model.outputs[0])]

    # ------------------------------------------------------------------ ranges
    def calibrate(self, images: np.ndarray, estimator: str, batch: int = 64) -> dict:
        """Each quantization point's range on ``images`` with the current weights, by ``estimator``."""
        from toolkit.ranges import Stats

        stats = Stats()
        for i in range(0, len(images), batch):
            self(images[i : i + batch], quantize=False, record=stats)
        if estimator == "auto":  # what the exporters' auto keeps without a long tail (with one: chosen on validation)
            estimator = "tail-aware" if stats.tails() else "minmax"
        ranges = stats.ranges(estimator)
        for key, (lo, hi) in ranges.items():
            value = np.array([lo, hi], np.float32)
            if key in self.ranges:
                self.ranges[key].assign(value)
            else:
                self.ranges[key] = self._keras.Variable(value, trainable=False, name=f"range_{len(self.ranges)}")
        return ranges


def _accepts_training(op) -> bool:
    import inspect

    try:
        return "training" in inspect.signature(op.call).parameters
    except (TypeError, ValueError):
        return False


def distillation_loss(temperature: float, probabilities: bool = False, kind: str = "kl") -> Callable:
    """KL(float || simulated int8) of the softmax at ``temperature``, times T^2 (Hinton et al.). A model whose
    output is probabilities (a softmax last) is compared on their logarithms, which are its logits up to a
    constant per image."""
    import keras

    ops = keras.ops

    def loss(teacher, student):
        if probabilities:
            teacher, student = ops.log(ops.maximum(teacher, 1e-12)), ops.log(ops.maximum(student, 1e-12))
        if kind == "mse":
            return ops.mean(ops.square(teacher - student))
        t = ops.softmax(teacher / temperature, axis=-1)
        log_s = ops.log_softmax(student / temperature, axis=-1)
        log_t = ops.log(ops.maximum(t, 1e-12))
        kl = ops.mean(ops.sum(t * (log_t - log_s), axis=-1)) * temperature**2
        if kind == "kl":
            return kl
        # the teacher's class must stay on top by a margin: kl+margin, half the teacher's own lead (at most 1);
        # kl+hinge, 1 logit whatever the teacher's lead
        onehot = ops.one_hot(ops.argmax(teacher, axis=-1), teacher.shape[-1])
        s_top = ops.sum(student * onehot, axis=-1)
        s_other = ops.max(student - 1e9 * onehot, axis=-1)
        if kind == "kl+hinge":
            return kl + ops.mean(ops.relu(s_other - s_top + 1.0))
        t_lead = ops.sum(teacher * onehot, axis=-1) - ops.max(teacher - 1e9 * onehot, axis=-1)
        return kl + ops.mean(ops.relu(s_other - s_top + ops.minimum(0.5 * t_lead, 1.0)))

    return loss


def _simulated_agreement(sim: Simulation, images: np.ndarray, reference: np.ndarray, calibration: np.ndarray,
                         estimator: str) -> np.ndarray:
    """Per image, whether the simulated int8 model (ranges re-measured on the current weights, as the exporter
    will measure them) predicts the float model's class ``reference``."""
    sim.calibrate(calibration, estimator)
    predicted = np.concatenate([np.asarray(sim(images[i : i + 250], quantize=True)).argmax(1)
                                for i in range(0, len(images), 250)])
    return predicted == reference


def _trainable(student, sim: Simulation, settings: FineTuneSettings, probabilities: bool):
    """A compiled Keras model whose forward pass is ``sim`` (quantized) and whose weights are ``student``'s."""
    import keras

    class Student(keras.Model):
        def __init__(self):
            super().__init__()
            self.inner = student

        def call(self, x):
            return sim(x, quantize=True)

    wrapper = Student()
    optimizer = keras.optimizers.Adam(settings.learning_rate) if settings.optimizer == "adam" else \
        keras.optimizers.SGD(settings.learning_rate, momentum=0.9)
    wrapper.compile(optimizer=optimizer,
                    loss=distillation_loss(settings.temperature, probabilities, settings.loss), jit_compile=False)
    return wrapper


def _epoch_data(images: np.ndarray, targets: np.ndarray, teacher: Callable, mixup: float, rng):
    """One epoch's inputs and targets, shuffled; with ``mixup``, each image mixed with another (its weight drawn
    from Beta(mixup, mixup), the larger side kept) and the teacher's logits on the mixed image."""
    order = rng.permutation(len(images))
    if not mixup:
        return images[order], targets[order]
    lam = rng.beta(mixup, mixup, size=(len(images),) + (1,) * (images.ndim - 1))
    lam = np.maximum(lam, 1 - lam).astype(np.float32)
    mixed = lam * images[order] + (1 - lam) * images[rng.permutation(len(images))]
    return mixed, np.concatenate([teacher(mixed[i : i + 256]) for i in range(0, len(mixed), 256)]).astype(np.float32)


def fine_tune(model, train_images: np.ndarray, calibration_images: np.ndarray, settings: FineTuneSettings,
              teacher: Callable[[np.ndarray], np.ndarray], log: Callable[[str], None] = lambda s: None,
              probabilities: bool = False, validation: tuple[np.ndarray, np.ndarray] | None = None,
              weight_levels: int = 127):
    """A copy of ``model`` fine-tuned so that its simulated int8 forward pass (weights on the exporter's grid of
    +-``weight_levels``) reproduces ``teacher``'s logits on ``train_images``; returns (the model, what was done).

    With ``validation`` (images, the float model's predicted classes): after every epoch the simulated int8
    model's agreement with the float model is measured on them, and the model's own weights (epoch 0) are
    returned unless an epoch agrees on more images beyond noise (the best of those then; a point figure one
    image higher is noise, not a reason to ship other weights), with training stopped after ``patience``
    epochs without a higher point figure. Small learning rates are needed: the
    rounding makes the loss surface rough, and Adam at 1e-4 (or SGD at 1e-3 with momentum) made MobileNetV2's
    simulated int8 agree less with its float model within one pass."""
    import time

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    student = keras.models.clone_model(model)
    student.set_weights(model.get_weights())
    sim = Simulation(student, weight_levels)
    if settings.fold:
        sim.fold_batchnorms()
    rng = np.random.default_rng(settings.seed)
    images = train_images
    if len(images) > settings.max_images:
        images = images[np.sort(rng.choice(len(images), settings.max_images, replace=False))]
    images = images.astype(np.float32)
    calibration = calibration_images.astype(np.float32)
    targets = np.concatenate([teacher(images[i : i + 256]) for i in range(0, len(images), 256)]).astype(np.float32)
    wrapper = _trainable(student, sim, settings, probabilities)
    history, started = [], time.perf_counter()
    best = None
    if validation is not None:
        own = _simulated_agreement(sim, *validation, calibration, settings.estimator)
        agreement = float(own.mean())
        best = (agreement, 0, student.get_weights())
        top = (agreement, 0)  # the highest point figure so far: when it stops rising, training stops
        history.append({"epoch": 0, "validation_agreement": agreement, "seconds": 0.0})
        log(f"  fine-tuning: before, simulated int8 agrees with the model on {100 * agreement:.2f}% of "
            f"{len(validation[0]):,} validation images")
    for epoch in range(1, settings.epochs + 1):
        sim.calibrate(calibration, settings.estimator)
        batch_x, batch_t = _epoch_data(images, targets, teacher, settings.mixup, rng)
        h = wrapper.fit(batch_x, batch_t, batch_size=settings.batch_size, epochs=1, shuffle=False,
                        verbose=0)
        loss = float(h.history["loss"][-1])
        if not math.isfinite(loss):
            from toolkit.errors import ConversionError

            raise ConversionError("quantization-aware fine-tuning diverged (the loss is not finite)")
        row = {"epoch": epoch, "distillation_loss": loss}
        text = f"  fine-tuning: epoch {epoch}/{settings.epochs}, distillation loss {loss:.4g}"
        if best is not None:
            agrees = _simulated_agreement(sim, *validation, calibration, settings.estimator)
            agreement = float(agrees.mean())
            beyond, interval = _beyond_noise(agrees, own, 1.0 - 0.05 / settings.epochs)
            row.update(validation_agreement=agreement, agreement_minus_own_ci_points=interval)
            text += f", simulated int8 agreement {100 * agreement:.2f}% on validation"
            if beyond and agreement > best[0]:
                best = (agreement, epoch, student.get_weights())
            top = max(top, (agreement, epoch), key=lambda t: t[0])
        row["seconds"] = round(time.perf_counter() - started, 1)
        history.append(row)
        log(text + f" ({row['seconds']:.0f} s)")
        if best is not None and epoch - top[1] >= settings.patience:
            break
    record = {"settings": {**settings.__dict__}, "weight_levels": weight_levels, "images": int(len(images)),
              "epochs": history, "quantization_points": len(sim.ranges), "folded_batchnorms": len(sim.fold),
              "seconds": round(time.perf_counter() - started, 1)}
    if best is not None:
        student.set_weights(best[2])
        record.update(kept_epoch=best[1], validation_images=int(len(validation[0])),
                      rule="the model's own weights (epoch 0) unless an epoch's simulated int8 model agrees with the "
                           "float model on more validation images beyond noise (the paired interval of the difference "
                           "above zero, 95% over the epochs); of those, the highest agreement, the earlier on a tie")
    return student, record
