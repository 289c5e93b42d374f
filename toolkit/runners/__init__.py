"""Runtimes behind one interface: load an artifact, ``infer(images) -> float32 logits``.

Like Polygraphy's runners: the public ``infer`` checks the input (shape, dtype, NaN/Inf) and
subclasses only write ``_infer``. Quantized models take float images and return float
logits: the runner quantizes inputs and dequantizes outputs with the tensors' own scale and
zero point, so parity compares like with like.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.runners.base import Runner, TensorSpec

# format name (as in the manifest) -> (module, class)
_RUNNERS = {
    "tflite": ("toolkit.runners.litert", "LiteRTRunner"),
    "onnx": ("toolkit.runners.onnxrt", "OnnxRuntimeRunner"),
    "keras": ("toolkit.runners.keras", "KerasRunner"),
    "tflite-micro": ("toolkit.runners.tflm", "TFLMRunner"),
}


def runner_for(fmt: str, path: Path, **kwargs) -> Runner:
    import importlib

    try:
        module, cls = _RUNNERS[fmt]
    except KeyError:
        raise ValueError(f"no runner for format {fmt!r}") from None
    return getattr(importlib.import_module(module), cls).load(Path(path), **kwargs)


__all__ = ["Runner", "TensorSpec", "runner_for"]
