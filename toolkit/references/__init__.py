"""The model a user brings, in the framework it was trained in: one module per framework (keras, onnx, torch)
in this package, each registering a ``Framework`` next to its code, found by scanning the package.

A framework says which files are its models (by suffix), how to load one safely (never an arbitrary pickle),
what the model takes and gives (``ModelInfo``: input shape and layout, classes, logits or probabilities) and
which runtime runs it as the reference every exported file is judged against (Keras on TensorFlow, ONNX on
onnxruntime in float, PyTorch in eager PyTorch). Frameworks other than Keras also say how their model becomes
ONNX (``to_onnx``) and OpenVINO (``to_openvino``): every other format is made from those, or is a failed row
with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import DataError
from toolkit.plugins import Registry


@dataclass(frozen=True)
class Framework:
    name: str  # "keras", "onnx", "torch": the manifest's model.framework and the reference's artifact format
    suffixes: tuple[str, ...]  # its model files
    summary: str  # one line for --help
    load: Callable[[Path], Reference]  # the model file -> a Reference (DataError when unusable)
    order: int = 100
    title: str = ""  # how messages name the model's framework ("agrees with PyTorch on ..."); the name if empty
    extra: str | None = None  # the pip extra that installs it (None: the base install)
    available: Callable[[], bool] = lambda: True
    # (reference, opset) -> onnx.ModelProto with one input named toolkit.model.INPUT_NAME and one output
    # OUTPUT_NAME, its layout kept; None: the ONNX format converts the Keras model itself (tf2onnx)
    to_onnx: Callable | None = None
    # (reference, () -> the float ONNX file) -> openvino.Model; None: OpenVINO converts the SavedModel
    to_openvino: Callable | None = None
    # reference -> (float TFLite bytes, manifest extras) for a framework with its own TFLite converter; None: the
    # TFLite converter reads the Keras model's SavedModel (or, for a framework without one, a failed row)
    to_tflite: Callable | None = None


@dataclass
class Reference:
    """A loaded model: what parity compares every exported file against."""

    framework: Framework
    path: Path
    model: object  # keras.Model, onnx.ModelProto or torch.export.ExportedProgram
    info: object  # toolkit.modelinfo.ModelInfo

    @property
    def keras(self) -> bool:
        return self.framework.name == "keras"

    def runner(self, device: str = "cpu"):
        """The model in its framework's reference runtime: takes the toolkit's (N, H, W, C) images."""
        if self.keras:
            from toolkit.runners.keras import KerasRunner

            return KerasRunner(self.model, path=self.path, device=device)
        from toolkit import runners

        return runners.default_for(self.framework.name).load(self.path, device=device)


FRAMEWORKS: Registry[Framework] = Registry("framework", __name__, key=lambda f: f.name, order=lambda f: f.order)


def framework_for(path: Path) -> Framework:
    """The framework whose model files end as ``path`` does; a DataError naming the known ones otherwise."""
    path = Path(path)
    known = FRAMEWORKS.load_all()
    if path.is_dir() or not path.exists():  # Keras' loader says what a directory or a missing file is
        return known["keras"]
    for framework in known.values():
        if path.suffix.lower() in framework.suffixes:
            if not framework.available():
                from toolkit.errors import DeviceUnavailableError

                raise DeviceUnavailableError(
                    f"{path} is a {framework.name} model and {framework.name} is not installed",
                    hint=f"install it with `pip install -e '.[{framework.extra}]'`")
            return framework
    suffixes = ", ".join(s for f in known.values() for s in f.suffixes)
    raise DataError(f"{path} is not a model file the toolkit reads (it reads {suffixes})",
                    hint="a Keras model saved with model.save('model.keras'), an ONNX classifier, or a PyTorch "
                    "module saved with torch.export.save(torch.export.export(...), 'model.pt2')")


def load_reference(path: Path) -> Reference:
    """The model at ``path`` in its own framework (the registered one: a plugin may replace a framework)."""
    framework = framework_for(path)
    reference = framework.load(Path(path))
    reference.framework = framework
    return reference


def channels_last_shape(shape: tuple, where) -> tuple[tuple, str]:
    """A non-Keras model's input shape per image, (C, H, W) or (H, W, C) or (H, W) or (D,), as the toolkit
    records it (channels last) with its data format."""
    from toolkit.runners.base import channels_first

    if channels_first((None, *shape)):
        return (shape[1], shape[2], shape[0]), "channels_first"
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise DataError(f"{where} takes inputs of shape {tuple(shape)}: neither (C, H, W) nor (H, W, C) with 1 or "
                        "3 channels")
    return tuple(shape), "channels_last"


def check_classes_output(shape: tuple, where) -> int:
    """K of a (K,) score output, or a DataError."""
    if len(shape) != 1 or not shape[0] or shape[0] < 2:
        raise DataError(f"{where} outputs shape {tuple(shape)}; expected one score per class, (K,) with K >= 2")
    return int(shape[0])


__all__ = ["FRAMEWORKS", "Framework", "Reference", "framework_for", "load_reference"]
