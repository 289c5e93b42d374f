"""PyTorch models saved with ``torch.export.save`` (``.pt2``; why that format: toolkit/runners/torch.py), run
eagerly by PyTorch as the reference.

ONNX through ``torch.onnx.export(program, dynamo=True)`` (the exporter that takes an ExportedProgram), and where
its file fails or computes something else on a fixed-seed probe, the older TorchScript exporter on the program's
module. Both have written files that compute something else (pytorch/pytorch#169178: a ResNet18 at 0% top-1 from
dynamo=True; #166797: a wrong Conv bias shape), so nothing is assumed: every file made from it is checked against
PyTorch eager at export and by parity.
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
    """The program as ONNX from PyTorch's dynamo exporter, else its TorchScript exporter: the first whose file
    runs and computes what the model computes on a few fixed-seed inputs (both have written files that do not:
    see the module's docstring). Export's check and parity still judge the file on real images."""
    from toolkit.references.onnx import as_toolkit_onnx

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    runner = TorchRunner(reference.model, path=reference.path)  # PyTorch eager: what each file is checked against
    tried, details = [], []
    for name, exporter in (("dynamo=True", _dynamo), ("TorchScript, dynamo=False", _torchscript)):
        try:
            proto = as_toolkit_onnx(exporter(reference, opset, runner), reference.path)  # its batch made dynamic
            wrong = _differs(runner, proto)
        except Exception as exc:  # torch.onnx and onnxruntime raise many types
            tried.append(f"{name}: {type(exc).__name__}: {first_line(exc)}")
            details.append(whole_message(exc))
            continue
        if wrong is None:
            return proto
        tried.append(f"{name}: its file computes something else than the model ({wrong})")
    raise ConversionError("torch.onnx.export failed with both of PyTorch's exporters: " + "; ".join(tried),
                          detail="\n\n".join(details) or None)


def _dynamo(reference: Reference, opset: int, runner: TorchRunner):
    """torch.onnx.export(program, dynamo=True) at ``opset`` or 18, whichever is newer: the dynamo exporter writes
    opset 18 and its conversion down to 17 fails on ReduceMean's axes (onnx's version converter)."""
    import torch

    from toolkit.model import INPUT_NAME, OUTPUT_NAME

    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines ("[torch.onnx] Run decompositions...")
        program = torch.onnx.export(reference.model, (), dynamo=True, opset_version=max(opset, 18),
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False)
    proto = program.model_proto
    proto.producer_name, proto.producer_version = "torch.onnx.export (dynamo=True)", torch.__version__
    return proto


def _torchscript(reference: Reference, opset: int, runner: TorchRunner):
    """The TorchScript exporter on the program's module (traced; ``training=PRESERVE`` because an exported
    program's module refuses ``train()``), the batch dimension dynamic."""
    import onnx
    import torch

    from toolkit.model import INPUT_NAME, OUTPUT_NAME

    buffer = io.BytesIO()
    with contextlib.redirect_stdout(io.StringIO()), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")  # its tracer and constant-folding warnings
        example = runner.prepare(_probe(runner)[:2])  # the model's own layout
        torch.onnx.export(runner.module, (example,), buffer, dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    proto.producer_name, proto.producer_version = "torch.onnx.export (TorchScript, dynamo=False)", torch.__version__
    return proto


def _probe(runner: TorchRunner):
    """Four fixed-seed images in [0, 1] as the toolkit holds them (channels last)."""
    import numpy as np

    return np.random.default_rng(0).random((4, *[d or 1 for d in runner.image_shape[1:]]), dtype=np.float32)


def _differs(runner: TorchRunner, proto) -> str | None:
    """None when the ONNX file's outputs on the probe match PyTorch eager's (within 1e-3 of the largest score);
    else what differs."""
    import numpy as np
    import onnxruntime as ort

    from toolkit.model import INPUT_NAME

    x = _probe(runner)
    want = runner.infer(x)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: runner.arrange(x)})[0]
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if diff <= 1e-3 * max(1.0, float(np.abs(want).max())):
        return None
    return f"max abs difference {diff:.3g} on fixed-seed inputs" if np.isfinite(diff) else f"shape {got.shape}"


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
