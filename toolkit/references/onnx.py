"""ONNX classifiers (``.onnx``) made by any exporter: checked with onnx.checker, run in float by onnxruntime as
the reference, their input layout (NCHW for most) read from the graph and kept in every file made from them.

The float ONNX variant is the model itself with its input and output renamed to the toolkit's names (so every
ONNX variant reads alike) and, where its batch dimension is fixed, that dimension made dynamic (the graph must
then run on a batch of two: checked). OpenVINO converts the same file; the TFLite formats have no converter
here (onnx2tf, the one maintained ONNX -> TFLite converter, pins an older TensorFlow than the toolkit's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.errors import ConversionError, DataError, first_line, whole_message
from toolkit.references import FRAMEWORKS, Framework, Reference, channels_last_shape, check_classes_output


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _io(model, where):
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise DataError(f"{where} has {len(inputs)} input(s) and {len(model.graph.output)} output(s); the toolkit "
                        "checks image classifiers with one input and one output")
    return inputs[0], model.graph.output[0]


def inspect(model, path: Path):
    """What an ONNX classifier takes and gives, read from its graph."""
    from onnx import TensorProto

    from toolkit.modelinfo import ModelInfo

    image, scores = _io(model, path)
    if image.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise DataError(f"{path} takes {TensorProto.DataType.Name(image.type.tensor_type.elem_type)} inputs; the "
                        "toolkit feeds float32 images")
    dims = _dims(image)
    if len(dims) < 2 or len(dims) > 4:
        raise DataError(f"{path} takes inputs of shape {dims}; expected (N, C, H, W), (N, H, W, C), (N, H, W) or "
                        "(N, D)")
    shape, data_format = channels_last_shape(tuple(dims[1:]), path)
    classes = check_classes_output(tuple(_dims(scores)[1:]), path)
    last = next((n for n in model.graph.node if scores.name in n.output), None)
    if last is not None and last.op_type == "Softmax":
        output, evidence = "probabilities", f"its last node '{last.name or last.op_type}' is a Softmax"
    else:
        output, evidence = "logits", f"its last node is {last.op_type if last is not None else 'unknown'}"
    params = int(sum(int(np.prod(t.dims)) if t.dims else 1 for t in model.graph.initializer))
    return ModelInfo(name=model.graph.name or path.stem, input_name=image.name, input_shape=shape, classes=classes,
                     output=output, output_evidence=evidence, rescaling=None, parameters=params, framework="onnx",
                     data_format=data_format)


def _load(path: Path) -> Reference:
    from toolkit.runners.onnxrt import check_onnx_file

    # parsed, checked, its external data (if any) inside its directory and loaded: every file made from it holds
    # its weights itself
    model = check_onnx_file(path)
    return Reference(FRAMEWORK, path, model, inspect(model, path))


def _rename(model, old: str, new: str) -> None:
    for node in model.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]
    for info in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if info.name == old:
            info.name = new


def as_toolkit_onnx(model, where):
    """A copy of an ONNX classifier with the toolkit's input and output names and a dynamic batch dimension
    (checked to run on a batch of two)."""
    import onnx
    import onnxruntime as ort

    from toolkit.model import INPUT_NAME, OUTPUT_NAME

    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    image, scores = _io(proto, where)
    _rename(proto, image.name, INPUT_NAME)
    _rename(proto, scores.name, OUTPUT_NAME)
    for info in (*proto.graph.input, *proto.graph.output):
        del info.metadata_props[:]  # an exporter's notes on the source graph (torch: its signature)
    fixed = []
    image = next(i for i in proto.graph.input if i.name == INPUT_NAME)  # not input[0]: old exporters list weights
    for info in (image, proto.graph.output[0]):
        dim = info.type.tensor_type.shape.dim[0]
        if dim.HasField("dim_value"):
            fixed.append(dim.dim_value)
            dim.ClearField("dim_value")
        dim.dim_param = "batch"
    if fixed:
        try:
            shape = [2, *[d or 1 for d in _dims(image)[1:]]]
            session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
            session.run(None, {INPUT_NAME: np.zeros(shape, np.float32)})
        except Exception as exc:  # onnxruntime raises its own types
            raise ConversionError(f"{where} has a fixed batch of {fixed[0]} that cannot be made dynamic: "
                                  f"{first_line(exc)}", detail=whole_message(exc)) from None
    return proto


def _to_onnx(reference: Reference, opset: int):
    return as_toolkit_onnx(reference.model, reference.path)


def _to_openvino(reference: Reference, float_onnx):
    import openvino as ov

    return ov.convert_model(str(float_onnx()))


FRAMEWORK = FRAMEWORKS.register(Framework(
    "onnx", (".onnx",), "an ONNX image classifier from any exporter (run in float by onnxruntime)", _load,
    title="the ONNX model", order=20,
    to_onnx=_to_onnx, to_openvino=_to_openvino))
