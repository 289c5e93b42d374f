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
from pathlib import Path

import numpy as np

from toolkit.artifacts import atomic_write_bytes
from toolkit.errors import ConversionError
from toolkit.exporters import ExportContext, op_check, register
from toolkit.model import INPUT_NAME, OUTPUT_NAME

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


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
        # their name) are named by that order alone: which of two equal constants survives its
        # de-duplication (const_starts or const_axes) depends on its counters.
        first_use: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                first_use.setdefault(name, len(first_use))
        ordered = sorted(graph.initializer, key=lambda t: first_use.get(t.name, len(first_use)))
        del graph.initializer[:]
        graph.initializer.extend(ordered)
        for tensor in graph.initializer:
            tensor.name = canonical(tensor.name, None if "/" in tensor.name else "const")
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


def float_onnx(ctx: ExportContext) -> Path:
    """Convert once; the int8 variant quantizes this file."""
    if "onnx" in ctx.failures:
        raise ctx.failures["onnx"]
    if ctx._float_onnx is None:
        from toolkit._quiet import quiet_stderr, tf

        tf = tf()
        listener = _UnsupportedOps()
        logger = logging.getLogger("tf2onnx")
        start = time.perf_counter()
        try:
            with quiet_stderr():
                import tf2onnx

                logger.setLevel(logging.ERROR)
                logger.addHandler(listener)
                model = ctx.model
                shape = (None, *tuple(model.inputs[0].shape)[1:])
                signature = [tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)]
                fn = tf.function(lambda image: model(image, training=False), input_signature=signature)
                proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=ctx.opset)
        except Exception as exc:  # tf2onnx raises many types
            ctx.failures["onnx"] = ConversionError(
                f"ONNX conversion (tf2onnx, opset {ctx.opset}) failed: {type(exc).__name__}: "
                f"{(str(exc).strip().splitlines() or [''])[0][:300]}", detail=str(exc)[-4000:])
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
        ctx._float_onnx = path
    return ctx._float_onnx


@op_check("onnx", "tf2onnx mappings at the opset")
def check_onnx_ops(ctx: ExportContext) -> None:
    float_onnx(ctx)


@register("onnx", format="onnx", quantization="none", suffix=".onnx", default=True)
def onnx_float(ctx: ExportContext, path: Path) -> dict:
    atomic_write_bytes(path, float_onnx(ctx).read_bytes())
    return {"opset": ctx.opset, "shared_seconds": ctx.charge("onnx")}


@register("onnx-int8", format="onnx", quantization="int8", suffix=".onnx", default=True)
def onnx_int8(ctx: ExportContext, path: Path) -> dict:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[ctx.calibration_method]
    images = ctx.calibration_images

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(np.array_split(images, max(1, len(images) // 10)))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch.astype(np.float32)}

    pre = ctx.workdir / "float.pre.onnx"
    # skip_symbolic_shape: symbolic shape inference needs sympy and adds nothing for a CNN
    # whose only dynamic dimension is the batch.
    source = float_onnx(ctx)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    tmp = ctx.workdir / "int8.onnx"
    try:
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(tmp), Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
        )
    except Exception as exc:  # onnxruntime's quantizer raises many types
        from toolkit.artifacts import as_write_error

        if as_write_error(tmp, exc):
            raise
        raise ConversionError(f"onnxruntime int8 quantization failed: {type(exc).__name__}: "
                              f"{(str(exc).strip().splitlines() or [''])[0][:300]}", detail=str(exc)[-4000:]) from None
    atomic_write_bytes(path, tmp.read_bytes())
    return {
        "opset": ctx.opset,
        "shared_seconds": ctx.charge("onnx"),
        "calibration": {"method": ctx.calibration_method},
        "quantization_scheme": "QDQ, per-channel int8 weights, int8 activations (onnxruntime quantize_static)",
    }
