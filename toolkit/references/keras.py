"""Keras 3 models (``.keras``), loaded in safe mode and run as a compiled tf.function (toolkit/runners/keras.py);
every format is converted from the model itself (SavedModel, tf2onnx)."""

from __future__ import annotations

from pathlib import Path

from toolkit.references import FRAMEWORKS, Framework, Reference


def _load(path: Path) -> Reference:
    from toolkit.modelinfo import inspect_model
    from toolkit.runners.keras import load_keras_model

    model = load_keras_model(path)
    return Reference(FRAMEWORK, path, model, inspect_model(model, path))


def _available() -> bool:
    import importlib.util

    return importlib.util.find_spec("keras") is not None


FRAMEWORK = FRAMEWORKS.register(Framework(
    "keras", (".keras", ".h5", ".hdf5"), "a Keras 3 model (model.save('model.keras'))", _load,
    title="Keras", order=10,
    available=_available))
