"""TFLite files quantized by ai-edge-quantizer (LiteRT's quantizer): the forms of a float TFLite file made by
another framework's converter (PyTorch's litert-torch), and the FlatBuffer layout every such file is written in.
The accuracy search (control.py) builds its candidates with the same tool."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from toolkit.errors import ConversionError
from toolkit.exporters import ExportContext


def quantized(ctx: ExportContext, content: bytes, mode: str) -> tuple[bytes, dict]:
    """``content`` (a float TFLite file) quantized by ai-edge-quantizer: ``fp16``, ``dynamic`` or ``int8``."""
    from importlib.metadata import version

    try:
        from ai_edge_quantizer import qtyping, quantizer, recipe
    except ImportError:
        raise ConversionError("quantized TFLite from a float TFLite file needs ai-edge-quantizer, which is not "
                              "installed", hint="pip install -e '.[control]'") from None
    from toolkit._quiet import quiet_stderr

    tool = f"ai-edge-quantizer {version('ai-edge-quantizer')}"
    with quiet_stderr(), contextlib.redirect_stdout(io.StringIO()):  # its size and time report
        q = quantizer.Quantizer(content)
        if mode == "fp16":  # weights stored as float16, computed in float32 (a Dequantize op before each use)
            q.update_quantization_recipe(
                regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, algorithm_key="float_casting",
                op_config=qtyping.OpQuantizationConfig(
                    weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16,
                                                                          dtype=qtyping.TensorDataType.FLOAT),
                    compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True))
            result = q.quantize()
            return inline_buffers(bytes(result.quantized_model)), {"quantizer": f"{tool}, float_casting to float16"}
        if mode == "dynamic":
            q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
            result = q.quantize()
            return inline_buffers(bytes(result.quantized_model)), {"quantizer": f"{tool}, dynamic_wi8_afp32"}
        from ai_edge_litert.interpreter import Interpreter

        signatures = Interpreter(model_content=content).get_signature_list()
        key = next(iter(signatures))
        name = signatures[key]["inputs"][0]
        images = ctx.in_model_layout(ctx.calibration_images.astype(np.float32))
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        calibration = q.calibrate({key: [{name: images[i : i + 1]} for i in range(len(images))]}, num_threads=1)
        result = q.quantize(calibration, enable_progress_report=False, enable_progress_bar=False)
    return inline_buffers(bytes(result.quantized_model)), {
        "quantizer": f"{tool}, static_wi8_ai8 (int8 weights per channel, int8 activations, int8 input and output)",
        "calibration": {"method": "minmax (ai-edge-quantizer's calibration of the float file: the toolkit's range "
                                  "estimators apply to the TensorFlow converter's and ONNX's int8)"}}


def inline_buffers(content: bytes) -> bytes:
    """The model with every constant inside the FlatBuffer. ai-edge-quantizer writes constants of
    models with 256 KiB or more of them after the FlatBuffer, addressed by offset (LiteRT's
    large-model layout); TFLM does not read that layout (it runs such a model on wrong weights),
    and a C array for a microcontroller wants one plain FlatBuffer anyway."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    external = [b for b in model.buffers if getattr(b, "offset", 0) > 1]
    if not external:
        return content
    for buffer in external:
        buffer.data = np.frombuffer(content, np.uint8, count=buffer.size, offset=buffer.offset).copy()
        buffer.offset, buffer.size = 0, 0
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
