"""The reference: the trained Keras model, run through a compiled ``tf.function``.

Never ``model.predict`` (about 50 ms of overhead per call). ``safe_mode=True`` refuses
Lambda layers, which could run arbitrary code from a model file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from toolkit.errors import DataError
from toolkit.runners.base import Runner, TensorSpec


def load_keras_model(path: Path):
    from toolkit._quiet import keras, quiet_stderr

    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file {path} not found", hint="run `toolkit train` first, or pass --model")
    if path.suffix != ".keras":
        raise DataError(f"{path} is not a .keras file", hint="pass the model.keras written by `toolkit train`")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a valid .keras archive (truncated or corrupt)")
    try:
        with quiet_stderr():
            return keras().saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "Lambda" in str(exc) or "safe_mode" in str(exc):
            raise DataError(f"{path} contains a Lambda layer; refusing to load it (safe mode)") from None
        raise DataError(f"cannot load {path}: {first}") from None
    except Exception as exc:
        raise DataError(f"cannot load {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


class KerasRunner(Runner):
    name = "tensorflow"

    def __init__(self, model, path: Path | None = None):
        from toolkit._quiet import tf

        tf = tf()
        self.model = model
        self.path = path
        shape = tuple(model.inputs[0].shape)
        self._fn = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, *shape[1:]), tf.float32)],
            jit_compile=False,
        )
        self.input_spec = TensorSpec(model.inputs[0].name, shape, "float32")
        self.output_spec = TensorSpec(model.outputs[0].name, tuple(model.outputs[0].shape), "float32")

    @classmethod
    def load(cls, path: Path, **kwargs) -> KerasRunner:
        return cls(load_keras_model(path), path=Path(path))

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        return self._fn(x).numpy()

    def _infer(self, images: np.ndarray) -> np.ndarray:
        return self.run_raw(images).astype(np.float32, copy=False)
