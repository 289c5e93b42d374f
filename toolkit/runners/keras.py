"""The reference: the trained Keras model, run through a compiled ``tf.function``.

Never ``model.predict`` (about 50 ms of overhead per call). ``safe_mode=True`` refuses
Lambda layers, which could run arbitrary code from a model file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from toolkit.errors import DataError, UsageError, first_line, whole_message
from toolkit.runners import RUNTIMES, Runtime
from toolkit.runners.base import Runner, TensorSpec


def load_keras_model(path: Path):
    from toolkit._quiet import keras, quiet_stderr

    path = Path(path)
    resave = "keras.models.load_model(OLD).save('model.keras')"
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            raise DataError(f"{path} is a TensorFlow SavedModel directory; the toolkit takes a Keras 3 .keras file",
                            hint="re-save the Keras model it came from with model.save('model.keras'); a SavedModel "
                            "alone keeps no Keras layers to check against")
        raise DataError(f"{path} is a directory, not a .keras model file",
                        hint="pass the model.keras file, e.g. --model DIR/model.keras")
    if not path.is_file():
        raise DataError(f"model file {path} not found", hint="run `toolkit train` first, or pass --model")
    if path.suffix.lower() in (".h5", ".hdf5"):
        raise DataError(f"{path} is a legacy HDF5 Keras file; the toolkit takes the Keras 3 .keras format",
                        hint=f"re-save it once: {resave.replace('OLD', repr(str(path)))}")
    if path.suffix != ".keras":
        raise DataError(f"{path} is not a .keras file", hint="pass the model.keras written by `toolkit train` "
                        "or by model.save('model.keras')")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a valid .keras archive (truncated or corrupt)")
    try:
        with quiet_stderr():
            return keras().saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as exc:
        if "Lambda" in str(exc) or "safe_mode" in str(exc):
            raise DataError(f"{path} contains a Lambda layer; refusing to load it (safe mode)") from None
        raise DataError(f"cannot load {path}: {first_line(exc)}", detail=whole_message(exc)) from None
    except Exception as exc:
        raise DataError(f"cannot load {path}: {type(exc).__name__}: {first_line(exc)}",
                        detail=whole_message(exc)) from None


class KerasRunner(Runner):
    name = "tensorflow"

    def __init__(self, model, path: Path | None = None, device: str = "cpu"):
        from toolkit._quiet import tf

        tf = tf()
        self.model = model
        self.path = path
        self.device = device
        self._tf_device = tf.device("/GPU:0" if device == "cuda" else "/CPU:0")
        self._placed: str | None = None  # the device of the first output: what really ran
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
        return cls(load_keras_model(path), path=Path(path), **kwargs)

    def prepare(self, images: np.ndarray):
        """A tf.constant on the runner's device, so the timed call copies nothing in."""
        from toolkit._quiet import tf

        with self._tf_device:
            return tf().constant(np.ascontiguousarray(images, dtype=np.float32))

    def run_raw(self, x) -> np.ndarray:
        with self._tf_device:
            y = self._fn(x)
        if self._placed is None:
            self._placed = y.device
        return y.numpy()

    @property
    def providers(self) -> list[str]:
        return [self._placed or ("/GPU:0" if self.device == "cuda" else "/CPU:0") + " (not run yet)"]

    def used_device(self) -> str:
        return "cuda" if self._placed and "GPU" in self._placed else "cpu"

    def bench_fields(self) -> dict:
        return {"graph": "tf.function (not model.predict)"}


def _tf_reason(device: str) -> str | None:
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        return "TensorFlow is not installed (on a GPU machine without it, the keras-jax runtime runs the reference)"
    if device != "cuda":
        return None
    from toolkit._quiet import tf

    if not tf().config.list_physical_devices("GPU"):
        return ("TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty; "
                "install tensorflow[and-cuda] on a CUDA machine)")
    return None


def _open(path: Path, *, device: str = "cpu", threads: int | None = None) -> KerasRunner:
    if threads:
        from toolkit._quiet import tf

        try:  # TensorFlow sizes its thread pools once per process, before its first op
            tf().config.threading.set_intra_op_parallelism_threads(threads)
            tf().config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            if tf().config.threading.get_intra_op_parallelism_threads() != threads:
                raise UsageError("TensorFlow's thread count can be set only once per process") from None
    return KerasRunner.load(path, device=device)


RUNTIMES.register(Runtime(
    name="tensorflow",
    linestyle=(0, (8, 2, 1, 2)),
    formats=("keras",),
    devices=("cpu", "cuda"),
    summary="the Keras reference model as a compiled tf.function (never model.predict)",
    open=_open,
    unavailable=_tf_reason,
    default_for=("keras",),
    timed_call="tf.function(...).numpy() on a tf.constant input",
    order=40,
))
