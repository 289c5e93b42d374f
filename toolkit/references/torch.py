"""PyTorch models saved with ``torch.export.save`` (``.pt2``; why that format: toolkit/runners/torch.py), run
eagerly by PyTorch as the reference.

ONNX through ``torch.onnx.export(program, dynamo=True)`` (the exporter that takes an ExportedProgram; the older
TorchScript exporter cannot trace one). Both of PyTorch's exporters have written files that compute something
else (pytorch/pytorch#169178: a ResNet18 at 0% top-1 from dynamo=True; #166797: a wrong Conv bias shape), so
nothing is assumed: every file made from it is checked against PyTorch eager at export and by parity.
OpenVINO converts the ExportedProgram directly (``openvino.convert_model``), not through the ONNX file.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from toolkit.errors import ConversionError, first_line, whole_message
from toolkit.references import FRAMEWORKS, Framework, Reference, channels_last_shape, check_classes_output
from toolkit.runners.torch import TorchRunner, available, load_program

_SOFTMAX = ("aten._softmax.default", "aten.softmax.int")


def inspect(program, path: Path):
    """What a PyTorch classifier takes and gives: its input from the program's signature, its output by running it
    on two blank images, probabilities when its last operator is a softmax."""
    from toolkit.modelinfo import ModelInfo

    runner = TorchRunner(program, path=path)
    shape, data_format = channels_last_shape(tuple(runner.input_spec.shape[1:]), path)
    classes = check_classes_output(tuple(runner.output_spec.shape[1:]), path)
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    last = output_node.args[0][0] if output_node.args and output_node.args[0] else None
    target = str(getattr(last, "target", ""))
    if target in _SOFTMAX:
        output, evidence = "probabilities", f"its last operator is {target}"
    else:
        output, evidence = "logits", f"its last operator is {target or 'unknown'}"
    params = int(sum(t.numel() for t in program.state_dict.values()))
    return ModelInfo(name=path.stem, input_name="input", input_shape=shape, classes=classes, output=output,
                     output_evidence=evidence, rescaling=None, parameters=params, framework="torch",
                     data_format=data_format)


def _load(path: Path) -> Reference:
    program = load_program(path)
    return Reference(FRAMEWORK, path, program, inspect(program, path))


def _to_onnx(reference: Reference, opset: int):
    """The program as ONNX at ``opset`` or 18, whichever is newer: the dynamo exporter writes opset 18 and its
    conversion down to 17 fails on ReduceMean's axes (onnx's version converter)."""
    import torch

    from toolkit.model import INPUT_NAME, OUTPUT_NAME
    from toolkit.references.onnx import as_toolkit_onnx

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its progress lines ("[torch.onnx] Run decompositions...")
            program = torch.onnx.export(reference.model, (), dynamo=True, opset_version=max(opset, 18),
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False)
    except Exception as exc:  # torch.onnx raises many types
        raise ConversionError(f"torch.onnx.export (dynamo=True, opset {opset}) failed: {type(exc).__name__}: "
                              f"{first_line(exc)}", detail=whole_message(exc)) from None
    proto = program.model_proto
    proto.producer_name = f"toolkit (torch.onnx.export {torch.__version__}, dynamo=True)"
    return as_toolkit_onnx(proto, reference.path)  # the batch dimension named "batch", checked to run


def _to_tflite(reference: Reference, batch_one: bool = False) -> tuple[bytes, dict]:
    """The float TFLite model through litert-torch (PyTorch's own converter to LiteRT), with its input in the
    model's layout: a dynamic batch where litert-torch converts one, else (or with ``batch_one``) a batch fixed at
    1 (its lowering of ``view``/``flatten`` cannot take a symbolic batch); the manifest says which."""
    import importlib.util

    if importlib.util.find_spec("litert_torch") is None:
        raise ConversionError("TFLite from a PyTorch model needs litert-torch, which is not installed",
                              hint="pip install -e '.[torch]'")
    import torch

    from toolkit._quiet import quiet_stderr

    h, w, c = reference.info.input_shape if len(reference.info.input_shape) == 3 else (*reference.info.input_shape, 1)
    channels_first = reference.info.data_format == "channels_first"
    shape = (2, c, h, w) if channels_first else (2, h, w, c)
    module = reference.model.module()
    import litert_torch

    why, model = ("asked for one image per invoke (the int8 graph)" if batch_one else None), None
    with quiet_stderr(), contextlib.redirect_stdout(io.StringIO()):  # its progress lines and absl logs
        try:
            if not batch_one:
                model = litert_torch.convert(module, (torch.zeros(shape),),
                                             dynamic_shapes=({0: torch.export.Dim("batch")},))
                batch = "dynamic"
        except Exception as exc:  # litert-torch raises many types
            why = f"litert-torch could not convert a dynamic batch: {first_line(exc)}"
        if model is None:
            try:
                model = litert_torch.convert(module, (torch.zeros((1, *shape[1:])),))
            except Exception as exc:  # litert-torch raises many types
                raise ConversionError(f"litert-torch could not convert the model: {type(exc).__name__}: "
                                      f"{first_line(exc)}", detail=whole_message(exc)) from None
            batch = "fixed at 1"
        content = bytes(model.model_content())
    from importlib.metadata import version

    extra = {"converter": f"litert-torch {version('litert-torch')}", "batch": batch}
    if why:
        extra["batch_note"] = why[:300]
    return content, extra


def _to_openvino(reference: Reference, float_onnx):
    """The ExportedProgram converted directly, its input shape given (the frontend leaves every dimension dynamic
    otherwise, and a runner could not tell its layout)."""
    import openvino as ov

    h, w, c = reference.info.input_shape if len(reference.info.input_shape) == 3 else (*reference.info.input_shape, 1)
    shape = [-1, c, h or -1, w or -1] if reference.info.data_format == "channels_first" else None
    return ov.convert_model(reference.model, input=[shape] if shape else None)


FRAMEWORK = FRAMEWORKS.register(Framework(
    "torch", (".pt2",), "a PyTorch model saved with torch.export.save (run eagerly by PyTorch)", _load,
    title="PyTorch", order=30,
    extra="torch", available=available, to_onnx=_to_onnx, to_openvino=_to_openvino, to_tflite=_to_tflite))
