"""ONNX variants: float through tf2onnx, int8 through onnxruntime static quantization.

Why ``tf2onnx.convert.from_function`` and not ``from_keras``: the latter fails on Keras 3
models (``KeyError: 'keras_tensor_N'``, onnx/tensorflow-onnx#2348). Keras' own
``model.export(format="onnx")`` takes the same route.

Op support: tf2onnx converts with ``continue_on_error`` and only logs the TensorFlow ops it has
no ONNX mapping for at the opset ("Tensorflow op [name: Op] is not supported"), leaving them in
a graph that fails later. We listen to its log and fail the conversion naming those ops.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.artifacts import atomic_write_bytes
from toolkit.errors import ConversionError, first_line, whole_message
from toolkit.exporters import FORMATS, ExportContext, Format, op_check, plain_companion, register
from toolkit.model import INPUT_NAME, OUTPUT_NAME

_COUNTER = re.compile(r"__\d+")  # tf2onnx's process-wide counter: Transpose__34, const_axes__25
_SCOPE_SUFFIX = re.compile(r"_\d+(?=/|:|$)")  # Keras' per-process name scopes: seed_cnn_1/conv1_1/...


def normalize_names(model, keep: set[str]) -> None:
    """Rename every node and tensor (but the graph's inputs and outputs, ``keep``) to a name that
    depends only on the graph: the converter's counters and Keras' scope suffixes are dropped and
    clashes numbered in graph order. Without this, the same weights give different bytes
    depending on what ran in the process before (tf2onnx: Transpose__34 in one export, Transpose__36 in another)."""
    mapping: dict[str, str] = {}
    used: set[str] = set(keep)

    def canonical(name: str, stem: str | None = None) -> str:
        if not name or name in keep:
            return name
        if name not in mapping:
            stem = stem or _SCOPE_SUFFIX.sub("", _COUNTER.sub("", name)) or "t"
            new, n = stem, 0
            while new in used:
                n += 1
                new = f"{stem}__{n}"
            used.add(new)
            mapping[name] = new
        return mapping[name]

    def walk(graph) -> None:
        graph.doc_string = ""  # "converted from b'__inference_<lambda>_147'": another counter
        # Initializers in the order the graph first uses them. tf2onnx's own constants (no scope in
        # their name) and the constants its de-duplication shares between nodes are named by that order
        # alone: which of two equal constants survives depends on its counters (const_starts or const_axes)
        # or on the process's string hashing (every ReLU6's 0 and 6 become one pair named after some
        # ReLU6: MobileNetV2's float ONNX differed between two exports of the same model).
        first_use: dict[str, int] = {}
        consumers: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                first_use.setdefault(name, len(first_use))
                consumers[name] = consumers.get(name, 0) + 1
        ordered = sorted(graph.initializer, key=lambda t: first_use.get(t.name, len(first_use)))
        del graph.initializer[:]
        graph.initializer.extend(ordered)
        for tensor in graph.initializer:
            scoped = "/" in tensor.name and consumers.get(tensor.name, 0) <= 1
            tensor.name = canonical(tensor.name, None if scoped else "const")
        for sparse in graph.sparse_initializer:
            sparse.values.name = canonical(sparse.values.name)
            sparse.indices.name = canonical(sparse.indices.name)
        for node in graph.node:
            node.input[:] = [canonical(i) for i in node.input]
            node.output[:] = [canonical(o) for o in node.output]
        for node in graph.node:  # node names after tensor names: a node is named like its output
            node.name = canonical(node.name) if node.name else ""
            for attr in node.attribute:
                for sub in [attr.g, *attr.graphs] if attr.HasField("g") else attr.graphs:
                    walk(sub)
        for info in [*graph.value_info, *graph.input, *graph.output]:
            info.name = canonical(info.name)
            # symbolic dimensions too ("unk__44"): the leading one of a classifier's tensors is the batch
            for i, dim in enumerate(info.type.tensor_type.shape.dim):
                if dim.dim_param and _COUNTER.search(dim.dim_param):
                    dim.dim_param = "batch" if i == 0 else dims.setdefault(dim.dim_param, f"dim{len(dims)}")

    dims: dict[str, str] = {}
    walk(model.graph)


def _rename_output(model, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for out in model.graph.output:
        if out.name == old:
            out.name = new


def _captured_constants_to_initializers(proto, concrete) -> None:
    """Constants the traced function captures (a Normalization layer built with ``mean=``/``variance=``
    holds tensors, not variables) come out of tf2onnx as extra graph inputs; make them initializers."""
    from onnx import numpy_helper

    values = {inner.name: outer.numpy() for outer, inner in concrete.graph.captures
              if outer.dtype.name != "resource" and hasattr(outer, "numpy")}
    extra = [i for i in proto.graph.input if i.name in values]
    for info in extra:
        proto.graph.input.remove(info)
        proto.graph.initializer.append(numpy_helper.from_array(values[info.name], info.name))


class _UnsupportedOps(logging.Handler):
    """Collects the op types tf2onnx logs as unsupported."""

    PATTERN = re.compile(r"Tensorflow op \[.*: ([\w.]+)\] is not supported")

    def __init__(self):
        super().__init__(logging.ERROR)
        self.ops: list[str] = []
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        match = self.PATTERN.search(message)
        if match and match.group(1) not in self.ops:
            self.ops.append(match.group(1))


@dataclass
class OnnxState:
    """What the ONNX format keeps per export (ExportContext.state): its float file, the pre-processed graph the
    quantizer reads, per-image range statistics, the range estimator chosen, the accuracy search's layers and
    the float model's activations on the images the search measures (by images_key)."""

    float_onnx: Path | None = None
    float_graph: tuple | None = None  # (onnx.ModelProto, float tensor names, initializer names)
    affine: list | None = None
    range_stats: object = None  # toolkit.ranges.Stats
    estimator: str | None = None
    control_graph: list | None = None
    float_activations: dict = field(default_factory=dict)


def float_onnx(ctx: ExportContext) -> Path:
    """Convert once; the int8 variant quantizes this file."""
    if "onnx" in ctx.failures:
        raise ctx.failures["onnx"]
    state = ctx.state(OnnxState)
    if state.float_onnx is None and ctx.framework.to_onnx is not None:  # a model from another framework
        start = time.perf_counter()
        try:
            proto = ctx.framework.to_onnx(ctx.reference, ctx.opset)
        except ConversionError as exc:
            ctx.failures["onnx"] = exc
            raise
        ctx.timings["onnx"] = time.perf_counter() - start
        path = ctx.workdir / "float.onnx"
        atomic_write_bytes(path, proto.SerializeToString())
        state.float_onnx = path
    if state.float_onnx is None:
        from toolkit._quiet import quiet_stderr, tf

        tf = tf()
        listener = _UnsupportedOps()
        logger = logging.getLogger("tf2onnx")
        start = time.perf_counter()
        try:
            with quiet_stderr():
                import tf2onnx

                from toolkit.exporters.onnx.ordered import make_tf2onnx_deterministic

                make_tf2onnx_deterministic()
                logger.setLevel(logging.ERROR)
                logger.addHandler(listener)
                model = ctx.model
                shape = (None, *tuple(model.inputs[0].shape)[1:])
                signature = [tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)]
                fn = tf.function(lambda image: model(image, training=False), input_signature=signature)
                proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=ctx.opset)
                _captured_constants_to_initializers(proto, fn.get_concrete_function())
        except Exception as exc:  # tf2onnx raises many types
            ctx.failures["onnx"] = ConversionError(
                f"ONNX conversion (tf2onnx, opset {ctx.opset}) failed: {type(exc).__name__}: "
                f"{first_line(exc)}", detail=whole_message(exc))
            raise ctx.failures["onnx"] from None
        finally:
            logger.removeHandler(listener)
        if listener.ops:
            ctx.failures["onnx"] = ConversionError(
                f"ONNX opset {ctx.opset} has no tf2onnx conversion for op(s) {', '.join(listener.ops)}",
                ops=listener.ops, detail="\n".join(listener.messages)[-4000:])
            raise ctx.failures["onnx"]
        ctx.timings["onnx"] = time.perf_counter() - start
        _rename_output(proto, proto.graph.output[0].name, OUTPUT_NAME)
        normalize_names(proto, keep={INPUT_NAME, OUTPUT_NAME})
        proto.doc_string = ""
        proto.producer_name = "toolkit (tf2onnx)"
        path = ctx.workdir / "float.onnx"
        atomic_write_bytes(path, proto.SerializeToString())
        state.float_onnx = path
    return state.float_onnx


FORMAT = FORMATS.register(Format(
    "onnx", "ONNX through tf2onnx: float32, and int8 QDQ from onnxruntime's quantize_static", order=20,
    control="toolkit.exporters.onnx.control", diagnose="toolkit.exporters.onnx.diagnose"))


@op_check("onnx", "tf2onnx mappings at the opset")
def check_onnx_ops(ctx: ExportContext) -> None:
    float_onnx(ctx)


@register("onnx", format="onnx", quantization="none", suffix=".onnx", default=True, roles=("closest-float",),
          style=("#2ca02c", "^"))
def onnx_float(ctx: ExportContext, path: Path) -> dict:
    content = float_onnx(ctx).read_bytes()
    atomic_write_bytes(path, content)
    # the file's own opset: a PyTorch model's is at least 18 (the dynamo exporter's), whatever --opset asked
    return {**_written(content), "shared_seconds": ctx.charge("onnx")}


def _preprocessed(ctx: ExportContext) -> Path:
    """The float model after onnxruntime's quantization pre-processing (shape inference), once."""
    pre = ctx.workdir / "float.pre.onnx"
    if not pre.exists():
        from onnxruntime.quantization.shape_inference import quant_pre_process

        # skip_symbolic_shape: symbolic shape inference needs sympy and adds nothing for a CNN
        # whose only dynamic dimension is the batch.
        quant_pre_process(str(float_onnx(ctx)), str(pre), skip_symbolic_shape=True)
    return pre


def _float_graph(ctx: ExportContext):
    """The pre-processed float model, its float tensors and its initializer names: read once per export
    (the range statistics, the affine rule and the accuracy search all look at it)."""
    state = ctx.state(OnnxState)
    if state.float_graph is None:
        import onnx

        model = onnx.load(str(_preprocessed(ctx)))
        floats = {v.name for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]
                  if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
        state.float_graph = (model, floats, {i.name for i in model.graph.initializer})
    return state.float_graph


_ELEMENTWISE = ("Add", "Sub", "Mul", "Div")


def _affine_arithmetic(ctx: ExportContext) -> list[str]:
    """Elementwise nodes with a constant operand of more than one value: per-pixel or per-channel affine
    arithmetic such as a Normalization layer's standardization. They stay float, as NNCF leaves them: as
    int8 "weights" their constants share one scale, and the small ones (the 1/std of ordinary pixels
    beside rarely inked ones) round to a step or two. What they feed is still quantized where a
    quantized layer reads it."""
    state = ctx.state(OnnxState)
    if state.affine is None:
        model, _, _ = _float_graph(ctx)
        sizes = {i.name: int(np.prod(i.dims)) if i.dims else 1 for i in model.graph.initializer}
        state.affine = [n.name for n in model.graph.node if n.op_type in _ELEMENTWISE
                        and any(sizes.get(i, 0) > 1 for i in n.input)]
    return state.affine


# Why 7-bit weights (onnxruntime's reduce_range, its advice for x86 CPUs without VNNI): its int8 kernels on
# AVX2 and AVX-512F (no VNNI) multiply uint8 activations by int8 weights with VPMADDUBSW, which adds each pair
# of products in 16 bits and saturates (255 x 127 x 2 overflows), so an 8-bit-weight file computes something
# else than its Q/DQ graph says wherever activations fill their uint8 range. Measured on an AMD EPYC exposing
# AVX2 only (agreement with the float model; fused int8 kernels / the same Q/DQ graph computed in float): seed
# CNN 99.62% / 99.87%, MobileNetV2 (32x32) 96.07% / 99.30%; with 7-bit weights fused = Q/DQ (seed CNN 99.90%,
# MobileNetV2 99.13% / 99.07%: the bit costs about 0.2 points there). 7-bit in the first layer only (NNCF's
# default overflow fix) was not enough for MobileNetV2. A file must compute the same on every CPU it may meet.
REDUCE_RANGE = True


def _range_stats(ctx: ExportContext):
    """Each float activation tensor's min and max on each calibration image (the graph input and every
    node output of the pre-processed float model), computed once per export."""
    state = ctx.state(OnnxState)
    if state.range_stats is None:
        import onnx
        import onnxruntime as ort

        from toolkit.ranges import Stats

        source, floats, inits = _float_graph(ctx)
        model = onnx.ModelProto()
        model.CopyFrom(source)  # every tensor made an output, on a copy
        outputs = {o.name for o in model.graph.output}
        wanted = [o for n in model.graph.node for o in n.output if o in floats and o not in inits]
        for name in wanted:
            if name not in outputs:
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every tensor as written
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        stats = Stats()
        images = ctx.in_model_layout(ctx.calibration_images.astype(np.float32))
        for i in range(0, len(images), 16):
            batch = images[i : i + 16]
            stats.add(INPUT_NAME, batch, batched=True)
            for name, values in zip(names, session.run(names, {INPUT_NAME: batch}), strict=True):
                stats.add(name, values, batched=True)
        state.range_stats = stats
    return state.range_stats


def _estimator(ctx: ExportContext) -> str | None:
    """The range estimator (toolkit/ranges.py) the current build uses, or None for onnxruntime's own
    calibration (minmax, entropy, percentile)."""
    chosen = ctx.state(OnnxState).estimator
    return None if chosen in (None, "minmax") else chosen


def _quantize(ctx: ExportContext, out: Path, exclude: tuple[str, ...] = (), estimator: str | None = None) -> None:
    """onnxruntime static quantization (QDQ, per-channel symmetric int8 weights, asymmetric uint8
    activations); nodes in ``exclude`` stay float.

    Why uint8 activations (onnxruntime's default for QDQ is int8): OpenVINO's CPU plugin in its
    default configuration on CPUs with bf16 (Intel AMX) cannot compile a Conv whose input is
    *signed* int8 with a non-zero zero point and whose output is re-quantized with a non-zero zero
    point ("No suitable implementations"): every Conv after a ReLU in an asymmetric int8 graph.
    Unsigned activations with the same range are the same numbers (the zero point moves by 128:
    identical logits in onnxruntime), and are the form NNCF and OpenVINO write (u8 activations,
    s8 weights). Minimal reproduction: tests/test_openvino_int8.py."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    method = {
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }.get(ctx.calibration_method, CalibrationMethod.MinMax)
    estimator = estimator if estimator is not None else _estimator(ctx)
    images = ctx.calibration_images
    overrides: dict = {}
    if estimator not in (None, "minmax"):  # every activation's range set here; calibration only has to run
        overrides = {name: {"rmin": np.array(lo, np.float32), "rmax": np.array(hi, np.float32)}
                     for name, (lo, hi) in _range_stats(ctx).ranges(estimator).items()}
        images = images[:10]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(np.array_split(images, max(1, len(images) // 10)))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: ctx.in_model_layout(batch.astype(np.float32))}

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    extra: dict = {}
    if overrides:
        extra["TensorQuantOverrides"] = {name: [values] for name, values in overrides.items()}
    root = logging.getLogger()  # onnxruntime's quantizer warns on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(_preprocessed(ctx)), str(out), Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=REDUCE_RANGE,  # 7-bit weights: see REDUCE_RANGE
            calibrate_method=method,
            nodes_to_exclude=[*exclude, *(n for n in _affine_arithmetic(ctx) if n not in exclude)],
            extra_options=extra,
        )
    except Exception as exc:  # onnxruntime's quantizer raises many types
        from toolkit.artifacts import as_write_error

        if as_write_error(out, exc):
            raise
        raise ConversionError(f"onnxruntime int8 quantization failed: {type(exc).__name__}: "
                              f"{first_line(exc)}", detail=whole_message(exc)) from None
    finally:
        root.setLevel(level)


# The levels the search gives an ONNX layer. No int16x8: onnxruntime (and OpenVINO) have no kernel for a layer that
# reads or writes a 16-bit activation, so such a layer computes in float anyway and the DequantizeLinear of its int8
# weight runs on every call (37x plain int8's batch-1 p50 on the outlier MLP of benchmarks/ACCURACY_CONTROL.md at
# commit 5441e7d, 0.513 vs 0.014 ms): never cheaper than float, never more accurate.
ONNX_LEVELS = ("int8", "float")


@register("onnx-int8", format="onnx", quantization="int8", suffix=".onnx", default=True, controllable=True,
          style=("#d62728", "X"), weight_levels=64 if REDUCE_RANGE else 127)  # onnxruntime's 7-bit grid: -64..64
def onnx_int8(ctx: ExportContext, path: Path) -> dict:
    from toolkit import ranges

    method = ctx.calibration_method
    ours = method in (*ranges.ESTIMATORS, "auto")
    stats = _range_stats(ctx) if method == "auto" else None
    candidates = {}
    for name in ranges.estimators_for(method, stats) if ours else (None,):
        tmp = ctx.workdir / f"int8-{name or method}.onnx"
        _quantize(ctx, tmp, estimator=name or "minmax")
        candidates[name or method] = tmp.read_bytes()
    chosen, choice = ranges.pick(ctx, candidates, _control_predict, "onnx-int8", stats)
    ctx.state(OnnxState).estimator = chosen  # the search builds on the same ranges
    plain = candidates[chosen]
    out = {
        "opset": _opset(plain),
        "shared_seconds": ctx.charge("onnx"),
        "calibration": {"method": method, **choice},
        "quantization_scheme": "QDQ, per-channel symmetric int8 weights in 7 bits (-64..63: no 16-bit overflow in "
                               "onnxruntime's kernels on CPUs without VNNI), asymmetric uint8 activations "
                               "(onnxruntime quantize_static)",
        "weight_bits": 7 if REDUCE_RANGE else 8,
    }
    content = plain
    if ctx.control is not None:
        from toolkit.control_search import controlled

        content, record = controlled(ctx, "onnx-int8", "onnx", plain, ONNX_LEVELS)
        out.update(accuracy_control=record, int8_only=record["int8_only"], opset=_opset(content))
        if content != plain:
            out["companions"] = [plain_companion(path, plain)]
    atomic_write_bytes(path, content)
    return out


_NOT_LAYERS = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "ConstantOfShape", "Range",
               "Identity", "Constant"}


def _opset(content: bytes) -> int:
    """The default-domain opset of a model."""
    return _written(content)["opset"]


def _written(content: bytes) -> dict:
    """What an ONNX file says of itself: its default-domain opset, and which converter wrote it (its producer:
    tf2onnx, torch.onnx's dynamo or TorchScript exporter, or the user's own exporter for an ONNX model)."""
    import onnx

    model = onnx.load_from_string(content)
    return {"opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0),
            "producer": " ".join(x for x in (model.producer_name, model.producer_version) if x)}


def _control_graph(ctx: ExportContext) -> list[tuple]:
    state = ctx.state(OnnxState)
    if state.control_graph is None:
        model, floats, inits = _float_graph(ctx)
        state.control_graph = [(n.name, n.op_type, [i for i in n.input if i in floats and i not in inits],
                                n.output[0]) for n in model.graph.node
                               if n.op_type not in _NOT_LAYERS and n.output and n.output[0] in floats]
    return state.control_graph


def _runner(content: bytes, threads: int | None = None):
    """A candidate in the project's onnxruntime runner (CPU), which loads from a file."""
    import tempfile

    from toolkit.runners.onnxrt import OnnxRuntimeRunner

    with tempfile.TemporaryDirectory(prefix="toolkit-control-") as tmp:
        path = Path(tmp) / "candidate.onnx"
        path.write_bytes(content)
        return OnnxRuntimeRunner(path, threads=threads)


def _control_predict(content: bytes, images: np.ndarray) -> np.ndarray:
    return _runner(content).infer_batched(images, 500).argmax(1)
